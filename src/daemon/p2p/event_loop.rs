//! The event loop: the one task that owns the `Swarm`.
//!
//! It keeps the member view (announcements on gossipsub, see
//! [`super::membership`]), publishes this node's own announcement every
//! [`announce_every`] (a period that grows with the fleet so the
//! fleet-wide rate is bounded), finds neighbours gone when their
//! connection drops and a redial fails and says so on gossipsub, asks its
//! first peers for their view while it joins, sends and answers
//! `/ghcache/entry/1` requests, and runs fleet-wide invalidations
//! ([`super::invalidation`]; acks go to the origin directly,
//! [`super::acks`]).
//!
//! # Connections
//! Connections are few and bounded (`connection_limits`, the configured
//! `max_peer_connections`): gossipsub keeps its mesh (about
//! [`TARGET_DEGREE`] peers) connected; every other connection closes when
//! idle, or sooner when the node holds more than its high watermark
//! ([`super::connections`]: idle connections outside the mesh are pruned,
//! keeping a reserve below the limit for joiners and asks). When the node
//! has fewer than [`TARGET_DEGREE`] connections it dials random live
//! members from their announced addresses (its bootstrap addresses, with
//! jittered backoff, only while its view cannot supply that many), so the
//! gossip mesh forms without a full mesh of connections. An ask to an
//! owner it is not connected to dials it on demand from the owner's
//! announced addresses (at the limit, after closing a prunable
//! connection).
//!
//! A dropped connection is probed (redialled; refused: the member is
//! gone) when its peer was in this node's gossip mesh or the connection
//! had lasted [`GRACE`]. A peer that pruned it is alive, so the redial
//! succeeds; this node then closes the redialled connection at once (it
//! was only a check), and that short connection, outside the mesh, is not
//! probed by the other side in turn: one check per pruned connection, no
//! loop, no suspicion.
//!
//! Invariants: nothing else touches the swarm (so there is no lock around
//! it); the loop never touches the cache: inbound entry requests and
//! received invalidations run in their own tasks through the
//! [`Responder`](super::Responder) and come back as commands
//! ([`Command::Respond`], [`Command::Applied`]); it never blocks (the
//! responder's `stats` and `persist_epoch` are a snapshot and a queued
//! write).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher as _;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{connection_limits, gossipsub, identify, mdns, ping, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot, watch};

use super::acks::AcksInFlight;
use super::client::{jittered, AskError, Command, MemberRow, PeerInfo};
use super::codec::Codec;
use super::connections::{Connections, Watermarks, GRACE};
use super::gossip::{self, Announcement, Gone, Message};
use super::invalidation::Epochs;
use super::membership::{announce_every, Heard, Membership, SETTLE_AFTER_CONNECT, SETTLE_MAX};
use super::metrics::P2pMetrics;
use super::wire;
use super::Responder;
use crate::daemon::tools::Invalidate;
use crate::sync::{Ordering, StdArc as Arc};

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) limits: connection_limits::Behaviour,
    pub(super) rr: request_response::Behaviour<Codec>,
    pub(super) gossip: gossipsub::Behaviour,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
}

pub(super) struct Bootstrap {
    pub(super) addr: Multiaddr,
    pub(super) peer: Option<PeerId>,
    pub(super) dialing: Option<ConnectionId>,
    pub(super) next_try: Instant,
    pub(super) backoff: Duration,
}

#[derive(Default)]
pub(super) struct Known {
    addrs: Vec<Multiaddr>,
    agent: Option<String>,
    rtt: Option<Duration>,
}

/// Owns the swarm; everything else talks to it through [`Command`]s.
pub(super) struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) self_tx: mpsc::Sender<Command>,
    pub(super) responder: Arc<dyn Responder>,
    pub(super) metrics: Arc<P2pMetrics>,
    pub(super) connected: watch::Sender<Arc<Vec<PeerId>>>,
    /// The live members (this node excluded), sorted.
    pub(super) members: watch::Sender<Arc<Vec<PeerId>>>,
    /// The addresses listened on, as the swarm reported them.
    pub(super) listen: watch::Sender<Arc<Vec<Multiaddr>>>,
    pub(super) pending: HashMap<OutboundRequestId, oneshot::Sender<Result<wire::Response, AskError>>>,
    pub(super) known: HashMap<PeerId, Known>,
    pub(super) bootstrap: Vec<Bootstrap>,
    pub(super) membership: Membership,
    pub(super) epochs: Epochs,
    pub(super) topic: gossipsub::IdentTopic,
    /// When this run started (Unix ms), and the next announcement's number.
    pub(super) started_unix_ms: u64,
    pub(super) seq: u64,
    pub(super) last_announce: Option<Instant>,
    /// A peer subscribed: announce at the next tick, so it learns this
    /// node (and its epoch) without waiting a whole period.
    pub(super) announce_soon: bool,
    /// This node's epoch was compared with the fleet's
    /// ([`Responder::epoch_confirmed`] was called).
    pub(super) epoch_confirmed: bool,
    /// A catch-up (clear) is running.
    pub(super) catching_up: bool,
    /// The ids the running catch-up takes as applied.
    pub(super) catch_up_ids: Vec<u64>,
    pub(super) ticks: u64,
    /// The view is settled (see `membership::SETTLE_AFTER_CONNECT`).
    pub(super) settled: watch::Sender<bool>,
    /// When this node announced that it no longer joins (None: joining).
    pub(super) settle_announced: Option<Instant>,
    /// The live members that own keys (see `Membership::owners`).
    pub(super) owners: watch::Sender<Arc<Vec<PeerId>>>,
    pub(super) started: Instant,
    pub(super) first_connected: Option<Instant>,
    /// Redials of members whose connection dropped: a failed one means the
    /// member is gone.
    pub(super) probes: HashMap<ConnectionId, PeerId>,
    /// This node's asks for a peer's member view (while it joins).
    pub(super) view_asks: HashSet<OutboundRequestId>,
    /// This node's acks sent to their origins, not answered yet.
    pub(super) acks_in_flight: AcksInFlight,
    /// The established connections and their use, and the watermarks
    /// they are pruned to.
    pub(super) conns: Connections,
    pub(super) marks: Watermarks,
    /// This node's gossipsub mesh as of the last tick (gossipsub forgets a
    /// peer before its `ConnectionClosed` reaches the loop).
    pub(super) mesh: HashSet<PeerId>,
    /// Member views being sent to joiners (`Members` answers).
    pub(super) view_answers: HashSet<InboundRequestId>,
    /// Peers whose last failed dial proves nothing listens for them
    /// (refused, timed out, another node): an ask that could not dial
    /// them is [`AskError::Unreachable`], any other failed dial is busy.
    pub(super) dial_unreachable: HashSet<PeerId>,
}

/// Housekeeping period: announcements due, views, catch-ups.
pub(super) const TICK: Duration = Duration::from_millis(250);
/// Ticks between connection upkeep rounds (bootstrap, degree, forgetting).
pub(super) const UPKEEP_TICKS: u64 = 4;
/// Connections the node keeps up by dialling members: gossipsub's mesh
/// degree (`mesh_n`).
pub const TARGET_DEGREE: usize = 6;
/// How long after announcing that it no longer joins a node owns keys
/// (its announcement reaches the members in well under this).
pub(super) const ELIGIBLE_AFTER: Duration = Duration::from_millis(500);
/// Member views a joining node asks for at a time as it connects (one
/// answer is enough; a second covers a peer that has just joined itself).
pub(super) const VIEW_ASKS: usize = 2;
/// How long a stopping node keeps polling the swarm so its leaving
/// announcement gets out.
const LEAVE_FLUSH: Duration = Duration::from_millis(300);

impl EventLoop {
    pub(super) async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                event = self.swarm.select_next_some() => self.on_event(event),
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                _ = tick.tick() => self.on_tick(),
            }
        }
        // Say goodbye, so members drop this node now rather than after the
        // failure bound, and let the swarm send it.
        self.announce(true);
        let _ = tokio::time::timeout(LEAVE_FLUSH, async {
            loop {
                let _ = self.swarm.select_next_some().await;
            }
        })
        .await;
        // Dropping the swarm closes listeners and connections; pending asks
        // see their reply sender dropped.
        let listeners: Vec<_> = self.swarm.listeners().cloned().collect();
        tracing::info!(?listeners, peers = self.connected.borrow().len(), "P2P node stopping");
        self.metrics.peers.store(0, Ordering::Relaxed);
        self.metrics.members.store(0, Ordering::Relaxed);
    }

    fn publish_connected(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        self.metrics.peers.store(peers.len() as u64, Ordering::Relaxed);
        self.connected.send_replace(Arc::new(peers));
    }

    fn publish_listen_addrs(&mut self) {
        let addrs: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        self.listen.send_replace(Arc::new(addrs));
    }

    /// Publishes the member view when it changed; logs who fell silent.
    fn refresh_view(&mut self, now: Instant) {
        let owners = self.membership.owners(now);
        if **self.owners.borrow() != owners {
            self.owners.send_replace(Arc::new(owners));
        }
        let live = self.membership.live(now);
        if **self.members.borrow() == live {
            return;
        }
        for gone in self.members.borrow().iter().filter(|p| !live.contains(p)) {
            tracing::info!(peer = %gone, "member left the view");
        }
        self.metrics.members.store(live.len() as u64 + 1, Ordering::Relaxed);
        self.members.send_replace(Arc::new(live));
    }

    /// Where others can dial this node: what it listens on and what
    /// identify saw, unspecified addresses left out, loopback last.
    fn announce_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<Multiaddr> = self
            .swarm
            .listeners()
            .chain(self.swarm.external_addresses())
            .filter(|a| !is_unspecified(a))
            .cloned()
            .collect();
        addrs.sort_by_key(is_loopback);
        addrs.dedup();
        addrs
            .into_iter()
            .take(gossip::MAX_ADDRS)
            .map(|a| a.to_string())
            .collect()
    }

    /// This node's announcement period, from the size of its view.
    fn announce_period(&self) -> Duration {
        announce_every(self.members.borrow().len() + 1)
    }

    fn announce(&mut self, leaving: bool) {
        let mut counters = self.responder.stats();
        counters.peers = self.swarm.connected_peers().count() as u64;
        let message = Message::Announce(Announcement {
            addrs: self.announce_addrs(),
            started_unix_ms: self.started_unix_ms,
            seq: self.seq,
            epoch: self.epochs.current(),
            epoch_ids: self.epochs.announced_ids(),
            counters,
            leaving,
            joining: self.settle_announced.is_none(),
            every_ms: self.announce_period().as_millis() as u64,
        });
        self.seq += 1;
        self.last_announce = Some(Instant::now());
        self.announce_soon = false;
        self.publish(&message);
    }

    pub(super) fn publish(&mut self, message: &Message) {
        let topic = self.topic.clone();
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossip
            .publish(topic, gossip::encode(message))
        {
            // Alone (no subscribed peer yet) is the usual reason.
            tracing::debug!(error = %e, "fleet message not published");
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.ticks += 1;
        let every = self.announce_period();
        // Early for a new peer, but at most 8 times a period, so a herd
        // of joiners does not multiply the fleet's message rate.
        let soon_after = (every / 8).max(TICK);
        let due = self.last_announce.is_none_or(|t| {
            let since = now.saturating_duration_since(t);
            since >= every || (self.announce_soon && since >= soon_after)
        });
        if due {
            self.announce(false);
        }
        self.refresh_view(now);
        // Joining: settle once a whole announcement period has passed
        // since the first connection (or at SETTLE_MAX); tell the members
        // (they make it an owner), and own keys ELIGIBLE_AFTER later, once
        // they have heard it.
        if self.settle_announced.is_none() {
            let heard_a_period = self
                .first_connected
                .is_some_and(|t| now.saturating_duration_since(t) >= SETTLE_AFTER_CONNECT);
            if heard_a_period || now.saturating_duration_since(self.started) >= SETTLE_MAX {
                tracing::debug!(members = self.members.borrow().len(), "member view settled");
                self.settle_announced = Some(now);
                self.announce(false);
                let peer = self.swarm.connected_peers().next().copied();
                if let Some(peer) = peer {
                    self.ask_view(peer);
                }
            }
        }
        if !*self.settled.borrow()
            && self
                .settle_announced
                .is_some_and(|t| now.saturating_duration_since(t) >= ELIGIBLE_AFTER)
        {
            self.settled.send_replace(true);
        }
        if !self.catching_up {
            if let Some((target, ids)) = self.epochs.catch_up_due(now) {
                self.catch_up(target, ids);
            }
        }
        // Settled: every live member has announced its epoch since this
        // node joined; not behind any of them (or caught up by clearing).
        if !self.epoch_confirmed && *self.settled.borrow() && !self.catching_up && !self.epochs.behind() {
            self.epoch_confirmed = true;
            self.responder.epoch_confirmed();
        }
        self.mesh = self.swarm.behaviour().gossip.all_mesh_peers().copied().collect();
        self.prune(now);
        if self.ticks % UPKEEP_TICKS == 0 {
            self.membership.forget_old(now);
            self.epochs.expire(now);
            self.upkeep(now);
        }
    }

    /// This node missed invalidations (a live member announced a higher
    /// epoch, or ids at its own epoch it lacks, for longer than the grace):
    /// clear everything, then take that epoch and those ids as applied.
    fn catch_up(&mut self, target: u64, ids: Vec<u64>) {
        self.catching_up = true;
        self.catch_up_ids = ids;
        self.metrics.epoch_catch_ups.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            epoch = self.epochs.current(),
            fleet_epoch = target,
            "missed fleet invalidations; clearing the cache"
        );
        let responder = self.responder.clone();
        let tx = self.self_tx.clone();
        tokio::spawn(async move {
            responder.invalidate(&Invalidate::All);
            responder.persist_epoch(target);
            let _ = tx
                .send(Command::Applied {
                    epoch: target,
                    ack: None,
                    sent_unix_ms: 0,
                })
                .await;
        });
    }

    /// Keeps at least [`TARGET_DEGREE`] connections: bootstrap addresses
    /// (with backoff) while short of peers, then random live members.
    fn upkeep(&mut self, now: Instant) {
        let connected = self.swarm.connected_peers().count();
        let members = self.members.borrow().len();
        // The bootstrap addresses only while the view cannot supply the
        // degree: a fleet's bootstrap member is not dialled by every
        // member that lost a connection.
        if members == 0 || (connected < TARGET_DEGREE && members < TARGET_DEGREE) {
            for i in 0..self.bootstrap.len() {
                let b = &self.bootstrap[i];
                let up = b.peer.is_some_and(|p| self.swarm.is_connected(&p));
                if up || b.dialing.is_some() || now < b.next_try {
                    continue;
                }
                let opts = DialOpts::unknown_peer_id().address(b.addr.clone()).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => self.bootstrap[i].dialing = Some(id),
                    Err(e) => {
                        tracing::debug!(addr = %self.bootstrap[i].addr, error = %e, "bootstrap dial refused");
                        self.bootstrap_failed(i);
                    }
                }
            }
        }
        if connected >= TARGET_DEGREE {
            return;
        }
        // Random live members not connected: a random order from a
        // freshly keyed hasher.
        let hasher = std::collections::hash_map::RandomState::new();
        let mut candidates: Vec<(u64, PeerId)> = self
            .members
            .borrow()
            .iter()
            .filter(|p| !self.swarm.is_connected(p))
            .map(|p| (hasher.hash_one(p), *p))
            .collect();
        candidates.sort_unstable();
        for (_, peer) in candidates.into_iter().take(TARGET_DEGREE - connected) {
            let addrs = self.membership.get(&peer).map(|m| m.addrs.clone()).unwrap_or_default();
            self.dial_learned(peer, addrs);
        }
    }

    fn bootstrap_failed(&mut self, i: usize) {
        let b = &mut self.bootstrap[i];
        b.dialing = None;
        // Jittered (half to all of the backoff), so joiners turned away
        // together do not come back together.
        b.next_try = Instant::now() + jittered(b.backoff);
        b.backoff = (b.backoff * 2).min(Duration::from_secs(60));
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Ask { peer, req, reply } => {
                let id = self.send_request(peer, req);
                self.pending.insert(id, reply);
            }
            Command::Respond { channel, res } => {
                let _ = self.swarm.behaviour_mut().rr.send_response(channel, res);
            }
            Command::Peers { reply } => {
                let list = self
                    .swarm
                    .connected_peers()
                    .map(|p| {
                        let k = self.known.get(p);
                        PeerInfo {
                            peer_id: p.to_string(),
                            addrs: k
                                .map(|k| k.addrs.iter().map(|a| a.to_string()).collect())
                                .unwrap_or_default(),
                            agent: k.and_then(|k| k.agent.clone()),
                            rtt_ms: k.and_then(|k| k.rtt).map(|d| d.as_millis() as u64),
                        }
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Suspect { peer, reply } => {
                let now = Instant::now();
                if self.membership.suspect(&peer, now) {
                    self.metrics.suspected.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, "ask failed; member out of the view until it announces again");
                    self.refresh_view(now);
                }
                let _ = reply.send(());
            }
            Command::Members { reply } => {
                let now = Instant::now();
                let rows = self
                    .membership
                    .records()
                    .map(|(p, m)| MemberRow {
                        peer_id: *p,
                        counters: m.counters.clone(),
                        epoch: m.epoch,
                        age_ms: now.saturating_duration_since(m.heard).as_millis() as u64,
                        live: m.live(now),
                    })
                    .collect();
                let _ = reply.send(rows);
            }
            Command::Invalidate { what, reply } => {
                let now = Instant::now();
                let id = random_id();
                let expected = self.membership.live(now);
                let (epoch, progress) = self.epochs.publish(id, expected, now);
                self.metrics.epoch.store(epoch, Ordering::Relaxed);
                self.responder.persist_epoch(epoch);
                self.metrics.invalidations_published.fetch_add(1, Ordering::Relaxed);
                self.publish(&Message::Invalidate(gossip::Invalidation {
                    id,
                    epoch,
                    what: (&what).into(),
                    sent_unix_ms: unix_ms(),
                }));
                let _ = reply.send((epoch, progress));
            }
            Command::Applied {
                epoch,
                ack,
                sent_unix_ms,
            } => {
                if let Some((origin, id)) = ack {
                    // The propagation figure of `ci/fleet-scale`.
                    tracing::info!(
                        target: "ghcache::p2p::applied",
                        %origin,
                        id,
                        delay_ms = unix_ms().saturating_sub(sent_unix_ms),
                        "fleet invalidation applied"
                    );
                }
                match ack {
                    Some((_, id)) => self.epochs.applied(epoch, id),
                    None => self.epochs.caught_up(epoch, &std::mem::take(&mut self.catch_up_ids)),
                }
                self.metrics.epoch.store(self.epochs.current(), Ordering::Relaxed);
                if ack.is_none() {
                    self.catching_up = false;
                }
                if let Some((origin, id)) = ack {
                    let epoch = self.epochs.current();
                    self.send_ack(origin, id, epoch);
                }
            }
            Command::Dial { addrs } => {
                for addr in addrs {
                    self.dial_discovered(addr);
                }
            }
        }
    }

    /// Dials an address a discovery source found: by Peer ID when it ends
    /// in `/p2p/ID`, else unless a connected peer announced it already.
    fn dial_discovered(&mut self, addr: Multiaddr) {
        let mut bare = addr.clone();
        if let Some(Protocol::P2p(peer)) = bare.pop() {
            self.dial_learned(peer, vec![bare]);
            return;
        }
        let known = self
            .known
            .iter()
            .any(|(p, k)| k.addrs.contains(&addr) && self.swarm.is_connected(p));
        let own = self.swarm.listeners().any(|l| *l == addr);
        if !known && !own {
            if let Err(e) = self
                .swarm
                .dial(DialOpts::unknown_peer_id().address(addr.clone()).build())
            {
                tracing::debug!(%addr, error = %e, "discovered address not dialled");
            }
        }
    }

    /// `peer`'s last connection dropped with an error, or a ping to it
    /// failed: redial it (a probe); when that fails it is gone
    /// ([`EventLoop::found_gone`]).
    fn probe(&mut self, peer: PeerId, condition: PeerCondition) {
        let now = Instant::now();
        let Some(member) = self.membership.get(&peer).filter(|m| m.live(now)) else {
            return;
        };
        let opts = DialOpts::peer_id(peer)
            .addresses(member.addrs.clone())
            .condition(condition)
            .build();
        let id = opts.connection_id();
        if self.swarm.dial(opts).is_ok() {
            self.probes.insert(id, peer);
        }
    }

    /// A probe of `peer` failed: out of this view, and (when it was live
    /// here, so only the first few neighbours to notice speak) the fleet
    /// is told.
    fn found_gone(&mut self, peer: PeerId) {
        let now = Instant::now();
        let Some(last) = self.membership.get(&peer).map(|m| m.order) else {
            return;
        };
        if !self.membership.gone(&peer, last, now) {
            return;
        }
        self.metrics.gone_published.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%peer, "member gone (connection dropped, redial failed)");
        self.publish(&Message::Gone(Gone {
            peer: peer.to_string(),
            started_unix_ms: last.0,
            seq: last.1,
        }));
        self.refresh_view(now);
    }

    /// Asks `peer` for its member view, so this node knows the fleet
    /// without waiting a whole announcement period: while joining (as it
    /// connects, at most [`VIEW_ASKS`] at a time) and once more when it settles
    /// (members that settled while this node was not yet in the gossip
    /// mesh).
    fn ask_view(&mut self, peer: PeerId) {
        let id = self.send_request(peer, wire::Request::Members);
        self.view_asks.insert(id);
    }

    /// Sends `req` to `peer` (an ask, an ack, a view ask), dialling it on
    /// demand, and counts the request on its connection. Not connected to
    /// `peer` at the connection limit, it first makes room (closes one
    /// prunable connection), or the dial would be denied here.
    pub(super) fn send_request(&mut self, peer: PeerId, req: wire::Request) -> OutboundRequestId {
        let now = Instant::now();
        if !self.swarm.is_connected(&peer) {
            if let Some(victim) = self.conns.make_room(&self.mesh, self.marks, now) {
                self.close_pruned(victim);
            }
        }
        let id = self.swarm.behaviour_mut().rr.send_request(&peer, req);
        self.conns.request_started(peer, now);
        id
    }

    /// Over the high watermark: closes the prunable connections (see
    /// [`super::connections`]) down to the low one.
    fn prune(&mut self, now: Instant) {
        for peer in self.conns.prune(&self.mesh, self.marks, now) {
            self.close_pruned(peer);
        }
    }

    fn close_pruned(&mut self, peer: PeerId) {
        if self.swarm.disconnect_peer_id(peer).is_ok() {
            self.metrics.connections_pruned.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, connections = self.conns.count(), "idle connection pruned");
        }
    }

    /// A peer's member view arrived: every member in it not known yet
    /// enters this view (until it announces, with the period this node's
    /// view size gives).
    fn learn_view(&mut self, list: Vec<(Vec<u8>, Vec<Vec<u8>>)>) {
        let now = Instant::now();
        let local = *self.swarm.local_peer_id();
        let every = announce_every(list.len() + 1);
        let mut learned = 0;
        for (id, addrs) in list {
            let Ok(peer) = PeerId::from_bytes(&id) else { continue };
            if peer == local {
                continue;
            }
            let addrs: Vec<Multiaddr> = addrs.into_iter().filter_map(|a| Multiaddr::try_from(a).ok()).collect();
            if self.membership.learned(peer, addrs.clone(), every, now) {
                learned += 1;
                for addr in addrs {
                    self.swarm.add_peer_address(peer, addr);
                }
            }
        }
        tracing::debug!(learned, "member view learned from a peer");
        self.refresh_view(now);
    }

    /// The member view as a joining peer asks for it (`Members`): this
    /// node and the live members with their announced addresses. The
    /// asker records them as owners until they announce (a member still
    /// joining says so in its next announcement, at the latest when it
    /// settles; the asker, joining itself, asks no owner before that).
    fn view_answer(&self, asker: PeerId) -> wire::Response {
        let now = Instant::now();
        let local = *self.swarm.local_peer_id();
        let mine = (
            local,
            self.announce_addrs().iter().filter_map(|a| a.parse().ok()).collect(),
        );
        let list = std::iter::once(mine)
            .chain(
                self.membership
                    .live(now)
                    .into_iter()
                    .filter(|p| *p != asker)
                    .map(|p| (p, self.membership.get(&p).map(|m| m.addrs.clone()).unwrap_or_default())),
            )
            .take(wire::MAX_MEMBERS)
            .map(|(p, addrs): (PeerId, Vec<Multiaddr>)| {
                (
                    p.to_bytes(),
                    addrs.iter().take(wire::MAX_ADDRS).map(|a| a.to_vec()).collect(),
                )
            })
            .collect();
        wire::Response::Members(list)
    }

    fn dial_learned(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id() || self.swarm.is_connected(&peer) || addrs.is_empty() {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        let _ = self.swarm.dial(opts);
    }

    fn on_gossip(&mut self, message: gossipsub::Message) {
        let Some(source) = message.source else { return };
        self.metrics.fleet_messages.fetch_add(1, Ordering::Relaxed);
        if source == *self.swarm.local_peer_id() {
            return;
        }
        let decoded = match gossip::decode(&message.data) {
            Ok(m) => m,
            Err(e) => {
                self.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%source, error = %e, "bad fleet message dropped");
                return;
            }
        };
        let now = Instant::now();
        match decoded {
            Message::Announce(a) => {
                let addrs = gossip::addrs_of(&a);
                let before = self.membership.get(&source).map(|m| m.addrs.clone());
                match self.membership.heard(source, &a, addrs.clone(), now) {
                    Heard::Stale => return,
                    Heard::Left => tracing::info!(peer = %source, "member left"),
                    Heard::Joined => tracing::info!(peer = %source, epoch = a.epoch, "member joined"),
                    Heard::Refreshed => {}
                }
                if !a.leaving {
                    if before.as_ref() != Some(&addrs) {
                        // So that asks dial it on demand.
                        for addr in addrs {
                            self.swarm.add_peer_address(source, addr);
                        }
                    }
                    self.epochs.heard_epoch(a.epoch, &a.epoch_ids, now);
                }
                self.refresh_view(now);
            }
            Message::Invalidate(i) => {
                if !self.epochs.first_time(source, i.id) {
                    return;
                }
                self.metrics.invalidations_applied.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(origin = %source, id = i.id, epoch = i.epoch, what = ?i.what, "fleet invalidation");
                let responder = self.responder.clone();
                let tx = self.self_tx.clone();
                let what = Invalidate::from(&i.what);
                tokio::spawn(async move {
                    responder.invalidate(&what);
                    responder.persist_epoch(i.epoch);
                    let _ = tx
                        .send(Command::Applied {
                            epoch: i.epoch,
                            ack: Some((source, i.id)),
                            sent_unix_ms: i.sent_unix_ms,
                        })
                        .await;
                });
            }
            Message::Ack(a) => {
                if a.origin == self.swarm.local_peer_id().to_string() {
                    self.epochs.acked(a.id, source);
                }
            }
            Message::Gone(g) => {
                let Ok(peer) = g.peer.parse::<PeerId>() else { return };
                if peer == *self.swarm.local_peer_id() {
                    // A false alarm: a newer announcement puts this node
                    // back in every view.
                    tracing::info!(%source, "called gone by a neighbour; announcing");
                    self.announce_soon = true;
                } else if self.membership.gone(&peer, (g.started_unix_ms, g.seq), now) {
                    tracing::info!(%peer, by = %source, "member gone");
                    self.refresh_view(now);
                }
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "P2P listening");
                self.publish_listen_addrs();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::info!(%address, "P2P no longer listening");
                self.publish_listen_addrs();
            }
            SwarmEvent::ListenerClosed { addresses, reason, .. } => {
                tracing::warn!(?addresses, ?reason, "P2P listener closed");
                self.publish_listen_addrs();
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.metrics.connections_opened.fetch_add(1, Ordering::Relaxed);
                self.conns.opened(peer_id, Instant::now());
                self.dial_unreachable.remove(&peer_id);
                self.first_connected.get_or_insert_with(Instant::now);
                if let Some(b) = self.bootstrap.iter_mut().find(|b| b.dialing == Some(connection_id)) {
                    b.dialing = None;
                    b.peer = Some(peer_id);
                    b.backoff = Duration::from_secs(1);
                }
                // A redial after a dropped connection answered: the peer
                // is alive; the check is over (a ping-failure probe beside
                // a live connection stays, as before).
                if self.probes.remove(&connection_id).is_some() && num_established.get() == 1 {
                    self.swarm.close_connection(connection_id);
                }
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "peer connected");
                    self.publish_connected();
                    if self.settle_announced.is_none() && self.view_asks.len() < VIEW_ASKS {
                        self.ask_view(peer_id);
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                self.metrics.connections_closed.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                let lasted = self
                    .conns
                    .held_since(&peer_id)
                    .is_some_and(|t| now.saturating_duration_since(t) >= GRACE);
                self.conns.closed(&peer_id);
                if num_established == 0 {
                    let dropped = cause.is_some();
                    tracing::info!(peer = %peer_id, cause = ?cause.map(|c| c.to_string()), "peer disconnected");
                    self.publish_connected();
                    // Closed for idleness, or by this node: nothing to
                    // learn. Dropped: is it alive? (Not asked of a short
                    // connection outside the mesh: another node's check.)
                    if dropped && (lasted || self.mesh.contains(&peer_id)) {
                        self.probe(peer_id, PeerCondition::DisconnectedAndNotDialing);
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(?peer_id, %error, "dial failed");
                if let Some(peer) = peer_id {
                    if dial_proves_unreachable(&error) {
                        self.dial_unreachable.insert(peer);
                    } else {
                        self.dial_unreachable.remove(&peer);
                    }
                }
                if let Some(peer) = self.probes.remove(&connection_id) {
                    // Refused (nothing listens there any more) or another
                    // node on its address: gone. A reset handshake (the
                    // member at its connection limit), a timeout (it may be
                    // overloaded) or a local denial says nothing: the
                    // silence bound decides then.
                    let refused = crate::daemon::p2p::error_chain(&error).contains("Connection refused");
                    if refused || matches!(error, libp2p::swarm::DialError::WrongPeerId { .. }) {
                        self.found_gone(peer);
                    }
                }
                if let Some(i) = self.bootstrap.iter().position(|b| b.dialing == Some(connection_id)) {
                    tracing::warn!(addr = %self.bootstrap[i].addr, %error, "bootstrap peer unreachable; retrying with backoff");
                    self.bootstrap_failed(i);
                }
            }
            SwarmEvent::IncomingConnectionError {
                error, send_back_addr, ..
            } => {
                tracing::debug!(%send_back_addr, %error, "inbound connection failed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                let k = self.known.entry(peer_id).or_default();
                k.addrs = info
                    .listen_addrs
                    .into_iter()
                    .filter(|a| !is_unspecified(a))
                    .take(wire::MAX_ADDRS)
                    .collect();
                k.agent = Some(info.agent_version);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer, result: Ok(rtt), ..
            })) => {
                self.known.entry(peer).or_default().rtt = Some(rtt);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer, result: Err(e), ..
            })) => {
                // A connection that lingers after its peer died shows only
                // as an unanswered ping: redial beside it (refused: gone).
                tracing::debug!(%peer, error = %e, "ping failed; redialling");
                self.probe(peer, PeerCondition::NotDialing);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (p, a) in list {
                    by_peer.entry(p).or_default().push(a);
                }
                // Enough for the gossip mesh: members are learned from
                // announcements, not from connections.
                let room = TARGET_DEGREE.saturating_sub(self.swarm.connected_peers().count());
                for (p, addrs) in by_peer.into_iter().take(room) {
                    self.dial_learned(p, addrs);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(ev)) => self.on_rr(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message { message, .. })) => {
                self.on_gossip(message)
            }
            // A peer new to this view (a joiner) learns this node soon; a
            // member it already knows has heard it.
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Subscribed { peer_id, .. }))
                if !self.membership.get(&peer_id).is_some_and(|m| m.live(Instant::now())) =>
            {
                self.announce_soon = true;
            }
            _ => {}
        }
    }

    fn on_rr(&mut self, ev: request_response::Event<wire::Request, wire::Response>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request,
                        channel,
                        request_id,
                        ..
                    },
                ..
            } => {
                self.conns.request_started(peer, Instant::now());
                self.on_request(peer, request, channel, request_id);
            }
            Event::Message {
                peer,
                message: Message::Response { request_id, response },
                ..
            } => {
                self.conns.request_ended(&peer, Instant::now());
                if self.view_asks.remove(&request_id) {
                    if let wire::Response::Members(list) = response {
                        self.learn_view(list);
                    }
                } else if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                } else {
                    self.ack_answered(&request_id);
                }
            }
            Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                self.conns.request_ended(&peer, Instant::now());
                if self.view_asks.remove(&request_id) {
                    tracing::debug!(%peer, %error, "member view not received");
                } else if let Some(reply) = self.pending.remove(&request_id) {
                    tracing::debug!(%peer, %error, "ask failed");
                    use request_response::OutboundFailure as F;
                    let unreachable = match &error {
                        F::DialFailure => self.dial_unreachable.contains(&peer),
                        F::Timeout => true,
                        F::ConnectionClosed | F::UnsupportedProtocols | F::Io(_) => false,
                    };
                    let _ = reply.send(Err(if unreachable {
                        AskError::Unreachable(error.to_string())
                    } else {
                        AskError::Busy(error.to_string())
                    }));
                } else {
                    self.ack_failed(&request_id, &error);
                }
            }
            Event::InboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                self.conns.request_ended(&peer, Instant::now());
                self.view_answers.remove(&request_id);
                tracing::debug!(%peer, %error, "inbound request failed");
            }
            Event::ResponseSent { peer, request_id, .. } => {
                let now = Instant::now();
                self.conns.request_ended(&peer, now);
                if self.view_answers.remove(&request_id) {
                    // A joiner has the view: over the high watermark its
                    // connection goes now, making room for the next one.
                    self.conns.view_served(&peer);
                    self.prune(now);
                }
            }
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        request: wire::Request,
        channel: request_response::ResponseChannel<wire::Response>,
        request_id: InboundRequestId,
    ) {
        match request {
            // Peer exchange is no longer asked for (membership travels
            // on gossipsub); still answered, for nodes of the previous
            // version during a rolling upgrade.
            wire::Request::Peers => {
                let local = *self.swarm.local_peer_id();
                let list = self
                    .swarm
                    .connected_peers()
                    .filter(|p| **p != peer && **p != local)
                    .take(wire::MAX_PEERS)
                    .map(|p| {
                        let addrs = self
                            .known
                            .get(p)
                            .map(|k| k.addrs.iter().map(|a| a.to_vec()).collect())
                            .unwrap_or_default();
                        (p.to_bytes(), addrs)
                    })
                    .collect();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .rr
                    .send_response(channel, wire::Response::Peers(list));
            }
            wire::Request::Members => {
                self.view_answers.insert(request_id);
                let answer = self.view_answer(peer);
                let _ = self.swarm.behaviour_mut().rr.send_response(channel, answer);
            }
            wire::Request::Ack { id, .. } => self.ack_received(peer, id, channel),
            wire::Request::Stats => {
                let mut s = self.responder.stats();
                s.peers = self.swarm.connected_peers().count() as u64;
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .rr
                    .send_response(channel, wire::Response::Stats(s));
            }
            req @ wire::Request::Entry { .. } => {
                self.metrics.served.fetch_add(1, Ordering::Relaxed);
                let fut = self.responder.entry(req);
                let tx = self.self_tx.clone();
                tokio::spawn(async move {
                    let res = fut.await;
                    let _ = tx.send(Command::Respond { channel, res }).await;
                });
            }
        }
    }
}

pub(super) fn is_unspecified(a: &Multiaddr) -> bool {
    a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

pub(super) fn is_loopback(a: &Multiaddr) -> bool {
    a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// Now, in Unix milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random invalidation id: std's randomly keyed hasher (keys from the
/// OS, a fresh one per call) over the time.
fn random_id() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one((Instant::now(), std::process::id()))
}

/// A failed dial shows that nothing listens for the peer: refused, timed
/// out, or another node at its address. A local denial (this node at its
/// limit) or a handshake the peer reset or closed (it at its limit) shows
/// a live, busy peer.
fn dial_proves_unreachable(error: &libp2p::swarm::DialError) -> bool {
    use libp2p::swarm::DialError as D;
    match error {
        D::Denied { .. } | D::Aborted | D::DialPeerConditionFalse(_) => false,
        D::Transport(errors) => !errors.iter().any(|(_, e)| {
            let chain = crate::daemon::p2p::error_chain(e).to_lowercase();
            ["reset", "eof", "end of file", "broken pipe"]
                .iter()
                .any(|w| chain.contains(w))
        }),
        _ => true,
    }
}
