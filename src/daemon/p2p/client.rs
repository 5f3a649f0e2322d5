//! The cloneable [`Client`]: what the rest of the daemon holds to use the
//! node. It sends [`Command`]s to the event loop, which alone owns the swarm,
//! and reads what the event loop publishes through `watch` channels.
//!
//! Invariants: no method holds a lock across `.await`; every wait is
//! bounded (asks by the request timeout).

use std::time::{Duration, Instant};

use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

use super::gossip::Counters;
use super::invalidation::Progress;
use super::membership::SETTLE_MAX;
use super::metrics::P2pMetrics;
use super::owner::owner_of;
use super::wire;
use crate::core::CacheKey;
use crate::daemon::tools::Invalidate;
use crate::sync::StdArc as Arc;

/// A peer as `gh_list_peers` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerInfo {
    /// Its Peer ID.
    pub peer_id: String,
    /// Addresses it listens on (from identify).
    pub addrs: Vec<String>,
    /// Its agent (from identify).
    pub agent: Option<String>,
    /// Last ping round trip, ms.
    pub rtt_ms: Option<u64>,
}

/// Why an ask got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AskError {
    /// The peer could not be reached: a dial to it was refused (nothing
    /// listens on its address), timed out or reached another node, or it
    /// did not answer within the request timeout. Worth suspecting.
    Unreachable(String),
    /// The peer is there but did not take the request: it denied or
    /// dropped the connection (at its connection limit, or pruning), its
    /// stream bound was full, or this node was at its own connection
    /// limit. Worth asking again shortly; proves nothing about its health.
    Busy(String),
    /// This node's P2P node stopped.
    Stopped,
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AskError::Unreachable(e) => write!(f, "unreachable: {e}"),
            AskError::Busy(e) => write!(f, "busy: {e}"),
            AskError::Stopped => f.write_str("P2P node stopped"),
        }
    }
}

/// How long [`Client::ask_retrying`] keeps asking a busy peer.
pub const BUSY_RETRY_FOR: Duration = Duration::from_secs(5);
/// The first pause before asking a busy peer again; it doubles (with
/// jitter, so askers turned away together do not come back together) up
/// to [`BUSY_PAUSE_MAX`].
const BUSY_PAUSE: Duration = Duration::from_millis(50);
const BUSY_PAUSE_MAX: Duration = Duration::from_millis(800);

pub(super) enum Command {
    Ask {
        peer: PeerId,
        req: wire::Request,
        reply: oneshot::Sender<Result<wire::Response, AskError>>,
    },
    Respond {
        channel: ResponseChannel<wire::Response>,
        res: wire::Response,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    /// An ask to `peer` failed: take it out of the view until it announces
    /// again; answered once the view is updated.
    Suspect {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    /// Every member record (live and silent), for fleet stats.
    Members {
        reply: oneshot::Sender<Vec<MemberRow>>,
    },
    /// Publish an invalidation already applied here.
    Invalidate {
        what: Invalidate,
        reply: oneshot::Sender<(u64, watch::Receiver<Progress>)>,
    },
    /// A received invalidation (or a catch-up) was applied: raise the
    /// epoch, and ack when `ack` names the origin and id.
    Applied {
        epoch: u64,
        ack: Option<(PeerId, u64)>,
        /// When the origin published it (Unix ms; 0 for a catch-up).
        sent_unix_ms: u64,
    },
    /// Addresses a discovery source found (`/p2p/ID` optional): dial the
    /// ones not connected.
    Dial {
        addrs: Vec<Multiaddr>,
    },
}

/// A member as fleet stats show it: its latest announced counters and how
/// old they are.
#[derive(Clone, Debug)]
pub struct MemberRow {
    /// Its Peer ID.
    pub peer_id: PeerId,
    /// Its counters when it last announced.
    pub counters: Counters,
    /// Its invalidation epoch when it last announced.
    pub epoch: u64,
    /// Milliseconds since that announcement.
    pub age_ms: u64,
    /// Heard within the failure bound.
    pub live: bool,
}

/// The outcome of a fleet-wide invalidation, as the tool reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetReport {
    /// Members in the view when it was published, this node included.
    pub members: usize,
    /// Members that applied it (acked), this node included.
    pub applied: usize,
    /// Members that did not ack within the wait.
    pub missing: Vec<PeerId>,
    /// The epoch it was published with.
    pub epoch: u64,
}

/// A cloneable handle to the running node.
#[derive(Clone)]
pub struct Client {
    pub(super) local: PeerId,
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) connected: watch::Receiver<Arc<Vec<PeerId>>>,
    /// The live members, this node excluded, sorted.
    pub(super) members: watch::Receiver<Arc<Vec<PeerId>>>,
    /// The member view is settled (`membership::SETTLE_AFTER_CONNECT`).
    pub(super) settled: watch::Receiver<bool>,
    /// The live members that own keys (not joining), sorted.
    pub(super) owners: watch::Receiver<Arc<Vec<PeerId>>>,
    pub(super) listen: watch::Receiver<Arc<Vec<Multiaddr>>>,
    pub(super) timeout: Duration,
    /// Counters.
    pub metrics: Arc<P2pMetrics>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// This node's Peer ID.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Peers connected now.
    pub fn connected(&self) -> Arc<Vec<PeerId>> {
        self.connected.borrow().clone()
    }

    /// The addresses the node listens on now (as bound: a `/tcp/0` asked
    /// for shows the port the kernel chose). Empty until the event loop has
    /// seen the listener's first address.
    pub fn listen_addrs(&self) -> Arc<Vec<Multiaddr>> {
        self.listen.borrow().clone()
    }

    /// Waits (at most `timeout`) until the node listens on at least one
    /// address, and returns its addresses.
    pub async fn listening(&self, timeout: Duration) -> Result<Arc<Vec<Multiaddr>>, String> {
        let mut rx = self.listen.clone();
        let addrs = match tokio::time::timeout(timeout, rx.wait_for(|a| !a.is_empty())).await {
            Ok(Ok(addrs)) => Ok(addrs.clone()),
            Ok(Err(_)) => Err("P2P node stopped before it listened".into()),
            Err(_) => Err(format!("P2P node not listening after {timeout:?}")),
        };
        addrs
    }

    /// Asks the event loop to dial addresses a discovery source found
    /// ([`super::discovery`]); returns once the request is queued.
    pub(super) async fn dial(&self, addrs: Vec<Multiaddr>) {
        if !addrs.is_empty() {
            let _ = self.tx.send(Command::Dial { addrs }).await;
        }
    }

    /// Resolves once the event loop has stopped.
    pub(super) async fn stopped(&self) {
        self.tx.closed().await
    }

    /// The live members (this node excluded): the view owners are chosen
    /// over, whatever this node is connected to.
    pub fn members(&self) -> Arc<Vec<PeerId>> {
        self.members.borrow().clone()
    }

    /// The members that own keys as this node sees them, itself included
    /// once settled: the candidates of [`Client::owner`].
    pub fn owner_count(&self) -> usize {
        self.owners.borrow().len() + usize::from(*self.settled.borrow())
    }

    /// Waits until the member view is settled: at once on a node that has
    /// been in the fleet for a while, at most `membership::SETTLE_MAX`
    /// after start on a joining one.
    pub async fn settled(&self) {
        let mut rx = self.settled.clone();
        let _ = tokio::time::timeout(SETTLE_MAX, rx.wait_for(|s| *s)).await;
    }

    /// The owner of `key` over the member view: this node (once settled)
    /// plus the live members that are not joining. A node still joining
    /// owns a key only when it knows no owner at all.
    pub fn owner(&self, key: &CacheKey) -> PeerId {
        let owners = self.owners.borrow().clone();
        match (*self.settled.borrow(), owners.split_first()) {
            (false, Some((first, rest))) => owner_of(key.as_str(), first, rest),
            _ => owner_of(key.as_str(), &self.local, &owners),
        }
    }

    /// An ask to `peer` failed: it leaves this node's view until it
    /// announces again (see `Membership::suspect`). Returns once the view
    /// (and so [`Client::owner`]) reflects it.
    pub async fn suspect(&self, peer: PeerId) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Suspect { peer, reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Every member record the node holds (live and silent), from the
    /// announcements: no peer is asked.
    pub async fn member_rows(&self) -> Vec<MemberRow> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Members { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Publishes `what` (already applied on this node) to the fleet and
    /// waits at most `wait` for every live member to ack it.
    pub async fn invalidate(&self, what: &Invalidate, wait: Duration) -> Result<FleetReport, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Invalidate {
                what: what.clone(),
                reply,
            })
            .await
            .map_err(|_| "P2P node stopped".to_string())?;
        let (epoch, mut progress) = rx.await.map_err(|_| "P2P node stopped".to_string())?;
        // Done when all acked, the wait is over, or the node stopped.
        let _ = tokio::time::timeout(wait, progress.wait_for(Progress::complete)).await;
        let p = progress.borrow().clone();
        let missing = p.missing();
        Ok(FleetReport {
            members: p.expected.len() + 1,
            applied: p.expected.len() - missing.len() + 1,
            missing,
            epoch,
        })
    }

    /// [`Client::ask`], asked again while the peer is busy
    /// ([`AskError::Busy`]: it turned the connection away at its limit, or
    /// its stream bound was full) and still a member, for at most
    /// [`BUSY_RETRY_FOR`], after pauses of 50 ms doubling to 800 ms, each
    /// between half and all of that (jitter).
    pub async fn ask_retrying(&self, peer: PeerId, req: wire::Request) -> Result<wire::Response, AskError> {
        let started = Instant::now();
        let mut pause = BUSY_PAUSE;
        loop {
            match self.ask(peer, req.clone()).await {
                Err(AskError::Busy(e))
                    if started.elapsed() < BUSY_RETRY_FOR && self.members.borrow().contains(&peer) =>
                {
                    tracing::debug!(%peer, error = %e, "peer busy; asking again");
                    tokio::time::sleep(jittered(pause)).await;
                    pause = (pause * 2).min(BUSY_PAUSE_MAX);
                }
                other => return other,
            }
        }
    }

    /// Sends `req` to `peer` and waits for the answer (bounded by the
    /// request timeout).
    pub async fn ask(&self, peer: PeerId, req: wire::Request) -> Result<wire::Response, AskError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Ask { peer, req, reply })
            .await
            .map_err(|_| AskError::Stopped)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(AskError::Stopped),
            Err(_) => Err(AskError::Unreachable("timed out".into())),
        }
    }

    /// The connected peers, with what identify and ping told.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Peers { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Every connected peer's counters, asked concurrently, each bounded by
    /// `timeout`.
    pub async fn fleet_stats(&self, timeout: Duration) -> Vec<(PeerId, Result<wire::StatsReply, String>)> {
        let peers = self.connected();
        let asks = peers.iter().map(|p| {
            let p = *p;
            async move {
                let r = match tokio::time::timeout(timeout, self.ask(p, wire::Request::Stats)).await {
                    Ok(Ok(wire::Response::Stats(s))) => Ok(s),
                    Ok(Ok(_)) => Err("unexpected answer".to_string()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".to_string()),
                };
                (p, r)
            }
        });
        futures::future::join_all(asks).await
    }
}

/// Between half of `pause` and all of it: a freshly keyed hasher (keys
/// from the OS) over the time picks where. Retries of many nodes turned
/// away together (busy asks, bootstrap dials) spread out this way.
pub(super) fn jittered(pause: Duration) -> Duration {
    use std::hash::BuildHasher as _;
    let r = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    pause / 2 + pause.mul_f64((r % 1024) as f64 / 2048.0)
}
