//! Upstream budgets: how many GitHub requests one HTTP request may cause,
//! and how many one client may cause per minute.
//!
//! - **Per request**: a JSON-RPC batch of thousands of `gh_api` calls, or
//!   one call asking for a thousand items, must not spend the fleet's quota
//!   on its own. The HTTP layer runs each request inside [`scope`] with
//!   `max_upstream_per_request` units.
//! - **Per client** ([`ClientRates`]): one runaway client (a loop that
//!   misses the cache every time) must not drain the shared quota for
//!   everyone. Each client address has a token bucket of
//!   `client_upstream_per_minute` GitHub requests, refilled continuously;
//!   past it the read is refused with the seconds until a request is
//!   available again (HTTP 429 with `Retry-After`).
//!
//! [`App::read`](super::App::read) charges the pages a fetch may need to
//! both *before* it leads a flight, so a refused read never holds a flight
//! that other callers follow, and cached reads cost nothing. Reads outside
//! any scope (a peer's ask, start-up) and reads with a client's own token
//! (its own quota) are not charged to the shared budgets.
//!
//! The request's budget and client address are a task-local: the read path
//! runs in the request's task, so no handle is threaded through the tools.
//! [`ClientRates`] has one leaf lock, held only to update one bucket.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::sync::{lock, Mutex};

struct RequestBudget {
    left: Cell<u32>,
    client: Option<IpAddr>,
}

tokio::task_local! {
    static REQUEST: RequestBudget;
}

/// Runs `fut` as one request of `client` with `units` upstream requests to
/// spend. (A plain function, not an `async fn`: `fut` is moved once, into
/// the scope, rather than once more into an outer future.)
pub fn scope<F: Future>(units: u32, client: Option<IpAddr>, fut: F) -> impl Future<Output = F::Output> {
    let budget = RequestBudget {
        left: Cell::new(units),
        client,
    };
    REQUEST.scope(budget, fut)
}

/// Takes `units` from the current request's budget. `Err(left)` when fewer
/// remain (nothing is taken then); always `Ok` outside a [`scope`].
pub fn charge(units: u32) -> Result<(), u32> {
    REQUEST
        .try_with(|budget| {
            let have = budget.left.get();
            if have < units {
                Err(have)
            } else {
                budget.left.set(have - units);
                Ok(())
            }
        })
        .unwrap_or(Ok(()))
}

/// The current request's client address, if any.
pub fn client() -> Option<IpAddr> {
    REQUEST.try_with(|budget| budget.client).ok().flatten()
}

/// Most client buckets kept; past it, full ones are forgotten.
const MAX_CLIENTS: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-client token buckets (module docs).
#[derive(Debug)]
pub struct ClientRates {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl ClientRates {
    /// Buckets of `per_minute` requests (also the burst).
    pub fn new(per_minute: u32) -> ClientRates {
        ClientRates {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `units` from `client`'s bucket at `now`, or says how long
    /// until it holds that many (nothing is taken then).
    pub fn charge(&self, client: IpAddr, units: u32, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(self.per_minute) / 60.0;
        let full = f64::from(self.per_minute);
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < full);
        }
        let bucket = buckets.entry(client).or_insert(Bucket { tokens: full, at: now });
        let tokens = (bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() * rate).min(full);
        let want = f64::from(units);
        if tokens < want {
            bucket.tokens = tokens;
            bucket.at = now;
            let wait = if rate > 0.0 { (want - tokens) / rate } else { 60.0 };
            return Err(Duration::from_secs_f64(wait.max(0.001)));
        }
        bucket.tokens = tokens - want;
        bucket.at = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scope_is_spent_once_and_outside_is_free() {
        assert_eq!(charge(1_000), Ok(()));
        assert_eq!(client(), None);
        let ip = IpAddr::from([127, 0, 0, 9]);
        scope(3, Some(ip), async {
            assert_eq!(client(), Some(ip));
            assert_eq!(charge(2), Ok(()));
            assert_eq!(charge(2), Err(1));
            assert_eq!(charge(1), Ok(()));
            assert_eq!(charge(1), Err(0));
        })
        .await;
    }

    #[test]
    fn buckets_refill_per_client() {
        let rates = ClientRates::new(60); // one a second, burst 60
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        assert!(rates.charge(a, 60, t0).is_ok());
        let wait = rates.charge(a, 2, t0).unwrap_err();
        assert!((1.9..=2.1).contains(&wait.as_secs_f64()), "{wait:?}");
        assert!(rates.charge(b, 1, t0).is_ok(), "another client is not affected");
        assert!(rates.charge(a, 2, t0 + Duration::from_secs(2)).is_ok());
        assert!(rates.charge(a, 1, t0 + Duration::from_secs(2)).is_err());
    }
}
