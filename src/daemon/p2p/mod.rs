//! The P2P node: a private libp2p swarm in which the fleet asks GitHub each
//! question once.
//!
//! ```text
//!  App::read (leader) ──▶ Client::ask(owner) ──cmd──▶ EventLoop (owns the Swarm) ──/ghcache/entry/1──▶ owner
//!                                                        │  inbound request
//!                                                        └──▶ task: Responder (App::serve_peer, peers off) ──cmd: Respond──▶ EventLoop
//!  every max(2 s, N/4 s): announcement (addrs, counters, epoch) ──gossipsub /ghcache/fleet/1──▶ every member's view
//!  a neighbour's connection drops, its redial fails: "gone" ──gossipsub──▶ every member's view
//!  App::invalidate_fleet ──cmd──▶ EventLoop ──gossipsub──▶ members apply (App::invalidate) and ack
//! ```
//!
//! The shape is rust-libp2p's file-sharing example: a cloneable [`Client`]
//! sends commands over a channel to one `EventLoop` task, which alone owns
//! the `Swarm`. Nothing else touches the swarm, so there is no lock around
//! it; the connected peers, the member view and the addresses the node
//! listens on are published through `watch` channels that readers clone
//! from.
//!
//! # Listen addresses
//! `listen_on` binds the socket before [`start`] returns (a port in use
//! fails the start), but the address actually bound (the port the kernel
//! chose for `/tcp/0`) is reported only by the swarm's `NewListenAddr`
//! event, which the event loop publishes: [`Client::listening`] waits for
//! it, [`Client::listen_addrs`] reads it.
//!
//! # Membership and owners
//! Every member announces itself on gossipsub, at a period that grows with
//! the fleet so the fleet-wide rate stays bounded; the member view is this
//! node plus the members heard within 3 of their periods, less those a
//! neighbour found gone (its connection dropped and a redial failed)
//! ([`membership`]). A key's owner is chosen by rendezvous
//! hashing over that view ([`owner_of`]), not over connections: members
//! agree on owners without being connected to each other. Connections are
//! bounded ([`Limits`], `max_peer_connections`): gossipsub's mesh plus
//! connections to owners opened on demand from their announced addresses
//! and closed when idle, or pruned sooner above a watermark that keeps a
//! reserve for joiners ([`connections`]).
//!
//! # Fleet-wide invalidation
//! An invalidation is applied locally, then published with an epoch; every
//! member applies it and acks; a member that missed some clears when it
//! hears a higher epoch ([`invalidation`]).
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
//! - `gossip.rs`: the messages of the fleet topic (announcements,
//!   invalidations, acks) and their checked decoder.
//! - `membership.rs`: the member view and its failure bound.
//! - `invalidation.rs`: epochs, acks, catching up.
//! - `acks.rs`: a member's ack sent to the invalidation's origin directly
//!   (gossipsub when that fails), and the origin's side.
//! - `client.rs`: the cloneable [`Client`] and the commands it sends.
//! - `connections.rs`: the connection manager (watermarks below the
//!   limit, which connections to prune).
//! - `event_loop.rs`: the task that owns the swarm.
//! - `metrics.rs`: the `ghcache_p2p_*` counters.
//! - `discovery/`: where first peers come from besides `--bootstrap` and
//!   mDNS: a DNS seed, a registry on GitHub.
//! - `lifecycle.rs`: building the swarm, the core's lifecycle around it,
//!   the daemon's settings and responder, shutdown.
//! - `sim/`: the fleet at thousands of nodes by discrete-event simulation:
//!   the real [`membership`] and [`owner_of`] over a model of the swarm
//!   (`ci/fleet-sim`); used by no daemon code.
//!
//! # What is absent, on purpose
//! - No QUIC: it would bypass the pre-shared key.
//! - No lock held across `.await` and no cache access from the event loop:
//!   inbound entry requests run in their own task through the daemon's
//!   [`Responder`], which goes through the core's single flight with peers
//!   disabled (so an owner never asks another owner: no loops).

mod acks;
pub mod client;
pub mod codec;
pub mod connections;
pub mod discovery;
pub mod event_loop;
pub mod gossip;
pub mod invalidation;
pub mod keys;
pub mod lifecycle;
pub mod membership;
pub mod metrics;
pub mod owner;
pub mod sim;
pub mod wire;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use libp2p::pnet::PreSharedKey;
use libp2p::Multiaddr;

pub use client::{AskError, Client, FleetReport, MemberRow, PeerInfo};
pub use codec::{Codec, MAX_REQUEST_FRAME, MAX_STREAMS};
pub use keys::{derive_psk, load_or_create_identity, parse_psk, resolve_key, KeySource, IDENTITY_FILE, KDF_CONTEXT};
pub(crate) use lifecycle::error_chain;
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
    /// DNS seeds and the GitHub registry ([`discovery`]).
    pub discovery: discovery::Discovery,
    /// The private network key.
    pub psk: PreSharedKey,
    /// Where the identity key is kept.
    pub data_dir: PathBuf,
    /// How long to wait for a peer's answer.
    pub request_timeout: Duration,
    /// Connection limits.
    pub limits: Limits,
}

impl Settings {
    /// Alone by configuration: nothing to dial, nothing to discover. Such
    /// a node's member view is settled from the start, and no member can
    /// tell it of an invalidation it missed.
    pub fn alone(&self) -> bool {
        self.bootstrap.is_empty() && !self.mdns && !self.discovery.is_configured()
    }
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

impl Limits {
    /// At most `established` connections (the `max_peer_connections` key),
    /// the rest as by default.
    pub fn with_established(established: u32) -> Limits {
        Limits {
            established,
            pending: established.min(Limits::default().pending),
            ..Limits::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            established: 32,
            per_peer: 2,
            pending: 32,
            // Gossipsub keeps its mesh connections alive; the others (asks
            // to owners, discovery dials) close after this.
            idle_timeout: Duration::from_secs(15),
        }
    }
}

/// Answers peers' requests: implemented by the daemon over its cache.
pub trait Responder: Send + Sync + 'static {
    /// Answers an `Entry` request (through the single flight, peers off).
    fn entry(&self, req: wire::Request) -> BoxFuture<'static, wire::Response>;
    /// This node's counters.
    fn stats(&self) -> wire::StatsReply;
    /// Applies an invalidation from the fleet to this node (memory and
    /// store); returns the entries dropped. Called from a task, never from
    /// the event loop.
    fn invalidate(&self, what: &crate::daemon::tools::Invalidate) -> usize {
        let _ = what;
        0
    }
    /// Records the invalidation epoch with the store (after the deletes
    /// queued before it). Must not block: the event loop calls it.
    fn persist_epoch(&self, epoch: u64) {
        let _ = epoch;
    }
    /// The epoch the store held at start.
    fn stored_epoch(&self) -> u64 {
        0
    }
    /// This node's epoch has been compared with the fleet's (its view is
    /// settled and it is not behind, or it has caught up): what it loaded
    /// from its store may be served as it is. Must not block.
    fn epoch_confirmed(&self) {}
}
