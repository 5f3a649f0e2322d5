//! The connection manager: which established connections a node closes
//! to stay between its watermarks, like go-libp2p's connmgr.
//!
//! A node holds at most `max_peer_connections` established connections
//! (the hard limit, enforced by libp2p's `connection_limits`, which denies
//! any connection beyond it). Below that limit, a **reserve** of a quarter
//! of it is kept free for joiners and on-demand asks: whenever the node
//! holds more than the **high watermark** (limit − reserve: 24 of 32) it
//! closes prunable connections down to the **low watermark** (half the
//! high one: 12 of 32). So a member that everyone bootstraps from keeps
//! accepting joiners: it answers each one's member-view ask (`Members`),
//! then closes the connection, and the joiner dials members from the view
//! it learned; an owner that a burst of asks reaches closes each asker's
//! connection once it is answered.
//!
//! A connection is **prunable** when none of these holds:
//! - its peer is in this node's gossipsub mesh (the mesh carries the
//!   fleet's messages; gossipsub keeps it symmetric, so the peer has this
//!   node in its mesh too);
//! - a request is in flight on it, either way (an ask, its answer);
//! - it opened less than [`GRACE`] ago and has not been sent a member view
//!   (a joiner's view ask comes first thing after the handshake).
//!
//! Prunable connections close those done with this node first (sent a
//! member view), then the least recently used. A close for pruning is not
//! a failure on either side: this node closed it (libp2p reports no
//! cause); the peer sees it dropped and redials once to check (see
//! `event_loop`): the redial succeeds, so nothing is suspected, and the
//! peer closes it at once. A connection that short (under [`GRACE`], not
//! in the mesh) is not checked when dropped, so the check is not checked
//! in turn.
//!
//! At the hard limit, an ask to an owner this node is not connected to
//! first closes one prunable connection ([`Connections::make_room`]), so
//! the dial is not denied locally.
//!
//! Invariants: pure bookkeeping (no I/O, no swarm); never picks a mesh
//! peer, a peer with a request in flight, or one inside its grace.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How long a fresh connection is kept whatever the count (unless it was
/// sent a member view): long enough for a joiner's first ask and for
/// gossipsub's heartbeat (1 s) to graft it into a mesh.
pub const GRACE: Duration = Duration::from_secs(2);

/// The bounds on established connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    /// Pruning stops at this many.
    pub low: usize,
    /// Pruning starts above this many.
    pub high: usize,
    /// The hard limit (`max_peer_connections`).
    pub limit: usize,
}

impl Watermarks {
    /// The watermarks of a node allowed `limit` connections: a quarter of
    /// it (at least 1) in reserve above `high`, `low` half of `high`.
    pub fn for_limit(limit: u32) -> Watermarks {
        let limit = limit as usize;
        let high = limit.saturating_sub((limit / 4).max(1)).max(1);
        Watermarks {
            low: (high / 2).max(1),
            high,
            limit,
        }
    }
}

/// What the manager knows of one peer.
#[derive(Clone, Debug)]
struct Link {
    /// Established connections to it (libp2p allows a few per peer).
    conns: usize,
    /// When its first connection opened.
    since: Instant,
    /// Last request sent or received, or answered.
    last_used: Instant,
    /// Requests in flight with it, either way.
    in_flight: usize,
    /// This node sent it a member view (a joiner: done with this node).
    served_view: bool,
}

/// The connections of a node and their use.
#[derive(Debug, Default)]
pub struct Connections {
    links: HashMap<PeerId, Link>,
}

impl Connections {
    /// None yet.
    pub fn new() -> Connections {
        Connections::default()
    }

    /// Established connections in all.
    pub fn count(&self) -> usize {
        self.links.values().map(|l| l.conns).sum()
    }

    /// A connection to `peer` was established.
    pub fn opened(&mut self, peer: PeerId, now: Instant) {
        let link = self.link(peer, now);
        if link.conns == 0 {
            link.since = now;
            link.served_view = false;
        }
        link.conns += 1;
    }

    /// Since when this node has been connected to `peer` (None: it is not).
    pub fn held_since(&self, peer: &PeerId) -> Option<Instant> {
        self.links.get(peer).filter(|l| l.conns > 0).map(|l| l.since)
    }

    /// A connection to `peer` closed.
    pub fn closed(&mut self, peer: &PeerId) {
        if let Some(l) = self.links.get_mut(peer) {
            l.conns = l.conns.saturating_sub(1);
            if l.conns == 0 && l.in_flight == 0 {
                self.links.remove(peer);
            }
        }
    }

    /// A request to or from `peer` started.
    pub fn request_started(&mut self, peer: PeerId, now: Instant) {
        let link = self.link(peer, now);
        link.in_flight += 1;
        link.last_used = now;
    }

    /// A request to or from `peer` ended (answered, or failed).
    pub fn request_ended(&mut self, peer: &PeerId, now: Instant) {
        if let Some(l) = self.links.get_mut(peer) {
            l.in_flight = l.in_flight.saturating_sub(1);
            l.last_used = now;
            if l.conns == 0 && l.in_flight == 0 {
                self.links.remove(peer);
            }
        }
    }

    /// This node sent `peer` its member view.
    pub fn view_served(&mut self, peer: &PeerId) {
        if let Some(l) = self.links.get_mut(peer) {
            l.served_view = true;
        }
    }

    /// The peers to disconnect now to get back to `marks.low`, when over
    /// `marks.high` (empty otherwise): prunable ones only, so possibly
    /// fewer. `mesh`: this node's gossipsub mesh.
    pub fn prune(&self, mesh: &HashSet<PeerId>, marks: Watermarks, now: Instant) -> Vec<PeerId> {
        let count = self.count();
        if count <= marks.high {
            return Vec::new();
        }
        let mut excess = count - marks.low;
        let mut out = Vec::new();
        for (peer, link) in self.prunable(mesh, now) {
            if excess == 0 {
                break;
            }
            excess = excess.saturating_sub(link.conns);
            out.push(peer);
        }
        out
    }

    /// At the hard limit: one peer to disconnect so that a dial to a new
    /// peer is not denied (None: below the limit, or nothing prunable).
    pub fn make_room(&self, mesh: &HashSet<PeerId>, marks: Watermarks, now: Instant) -> Option<PeerId> {
        if self.count() < marks.limit {
            return None;
        }
        self.prunable(mesh, now).next().map(|(p, _)| p)
    }

    /// Prunable peers, in the order they should go.
    fn prunable<'a>(&'a self, mesh: &'a HashSet<PeerId>, now: Instant) -> impl Iterator<Item = (PeerId, &'a Link)> {
        let mut v: Vec<(PeerId, &Link)> = self
            .links
            .iter()
            .filter(|(p, l)| {
                l.conns > 0
                    && l.in_flight == 0
                    && !mesh.contains(*p)
                    && (l.served_view || now.saturating_duration_since(l.since) >= GRACE)
            })
            .map(|(p, l)| (*p, l))
            .collect();
        v.sort_by_key(|(p, l)| (!l.served_view, l.last_used, *p));
        v.into_iter()
    }

    fn link(&mut self, peer: PeerId, now: Instant) -> &mut Link {
        self.links.entry(peer).or_insert(Link {
            conns: 0,
            since: now,
            last_used: now,
            in_flight: 0,
            served_view: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks() -> Watermarks {
        Watermarks::for_limit(32)
    }

    #[test]
    fn watermarks_keep_a_reserve_below_the_limit() {
        assert_eq!(
            marks(),
            Watermarks {
                low: 12,
                high: 24,
                limit: 32
            }
        );
        for limit in [1, 2, 3, 4, 8, 128] {
            let m = Watermarks::for_limit(limit);
            assert!(1 <= m.low && m.low <= m.high && m.high <= m.limit, "{limit}: {m:?}");
            assert!(limit < 2 || m.high < m.limit, "{limit}: a reserve");
        }
    }

    #[test]
    fn nothing_is_pruned_at_or_below_the_high_watermark() {
        let t0 = Instant::now();
        let mut c = Connections::new();
        for _ in 0..24 {
            c.opened(PeerId::random(), t0);
        }
        assert!(c.prune(&HashSet::new(), marks(), t0 + GRACE * 10).is_empty());
        c.opened(PeerId::random(), t0);
        assert_eq!(c.prune(&HashSet::new(), marks(), t0 + GRACE * 10).len(), 25 - 12);
    }

    #[test]
    fn mesh_busy_and_fresh_connections_are_kept() {
        let t0 = Instant::now();
        let mut c = Connections::new();
        let mut mesh = HashSet::new();
        let (mut busy, mut idle) = (vec![], vec![]);
        for i in 0..30 {
            let p = PeerId::random();
            c.opened(p, t0);
            match i % 3 {
                0 => {
                    mesh.insert(p);
                }
                1 => {
                    c.request_started(p, t0);
                    busy.push(p);
                }
                _ => idle.push(p),
            }
        }
        // Inside the grace nothing goes.
        assert!(c.prune(&mesh, marks(), t0 + GRACE / 2).is_empty());
        let later = t0 + GRACE;
        let pruned = c.prune(&mesh, marks(), later);
        assert_eq!(pruned.len(), 10, "only the 10 idle ones, though 18 are over");
        assert!(pruned.iter().all(|p| idle.contains(p)));
        // A request that ends makes its peer prunable again.
        c.request_ended(&busy[0], later);
        assert!(c.prune(&mesh, marks(), later).contains(&busy[0]));
    }

    #[test]
    fn a_joiner_sent_the_view_goes_first_even_inside_the_grace() {
        let t0 = Instant::now();
        let mut c = Connections::new();
        let old: Vec<PeerId> = (0..25).map(|_| PeerId::random()).collect();
        for p in &old {
            c.opened(*p, t0);
        }
        let joiner = PeerId::random();
        let now = t0 + GRACE * 3;
        c.opened(joiner, now);
        c.request_started(joiner, now);
        assert!(!c.prune(&HashSet::new(), marks(), now).contains(&joiner), "asking");
        c.request_ended(&joiner, now);
        c.view_served(&joiner);
        assert_eq!(c.prune(&HashSet::new(), marks(), now)[0], joiner);
    }

    #[test]
    fn the_least_recently_used_go_first() {
        let t0 = Instant::now();
        let mut c = Connections::new();
        let peers: Vec<PeerId> = (0..26).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            c.opened(*p, t0);
            c.request_started(*p, t0);
            c.request_ended(p, t0 + Duration::from_millis(i as u64));
        }
        let pruned = c.prune(&HashSet::new(), marks(), t0 + GRACE);
        assert_eq!(pruned, peers[..14].to_vec());
    }

    #[test]
    fn room_is_made_only_at_the_limit() {
        let t0 = Instant::now();
        let mut c = Connections::new();
        let mut mesh = HashSet::new();
        let peers: Vec<PeerId> = (0..32).map(|_| PeerId::random()).collect();
        for p in &peers[..31] {
            c.opened(*p, t0);
            mesh.insert(*p);
        }
        let now = t0 + GRACE;
        assert_eq!(c.make_room(&mesh, marks(), now), None, "below the limit");
        c.opened(peers[31], t0);
        assert_eq!(c.make_room(&mesh, marks(), now), Some(peers[31]));
        mesh.insert(peers[31]);
        assert_eq!(c.make_room(&mesh, marks(), now), None, "all in the mesh");
        assert_eq!(c.held_since(&peers[0]), Some(t0));
        // Closed connections are forgotten.
        for p in &peers {
            c.closed(p);
        }
        assert_eq!(c.count(), 0);
        assert_eq!(c.held_since(&peers[0]), None);
    }
}
