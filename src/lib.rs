//! # ghcache
//!
//! A peer-to-peer cache of GitHub API responses. Every machine of a fleet
//! runs it as a daemon: it answers from a local cache, revalidates with free
//! conditional requests (ETag / `If-None-Match`: a 304 costs no quota),
//! coalesces concurrent misses into one upstream call, and shares entries
//! with its peers, so the fleet asks GitHub each question about once.
//!
//! ## Bird's-eye view
//! ```text
//!   MCP / JSON-RPC / reverse proxy ─┐
//!                                   ├─▶ daemon (tokio) ──▶ core::Cache ◀── loom-tests/, fuzz/, model/
//!   GitHub REST upstream ◀──────────┤        (thin)        (sync, no I/O)
//!   libp2p peers ◀──────────────────┘
//! ```
//! - [`core`]: the cache, its counters, miss coalescing and the P2P
//!   lifecycle. Synchronous and free of I/O, so that every lock path can be
//!   model-checked.
//! - `daemon` (feature `daemon`, on by default): the thin tokio wrapper:
//!   config, GitHub upstream, MCP and JSON-RPC tools, reverse proxy, redb
//!   store, metrics, shutdown, and the P2P node (`daemon::p2p`: a private
//!   libp2p swarm; a key's owner among the peers is asked before GitHub).
//!   It holds no lock of its own around cache state; every read goes
//!   through the core's single flight.
//! - [`sync`]: the facade through which the core gets its locks and atomics:
//!   std normally, loom under `--cfg loom`.
//!
//! The core's invariants are listed in [`core`]; the lock order in
//! [`core::cache`].

#[cfg(all(loom, feature = "daemon"))]
compile_error!(
    "the loom build is core-only: run `RUSTFLAGS=\"--cfg loom\" cargo test -p loom-tests --release` \
     (or build ghcache with --no-default-features)"
);

#[cfg(feature = "daemon")]
pub mod cli;
pub mod core;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod sync;
