//! P2P counters, shared by the client, the event loop and `/metrics`.
//!
//! Invariants: plain relaxed atomics, no lock; metric names
//! (`ghcache_p2p_*`) are part of the interface and never renamed.

use crate::daemon::metrics::Exposition;
use crate::sync::{AtomicU64, Ordering};

/// P2P counters, shared by the client, the event loop and `/metrics`.
#[derive(Debug, Default)]
pub struct P2pMetrics {
    /// Entry requests sent to owners.
    pub asked: AtomicU64,
    /// Entries received from owners and accepted.
    pub received: AtomicU64,
    /// Asks that failed or were refused: the next owner or GitHub asked instead.
    pub fallbacks: AtomicU64,
    /// Entry requests answered for peers.
    pub served: AtomicU64,
    /// Inbound streams dropped for bad frames.
    pub bad_frames: AtomicU64,
    /// Connections established.
    pub connections_opened: AtomicU64,
    /// Connections closed.
    pub connections_closed: AtomicU64,
    /// Peers connected now.
    pub peers: AtomicU64,
    /// Members in the view now, this node included.
    pub members: AtomicU64,
    /// Fleet invalidations this node published.
    pub invalidations_published: AtomicU64,
    /// Fleet invalidations from others applied here.
    pub invalidations_applied: AtomicU64,
    /// Times this node found it had missed invalidations and cleared.
    pub epoch_catch_ups: AtomicU64,
    /// The invalidation epoch this node has applied.
    pub epoch: AtomicU64,
    /// Members taken out of the view because an ask to them failed.
    pub suspected: AtomicU64,
    /// Messages of the fleet topic delivered to this node (each once:
    /// gossipsub drops the duplicates before).
    pub fleet_messages: AtomicU64,
    /// Members this node found gone (their connection dropped and a
    /// redial failed) and announced as gone.
    pub gone_published: AtomicU64,
    /// Acks of fleet-wide invalidations this node sent to their origin
    /// directly and the origin answered.
    pub acks_direct: AtomicU64,
    /// Acks this node published on gossipsub because the direct send
    /// failed.
    pub acks_gossiped: AtomicU64,
    /// Idle connections outside the gossip mesh this node closed because
    /// it held more than its high watermark (`p2p::connections`).
    pub connections_pruned: AtomicU64,
}

impl P2pMetrics {
    /// Adds the node's metrics to a scrape (`ghcache_p2p_*`).
    pub fn expose(&self, out: &mut Exposition) {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.gauge("p2p_peers", "Peers connected.", v(&self.peers));
        out.gauge(
            "p2p_members",
            "Members in this node's view, itself included.",
            v(&self.members),
        );
        out.counter(
            "p2p_invalidations_published",
            "Fleet invalidations published by this node.",
            v(&self.invalidations_published),
        );
        out.counter(
            "p2p_invalidations_applied",
            "Fleet invalidations from other members applied here.",
            v(&self.invalidations_applied),
        );
        out.counter(
            "p2p_suspected",
            "Members taken out of the view because an ask to them failed.",
            v(&self.suspected),
        );
        out.gauge(
            "p2p_epoch",
            "The fleet invalidation epoch this node has applied.",
            v(&self.epoch),
        );
        out.counter(
            "p2p_epoch_catch_ups",
            "Times this node had missed invalidations and cleared its cache.",
            v(&self.epoch_catch_ups),
        );
        out.counter(
            "p2p_fleet_messages",
            "Messages of the fleet topic delivered to this node (duplicates excluded).",
            v(&self.fleet_messages),
        );
        out.counter(
            "p2p_gone_published",
            "Members this node found gone and announced as gone.",
            v(&self.gone_published),
        );
        out.counter(
            "p2p_acks_direct",
            "Acks of fleet invalidations sent to their origin directly (answered).",
            v(&self.acks_direct),
        );
        out.counter(
            "p2p_acks_gossiped",
            "Acks of fleet invalidations published on gossip after the direct send failed.",
            v(&self.acks_gossiped),
        );
        out.counter("p2p_asked", "Entry requests sent to owners.", v(&self.asked));
        out.counter("p2p_received", "Entries received from owners.", v(&self.received));
        out.counter(
            "p2p_fallbacks",
            "Owner asks that failed (the next owner or GitHub was asked instead).",
            v(&self.fallbacks),
        );
        out.counter("p2p_served", "Entry requests answered for peers.", v(&self.served));
        out.counter(
            "p2p_bad_frames",
            "Inbound streams dropped for bad frames.",
            v(&self.bad_frames),
        );
        out.counter(
            "p2p_connections_opened",
            "Connections established.",
            v(&self.connections_opened),
        );
        out.counter(
            "p2p_connections_closed",
            "Connections closed.",
            v(&self.connections_closed),
        );
        out.counter(
            "p2p_connections_pruned",
            "Idle connections outside the gossip mesh closed above the high watermark.",
            v(&self.connections_pruned),
        );
    }
}
