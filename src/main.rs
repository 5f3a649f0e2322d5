//! `ghcache`: the command-line entry point.

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--version" | "-V") => println!("ghcache {}", env!("CARGO_PKG_VERSION")),
        None | Some("--help" | "-h") => print!("{}", USAGE),
        #[cfg(feature = "daemon")]
        Some("daemon") => {
            let rest: Vec<String> = args.collect();
            if rest.iter().any(|a| a == "--help" || a == "-h") {
                print!("{}", DAEMON_USAGE);
                return;
            }
            std::process::exit(daemon::main(rest));
        }
        Some(other) => {
            eprintln!("ghcache: unknown command {other:?}\n\n{USAGE}");
            std::process::exit(2);
        }
    }
}

const USAGE: &str = "\
ghcache: a peer-to-peer cache of GitHub API responses

Usage: ghcache <command>

Commands:
  daemon      run the cache daemon (see `ghcache daemon --help`)
  --version   print the version
  --help      print this help
";

#[cfg(feature = "daemon")]
const DAEMON_USAGE: &str = "\
Usage: ghcache daemon [flags]

Flags (each also a key of the --config TOML file, e.g. github_api_url):
  --listen ADDR            HTTP address [127.0.0.1:9000]
  --data-dir DIR           store directory [$STATE_DIRECTORY, $XDG_STATE_HOME/ghcache, ~/.local/state/ghcache]
  --github-api-url URL     GitHub REST root [https://api.github.com]
  --mcp-token TOKEN        require `Authorization: Bearer TOKEN` (also GHCACHE_MCP_TOKEN)
  --no-p2p                 accepted; P2P is not implemented yet
  --no-store               keep the cache in memory only
  --log-json               JSON log lines
  --config FILE            TOML file with the same keys (see deploy/ghcache.example.toml)

GitHub token: GITHUB_TOKEN, else GH_TOKEN, else `gh auth token`, else unauthenticated.
Endpoints: POST /mcp, POST /jsonrpc, GET /github/<path>, GET /metrics, GET /healthz
";

#[cfg(feature = "daemon")]
mod daemon {
    use std::time::Duration;

    use ghcache::core::{LifecycleConfig, Node};
    use ghcache::daemon::config::{Config, TokenSource};
    use ghcache::daemon::{shutdown, spawn, App, DaemonClock};

    /// Runs the daemon; returns the exit code.
    pub fn main(args: Vec<String>) -> i32 {
        let mut config = match Config::from_args(args) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ghcache: {e}");
                return 2;
            }
        };
        if let Err(e) = config.apply_env() {
            eprintln!("ghcache: {e}");
            return 2;
        }
        init_logs(config.log_json);
        let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("ghcache: cannot start the runtime: {e}");
                return 1;
            }
        };
        let code = runtime.block_on(run(config));
        // Idle blocking-pool threads and connection tasks need not be
        // waited for: the store is already flushed and closed.
        runtime.shutdown_timeout(Duration::from_millis(500));
        code
    }

    fn init_logs(json: bool) {
        use tracing_subscriber::EnvFilter;
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        use std::io::IsTerminal;
        // journald adds its own timestamps; colours only on a terminal.
        let journald = std::env::var_os("JOURNAL_STREAM").is_some();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        if json {
            builder.json().init();
        } else if journald {
            builder.without_time().init();
        } else {
            builder.init();
        }
    }

    async fn run(config: Config) -> i32 {
        match config.token_source {
            TokenSource::None => tracing::warn!(
                "no GitHub token (GITHUB_TOKEN, GH_TOKEN or `gh auth token`): unauthenticated, 60 requests an hour"
            ),
            source => tracing::info!(?source, "GitHub token found"),
        }
        if config.p2p {
            tracing::info!("P2P is not implemented yet; running local-only (pass --no-p2p to silence this)");
        }
        // Before anything can tell systemd we are ready.
        let mut signals = match shutdown::Signals::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return 1;
            }
        };
        let clock = ghcache::sync::StdArc::new(DaemonClock::new());
        let node = match Node::init(config.cache.clone(), LifecycleConfig::disabled(), clock.clone()) {
            Ok(node) => node,
            Err(e) => {
                tracing::error!(error = %e, "cannot create the cache node");
                return 1;
            }
        };
        let cache = node.cache().clone();
        let app = match tokio::task::spawn_blocking(move || App::new(config, cache, clock)).await {
            Ok(Ok(app)) => app,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot start");
                return 1;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return 1;
            }
        };
        let running = match spawn(app).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return 1;
            }
        };
        shutdown::notify(&format!("READY=1\nSTATUS=listening on {}", running.addr));
        let signal = signals.recv().await;
        tracing::info!(signal, "shutting down");
        shutdown::notify("STOPPING=1");
        // Drain 6 s + flush 3 s stays within systemd's and our 10 s.
        running.shutdown(Duration::from_secs(6)).await;
        node.shutdown_p2p();
        tracing::info!("stopped");
        0
    }
}
