//! The simulated fleet: every node's event loop, as `event_loop.rs` runs it,
//! over the real [`Membership`] and the modelled [`Overlay`], driven by one
//! queue of timed events.
//!
//! What each node does, and where in `event_loop.rs` it comes from:
//! - **Start**: its first announcement goes nowhere (no peer yet), as the
//!   real first tick's does; upkeep runs every [`UPKEEP_TICKS`] ticks,
//!   gossipsub's heartbeat every second after [`HEARTBEAT_DELAY_US`].
//! - **Upkeep** (`EventLoop::upkeep`): fewer than [`TARGET_DEGREE`]
//!   connections (or no member), dial the bootstrap seeds (backoff 1 s
//!   doubling to 60 s); fewer than [`TARGET_DEGREE`], dial random live
//!   members of its view. Connections outside the mesh close after
//!   `Limits::idle_timeout` without a request (gossipsub keeps only mesh
//!   connections alive).
//! - **Connection established**: both ends see the other's subscription
//!   (`Subscribed`: announce at the next tick; gossipsub grafts when its
//!   mesh is short), and an end still joining asks the other for its view
//!   (`Members`, at most [`VIEW_ASKS`] at a time).
//! - **Announcements** (`EventLoop::on_tick`): due every
//!   [`announce_every`]`(view + 1)` on the node's 250 ms tick grid, or at
//!   the next tick after a subscription; the period is recomputed when one
//!   is due, not at every tick (a view that shrinks brings the real
//!   node's next announcement forward, here not before the one already
//!   due).
//! - **Settling**: [`SETTLE_AFTER_CONNECT`] after the first connection (or
//!   at [`SETTLE_MAX`]), announce "no longer joining" and ask a connected
//!   peer for its view once more.
//! - **Death** (SIGKILL: the kernel resets its connections): each
//!   neighbour sees the connection drop one latency later, redials it
//!   (a probe) and is refused one round trip later; the first to be
//!   refused while the member is still live in its view publishes "gone"
//!   (`EventLoop::found_gone`).
//! - **Gossip received** (`EventLoop::on_gossip`): announcements go to
//!   [`Membership::heard`], "gone" to [`Membership::gone`] (or, naming
//!   this node, an announcement at the next tick).
//!
//! Simplifications, besides those of [`super::overlay`]: a message's
//! effects are applied when it is published, each node's with its own
//! arrival time as `now` (so in event order a node may act on a message
//! up to one spread, tens of ms, early); a view answer is the answering
//! node's view when the answer arrives (one latency late); a dial takes
//! two round trips (TCP, pnet, noise, yamux), a refused one one round trip;
//! the connection limit is checked on both ends when a dial completes;
//! invalidation epochs, acks, counters, asks for entries and the
//! `forget_old` sweep's exact period are not modelled.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::super::event_loop::{ELIGIBLE_AFTER, TARGET_DEGREE, TICK, UPKEEP_TICKS, VIEW_ASKS};
use super::super::gossip::{Announcement, Counters};
use super::super::lifecycle::MESH_LOW;
use super::super::membership::{announce_every, Membership, SETTLE_AFTER_CONNECT, SETTLE_MAX};
use super::super::wire::MAX_MEMBERS;
use super::super::Limits;
use super::overlay::Overlay;
use super::{Rng, Settings, WhatIf};

/// gossipsub's default `heartbeat_initial_delay`.
pub const HEARTBEAT_DELAY_US: u64 = 5_000_000;
const SECOND: u64 = 1_000_000;
/// How often a node drops records silent past the bound (the real node
/// does it every upkeep; the records it drops are not live either way).
const FORGET_EVERY_S: u64 = 30;

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// A seed this node bootstraps from, with its redial backoff.
struct Seed {
    node: u32,
    dialing: bool,
    next_try: u64,
    backoff: u64,
}

/// One simulated node: the state `EventLoop` keeps, beside the real
/// [`Membership`].
pub struct Node {
    /// Its identity.
    pub id: PeerId,
    /// Started and not killed.
    pub alive: bool,
    /// The real member view.
    pub membership: Membership,
    started: u64,
    seq: u64,
    last_announce: Option<u64>,
    /// Time of the announcement event now pending (`u64::MAX`: none).
    next_announce: u64,
    soon: bool,
    first_connected: Option<u64>,
    settle_announced: Option<u64>,
    view_asks: usize,
    seeds: Vec<Seed>,
    dialing: Vec<u32>,
    seconds: u64,
}

/// What a dial was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Purpose {
    /// Bootstrap seed number `i` of the dialler.
    Seed(u32),
    /// Upkeep: a random live member.
    Member,
    /// A redial of a member whose connection dropped.
    Probe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Start(u32),
    /// Upkeep and gossipsub heartbeat, once a second.
    Second(u32),
    Announce(u32),
    Settle(u32),
    DialDone {
        from: u32,
        to: u32,
        purpose: Purpose,
    },
    /// `at` saw its connection to `peer` reset.
    Dropped {
        at: u32,
        peer: u32,
    },
    ViewAnswer {
        asker: u32,
        from: u32,
    },
}

/// A fleet-wide message.
enum Message {
    Announce(Announcement),
    Gone { peer: u32, order: (u64, u64) },
    Invalidate,
}

/// How one invalidation spread: per reached member, its delay (µs) and hops.
pub struct Propagation {
    /// (delay µs, hops) per member reached, the origin excluded.
    pub reached: Vec<(u64, u16)>,
    /// Live members (the origin excluded) when it was published.
    pub members: usize,
}

/// The fleet and its event queue.
pub struct Fleet {
    /// Every node ever started (killed ones stay, `alive == false`).
    pub nodes: Vec<Node>,
    /// Connections and mesh.
    pub overlay: Overlay,
    index: HashMap<PeerId, u32>,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    order: u64,
    /// Simulated time, µs.
    pub now: u64,
    base: Instant,
    /// Per node, its heartbeat's phase within the second.
    phase: Vec<u64>,
    rng: Rng,
    seeds_per_node: usize,
    shared_seeds: usize,
    max_connections: usize,
    idle: u64,
    /// Per node: fleet messages received (first copies), and all copies.
    pub unique: Vec<u64>,
    /// (see `unique`)
    pub copies: Vec<u64>,
    /// Fleet-wide messages published: announcements, gone, invalidations.
    pub published: [u64; 3],
    /// Live nodes.
    pub alive: usize,
    /// Nodes killed (for the convergence check: none may stay in a view).
    pub killed: Vec<u32>,
    /// Every spread invalidation.
    pub propagations: Vec<Propagation>,
    /// Connections opened, fleet-wide.
    pub opened: u64,
    what_if: WhatIf,
}

impl Fleet {
    /// An empty fleet with `s`'s latencies, seeds and limits.
    pub fn new(s: &Settings) -> Fleet {
        let limits = Limits::default();
        Fleet {
            nodes: Vec::new(),
            overlay: Overlay::new((us(s.latency.0), us(s.latency.1)), s.seed),
            index: HashMap::new(),
            queue: BinaryHeap::new(),
            order: 0,
            now: 0,
            base: Instant::now(),
            phase: Vec::new(),
            rng: Rng::new(s.seed),
            seeds_per_node: s.seeds_per_node,
            shared_seeds: s.shared_seeds,
            max_connections: s.max_connections.unwrap_or(limits.established as usize),
            idle: us(limits.idle_timeout),
            unique: Vec::new(),
            copies: Vec::new(),
            published: [0; 3],
            alive: 0,
            killed: Vec::new(),
            propagations: Vec::new(),
            opened: 0,
            what_if: s.what_if,
        }
    }

    fn at(&self, t: u64) -> Instant {
        self.base + Duration::from_micros(t)
    }

    fn schedule(&mut self, t: u64, e: Event) {
        self.order += 1;
        self.queue.push(Reverse((t, self.order, e)));
    }

    /// Adds a node that starts at `t`; returns its index.
    pub fn add_node(&mut self, t: u64) -> u32 {
        let n = self.overlay.add_node();
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        let hash = libp2p::multihash::Multihash::wrap(0x12, &bytes).expect("32 bytes fit");
        let id = PeerId::from_multihash(hash).expect("a sha2-256 multihash");
        self.index.insert(id, n);
        self.nodes.push(Node {
            id,
            alive: false,
            membership: Membership::new(),
            started: t,
            seq: 0,
            last_announce: None,
            next_announce: u64::MAX,
            soon: false,
            first_connected: None,
            settle_announced: None,
            view_asks: 0,
            seeds: Vec::new(),
            dialing: Vec::new(),
            seconds: 0,
        });
        self.phase.push(0);
        self.unique.push(0);
        self.copies.push(0);
        self.schedule(t, Event::Start(n));
        n
    }

    /// Kills `n` now (SIGKILL: its connections are reset).
    pub fn kill(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        if !node.alive {
            return;
        }
        node.alive = false;
        self.alive -= 1;
        self.killed.push(n);
        for p in self.overlay.drop_all(n) {
            let lat = self.overlay.latency(n, p);
            self.schedule(self.now + lat, Event::Dropped { at: p, peer: n });
        }
    }

    /// Publishes an invalidation from `n` now and records its spread.
    pub fn invalidate(&mut self, n: u32) {
        let members = self.live_view_len(n);
        self.publish(n, Message::Invalidate);
        self.propagations.last_mut().expect("recorded by publish").members = members;
    }

    /// Runs every event up to `t` (µs); then `now == t`.
    pub fn run_until(&mut self, t: u64) {
        while let Some(Reverse((when, _, _))) = self.queue.peek() {
            if *when > t {
                break;
            }
            let Some(Reverse((when, _, e))) = self.queue.pop() else {
                break;
            };
            self.now = when;
            self.handle(e);
        }
        self.now = t;
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Start(n) => self.start(n),
            Event::Second(n) => self.second(n),
            Event::Announce(n) => self.announce_due(n),
            Event::Settle(n) => self.settle(n),
            Event::DialDone { from, to, purpose } => self.dial_done(from, to, purpose),
            Event::Dropped { at, peer } => self.dropped(at, peer),
            Event::ViewAnswer { asker, from } => self.view_answer(asker, from),
        }
    }

    fn start(&mut self, n: u32) {
        let now = self.now;
        // Seeds: the first `shared_seeds` nodes for everyone, or random
        // live nodes (a DNS seed or a bootstrap list naming a few members).
        let mut seeds = Vec::new();
        if self.shared_seeds > 0 {
            seeds.extend((0..self.shared_seeds.min(n as usize) as u32).filter(|&s| s != n));
        } else {
            // (nodes start in index order: those below `n` have started)
            for _ in 0..self.seeds_per_node * 8 {
                if seeds.len() >= self.seeds_per_node || n == 0 {
                    break;
                }
                let s = self.rng.below(n as u64) as u32;
                if s != n && self.nodes[s as usize].alive && !seeds.contains(&s) {
                    seeds.push(s);
                }
            }
        }
        let node = &mut self.nodes[n as usize];
        node.alive = true;
        node.started = now;
        node.seeds = seeds
            .into_iter()
            .map(|s| Seed {
                node: s,
                dialing: false,
                next_try: now,
                backoff: SECOND,
            })
            .collect();
        // The first tick's announcement: no peer subscribed yet, so it
        // reaches no one (gossipsub: InsufficientPeers).
        node.seq = 1;
        node.last_announce = Some(now);
        self.alive += 1;
        let tick = us(TICK);
        let upkeep = tick * (UPKEEP_TICKS - 1);
        self.phase[n as usize] = (now + upkeep) % SECOND;
        self.schedule(now + upkeep, Event::Second(n));
        self.schedule(now + us(SETTLE_MAX), Event::Settle(n));
    }

    /// The next point of `n`'s 250 ms tick grid at or after `t`.
    fn tick_at(&self, n: u32, t: u64) -> u64 {
        let tick = us(TICK);
        let start = self.nodes[n as usize].started;
        let k = (t.saturating_sub(start)).div_ceil(tick);
        start + k * tick
    }

    fn second(&mut self, n: u32) {
        if !self.nodes[n as usize].alive {
            return;
        }
        let now = self.now;
        if now >= self.nodes[n as usize].started + HEARTBEAT_DELAY_US {
            self.overlay.heartbeat(n, &mut self.rng, now);
        }
        // Idle connections outside the mesh close (no probe: a close for
        // idleness says nothing).
        let idle: Vec<u32> = self.overlay.links[n as usize]
            .iter()
            .filter(|l| !l.mesh && now.saturating_sub(l.last_used) >= self.idle)
            .map(|l| l.peer)
            .collect();
        for p in idle {
            self.overlay.disconnect(n, p);
        }
        let node = &mut self.nodes[n as usize];
        node.seconds += 1;
        if node.seconds % FORGET_EVERY_S == 0 {
            let at = self.base + Duration::from_micros(now);
            node.membership.forget_old(at);
        }
        self.upkeep(n);
        self.schedule(now + SECOND, Event::Second(n));
    }

    fn upkeep(&mut self, n: u32) {
        let now = self.now;
        let at = self.at(now);
        let connected = self.overlay.degree(n);
        let target = if self.what_if.upkeep_to_mesh_low {
            MESH_LOW
        } else {
            TARGET_DEGREE
        };
        let node = &self.nodes[n as usize];
        let alone = !node.membership.records().any(|(_, m)| m.live(at));
        if connected < target || alone {
            for i in 0..node.seeds.len() {
                let s = &self.nodes[n as usize].seeds[i];
                if s.dialing || now < s.next_try || self.overlay.connected(n, s.node) {
                    continue;
                }
                let to = s.node;
                self.nodes[n as usize].seeds[i].dialing = true;
                self.dial(n, to, Purpose::Seed(i as u32));
            }
        }
        if connected >= target {
            return;
        }
        let want = target - connected;
        let mut picked: Vec<u32> = Vec::new();
        let ok = |f: &Fleet, p: u32| {
            p != n
                && !f.overlay.connected(n, p)
                && !f.nodes[n as usize].dialing.contains(&p)
                && f.nodes[n as usize]
                    .membership
                    .get(&f.nodes[p as usize].id)
                    .is_some_and(|m| m.live(at))
        };
        // Random live members: sample node indices (cheap when the view
        // holds most of the fleet), else walk the view.
        for _ in 0..64 {
            if picked.len() >= want {
                break;
            }
            let p = self.rng.below(self.nodes.len() as u64) as u32;
            if ok(self, p) && !picked.contains(&p) {
                picked.push(p);
            }
        }
        if picked.len() < want {
            let mut rest: Vec<u32> = self.nodes[n as usize]
                .membership
                .records()
                .filter(|(_, m)| m.live(at))
                .filter_map(|(id, _)| self.index.get(id).copied())
                .filter(|&p| ok(self, p) && !picked.contains(&p))
                .collect();
            self.rng.shuffle(&mut rest);
            picked.extend(rest.into_iter().take(want - picked.len()));
        }
        for p in picked {
            self.dial(n, p, Purpose::Member);
        }
    }

    fn dial(&mut self, from: u32, to: u32, purpose: Purpose) {
        let node = &self.nodes[from as usize];
        if node.dialing.contains(&to) && purpose != Purpose::Probe {
            return;
        }
        // Dials count against the limit with the established connections.
        if self.overlay.degree(from) + node.dialing.len() >= self.max_connections {
            self.dial_done_at(from, to, purpose, false, false);
            return;
        }
        self.nodes[from as usize].dialing.push(to);
        let lat = self.overlay.latency(from, to);
        // A dead node's kernel refuses in one round trip; a handshake takes two.
        let after = if self.nodes[to as usize].alive {
            4 * lat
        } else {
            2 * lat
        };
        self.schedule(self.now + after, Event::DialDone { from, to, purpose });
    }

    fn dial_done(&mut self, from: u32, to: u32, purpose: Purpose) {
        let dialing = &mut self.nodes[from as usize].dialing;
        if let Some(i) = dialing.iter().position(|&p| p == to) {
            dialing.swap_remove(i);
        }
        if !self.nodes[from as usize].alive {
            return;
        }
        if !self.nodes[to as usize].alive {
            self.dial_done_at(from, to, purpose, false, true);
            return;
        }
        let full = |f: &Fleet, x: u32| f.overlay.degree(x) >= f.max_connections;
        if self.overlay.connected(from, to) {
            self.dial_done_at(from, to, purpose, true, false);
            return;
        }
        if full(self, from) || full(self, to) {
            self.dial_done_at(from, to, purpose, false, false);
            return;
        }
        self.overlay.connect(from, to, self.now);
        self.opened += 1;
        self.dial_done_at(from, to, purpose, true, false);
        self.established(from, to);
        self.established(to, from);
    }

    /// A dial's outcome for its purpose: a refused probe finds the member
    /// gone; a failed seed dial backs off.
    fn dial_done_at(&mut self, from: u32, to: u32, purpose: Purpose, up: bool, refused: bool) {
        match purpose {
            Purpose::Seed(i) => {
                let now = self.now;
                let s = &mut self.nodes[from as usize].seeds[i as usize];
                s.dialing = false;
                if up {
                    s.backoff = SECOND;
                } else {
                    s.next_try = now + s.backoff;
                    s.backoff = (s.backoff * 2).min(60 * SECOND);
                }
            }
            Purpose::Probe if refused => self.found_gone(from, to),
            _ => {}
        }
    }

    /// `n` has a new connection to `p`: its subscription arrives, and a
    /// joining `n` asks `p` for its view.
    fn established(&mut self, n: u32, p: u32) {
        let now = self.now;
        self.nodes[n as usize].first_connected.get_or_insert(now);
        if self.nodes[n as usize].settle_announced.is_none() {
            let t = self.tick_at(n, now + us(SETTLE_AFTER_CONNECT));
            self.schedule(t, Event::Settle(n));
        }
        self.overlay.subscribed(n, p, now);
        let known = self.nodes[n as usize]
            .membership
            .get(&self.nodes[p as usize].id)
            .is_some_and(|m| m.live(self.at(now)));
        // The daemon announces early only to a peer new to its view (a
        // joiner): a member it already knows has heard it.
        if !known {
            self.announce_soon(n);
        }
        let node = &self.nodes[n as usize];
        if node.settle_announced.is_none() && node.view_asks < VIEW_ASKS {
            self.ask_view(n, p);
        }
    }

    fn ask_view(&mut self, n: u32, p: u32) {
        self.nodes[n as usize].view_asks += 1;
        let rtt = 2 * self.overlay.latency(n, p);
        self.schedule(self.now + rtt, Event::ViewAnswer { asker: n, from: p });
    }

    /// `from`'s answer to `Members` reaches `asker` (`EventLoop::view_answer`
    /// and `EventLoop::learn_view`).
    fn view_answer(&mut self, asker: u32, from: u32) {
        let a = &mut self.nodes[asker as usize];
        a.view_asks = a.view_asks.saturating_sub(1);
        if !a.alive || !self.nodes[from as usize].alive || !self.overlay.connected(asker, from) {
            return;
        }
        self.overlay.touch(asker, from, self.now);
        let at = self.at(self.now);
        let asker_id = self.nodes[asker as usize].id;
        let mut list: Vec<PeerId> = self.nodes[from as usize]
            .membership
            .records()
            .filter(|(p, m)| m.live(at) && **p != asker_id)
            .map(|(p, _)| *p)
            .collect();
        // The real answer is the responder, then its sorted view, cut at
        // MAX_MEMBERS.
        if list.len() + 1 > MAX_MEMBERS {
            list.sort_unstable();
            list.truncate(MAX_MEMBERS - 1);
        }
        list.push(self.nodes[from as usize].id);
        let every = announce_every(list.len() + 1);
        let local = self.nodes[asker as usize].id;
        let m = &mut self.nodes[asker as usize].membership;
        for p in list {
            if p != local {
                m.learned(p, Vec::new(), every, at);
            }
        }
    }

    fn settle(&mut self, n: u32) {
        let now = self.now;
        let node = &self.nodes[n as usize];
        if !node.alive || node.settle_announced.is_some() {
            return;
        }
        let heard_a_period = node
            .first_connected
            .is_some_and(|t| now.saturating_sub(t) >= us(SETTLE_AFTER_CONNECT));
        if !heard_a_period && now.saturating_sub(node.started) < us(SETTLE_MAX) {
            return;
        }
        self.nodes[n as usize].settle_announced = Some(now);
        let every = us(announce_every(self.live_view_len(n) + 1));
        self.announce_every(n, every);
        if let Some(p) = self.overlay.links[n as usize].first().map(|l| l.peer) {
            self.ask_view(n, p);
        }
    }

    /// Live members in `n`'s view (itself excluded): what its period is
    /// computed from.
    pub fn live_view_len(&self, n: u32) -> usize {
        let at = self.at(self.now);
        self.nodes[n as usize]
            .membership
            .records()
            .filter(|(_, m)| m.live(at))
            .count()
    }

    /// Asks for `n`'s announcement event at `t` unless one is pending
    /// earlier.
    fn want_announce(&mut self, n: u32, t: u64) {
        let t = self.tick_at(n, t);
        let node = &mut self.nodes[n as usize];
        if t < node.next_announce {
            node.next_announce = t;
            self.schedule(t, Event::Announce(n));
        }
    }

    fn announce_soon(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        node.soon = true;
        let t = node.last_announce.map_or(self.now, |l| (l + us(TICK)).max(self.now));
        self.want_announce(n, t);
    }

    fn announce_due(&mut self, n: u32) {
        let now = self.now;
        let node = &mut self.nodes[n as usize];
        if !node.alive || node.next_announce != now {
            return;
        }
        node.next_announce = u64::MAX;
        let every = us(announce_every(self.live_view_len(n) + 1));
        let node = &self.nodes[n as usize];
        let since = node.last_announce.map(|l| now - l);
        // Early for a new peer, but at most 8 times a period (`on_tick`).
        let soon_after = (every / 8).max(us(TICK));
        let due = since.is_none_or(|s| s >= every || (node.soon && s >= soon_after));
        if due {
            self.announce_every(n, every);
            self.want_announce(n, now + every);
        } else {
            let last = node.last_announce.unwrap_or(now);
            self.want_announce(n, last + every);
        }
    }

    /// Publishes `n`'s announcement, stating its period `every` (µs).
    fn announce_every(&mut self, n: u32, every: u64) {
        let now = self.now;
        let node = &mut self.nodes[n as usize];
        let a = Announcement {
            addrs: Vec::new(),
            started_unix_ms: 1,
            seq: node.seq,
            epoch: 0,
            epoch_ids: Vec::new(),
            counters: Counters::default(),
            leaving: false,
            joining: node.settle_announced.is_none(),
            every_ms: every / 1000,
        };
        node.seq += 1;
        node.last_announce = Some(now);
        node.soon = false;
        self.publish(n, Message::Announce(a));
    }

    /// `at`'s connection to `peer` was reset: redial it if it is live in
    /// `at`'s view (`EventLoop::probe`).
    fn dropped(&mut self, at: u32, peer: u32) {
        if !self.nodes[at as usize].alive {
            return;
        }
        let when = self.at(self.now);
        let id = self.nodes[peer as usize].id;
        let live = self.nodes[at as usize]
            .membership
            .get(&id)
            .is_some_and(|m| m.live(when));
        if live && !self.nodes[at as usize].dialing.contains(&peer) {
            self.dial(at, peer, Purpose::Probe);
        }
    }

    /// A probe of `peer` was refused (`EventLoop::found_gone`).
    fn found_gone(&mut self, n: u32, peer: u32) {
        let at = self.at(self.now);
        let id = self.nodes[peer as usize].id;
        let m = &mut self.nodes[n as usize].membership;
        let Some(last) = m.get(&id).map(|r| r.order) else {
            return;
        };
        if m.gone(&id, last, at) {
            self.publish(n, Message::Gone { peer, order: last });
        }
    }

    fn publish(&mut self, origin: u32, message: Message) {
        let kind = match message {
            Message::Announce(_) => 0,
            Message::Gone { .. } => 1,
            Message::Invalidate => 2,
        };
        self.published[kind] += 1;
        let t0 = self.now;
        let spread = self.overlay.spread(origin, t0, &self.phase, &mut self.copies);
        let reached: Vec<(u32, u64, u16)> = spread
            .reached
            .iter()
            .filter(|&&v| v != origin)
            .map(|&v| (v, spread.arrival(v), spread.hops(v)))
            .collect();
        let source = self.nodes[origin as usize].id;
        let mut propagation = Vec::new();
        for (v, t, hops) in reached {
            if !self.nodes[v as usize].alive {
                continue;
            }
            self.unique[v as usize] += 1;
            let at = self.at(t);
            match &message {
                Message::Announce(a) => {
                    self.nodes[v as usize].membership.heard(source, a, Vec::new(), at);
                }
                Message::Gone { peer, order } => {
                    if *peer == v {
                        // Called gone by mistake: announce at the next tick.
                        self.announce_soon(v);
                    } else {
                        let id = self.nodes[*peer as usize].id;
                        self.nodes[v as usize].membership.gone(&id, *order, at);
                    }
                }
                Message::Invalidate => propagation.push((t - t0, hops)),
            }
        }
        if kind == 2 {
            self.propagations.push(Propagation {
                reached: propagation,
                members: 0,
            });
        }
    }

    /// The node's view is settled (it announced that it no longer joins
    /// [`ELIGIBLE_AFTER`] ago): it owns keys.
    pub fn settled(&self, n: u32) -> bool {
        self.nodes[n as usize]
            .settle_announced
            .is_some_and(|t| self.now >= t + us(ELIGIBLE_AFTER))
    }

    /// Live node indices.
    pub fn live_nodes(&self) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|&n| self.nodes[n as usize].alive)
            .collect()
    }

    /// Whether `n`'s view equals the live set: members (`owners == false`)
    /// or owners (live members that no longer join).
    pub fn view_exact(&self, n: u32, owners: bool) -> bool {
        let at = self.at(self.now);
        let m = &self.nodes[n as usize].membership;
        let count = m
            .records()
            .filter(|(_, r)| r.live(at) && !(owners && r.joining))
            .count();
        count + 1 == self.alive
            && self
                .killed
                .iter()
                .all(|k| !m.get(&self.nodes[*k as usize].id).is_some_and(|r| r.live(at)))
    }

    /// Live members missing from `n`'s view and dead ones still in it.
    pub fn view_error(&self, n: u32) -> (usize, usize) {
        let at = self.at(self.now);
        let m = &self.nodes[n as usize].membership;
        let stale = self
            .killed
            .iter()
            .filter(|k| m.get(&self.nodes[**k as usize].id).is_some_and(|r| r.live(at)))
            .count();
        let live = m.records().filter(|(_, r)| r.live(at)).count();
        ((self.alive - 1 + stale).saturating_sub(live), stale)
    }
}
