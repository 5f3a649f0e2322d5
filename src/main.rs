//! `ghcache`: the command-line entry point. Parsing, help and the operator
//! commands are `ghcache::cli`; this file runs the daemon.

#[cfg(feature = "daemon")]
fn main() {
    use ghcache::cli::{self, Invocation};
    let code = match cli::parse(std::env::args()) {
        Invocation::Daemon { config, token_on_argv } => daemon::main(*config, token_on_argv),
        Invocation::Run(command) => cli::run(command),
        Invocation::Exit(code) => code,
    };
    std::process::exit(code);
}

/// Without the `daemon` feature the binary has no commands.
#[cfg(not(feature = "daemon"))]
fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("--version" | "-V") => println!("ghcache {}", env!("CARGO_PKG_VERSION")),
        None | Some("--help" | "-h") => println!("ghcache: built without the `daemon` feature: no commands"),
        _ => {
            eprintln!("ghcache: built without the `daemon` feature: no commands");
            std::process::exit(2);
        }
    }
}

#[cfg(feature = "daemon")]
mod daemon {
    use std::time::Duration;

    use ghcache::core::{LifecycleConfig, Node};
    use ghcache::daemon::config::{Config, TokenSource};
    use ghcache::daemon::ready::{self, P2pReady};
    use ghcache::daemon::{p2p, shutdown, spawn, App, DaemonClock};

    /// Runs the daemon with `config` (flags and file applied); returns the
    /// exit code.
    pub fn main(mut config: Config, token_on_argv: bool) -> i32 {
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
        // A log line that cannot be written (stderr closed, a full pipe) is
        // dropped: the subscriber must not report it on stderr, whose
        // `eprintln!` would panic the daemon.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
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
        // Joining a fleet: what the store held waits for the fleet's
        // invalidation epoch (P2P off, or alone by configuration: served
        // as it is).
        if p2p_settings.as_ref().is_some_and(|s| !s.alone()) {
            app.expect_fleet_epoch();
        }
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
