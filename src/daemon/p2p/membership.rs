//! The member view: who is in the fleet, from the announcements heard on
//! gossipsub ([`super::gossip`]).
//!
//! # Announcements, at a rate bounded fleet-wide
//! Every member announces itself (addresses, counters, epoch) every
//! [`announce_every`]`(n)`: [`ANNOUNCE_EVERY`] in a fleet of up to
//! [`FLEET_ANNOUNCEMENTS_PER_S`] × 2 s members, longer in a larger one, so
//! the whole fleet publishes at most [`FLEET_ANNOUNCEMENTS_PER_S`]
//! announcements a second whatever its size: each member receives a number
//! of messages a second that does not grow with N (gossipsub delivers each
//! one to a member once per mesh neighbour that forwards it, ~6).
//!
//! # Failure detection, in two bounds
//! - **Gone (fast, the usual case)**: a member's neighbours (the peers
//!   connected to it: every member keeps about 6) see its connection drop
//!   (or a ping fail); each redials it, and when the redial is refused (a
//!   dead process) publishes that it is gone ([`super::gossip::Gone`],
//!   naming the last announcement it heard). Every member takes it out of
//!   its view at once ([`Membership::gone`]). Bound: the kernel's close,
//!   one redial, one gossip crossing; well under a second on one machine.
//!   A redial that times out or is reset in its handshake (a member at its
//!   connection limit) proves nothing. A member that hears itself called
//!   gone announces at once: its newer announcement puts it back in every
//!   view (a false alarm costs one flap, never a member lost for good).
//! - **Silent (the fallback)**: a member is *live* while its last
//!   announcement is younger than [`MISSED_ANNOUNCEMENTS`] of its own
//!   periods (it states its period in each announcement; [`SILENT_AFTER`]
//!   at the base period). This catches what no refused redial shows: a
//!   frozen process (its sockets stay open), a host gone without a reset,
//!   a member whose every neighbour died with it.
//!
//! A member that shuts down cleanly says so and leaves at once. A member
//! heard again rejoins.
//!
//! # A joining node's view
//! A new node asks its first peers for their member view
//! ([`Membership::learned`]): with announcements spaced out it would
//! otherwise need a whole period to hear everyone. Its neighbours also
//! announce at once when it subscribes (so it hears their epochs).
//!
//! The view — this node plus the live members — is what owners are chosen
//! over (`owner::owner_of`); it is independent of which peers this node
//! happens to be connected to. Records of silent members are kept for
//! [`FORGET_AFTER`] so fleet stats can list them as silent, then dropped:
//! the state is O(members).
//!
//! Invariants: pure data, no I/O, no clock of its own (`now` is passed in);
//! a member's announcements are ordered by `(started_unix_ms, seq)`, so a
//! late or replayed one never overwrites a newer one, and a "gone" naming
//! an older announcement than the newest heard is ignored; a record learned
//! from a peer's view has the lowest order, so any announcement of the
//! member overrides it; this node is never a record of its own view.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use super::gossip::{Announcement, Counters};

/// How often a member announces itself in a fleet of up to
/// 2 × [`FLEET_ANNOUNCEMENTS_PER_S`] members (the shortest period).
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);
/// The most announcements the whole fleet publishes per second: larger
/// fleets announce less often ([`announce_every`]).
pub const FLEET_ANNOUNCEMENTS_PER_S: u32 = 4;
/// Announcements a member may miss before it leaves the views.
pub const MISSED_ANNOUNCEMENTS: u32 = 3;
/// The silence bound at the shortest period: silent this long, a member
/// of a fleet of up to 2 × [`FLEET_ANNOUNCEMENTS_PER_S`] leaves every view
/// (in larger fleets, [`MISSED_ANNOUNCEMENTS`] of its own period).
pub const SILENT_AFTER: Duration = Duration::from_secs(ANNOUNCE_EVERY.as_secs() * MISSED_ANNOUNCEMENTS as u64);
/// Records of silent members are forgotten after this (at least; a
/// member's record lives at least twice its silence bound).
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// The announcement period of a member whose view holds `members`
/// (itself included): [`ANNOUNCE_EVERY`], or `members /`
/// [`FLEET_ANNOUNCEMENTS_PER_S`] seconds when that is longer, so the
/// fleet-wide rate stays at most [`FLEET_ANNOUNCEMENTS_PER_S`].
pub fn announce_every(members: usize) -> Duration {
    let spread = Duration::from_millis(members as u64 * 1000 / FLEET_ANNOUNCEMENTS_PER_S as u64);
    spread.max(ANNOUNCE_EVERY)
}
/// A joining node's view is *settled* this long after its first
/// connection: every member has announced once since (and its neighbours
/// announce at once when it subscribes). Until then it asks no owner and
/// owns no key by default: its reads wait (see `Client::settled`), so a
/// node that has heard no one yet does not fetch every key itself.
pub const SETTLE_AFTER_CONNECT: Duration = Duration::from_millis(ANNOUNCE_EVERY.as_millis() as u64 + 500);
/// The longest a node stays unsettled after it starts (a bootstrap that
/// cannot be reached): then it settles with the view it has.
pub const SETTLE_MAX: Duration = Duration::from_secs(5);

/// What this node knows of one member.
#[derive(Clone, Debug)]
pub struct Member {
    /// Where it can be dialled.
    pub addrs: Vec<Multiaddr>,
    /// Its counters when it last announced.
    pub counters: Counters,
    /// Its invalidation epoch when it last announced.
    pub epoch: u64,
    /// Order of its announcements: (start of its run, sequence number);
    /// (0, 0) for a record learned from a peer's view.
    pub order: (u64, u64),
    /// Its announcement period, as it stated it.
    pub every: Duration,
    /// When its last announcement arrived.
    pub heard: Instant,
    /// An ask to it failed, or a neighbour found it gone, since: out of
    /// the view until it announces again.
    pub suspected: bool,
    /// It said it is still joining: a member, not yet an owner.
    pub joining: bool,
}

impl Member {
    /// Heard from within its silence bound, and not suspected since.
    pub fn live(&self, now: Instant) -> bool {
        !self.suspected && now.saturating_duration_since(self.heard) < self.silent_after()
    }

    /// Its silence bound: [`MISSED_ANNOUNCEMENTS`] of its periods.
    pub fn silent_after(&self) -> Duration {
        self.every.max(ANNOUNCE_EVERY) * MISSED_ANNOUNCEMENTS
    }
}

/// What an announcement did to the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// A member not live before is live now (new, or back).
    Joined,
    /// A live member announced again.
    Refreshed,
    /// Older than what is known (reordered or replayed): ignored.
    Stale,
    /// It said it is leaving: removed.
    Left,
}

/// The records behind the view.
#[derive(Debug, Default)]
pub struct Membership {
    members: HashMap<PeerId, Member>,
}

impl Membership {
    /// No members yet.
    pub fn new() -> Membership {
        Membership::default()
    }

    /// Takes in `from`'s announcement (never call it with this node's own).
    pub fn heard(&mut self, from: PeerId, a: &Announcement, addrs: Vec<Multiaddr>, now: Instant) -> Heard {
        let order = (a.started_unix_ms, a.seq);
        let was_live = match self.members.get(&from) {
            Some(m) if order <= m.order => return Heard::Stale,
            Some(m) => m.live(now),
            None => false,
        };
        if a.leaving {
            self.members.remove(&from);
            return Heard::Left;
        }
        self.members.insert(
            from,
            Member {
                addrs,
                counters: a.counters.clone(),
                epoch: a.epoch,
                order,
                every: Duration::from_millis(a.every_ms),
                heard: now,
                suspected: false,
                joining: a.joining,
            },
        );
        if was_live {
            Heard::Refreshed
        } else {
            Heard::Joined
        }
    }

    /// An ask to `peer` failed (it died, or cannot be reached from here):
    /// out of this view until its next announcement, so keys it owns go to
    /// the next owner at once instead of to GitHub until the failure bound.
    /// Members that fail to reach it all move its keys to the same next
    /// owner (rendezvous hashing). True when it was live.
    pub fn suspect(&mut self, peer: &PeerId, now: Instant) -> bool {
        match self.members.get_mut(peer) {
            Some(m) if m.live(now) => {
                m.suspected = true;
                true
            }
            _ => false,
        }
    }

    /// A neighbour found `peer` gone; `last` is the order of the newest
    /// announcement of it the neighbour had heard. Out of this view until
    /// it announces again, unless this node has heard a newer announcement
    /// (the member is back, or refuted it). True when it was live.
    pub fn gone(&mut self, peer: &PeerId, last: (u64, u64), now: Instant) -> bool {
        match self.members.get(peer) {
            Some(m) if m.order <= last => self.suspect(peer, now),
            _ => false,
        }
    }

    /// `peer` is a member in a peer's view (this node joins and asks):
    /// recorded as heard now, with the lowest order and the period
    /// `every`, unless known already. True when it was new.
    pub fn learned(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, every: Duration, now: Instant) -> bool {
        if self.members.contains_key(&peer) {
            return false;
        }
        self.members.insert(
            peer,
            Member {
                addrs,
                counters: Counters::default(),
                epoch: 0,
                order: (0, 0),
                every,
                heard: now,
                suspected: false,
                joining: false,
            },
        );
        true
    }

    /// The live members (this node excluded), sorted by Peer ID.
    pub fn live(&self, now: Instant) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(_, m)| m.live(now))
            .map(|(p, _)| *p)
            .collect();
        v.sort();
        v
    }

    /// The live members that own keys (not joining), sorted: the
    /// candidates of `owner::owner_of`.
    pub fn owners(&self, now: Instant) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(_, m)| m.live(now) && !m.joining)
            .map(|(p, _)| *p)
            .collect();
        v.sort();
        v
    }

    /// One member's record.
    pub fn get(&self, peer: &PeerId) -> Option<&Member> {
        self.members.get(peer)
    }

    /// Every record, live or silent.
    pub fn records(&self) -> impl Iterator<Item = (&PeerId, &Member)> {
        self.members.iter()
    }

    /// Drops the records silent for longer than [`FORGET_AFTER`] (or
    /// twice their silence bound, when that is longer).
    pub fn forget_old(&mut self, now: Instant) {
        self.members
            .retain(|_, m| now.saturating_duration_since(m.heard) < FORGET_AFTER.max(m.silent_after() * 2));
    }

    /// The highest epoch a live member announced.
    pub fn max_live_epoch(&self, now: Instant) -> u64 {
        self.members
            .values()
            .filter(|m| m.live(now))
            .map(|m| m.epoch)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(started: u64, seq: u64, leaving: bool) -> Announcement {
        Announcement {
            addrs: vec![],
            started_unix_ms: started,
            seq,
            epoch: seq,
            epoch_ids: vec![],
            counters: Counters::default(),
            leaving,
            joining: false,
            every_ms: ANNOUNCE_EVERY.as_millis() as u64,
        }
    }

    #[test]
    fn silent_members_leave_within_the_bound_and_rejoin() {
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut m = Membership::new();
        assert_eq!(m.heard(a, &ann(1, 0, false), vec![], t0), Heard::Joined);
        assert_eq!(m.heard(b, &ann(1, 0, false), vec![], t0), Heard::Joined);
        let mut both = vec![a, b];
        both.sort();
        assert_eq!(m.live(t0), both);
        // a keeps announcing, b falls silent.
        let mut t = t0;
        for seq in 1..=MISSED_ANNOUNCEMENTS as u64 {
            t += ANNOUNCE_EVERY;
            assert_eq!(m.heard(a, &ann(1, seq, false), vec![], t), Heard::Refreshed);
        }
        assert_eq!(m.live(t), vec![a], "b silent for {SILENT_AFTER:?} is out");
        assert!(m.live(t - Duration::from_millis(1)).contains(&b), "not before");
        // b comes back (restarted: a later run, seq from 0).
        assert_eq!(m.heard(b, &ann(2, 0, false), vec![], t), Heard::Joined);
        assert_eq!(m.live(t), both);
        assert_eq!(m.max_live_epoch(t), MISSED_ANNOUNCEMENTS as u64);
        // Old announcements never overwrite newer ones.
        assert_eq!(m.heard(a, &ann(1, 1, false), vec![], t), Heard::Stale);
        assert_eq!(m.heard(b, &ann(1, 99, false), vec![], t), Heard::Stale);
        // A member that says it leaves is gone at once.
        assert_eq!(m.heard(a, &ann(1, 50, true), vec![], t), Heard::Left);
        assert_eq!(m.live(t), vec![b]);
        // Silent records are kept (for stats) until FORGET_AFTER.
        let later = t + SILENT_AFTER;
        assert!(m.live(later).is_empty());
        m.forget_old(later);
        assert!(m.get(&b).is_some());
        m.forget_old(t + FORGET_AFTER);
        assert!(m.get(&b).is_none());
    }

    #[test]
    fn a_suspected_member_is_out_until_it_announces_again() {
        let t0 = Instant::now();
        let a = PeerId::random();
        let mut m = Membership::new();
        m.heard(a, &ann(1, 0, false), vec![], t0);
        assert!(m.suspect(&a, t0));
        assert!(m.live(t0).is_empty());
        assert!(!m.suspect(&a, t0), "once");
        assert_eq!(
            m.heard(a, &ann(1, 0, false), vec![], t0),
            Heard::Stale,
            "not the same announcement"
        );
        assert!(m.live(t0).is_empty());
        assert_eq!(m.heard(a, &ann(1, 1, false), vec![], t0), Heard::Joined);
        assert_eq!(m.live(t0), vec![a]);
    }

    #[test]
    fn a_joining_member_is_a_member_but_no_owner() {
        let t0 = Instant::now();
        let a = PeerId::random();
        let mut m = Membership::new();
        let mut joining = ann(1, 0, false);
        joining.joining = true;
        m.heard(a, &joining, vec![], t0);
        assert_eq!((m.live(t0), m.owners(t0)), (vec![a], vec![]));
        m.heard(a, &ann(1, 1, false), vec![], t0);
        assert_eq!(m.owners(t0), vec![a]);
    }

    #[test]
    fn the_failure_bound_is_the_missed_announcements() {
        assert_eq!(SILENT_AFTER, ANNOUNCE_EVERY * MISSED_ANNOUNCEMENTS);
    }

    #[test]
    fn the_fleet_wide_announcement_rate_is_bounded() {
        for n in [1, 2, 10, 20, 21, 30, 100, 300, 1000, 10_000] {
            let every = announce_every(n);
            assert!(every >= ANNOUNCE_EVERY, "{n}: {every:?}");
            let fleet_rate = n as f64 / every.as_secs_f64();
            assert!(
                fleet_rate <= FLEET_ANNOUNCEMENTS_PER_S as f64 + 1e-9,
                "{n}: {fleet_rate}/s"
            );
        }
        assert_eq!(announce_every(8), ANNOUNCE_EVERY, "small fleets keep the base period");
        assert_eq!(announce_every(300), Duration::from_secs(75));
    }

    #[test]
    fn a_member_is_silent_after_missing_its_own_periods() {
        let t0 = Instant::now();
        let a = PeerId::random();
        let mut m = Membership::new();
        let mut slow = ann(1, 0, false);
        slow.every_ms = 30_000;
        // (the bound follows the member's own period, not this node's)
        m.heard(a, &slow, vec![], t0);
        assert_eq!(m.live(t0 + Duration::from_secs(89)), vec![a]);
        assert!(m.live(t0 + Duration::from_secs(90)).is_empty());
        m.forget_old(t0 + Duration::from_secs(179));
        assert!(m.get(&a).is_some(), "kept past FORGET_AFTER: twice its bound");
    }

    #[test]
    fn a_member_found_gone_is_out_until_it_announces_again() {
        let t0 = Instant::now();
        let a = PeerId::random();
        let mut m = Membership::new();
        m.heard(a, &ann(1, 5, false), vec![], t0);
        assert!(!m.gone(&a, (1, 4), t0), "names an older announcement: ignored");
        assert_eq!(m.live(t0), vec![a]);
        assert!(m.gone(&a, (1, 5), t0));
        assert!(m.live(t0).is_empty());
        // Its refutation (or its next run) puts it back.
        assert_eq!(m.heard(a, &ann(1, 6, false), vec![], t0), Heard::Joined);
        assert_eq!(m.live(t0), vec![a]);
        assert!(!m.gone(&PeerId::random(), (9, 9), t0), "unknown: nothing");
    }

    #[test]
    fn a_learned_member_is_live_and_any_announcement_overrides_it() {
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut m = Membership::new();
        m.heard(a, &ann(1, 3, false), vec![], t0);
        assert!(!m.learned(a, vec![], ANNOUNCE_EVERY, t0), "known: kept as heard");
        assert_eq!(m.get(&a).map(|r| r.order), Some((1, 3)));
        assert!(m.learned(b, vec![], Duration::from_secs(30), t0));
        assert_eq!(m.owners(t0).len(), 2);
        assert!(m.live(t0 + Duration::from_secs(89)).contains(&b), "its period's bound");
        assert_eq!(m.heard(b, &ann(1, 0, false), vec![], t0), Heard::Refreshed);
    }
}
