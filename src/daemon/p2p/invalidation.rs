//! Fleet-wide invalidation: epochs, acknowledgements, catching up.
//!
//! An invalidation (`tools::Invalidate`) is applied locally first
//! (`App::invalidate`), then published on the fleet topic with a random id
//! and an *epoch*: the origin's epoch plus one. Every member applies it
//! through `App::invalidate`, raises its epoch to at least the message's,
//! persists the epoch with its store, and publishes an ack. The origin
//! waits (bounded by the caller) for acks from the members live when it
//! published, and reports who applied it and who did not answer.
//!
//! Epochs are Lamport clocks: each member's epoch is the highest it has
//! applied, and announcements carry it. A member that hears a live member
//! announce a higher epoch than its own missed something (it was
//! partitioned, or restarted from a store that predates the invalidation):
//! if the gap is still there after [`CATCH_UP_GRACE`] (the invalidation
//! itself may be on its way), it clears its whole cache and store and takes
//! the higher epoch. Clearing is conservative: it drops more than it
//! missed, never less.
//!
//! What this does not catch: two invalidations published concurrently with
//! the same epoch, one of which a member missed while receiving the other
//! (its epoch then matches the fleet's). Gossipsub's own gossip (IHAVE /
//! IWANT over its message cache) repairs a message lost to a connected
//! member; a member cut off for longer is caught by the epoch gap.
//!
//! Invariants: pure state, no I/O, `now` passed in; an epoch never goes
//! down; an invalidation id is applied at most once per node (remembered
//! for the last [`REMEMBERED_IDS`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::watch;

/// How long a gap between this node's epoch and a live member's may last
/// before this node clears (the missing invalidation may be in flight).
pub const CATCH_UP_GRACE: Duration = Duration::from_secs(1);
/// How long the tool waits for acks by default.
pub const ACK_WAIT: Duration = Duration::from_secs(2);
/// How long the origin keeps counting acks of one invalidation.
pub const PENDING_FOR: Duration = Duration::from_secs(10);
/// Invalidation ids remembered, to apply each once.
pub const REMEMBERED_IDS: usize = 4096;

/// Acks of one invalidation, as the origin sees them.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// The members (this node excluded) live when it was published.
    pub expected: Vec<PeerId>,
    /// Those that acked so far.
    pub acked: HashSet<PeerId>,
}

impl Progress {
    /// Every expected member acked.
    pub fn complete(&self) -> bool {
        self.expected.iter().all(|p| self.acked.contains(p))
    }

    /// The expected members that did not ack.
    pub fn missing(&self) -> Vec<PeerId> {
        self.expected
            .iter()
            .filter(|p| !self.acked.contains(p))
            .copied()
            .collect()
    }
}

struct Pending {
    progress: watch::Sender<Progress>,
    since: Instant,
}

/// This node's epoch, the gap it may be behind by, the invalidations it
/// published and awaits acks for, and the ids it has applied.
pub struct Epochs {
    current: u64,
    behind: Option<(u64, Instant)>,
    pending: HashMap<u64, Pending>,
    seen: HashSet<(PeerId, u64)>,
    seen_order: VecDeque<(PeerId, u64)>,
}

impl Epochs {
    /// Starts at `epoch` (from the store).
    pub fn new(epoch: u64) -> Epochs {
        Epochs {
            current: epoch,
            behind: None,
            pending: HashMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
        }
    }

    /// The epoch applied.
    pub fn current(&self) -> u64 {
        self.current
    }

    /// A local invalidation (already applied): its epoch, and the
    /// progress its acks will be counted in.
    pub fn publish(&mut self, id: u64, expected: Vec<PeerId>, now: Instant) -> (u64, watch::Receiver<Progress>) {
        self.current += 1;
        let (tx, rx) = watch::channel(Progress {
            expected,
            acked: HashSet::new(),
        });
        self.pending.insert(
            id,
            Pending {
                progress: tx,
                since: now,
            },
        );
        self.settle();
        (self.current, rx)
    }

    /// True the first time `(origin, id)` is seen: apply it then.
    pub fn first_time(&mut self, origin: PeerId, id: u64) -> bool {
        if !self.seen.insert((origin, id)) {
            return false;
        }
        self.seen_order.push_back((origin, id));
        if self.seen_order.len() > REMEMBERED_IDS {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// An invalidation of epoch `epoch` (or a catch-up to it) was applied.
    pub fn applied(&mut self, epoch: u64) {
        self.current = self.current.max(epoch);
        self.settle();
    }

    /// `from` acked invalidation `id` of this node.
    pub fn acked(&mut self, id: u64, from: PeerId) {
        if let Some(p) = self.pending.get(&id) {
            p.progress.send_modify(|p| {
                p.acked.insert(from);
            });
        }
    }

    /// A live member announced `epoch`.
    pub fn heard_epoch(&mut self, epoch: u64, now: Instant) {
        if epoch > self.current {
            self.behind = Some(match self.behind {
                Some((target, since)) => (target.max(epoch), since),
                None => (epoch, now),
            });
        }
    }

    /// A live member announced a higher epoch than this node's, and this
    /// node has not caught up yet.
    pub fn behind(&self) -> bool {
        self.behind.is_some_and(|(target, _)| target > self.current)
    }

    /// The epoch to catch up to by clearing, once a gap has lasted
    /// [`CATCH_UP_GRACE`]. The caller clears, then calls [`Epochs::applied`].
    pub fn catch_up_due(&self, now: Instant) -> Option<u64> {
        match self.behind {
            Some((target, since))
                if target > self.current && now.saturating_duration_since(since) >= CATCH_UP_GRACE =>
            {
                Some(target)
            }
            _ => None,
        }
    }

    /// Forgets the invalidations published longer ago than
    /// [`PENDING_FOR`] (their waiters see the channel close).
    pub fn expire(&mut self, now: Instant) {
        self.pending
            .retain(|_, p| now.saturating_duration_since(p.since) < PENDING_FOR);
    }

    fn settle(&mut self) {
        if self.behind.is_some_and(|(target, _)| target <= self.current) {
            self.behind = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_complete_the_progress_and_name_the_missing() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut e = Epochs::new(3);
        let (epoch, rx) = e.publish(42, vec![a, b], Instant::now());
        assert_eq!(epoch, 4);
        e.acked(42, a);
        e.acked(7, b); // another id: not counted
        assert!(!rx.borrow().complete());
        assert_eq!(rx.borrow().missing(), vec![b]);
        e.acked(42, b);
        assert!(rx.borrow().complete());
        e.expire(Instant::now() + PENDING_FOR);
        assert!(rx.has_changed().is_err(), "closed once expired");
    }

    #[test]
    fn a_gap_that_lasts_the_grace_asks_for_a_catch_up() {
        let t0 = Instant::now();
        let mut e = Epochs::new(2);
        e.heard_epoch(2, t0);
        assert_eq!(e.catch_up_due(t0 + CATCH_UP_GRACE), None, "not behind");
        e.heard_epoch(5, t0);
        assert_eq!(e.catch_up_due(t0), None, "within the grace");
        e.heard_epoch(6, t0 + Duration::from_millis(500));
        assert_eq!(e.catch_up_due(t0 + CATCH_UP_GRACE), Some(6));
        e.applied(6);
        assert_eq!((e.current(), e.catch_up_due(t0 + CATCH_UP_GRACE)), (6, None));
        // The missing invalidation arrives within the grace: no catch-up.
        e.heard_epoch(7, t0);
        e.applied(7);
        assert_eq!(e.catch_up_due(t0 + CATCH_UP_GRACE), None);
        // Epochs never go down.
        e.applied(1);
        assert_eq!(e.current(), 7);
    }

    #[test]
    fn each_invalidation_applies_once() {
        let p = PeerId::random();
        let mut e = Epochs::new(0);
        assert!(e.first_time(p, 1));
        assert!(!e.first_time(p, 1));
        assert!(e.first_time(PeerId::random(), 1));
        for i in 2..(REMEMBERED_IDS as u64 + 3) {
            assert!(e.first_time(p, i));
        }
        assert!(e.first_time(p, 1), "forgotten after REMEMBERED_IDS");
    }
}
