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
  --mcp-token-file FILE    require `Authorization: Bearer <the file's token>` on /mcp, /jsonrpc, /github
                           (also GHCACHE_MCP_TOKEN, or the systemd credential `mcp-token`)
  --mcp-token TOKEN        the same token on the command line (visible in ps; prefer the file)
  --allow-no-token         listen beyond loopback without a token (refused otherwise)
  --metrics-require-token  /metrics requires the token too
  --allowed-hosts H[,H]    extra accepted Host names (loopback listeners accept this machine's names)
  --no-p2p                 local-only: no P2P node
  --p2p-listen MULTIADDR   P2P address [/ip4/0.0.0.0/tcp/9100]
  --bootstrap MULTIADDR    a peer to dial (repeatable), e.g. /ip4/10.0.0.2/tcp/9100
  --mdns true|false        find peers on the LAN [false]
  --max-peer-connections N most established P2P connections [32]
  --swarm-key-file FILE    private swarm key (else GHCACHE_SWARM_KEY, else derived from the GitHub token)
  --ready-file FILE        once listening, write the bound addresses here (JSON; port 0 shows the real port)
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
    use ghcache::daemon::ready::{self, P2pReady};
    use ghcache::daemon::{p2p, shutdown, spawn, App, DaemonClock};

    /// Runs the daemon; returns the exit code.
    pub fn main(args: Vec<String>) -> i32 {
        let token_on_argv = args.iter().any(|a| a == "--mcp-token" || a.starts_with("--mcp-token="));
        let mut config = match Config::from_args(args) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ghcache: {e}");
                return 2;
            }
        };
        if let Err(e) = config.apply_env().and_then(|()| config.check_exposure()) {
            eprintln!("ghcache: {e}");
            return 2;
        }
        init_logs(config.log_json);
        if token_on_argv {
            tracing::warn!(
                "--mcp-token on the command line is visible to every user of this machine (ps); \
                 prefer --mcp-token-file, GHCACHE_MCP_TOKEN or a systemd credential named mcp-token"
            );
        }
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
        let ready_file = config.ready_file.clone();
        ready::clear_stale(ready_file.as_deref());
        let (p2p_ready, p2p_state) = tokio::sync::watch::channel(P2pReady::Starting);
        let p2p_settings = match p2p::settings(&config) {
            Ok(s) => Some(s),
            Err(why) => {
                tracing::info!("{why}");
                p2p_ready.send_replace(P2pReady::NotRunning {
                    state: "off",
                    error: why,
                });
                None
            }
        };
        // Before anything can tell systemd we are ready.
        let mut signals = match shutdown::Signals::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return 1;
            }
        };
        let clock = ghcache::sync::StdArc::new(DaemonClock::new());
        let lifecycle = if p2p_settings.is_some() {
            LifecycleConfig::default()
        } else {
            LifecycleConfig::disabled()
        };
        let node = match Node::init(config.cache.clone(), lifecycle, clock.clone()) {
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
        let announcer = tokio::spawn(ready::announce(ready_file.clone(), running.addr, p2p_state));
        let starting =
            p2p_settings.map(|s| tokio::spawn(p2p::lifecycle(node.clone(), running.app.clone(), s, p2p_ready)));
        let signal = signals.recv().await;
        tracing::info!(signal, "shutting down");
        shutdown::notify("STOPPING=1");
        if let Some(task) = starting {
            task.abort();
        }
        announcer.abort();
        ready::remove(ready_file.as_deref());
        let app = running.app.clone();
        // Drain 6 s + flush 3 s stays within systemd's and our 10 s.
        running.shutdown(Duration::from_secs(6)).await;
        // Stops the host exactly once (blocking: off the async threads).
        p2p::shutdown(node.clone(), &app).await;
        tracing::info!("stopped");
        0
    }
}
