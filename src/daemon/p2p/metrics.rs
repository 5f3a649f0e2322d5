//! P2P counters, shared by the client, the event loop and `/metrics`.
//!
//! Invariants: plain relaxed atomics, no lock; metric names
//! (`ghcache_p2p_*`) are part of the interface and never renamed.

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
}

impl P2pMetrics {
    /// Prometheus lines.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let c = |out: &mut String, name: &str, help: &str, kind: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP ghcache_p2p_{name} {help}\n# TYPE ghcache_p2p_{name} {kind}\nghcache_p2p_{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        c(out, "peers", "Peers connected.", "gauge", &self.peers);
        c(
            out,
            "members",
            "Members in this node's view, itself included.",
            "gauge",
            &self.members,
        );
        c(
            out,
            "invalidations_published_total",
            "Fleet invalidations published by this node.",
            "counter",
            &self.invalidations_published,
        );
        c(
            out,
            "invalidations_applied_total",
            "Fleet invalidations from other members applied here.",
            "counter",
            &self.invalidations_applied,
        );
        c(
            out,
            "suspected_total",
            "Members taken out of the view because an ask to them failed.",
            "counter",
            &self.suspected,
        );
        c(
            out,
            "epoch",
            "The fleet invalidation epoch this node has applied.",
            "gauge",
            &self.epoch,
        );
        c(
            out,
            "epoch_catch_ups_total",
            "Times this node had missed invalidations and cleared its cache.",
            "counter",
            &self.epoch_catch_ups,
        );
        c(
            out,
            "asked_total",
            "Entry requests sent to owners.",
            "counter",
            &self.asked,
        );
        c(
            out,
            "received_total",
            "Entries received from owners.",
            "counter",
            &self.received,
        );
        c(
            out,
            "fallbacks_total",
            "Owner asks that failed (the next owner or GitHub was asked instead).",
            "counter",
            &self.fallbacks,
        );
        c(
            out,
            "served_total",
            "Entry requests answered for peers.",
            "counter",
            &self.served,
        );
        c(
            out,
            "bad_frames_total",
            "Inbound streams dropped for bad frames.",
            "counter",
            &self.bad_frames,
        );
        c(
            out,
            "connections_opened_total",
            "Connections established.",
            "counter",
            &self.connections_opened,
        );
        c(
            out,
            "connections_closed_total",
            "Connections closed.",
            "counter",
            &self.connections_closed,
        );
    }
}
