//! Serving: [`spawn`] binds the HTTP listener and starts the router;
//! [`Running::shutdown`] drains and stops it.

use super::*;

/// A daemon serving HTTP, as started by [`spawn`].
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The shared state.
    pub app: Arc<App>,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    mcp_cancel: CancellationToken,
}

/// Binds `app.config.listen`, starts the HTTP threads and serves. Returns
/// once listening;
/// [`Running::addr`] is the address bound (the port the kernel chose when
/// `listen` asks for port 0).
pub async fn spawn(app: App) -> Result<Running, String> {
    let listener = tokio::net::TcpListener::bind(app.config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", app.config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let workers = http::workers::Workers::per_core()
        .await
        .map_err(|e| format!("cannot start the HTTP threads: {e}"))?;
    let app = Arc::new(app);
    let mcp_cancel = CancellationToken::new();
    let router = http::router(app.clone(), mcp_cancel.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(http::serve::serve(
        listener,
        workers,
        router,
        app.clone(),
        app.config.limits.clone(),
        app.metrics.clone(),
        stopped,
    ));
    if app.webhook.is_some() {
        tracing::info!("webhooks on: POST /webhook verifies X-Hub-Signature-256 with the webhook secret");
    } else {
        tracing::info!(
            "webhooks off: POST /webhook answers 404 (set --webhook-secret-file FILE or GHCACHE_WEBHOOK_SECRET to turn it on)"
        );
    }
    tracing::info!(%addr, github = %app.config.github_api_url, "ghcache daemon listening");
    Ok(Running {
        addr,
        app,
        stop,
        server,
        mcp_cancel,
    })
}

impl Running {
    /// Graceful stop: stop accepting, let in-flight requests finish within
    /// `drain`, then flush the store (bounded too).
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.stop.send(true);
        self.mcp_cancel.cancel(); // ends MCP sessions and their SSE streams
        if tokio::time::timeout(drain, self.server).await.is_err() {
            tracing::warn!(?drain, "in-flight requests did not finish in time; dropping them");
        }
        if let Some(store) = &self.app.store {
            if tokio::time::timeout(Duration::from_secs(3), store.close())
                .await
                .is_err()
            {
                tracing::warn!("store flush timed out");
            }
        }
    }
}
