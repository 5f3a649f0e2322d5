//! The member view: who is in the fleet, from the announcements heard on
//! gossipsub ([`super::gossip`]).
//!
//! Every member announces itself every [`ANNOUNCE_EVERY`]. A member is
//! *live* while its last announcement is younger than [`SILENT_AFTER`]
//! ([`MISSED_ANNOUNCEMENTS`] missed announcements): that is the failure
//! bound, after which it leaves every view (a member that shuts down
//! cleanly says so and leaves at once). A member heard again rejoins. The
//! view — this node plus the live members — is what owners are chosen over
//! (`owner::owner_of`); it is independent of which peers this node happens
//! to be connected to.
//!
//! Records of silent members are kept for [`FORGET_AFTER`] so fleet stats
//! can list them as silent, then dropped: the state is O(members).
//!
//! Invariants: pure data, no I/O, no clock of its own (`now` is passed in);
//! a member's announcements are ordered by `(started_unix_ms, seq)`, so a
//! late or replayed one never overwrites a newer one; this node is never a
//! record of its own view.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use super::gossip::{Announcement, Counters};

/// How often a member announces itself.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);
/// Announcements a member may miss before it leaves the views.
pub const MISSED_ANNOUNCEMENTS: u32 = 3;
/// The failure bound: silent this long, a member leaves every view.
pub const SILENT_AFTER: Duration = Duration::from_secs(ANNOUNCE_EVERY.as_secs() * MISSED_ANNOUNCEMENTS as u64);
/// Records of silent members are forgotten after this.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);
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
    /// Order of its announcements: (start of its run, sequence number).
    pub order: (u64, u64),
    /// When its last announcement arrived.
    pub heard: Instant,
    /// An ask to it failed since: out of the view until it announces again.
    pub suspected: bool,
    /// It said it is still joining: a member, not yet an owner.
    pub joining: bool,
}

impl Member {
    /// Heard from within the failure bound, and not suspected since.
    pub fn live(&self, now: Instant) -> bool {
        !self.suspected && now.saturating_duration_since(self.heard) < SILENT_AFTER
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

    /// Drops the records silent for longer than [`FORGET_AFTER`].
    pub fn forget_old(&mut self, now: Instant) {
        self.members
            .retain(|_, m| now.saturating_duration_since(m.heard) < FORGET_AFTER);
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
            counters: Counters::default(),
            leaving,
            joining: false,
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
}
