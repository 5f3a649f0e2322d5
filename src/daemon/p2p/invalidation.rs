//! Fleet-wide invalidation: epochs, acknowledgements, catching up.
//!
//! An invalidation (`tools::Invalidate`) is applied locally first
//! (`App::invalidate`), then published on the fleet topic with a random id
//! and an *epoch*: the origin's epoch plus one. Every member applies it
//! through `App::invalidate`, raises its epoch to at least the message's,
//! persists the epoch with its store, and acks it to the origin (directly,
//! see `super::acks`; on gossipsub when that fails). The origin
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
//! Two invalidations published concurrently (neither origin had seen the
//! other's) carry the same epoch, so the epoch alone cannot tell a member
//! that applied one of them from a member that applied both. Members
//! therefore also announce the ids they applied at their epoch (at most
//! [`ANNOUNCED_IDS`]); a member that hears its own epoch with an id it has
//! not applied is behind just the same, and catches up the same way (after
//! the grace, by clearing), taking those ids as applied. A node started
//! from its store knows its epoch but not the ids it applied at it (the
//! store keeps the epoch only): until it applies or catches up to a newer
//! one, it is judged by the epoch alone.
//!
//! Invariants: pure state, no I/O, `now` passed in; an epoch never goes
//! down; an invalidation id is applied at most once per node (remembered
//! for the last [`REMEMBERED_IDS`]); this node is behind exactly when a
//! live member announced a higher epoch, or its epoch with an id this node
//! has not applied, and it has not applied or caught up to that since.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
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
/// Ids applied at its epoch that a member announces, at most (the
/// smallest; concurrent publications at one epoch are few).
pub const ANNOUNCED_IDS: usize = 16;

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

/// What a live member announced that this node has not applied: an epoch
/// and the ids at it this node lacks, first heard at `since`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Behind {
    epoch: u64,
    ids: BTreeSet<u64>,
    since: Instant,
}

/// This node's epoch, the gap it may be behind by, the invalidations it
/// published and awaits acks for, and the ids it has applied.
pub struct Epochs {
    current: u64,
    /// The ids applied at `current`; `None` when unknown (started from a
    /// store, which keeps the epoch only).
    ids_at_current: Option<BTreeSet<u64>>,
    behind: Option<Behind>,
    pending: HashMap<u64, Pending>,
    seen: HashSet<(PeerId, u64)>,
    seen_order: VecDeque<(PeerId, u64)>,
}

impl Epochs {
    /// Starts at `epoch` (from the store).
    pub fn new(epoch: u64) -> Epochs {
        Epochs {
            current: epoch,
            ids_at_current: (epoch == 0).then(BTreeSet::new),
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

    /// The ids applied at the current epoch that announcements carry (at
    /// most [`ANNOUNCED_IDS`], the smallest; none when unknown).
    pub fn announced_ids(&self) -> Vec<u64> {
        self.ids_at_current
            .iter()
            .flatten()
            .take(ANNOUNCED_IDS)
            .copied()
            .collect()
    }

    /// A local invalidation (already applied): its epoch, and the
    /// progress its acks will be counted in.
    pub fn publish(&mut self, id: u64, expected: Vec<PeerId>, now: Instant) -> (u64, watch::Receiver<Progress>) {
        self.current += 1;
        self.ids_at_current = Some(BTreeSet::from([id]));
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

    /// Invalidation `id` of epoch `epoch` was applied.
    pub fn applied(&mut self, epoch: u64, id: u64) {
        self.take(epoch, [id]);
    }

    /// This node caught up (cleared) to `epoch`, whose invalidations `ids`
    /// it had heard of.
    pub fn caught_up(&mut self, epoch: u64, ids: &[u64]) {
        if epoch == self.current && self.ids_at_current.is_none() {
            self.ids_at_current = Some(BTreeSet::new());
        }
        self.take(epoch, ids.iter().copied());
    }

    fn take(&mut self, epoch: u64, ids: impl IntoIterator<Item = u64>) {
        if epoch > self.current {
            self.current = epoch;
            self.ids_at_current = Some(ids.into_iter().collect());
        } else if epoch == self.current {
            if let Some(mine) = &mut self.ids_at_current {
                mine.extend(ids);
            }
        }
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

    /// A live member announced `epoch`, having applied `ids` at it.
    pub fn heard_epoch(&mut self, epoch: u64, ids: &[u64], now: Instant) {
        let lacking: BTreeSet<u64> = match (epoch.cmp(&self.current), &self.ids_at_current) {
            (std::cmp::Ordering::Less, _) | (std::cmp::Ordering::Equal, None) => return,
            (std::cmp::Ordering::Greater, _) => ids.iter().copied().collect(),
            (std::cmp::Ordering::Equal, Some(mine)) => ids.iter().filter(|id| !mine.contains(id)).copied().collect(),
        };
        if epoch == self.current && lacking.is_empty() {
            return;
        }
        match &mut self.behind {
            Some(b) if b.epoch == epoch => b.ids.extend(lacking),
            Some(b) if b.epoch > epoch => {}
            _ => {
                let since = self.behind.as_ref().map_or(now, |b| b.since);
                self.behind = Some(Behind {
                    epoch,
                    ids: lacking,
                    since,
                });
            }
        }
    }

    /// A live member announced what this node has not applied, and it has
    /// not caught up yet.
    pub fn behind(&self) -> bool {
        self.behind.is_some()
    }

    /// The epoch to catch up to by clearing, and the ids to take as
    /// applied at it, once a gap has lasted [`CATCH_UP_GRACE`]. The caller
    /// clears, then calls [`Epochs::caught_up`].
    pub fn catch_up_due(&self, now: Instant) -> Option<(u64, Vec<u64>)> {
        match &self.behind {
            Some(b) if now.saturating_duration_since(b.since) >= CATCH_UP_GRACE => {
                Some((b.epoch, b.ids.iter().copied().collect()))
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

    /// Forgets the gap once what it named has been applied.
    fn settle(&mut self) {
        let done = |b: &Behind| {
            b.epoch < self.current
                || (b.epoch == self.current && self.ids_at_current.as_ref().is_some_and(|mine| b.ids.is_subset(mine)))
        };
        if self.behind.as_ref().is_some_and(done) {
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
        e.heard_epoch(2, &[], t0);
        assert_eq!(e.catch_up_due(t0 + CATCH_UP_GRACE), None, "not behind");
        e.heard_epoch(5, &[50], t0);
        assert_eq!(e.catch_up_due(t0), None, "within the grace");
        e.heard_epoch(6, &[60], t0 + Duration::from_millis(500));
        assert_eq!(e.catch_up_due(t0 + CATCH_UP_GRACE), Some((6, vec![60])));
        e.caught_up(6, &[60]);
        assert_eq!((e.current(), e.catch_up_due(t0 + CATCH_UP_GRACE)), (6, None));
        assert!(!e.behind());
        // The missing invalidation arrives within the grace: no catch-up.
        e.heard_epoch(7, &[70], t0);
        e.applied(7, 70);
        assert_eq!(e.catch_up_due(t0 + CATCH_UP_GRACE), None);
        // Epochs never go down.
        e.applied(1, 10);
        assert_eq!(e.current(), 7);
    }

    /// Two invalidations published concurrently share an epoch: a member
    /// that applied one of them hears the other's id at its own epoch.
    #[test]
    fn a_missed_invalidation_of_the_same_epoch_is_a_gap_too() {
        let t0 = Instant::now();
        let late = t0 + CATCH_UP_GRACE;
        let mut e = Epochs::new(0);
        e.applied(5, 51);
        assert_eq!(e.announced_ids(), vec![51]);
        e.heard_epoch(5, &[51], t0);
        assert!(!e.behind(), "the same ids");
        e.heard_epoch(5, &[51, 52], t0);
        assert!(e.behind());
        assert_eq!(e.catch_up_due(late), Some((5, vec![52])));
        // Arriving within the grace settles it.
        e.applied(5, 52);
        assert!(!e.behind());
        assert_eq!(e.announced_ids(), vec![51, 52]);
        // Missed for good: caught up, the ids are taken as applied.
        e.heard_epoch(5, &[53], t0);
        let (epoch, ids) = e.catch_up_due(late).unwrap();
        e.caught_up(epoch, &ids);
        assert!(!e.behind());
        e.heard_epoch(5, &[51, 52, 53], t0);
        assert!(!e.behind(), "nothing lacking after the catch-up");
        // A higher epoch replaces the ids.
        e.applied(6, 61);
        assert_eq!(e.announced_ids(), vec![61]);
    }

    /// Started from a store, a node knows its epoch, not the ids at it: it
    /// is judged by the epoch alone until it moves on.
    #[test]
    fn from_a_store_the_ids_at_its_epoch_are_unknown() {
        let t0 = Instant::now();
        let mut e = Epochs::new(4);
        assert!(e.announced_ids().is_empty());
        e.heard_epoch(4, &[41, 42], t0);
        assert!(!e.behind(), "no clear at every restart");
        e.heard_epoch(5, &[51], t0);
        assert_eq!(e.catch_up_due(t0 + CATCH_UP_GRACE), Some((5, vec![51])));
        e.caught_up(5, &[51]);
        e.heard_epoch(5, &[51, 52], t0);
        assert!(e.behind(), "known from now on");
        // Caught up at its own unknown epoch, it knows the ids after.
        let mut e = Epochs::new(4);
        e.caught_up(4, &[41]);
        assert_eq!(e.announced_ids(), vec![41]);
        // At most ANNOUNCED_IDS are announced.
        let mut e = Epochs::new(0);
        for id in 0..(ANNOUNCED_IDS as u64 + 5) {
            e.applied(1, id);
        }
        assert_eq!(e.announced_ids().len(), ANNOUNCED_IDS);
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
