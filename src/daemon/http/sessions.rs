//! Bounded MCP sessions: a cap for all clients and per client address, and
//! an idle life, shorter for a session that never got past `initialize`.
//!
//! rmcp's [`LocalSessionManager`] keeps every session until it is deleted
//! or its worker idles out, and never forgets the handle of a worker that
//! quit on its own; a client opening sessions in a loop grows the process
//! without bound. [`BoundedSessions`] wraps it:
//!
//! - [`admit`] (middleware on `/mcp`) *reserves* a slot for a POST that
//!   would open a session (one without `Mcp-Session-Id`), or answers 503
//!   (all clients) / 429 (this client) with `Retry-After`. The reservation
//!   travels to [`SessionManager::create_session`] in a task-local (rmcp
//!   creates the session inside the request's task) and becomes the
//!   session's slot; a request that creates no session drops it, which
//!   frees the slot. So the caps hold exactly, also under concurrent
//!   `initialize` floods.
//! - Every request that names a session marks it used. A sweeper task
//!   closes sessions idle past `mcp_session_idle_secs`, or past
//!   `mcp_session_init_secs` if no request followed `initialize`.
//!
//! Lock discipline: one leaf lock ([`SessionBook::state`]), held only to
//! read or update the book, never across an `.await` or a call into rmcp;
//! the sweeper takes the expired ids out first, then closes them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::{RestoreOutcome, ServerSseMessage, SessionId, SessionManager};
use tokio_util::sync::CancellationToken;

use super::guard::error_json;
use super::serve::ClientAddr;
use crate::daemon::config::HttpLimits;
use crate::daemon::metrics::{Metrics, Refusal};
use crate::sync::{lock, Mutex, Ordering, StdArc as Arc};

/// Where a session came from and when it was last used.
#[derive(Debug)]
struct Slot {
    client: Option<IpAddr>,
    last_used: Instant,
    /// A request followed `initialize`.
    used: bool,
}

#[derive(Debug, Default)]
struct BookState {
    sessions: HashMap<SessionId, Slot>,
    /// Slots held: sessions plus reservations in flight.
    held: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// The session accounting shared by [`admit`], the manager and the sweeper.
#[derive(Debug)]
pub struct SessionBook {
    state: Mutex<BookState>,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
}

/// A slot reserved for a session about to be created; released on drop
/// unless it became a session.
#[derive(Debug)]
pub struct Reservation {
    book: Arc<SessionBook>,
    client: Option<IpAddr>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = lock(&self.book.state);
        release(&mut state, self.client);
        self.book.publish(&state);
    }
}

/// Frees one slot of `client` (lock held by the caller).
fn release(state: &mut BookState, client: Option<IpAddr>) {
    state.held = state.held.saturating_sub(1);
    if let Some(ip) = client {
        if let Some(n) = state.per_client.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                state.per_client.remove(&ip);
            }
        }
    }
}

impl SessionBook {
    /// An empty book.
    pub fn new(limits: HttpLimits, metrics: Arc<Metrics>) -> Arc<SessionBook> {
        Arc::new(SessionBook {
            state: Mutex::new(BookState::default()),
            limits,
            metrics,
        })
    }

    fn publish(&self, state: &BookState) {
        self.metrics
            .mcp_sessions
            .store(state.sessions.len() as u64, Ordering::Relaxed);
    }

    /// Reserves a slot for `client`, or says which cap is reached.
    pub fn reserve(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Reservation, Refusal> {
        let mut state = lock(&self.state);
        if state.held >= self.limits.max_mcp_sessions {
            return Err(Refusal::McpSessions);
        }
        if let Some(ip) = client {
            let n = state.per_client.entry(ip).or_insert(0);
            if *n >= self.limits.max_mcp_sessions_per_client {
                return Err(Refusal::McpSessionsPerClient);
            }
            *n += 1;
        }
        state.held += 1;
        Ok(Reservation {
            book: self.clone(),
            client,
        })
    }

    /// Turns `reservation` into the slot of session `id`.
    fn register(&self, id: SessionId, reservation: Reservation) {
        let client = reservation.client;
        std::mem::forget(reservation); // its slot now belongs to the session
        let mut state = lock(&self.state);
        state.sessions.insert(
            id,
            Slot {
                client,
                last_used: Instant::now(),
                used: false,
            },
        );
        self.publish(&state);
    }

    /// A session made with no reservation (outside [`admit`]): counted
    /// against the global cap only, even past it (it exists already).
    fn register_unreserved(&self, id: SessionId) {
        let mut state = lock(&self.state);
        state.held += 1;
        state.sessions.insert(
            id,
            Slot {
                client: None,
                last_used: Instant::now(),
                used: false,
            },
        );
        self.publish(&state);
    }

    /// A request named session `id`.
    fn touch(&self, id: &str) {
        let mut state = lock(&self.state);
        if let Some(slot) = state.sessions.get_mut(id) {
            slot.last_used = Instant::now();
            slot.used = true;
        }
    }

    /// Forgets session `id`; true if it was in the book.
    fn forget(&self, id: &SessionId) -> bool {
        let mut state = lock(&self.state);
        let Some(slot) = state.sessions.remove(id) else {
            return false;
        };
        release(&mut state, slot.client);
        self.publish(&state);
        true
    }

    /// Takes the sessions idle past their life out of the book.
    fn take_expired(&self, now: Instant) -> Vec<SessionId> {
        let mut state = lock(&self.state);
        let (init, idle) = (self.limits.mcp_session_init, self.limits.mcp_session_idle);
        let expired: Vec<SessionId> = state
            .sessions
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_used) > if s.used { idle } else { init })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            if let Some(slot) = state.sessions.remove(id) {
                release(&mut state, slot.client);
            }
        }
        self.publish(&state);
        expired
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        lock(&self.state).sessions.len()
    }

    /// No session open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

tokio::task_local! {
    static PENDING: RefCell<Option<Reservation>>;
}

/// Middleware on `/mcp` (module docs).
pub async fn admit(State(book): State<Arc<SessionBook>>, request: Request, next: Next) -> Response {
    if let Some(id) = request.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()) {
        book.touch(id);
        return next.run(request).await;
    }
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let client = request.extensions().get::<ClientAddr>().map(|c| c.0.ip());
    match book.reserve(client) {
        Ok(reservation) => PENDING.scope(RefCell::new(Some(reservation)), next.run(request)).await,
        Err(why) => {
            book.metrics.refused(why);
            let (status, message) = match why {
                Refusal::McpSessionsPerClient => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "this client has {} open MCP sessions (max_mcp_sessions_per_client); close one (DELETE) or wait",
                        book.limits.max_mcp_sessions_per_client
                    ),
                ),
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{} MCP sessions are open (max_mcp_sessions); try again later", book.limits.max_mcp_sessions),
                ),
            };
            let mut r = error_json(status, &message);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after(&book.limits)));
            r
        }
    }
}

/// Seconds until an unused session expires at the latest: when a slot can
/// free itself.
fn retry_after(limits: &HttpLimits) -> u64 {
    limits.mcp_session_init.as_secs().max(1)
}

/// rmcp's local session manager with the book's bounds (module docs).
#[derive(Debug)]
pub struct BoundedSessions {
    inner: LocalSessionManager,
    book: Arc<SessionBook>,
}

impl BoundedSessions {
    /// A manager bounded by `book`. rmcp's own idle timeout is set past the
    /// book's, so the sweeper is the one that ends idle sessions.
    pub fn new(book: Arc<SessionBook>) -> Arc<BoundedSessions> {
        let mut inner = LocalSessionManager::default();
        inner.session_config.keep_alive = Some(book.limits.mcp_session_idle + Duration::from_secs(60));
        inner.session_config.init_timeout = Some(book.limits.mcp_session_init + Duration::from_secs(5));
        Arc::new(BoundedSessions { inner, book })
    }

    /// Closes expired sessions every second until `stop`.
    pub async fn sweep(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            for id in self.book.take_expired(Instant::now()) {
                tracing::debug!(session = %id, "closing an idle MCP session");
                let _ = self.inner.close_session(&id).await;
            }
        }
    }
}

type Inner = LocalSessionManager;

impl SessionManager for BoundedSessions {
    type Error = <Inner as SessionManager>::Error;
    type Transport = <Inner as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let (id, transport) = self.inner.create_session().await?;
        let reservation = PENDING.try_with(|p| p.borrow_mut().take()).ok().flatten();
        match reservation {
            Some(r) => self.book.register(id.clone(), r),
            None => self.book.register_unreserved(id.clone()),
        }
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.book.forget(id);
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_stream(id, message).await
    }

    async fn accept_message(&self, id: &SessionId, message: ClientJsonRpcMessage) -> Result<(), Self::Error> {
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.resume(id, last_event_id).await
    }

    async fn restore_session(&self, id: SessionId) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        self.inner.restore_session(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(total: usize, per_client: usize) -> Arc<SessionBook> {
        let limits = HttpLimits {
            max_mcp_sessions: total,
            max_mcp_sessions_per_client: per_client,
            mcp_session_init: Duration::from_secs(1),
            mcp_session_idle: Duration::from_secs(10),
            ..HttpLimits::default()
        };
        SessionBook::new(limits, Arc::new(Metrics::default()))
    }

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, n]))
    }

    #[test]
    fn caps_hold_and_dropped_reservations_free_their_slot() {
        let b = book(3, 2);
        let r1 = b.reserve(ip(1)).unwrap();
        let r2 = b.reserve(ip(1)).unwrap();
        assert_eq!(b.reserve(ip(1)).unwrap_err(), Refusal::McpSessionsPerClient);
        let r3 = b.reserve(ip(2)).unwrap();
        assert_eq!(b.reserve(ip(3)).unwrap_err(), Refusal::McpSessions);
        drop(r2);
        let r4 = b.reserve(ip(1)).unwrap();
        b.register(SessionId::from("a"), r1);
        b.register(SessionId::from("b"), r3);
        b.register(SessionId::from("c"), r4);
        assert_eq!(b.len(), 3);
        assert!(b.forget(&SessionId::from("a")));
        assert!(!b.forget(&SessionId::from("a")));
        assert!(b.reserve(ip(1)).is_ok());
    }

    #[test]
    fn unused_sessions_expire_sooner() {
        let b = book(10, 10);
        b.register(SessionId::from("idle"), b.reserve(ip(1)).unwrap());
        b.register(SessionId::from("busy"), b.reserve(ip(1)).unwrap());
        b.touch("busy");
        let later = Instant::now() + Duration::from_secs(2);
        assert_eq!(b.take_expired(later), vec![SessionId::from("idle")]);
        assert_eq!(b.len(), 1);
        let much_later = Instant::now() + Duration::from_secs(11);
        assert_eq!(b.take_expired(much_later), vec![SessionId::from("busy")]);
        assert!(b.is_empty());
        // All slots are free again.
        for _ in 0..10 {
            std::mem::forget(b.reserve(ip(1)).unwrap());
        }
    }
}
