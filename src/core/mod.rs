//! The cache core: synchronous, deterministic, model-checked.
//!
//! No async runtime, no I/O, no network and no wall clock live here: time
//! comes in through a [`Clock`], fetches and P2P starts through callbacks
//! that the core runs with **no lock held**. All synchronisation goes
//! through [`crate::sync`], so `loom-tests/` runs this exact code under loom.
//!
//! # Map
//! - [`key`]: canonical keys (`runners:repo=o/r`).
//! - [`entry`]: entries, freshness (fresh / stale / expired), TTLs.
//! - [`s3fifo`]: the eviction policy inside each shard (S3-FIFO), and why.
//! - [`cache`]: [`Cache`]: shards, lookup / insert / invalidate / clear,
//!   stats; **the lock order** is documented there.
//! - [`stats`]: counters and the consistent [`StatsSnapshot`].
//! - [`flight`]: single flight, [`Cache::begin`] / [`Cache::get_or_fetch`].
//! - [`flight_table`]: a shard's flights and its invalidation generation: a
//!   fill begun before an invalidation is not stored (the stale-fill race).
//! - [`outcome`]: the one waiting primitive (threads and tasks alike).
//! - [`lifecycle`]: the P2P state machine.
//! - [`process`]: [`Node`], the one P2P-capable cache per process.
//!
//! # Invariants, stated as what cannot happen
//! - No lock is held across a callback, a waker, the clock, or I/O.
//! - No function that needs a lock is called with it held: lock-held helpers
//!   take the guarded data, not the cache.
//! - No snapshot mixes two moments: stats hold every lock at once.
//! - No counter increment is lost, and no counter is ever reset: clearing
//!   entries only adds to `invalidations`.
//! - No two current fetches of one key overlap in one cache (a fetch an
//!   invalidation revoked may still be finishing); no follower waits
//!   forever.
//! - No fill that began before an invalidation covering its key is stored
//!   after it, and no request after it joins that fill.
//! - No second host: one starter at a time, one [`Node`] per process, nothing
//!   after shutdown.

pub mod cache;
pub mod clock;
pub mod entry;
pub mod flight;
mod flight_table;
pub mod key;
pub mod lifecycle;
mod outcome;
pub mod process;
mod s3fifo;
pub mod stats;

pub use cache::{Cache, CacheConfig, Lookup};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use entry::{ETag, Entry, Freshness, Origin, TtlPolicy};
pub use flight::{Begin, CacheMode, FetchFailed, Fetched, FlightLeader, FlightOutcome, Follower, Served, Via};
pub use flight_table::Generation;
pub use key::{key_text_names_repository, CacheKey, KeyError, Operation};
pub use lifecycle::{LifecycleConfig, P2pHost, P2pPhase, P2pStatus, StartError, StartOutcome};
pub use process::{AlreadyInitialized, Node};
#[cfg(any(test, fuzzing))]
pub use s3fifo::Queue;
pub use stats::{Api, Event, StatsSnapshot};
#[cfg(all(test, not(loom)))]
mod proptests;
#[cfg(all(test, not(loom)))]
mod tests;
