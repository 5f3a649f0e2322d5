//! The accept loop: HTTP/1.1 connections with a cap and timeouts.
//!
//! - **Connection caps**: at most `max_connections` open connections, and
//!   `max_connections_per_client` from one IP address. A connection over a
//!   cap gets a one-line `503` (all clients) or `429` (this client) with
//!   `Retry-After: 1` and is closed; at most [`MAX_REFUSING`] such answers
//!   are being written at once, past that the socket is simply closed.
//! - **Idle and header timeout**: a connection with no request in progress,
//!   whether it has not finished sending its headers (slowloris) or sits
//!   idle between keep-alive requests, is closed after
//!   `http_idle_timeout_ms` (hyper's header-read timer, which restarts for
//!   each request). A response in progress, such as an MCP event stream,
//!   is not cut by it.
//! - **Descriptor exhaustion**: when `accept` fails (e.g. `EMFILE`), the
//!   loop pauses briefly instead of spinning, and says so once a second.
//! - **Threads**: this loop accepts and admits on the daemon's runtime;
//!   each admitted connection is then served, from its first request to
//!   its close, on one of the per-core HTTP threads
//!   ([`workers`](super::workers)), taken in turn.
//! - **Shutdown**: stop accepting, then let connections finish their
//!   current request (hyper's graceful shutdown); the caller bounds the
//!   wait.
//!
//! - **The proxy's reads** (`GET`/`HEAD /github/…` without a body) go
//!   straight to [`proxy::read_direct`](super::proxy::read_direct), which
//!   applies what the router's layers apply to `/github` (the `Host`,
//!   `Origin` and token checks, the upstream budget scope, `nosniff`, the
//!   latency histogram)
//!   without their per-request boxing and cloning; every other request goes
//!   through the router. A layer added to the router for `/github` must be
//!   added there too.
//!
//! Each request through the router carries its peer address as a
//! [`ClientAddr`] extension.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::Router;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::workers::Workers;
use crate::daemon::config::HttpLimits;
use crate::daemon::metrics::{Metrics, Refusal};
use crate::daemon::App;
use crate::sync::{lock, Mutex, Ordering, StdArc as Arc};

/// The peer address of the connection a request came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Refusal answers being written at once, at most.
pub const MAX_REFUSING: usize = 64;

/// Open connections, in total and per client address.
#[derive(Debug)]
struct Connections {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
}

/// One admitted connection's place; released on drop.
struct Ticket {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Connections {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let mut open = lock(&self.open);
        if open.0 >= self.limits.max_connections {
            return Err(Refusal::Connections);
        }
        let mine = open.1.entry(ip).or_insert(0);
        if *mine >= self.limits.max_connections_per_client {
            return Err(Refusal::ConnectionsPerClient);
        }
        *mine += 1;
        open.0 += 1;
        self.metrics.connections.store(open.0 as u64, Ordering::Relaxed);
        Ok(Ticket {
            connections: self.clone(),
            ip,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = lock(&self.connections.open);
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
        self.connections
            .metrics
            .connections
            .store(open.0 as u64, Ordering::Relaxed);
    }
}

/// Serves `router` on `listener`, each connection on one of `workers`'
/// threads, until `stop` turns true (module docs).
pub async fn serve(
    listener: TcpListener,
    mut workers: Workers,
    router: Router,
    app: Arc<App>,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let connections = Arc::new(Connections {
        open: Mutex::new((0, HashMap::new())),
        limits: limits.clone(),
        metrics: metrics.clone(),
    });
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if last_accept_error.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!(error = %e, "cannot accept HTTP connections (out of file descriptors?); pausing");
                    last_accept_error = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ticket = match connections.admit(peer.ip()) {
            Ok(t) => t,
            Err(why) => {
                metrics.refused(why);
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(stream, why).await;
                        drop(permit);
                    });
                }
                continue;
            }
        };
        // The socket moves to its thread unregistered (workers docs).
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, %peer, "cannot hand over an HTTP connection");
                continue;
            }
        };
        let connection = Connection {
            router: router.clone(),
            app: app.clone(),
            idle_timeout: limits.idle_timeout,
            peer,
            ticket,
        };
        workers.spawn(connection.serve(stream, graceful.watcher()));
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One admitted connection, before its thread serves it.
struct Connection {
    router: Router,
    app: Arc<App>,
    idle_timeout: Duration,
    peer: SocketAddr,
    ticket: Ticket,
}

impl Connection {
    /// Serves HTTP/1.1 on `stream` until the client closes, the idle
    /// timeout strikes or a graceful shutdown ends it (module docs); runs
    /// on the connection's thread, which registers the socket.
    async fn serve(self, stream: std::net::TcpStream, graceful: Watcher) {
        let Connection {
            router,
            app,
            idle_timeout,
            peer,
            ticket,
        } = self;
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, %peer, "cannot serve an HTTP connection");
                return;
            }
        };
        // Answers leave at once, as nginx's `tcp_nodelay` has them.
        let _ = stream.set_nodelay(true);
        let metrics = app.metrics.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            if super::proxy::is_direct_read(&request) {
                let (parts, _empty) = request.into_parts();
                let app = app.clone();
                return Either::Left(async move {
                    let started = Instant::now();
                    let response = super::proxy::read_direct(app.clone(), parts, peer.ip()).await;
                    app.metrics.http_answered("github", started.elapsed().as_secs_f64());
                    Ok(response)
                });
            }
            request.extensions_mut().insert(ClientAddr(peer));
            Either::Right(router.clone().oneshot(request.map(axum::body::Body::new)))
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(idle_timeout)
            .serve_connection(TokioIo::new(stream), service);
        if let Err(e) = graceful.watch(connection).await {
            if e.is_timeout() {
                metrics.refused(Refusal::IdleTimeout);
            } else {
                tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
            }
        }
        drop(ticket);
    }
}

/// Writes a short refusal and closes (bounded to a second).
async fn refuse(mut stream: TcpStream, why: Refusal) {
    let (status, message) = match why {
        Refusal::ConnectionsPerClient => (
            "429 Too Many Requests",
            "too many connections from this address (max_connections_per_client)",
        ),
        _ => ("503 Service Unavailable", "too many connections (max_connections)"),
    };
    let body = format!("{{\"message\":\"{message}\"}}");
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nRetry-After: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
