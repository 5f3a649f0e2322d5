//! The P2P node: a private libp2p swarm in which the fleet asks GitHub each
//! question once.
//!
//! ```text
//!  App::read (leader) ──▶ Client::ask(owner) ──cmd──▶ EventLoop (owns the Swarm) ──/ghcache/entry/1──▶ owner
//!                                                        │  inbound request
//!                                                        └──▶ task: Responder (App::serve_peer, peers off) ──cmd: Respond──▶ EventLoop
//! ```
//!
//! The shape is rust-libp2p's file-sharing example: a cloneable [`Client`]
//! sends commands over a channel to one `EventLoop` task, which alone owns
//! the `Swarm`. Nothing else touches the swarm, so there is no lock around
//! it; the set of connected peers and the addresses the node listens on
//! are published through `watch` channels that readers clone from.
//!
//! # Listen addresses
//! `listen_on` binds the socket before [`start`] returns (a port in use
//! fails the start), but the address actually bound (the port the kernel
//! chose for `/tcp/0`) is reported only by the swarm's `NewListenAddr`
//! event, which the event loop publishes: [`Client::listening`] waits for
//! it, [`Client::listen_addrs`] reads it.
//!
//! # Owner of a key
//! Rendezvous (highest-random-weight) hashing over the connected peers plus
//! this node: each candidate scores `sha256(peer id ‖ key)`, the highest
//! wins ([`owner_of`]). When a peer joins or leaves only the keys it wins or
//! won move. Nodes agree on owners once they see the same member set, which
//! is why the swarm is a full mesh: each node asks its peers for theirs
//! (`Peers`) on connect and every few seconds, and dials the ones it lacks.
//!
//! # Trust
//! The transport is TCP → pnet (pre-shared key, XSalsa20) → noise → yamux.
//! Without the key a peer cannot finish the pnet handshake, so nothing else
//! is reachable. The key comes from a swarm key file, `GHCACHE_SWARM_KEY`,
//! or is derived from the GitHub token with HKDF-SHA256 under the context
//! `ghcache swarm key v1` ([`derive_psk`]); the token never leaves the node.
//! An owner serves a request only when it is the one its key names
//! (`tools::key_of`); entries peers send are checked for form (key, size,
//! status, ETag).
//!
//! # Files, one job each
//! - `keys.rs`: the swarm key (file, env, derived from the token) and the
//!   node's identity file.
//! - `owner.rs`: rendezvous hashing.
//! - `codec.rs`: the request-response codec of [`PROTOCOL`] over [`wire`].
//! - `client.rs`: the cloneable [`Client`] and the commands it sends.
//! - `event_loop.rs`: the task that owns the swarm.
//! - `metrics.rs`: the `ghcache_p2p_*` counters.
//! - `lifecycle.rs`: building the swarm, the core's lifecycle around it,
//!   the daemon's settings and responder, shutdown.
//!
//! # What is absent, on purpose
//! - No QUIC: it would bypass the pre-shared key.
//! - No lock held across `.await` and no cache access from the event loop:
//!   inbound entry requests run in their own task through the daemon's
//!   [`Responder`], which goes through the core's single flight with peers
//!   disabled (so an owner never asks another owner: no loops).

pub mod client;
pub mod codec;
pub mod event_loop;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod owner;
pub mod wire;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use libp2p::pnet::PreSharedKey;
use libp2p::Multiaddr;

pub use client::{Client, PeerInfo};
pub use codec::{Codec, MAX_REQUEST_FRAME, MAX_STREAMS};
pub use keys::{derive_psk, load_or_create_identity, parse_psk, resolve_key, KeySource, IDENTITY_FILE, KDF_CONTEXT};
pub use lifecycle::{lifecycle, settings, shutdown, start, Host};
pub use metrics::P2pMetrics;
pub use owner::owner_of;

/// The request-response protocol: entries, counters and peer exchange, as
/// tagged messages ([`wire`]).
pub const PROTOCOL: &str = "/ghcache/entry/1";

/// Settings of the node.
#[derive(Clone)]
pub struct Settings {
    /// Listen address.
    pub listen: Multiaddr,
    /// Peers to dial and keep dialling.
    pub bootstrap: Vec<Multiaddr>,
    /// mDNS discovery on the LAN.
    pub mdns: bool,
    /// The private network key.
    pub psk: PreSharedKey,
    /// Where the identity key is kept.
    pub data_dir: PathBuf,
    /// How long to wait for a peer's answer.
    pub request_timeout: Duration,
    /// Connection limits.
    pub limits: Limits,
}

/// Connection limits (libp2p `connection_limits`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Established connections in total.
    pub established: u32,
    /// Established connections per peer.
    pub per_peer: u32,
    /// Pending (handshaking) connections, each direction.
    pub pending: u32,
    /// Connections with no stream open are closed after this.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            established: 128,
            per_peer: 2,
            pending: 32,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Answers peers' requests: implemented by the daemon over its cache.
pub trait Responder: Send + Sync + 'static {
    /// Answers an `Entry` request (through the single flight, peers off).
    fn entry(&self, req: wire::Request) -> BoxFuture<'static, wire::Response>;
    /// This node's counters.
    fn stats(&self) -> wire::StatsReply;
}
