//! The process's one P2P-capable cache: [`Node`].
//!
//! A P2P host per cache instance would put several peer ids in one process,
//! all on one port, as soon as two code paths built their own cache. So the
//! only way to get a cache that can start P2P is [`Node::init`], which
//! succeeds once per process and returns [`AlreadyInitialized`] after that;
//! everything else shares the handle from [`Node::get`]. A [`Cache`] made
//! directly is local-only and has no way to start a host.

use std::fmt;

use super::cache::{Cache, CacheConfig};
use super::clock::Clock;
use super::lifecycle::{LifecycleConfig, P2pHost, StartError, StartOutcome};
use super::stats::StatsSnapshot;
use crate::sync::{lock, process_static, Arc, StdArc};

process_static! {
    static NODE: Mutex<Option<Arc<Node>>> = Mutex::new(None);
}

/// The process-wide cache and its P2P lifecycle (see the module docs).
pub struct Node {
    cache: Cache,
}

/// A second [`Node::init`] in one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlreadyInitialized;

impl fmt::Display for AlreadyInitialized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the ghcache node of this process is already initialised; use Node::get()")
    }
}

impl std::error::Error for AlreadyInitialized {}

impl Node {
    /// Creates the process's node. Succeeds once per process.
    pub fn init(
        config: CacheConfig,
        p2p: LifecycleConfig,
        clock: StdArc<dyn Clock>,
    ) -> Result<Arc<Node>, AlreadyInitialized> {
        let mut slot = lock(&NODE);
        if slot.is_some() {
            return Err(AlreadyInitialized);
        }
        let node = Arc::new(Node::unregistered(config, p2p, clock));
        *slot = Some(node.clone());
        Ok(node)
    }

    /// The process's node, once initialised.
    pub fn get() -> Option<Arc<Node>> {
        lock(&NODE).clone()
    }

    /// A node outside the process registry: only for the crate's own tests
    /// and fuzzing, which need many.
    #[cfg(any(test, fuzzing))]
    pub fn new_for_tests(config: CacheConfig, p2p: LifecycleConfig, clock: StdArc<dyn Clock>) -> Node {
        Node::unregistered(config, p2p, clock)
    }

    fn unregistered(config: CacheConfig, p2p: LifecycleConfig, clock: StdArc<dyn Clock>) -> Node {
        Node {
            cache: Cache::with_lifecycle(config, clock, p2p),
        }
    }

    /// The node's cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Stats of the node's cache, P2P state included.
    pub fn stats(&self) -> StatsSnapshot {
        self.cache.stats()
    }

    /// Starts P2P by running `starter` with no lock held, unless a host is
    /// already running, a start is in progress (then waits for its outcome),
    /// the last failure's backoff has not passed, or the node is disabled,
    /// degraded or shut down. See [`lifecycle`](super::lifecycle).
    ///
    /// The starter may read the node (stats, lookups) but must not call
    /// `start_p2p` or `shutdown_p2p` on it: it would wait for its own
    /// attempt.
    pub fn start_p2p<S>(&self, starter: S) -> StartOutcome
    where
        S: FnOnce() -> Result<Box<dyn P2pHost>, StartError>,
    {
        self.cache.start_p2p(starter)
    }

    /// Stops P2P for good: stops a running host exactly once, or waits for a
    /// start in progress and stops its host. Idempotent; when it returns, no
    /// host is running and none will start.
    pub fn shutdown_p2p(&self) {
        self.cache.shutdown_p2p()
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node").field("cache", &self.cache).finish()
    }
}
