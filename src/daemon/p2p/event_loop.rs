//! The event loop: the one task that owns the `Swarm`.
//!
//! Invariants: nothing else touches the swarm (so there is no lock around
//! it); the loop never touches the cache: inbound entry requests run in
//! their own task through the [`Responder`](super::Responder) and come
//! back as [`Command::Respond`]; it never blocks (no I/O but the swarm's).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{connection_limits, identify, mdns, ping, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot, watch};

use super::client::{Command, PeerInfo};
use super::codec::Codec;
use super::metrics::P2pMetrics;
use super::wire;
use super::Responder;
use crate::sync::{Ordering, StdArc as Arc};

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) limits: connection_limits::Behaviour,
    pub(super) rr: request_response::Behaviour<Codec>,
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
    /// The addresses listened on, as the swarm reported them.
    pub(super) listen: watch::Sender<Arc<Vec<Multiaddr>>>,
    pub(super) pending: HashMap<OutboundRequestId, oneshot::Sender<Result<wire::Response, String>>>,
    pub(super) px_pending: HashSet<OutboundRequestId>,
    pub(super) known: HashMap<PeerId, Known>,
    pub(super) bootstrap: Vec<Bootstrap>,
    /// When the connected set last changed.
    pub(super) last_change: Instant,
    /// When peers were last asked for their peers.
    pub(super) last_px: Instant,
}

/// How often peers are asked for their peers, and bootstrap addresses
/// checked.
const TICK: Duration = Duration::from_secs(3);
/// Peer exchange once the membership has not changed for this long (under
/// the idle connection timeout, so live peers stay connected).
const PX_QUIET: Duration = Duration::from_secs(30);

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
        // Dropping the swarm closes listeners and connections; pending asks
        // see their reply sender dropped.
        let listeners: Vec<_> = self.swarm.listeners().cloned().collect();
        tracing::info!(?listeners, peers = self.connected.borrow().len(), "P2P node stopping");
        self.metrics.peers.store(0, Ordering::Relaxed);
    }

    fn publish_connected(&mut self) {
        self.last_change = Instant::now();
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        self.metrics.peers.store(peers.len() as u64, Ordering::Relaxed);
        self.connected.send_replace(Arc::new(peers));
    }

    fn publish_listen_addrs(&mut self) {
        let addrs: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        self.listen.send_replace(Arc::new(addrs));
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
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
        // Peer exchange: ask every peer for its peers, every tick while the
        // membership is settling, then every PX_QUIET (which also keeps the
        // connections from going idle). O(peers) requests per round.
        let settling = now.duration_since(self.last_change) < PX_QUIET;
        if !settling && now.duration_since(self.last_px) < PX_QUIET {
            return;
        }
        self.last_px = now;
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for p in peers {
            let id = self.swarm.behaviour_mut().rr.send_request(&p, wire::Request::Peers);
            self.px_pending.insert(id);
        }
    }

    fn bootstrap_failed(&mut self, i: usize) {
        let b = &mut self.bootstrap[i];
        b.dialing = None;
        b.next_try = Instant::now() + b.backoff;
        b.backoff = (b.backoff * 2).min(Duration::from_secs(60));
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Ask { peer, req, reply } => {
                let id = self.swarm.behaviour_mut().rr.send_request(&peer, req);
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
        }
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
                if let Some(b) = self.bootstrap.iter_mut().find(|b| b.dialing == Some(connection_id)) {
                    b.dialing = None;
                    b.peer = Some(peer_id);
                    b.backoff = Duration::from_secs(1);
                }
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "peer connected");
                    self.publish_connected();
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .rr
                        .send_request(&peer_id, wire::Request::Peers);
                    self.px_pending.insert(id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                self.metrics.connections_closed.fetch_add(1, Ordering::Relaxed);
                if num_established == 0 {
                    tracing::info!(peer = %peer_id, cause = ?cause.map(|c| c.to_string()), "peer disconnected");
                    self.publish_connected();
                    for b in self.bootstrap.iter_mut().filter(|b| b.peer == Some(peer_id)) {
                        b.next_try = Instant::now();
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(?peer_id, %error, "dial failed");
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
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (p, a) in list {
                    by_peer.entry(p).or_default().push(a);
                }
                for (p, addrs) in by_peer {
                    self.dial_learned(p, addrs);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(ev)) => self.on_rr(ev),
            _ => {}
        }
    }

    fn on_rr(&mut self, ev: request_response::Event<wire::Request, wire::Response>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message: Message::Request { request, channel, .. },
                ..
            } => match request {
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
            },
            Event::Message {
                message: Message::Response { request_id, response },
                ..
            } => {
                if self.px_pending.remove(&request_id) {
                    if let wire::Response::Peers(list) = response {
                        for (id, addrs) in list {
                            let Ok(peer) = PeerId::from_bytes(&id) else { continue };
                            let addrs = addrs.into_iter().filter_map(|a| Multiaddr::try_from(a).ok()).collect();
                            self.dial_learned(peer, addrs);
                        }
                    }
                } else if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                self.px_pending.remove(&request_id);
                if let Some(reply) = self.pending.remove(&request_id) {
                    tracing::debug!(%peer, %error, "ask failed");
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }
}

fn is_unspecified(a: &Multiaddr) -> bool {
    a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
