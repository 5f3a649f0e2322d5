//! The P2P node: a private libp2p swarm in which the fleet asks GitHub each
//! question once.
//!
//! ```text
//!  App::read (leader) ──▶ Client::ask(owner) ──cmd──▶ EventLoop (owns the Swarm) ──/ghcache/entry/1──▶ owner
//!                                                        │  inbound request
//!                                                        └──▶ task: Responder (App::serve_peer, peers off) ──cmd: Respond──▶ EventLoop
//! ```
//!
//! The shape is rust-libp2p's file-sharing example: a cloneable [`Client`]
//! sends commands over a channel to one `EventLoop` task, which alone owns
//! the `Swarm`. Nothing else touches the swarm, so there is no lock around
//! it; the set of connected peers and the addresses the node listens on
//! are published through `watch` channels that readers clone from.
//!
//! # Listen addresses
//! `listen_on` binds the socket before [`start`] returns (a port in use
//! fails the start), but the address actually bound (the port the kernel
//! chose for `/tcp/0`) is reported only by the swarm's `NewListenAddr`
//! event, which the event loop publishes: [`Client::listening`] waits for
//! it, [`Client::listen_addrs`] reads it.
//!
//! # Owner of a key
//! Rendezvous (highest-random-weight) hashing over the connected peers plus
//! this node: each candidate scores `sha256(peer id ‖ key)`, the highest
//! wins ([`owner_of`]). When a peer joins or leaves only the keys it wins or
//! won move. Nodes agree on owners once they see the same member set, which
//! is why the swarm is a full mesh: each node asks its peers for theirs
//! (`Peers`) on connect and every few seconds, and dials the ones it lacks.
//!
//! # Trust
//! The transport is TCP → pnet (pre-shared key, XSalsa20) → noise → yamux.
//! Without the key a peer cannot finish the pnet handshake, so nothing else
//! is reachable. The key comes from a swarm key file, `GHCACHE_SWARM_KEY`,
//! or is derived from the GitHub token with HKDF-SHA256 under the context
//! `ghcache swarm key v1` ([`derive_psk`]); the token never leaves the node.
//! An owner serves a request only when it is the one its key names
//! (`tools::key_of`); entries peers send are checked for form (key, size,
//! status, ETag).
//!
//! # What is absent, on purpose
//! - No QUIC: it would bypass the pre-shared key.
//! - No lock held across `.await` and no cache access from the event loop:
//!   inbound entry requests run in their own task through the daemon's
//!   [`Responder`], which goes through the core's single flight with peers
//!   disabled (so an owner never asks another owner: no loops).

pub mod wire;

use crate::daemon::metrics::Exposition;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::StreamExt;
use libp2p::core::upgrade::Version;
use libp2p::core::Transport as _;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{connection_limits, identify, mdns, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};

use super::config::Config;
use super::ready::P2pReady;
use super::App;
use crate::core::{CacheKey, Node, P2pHost, StartError, StartOutcome};
use crate::sync::{lock, AtomicU64, Mutex, Ordering, StdArc as Arc};

/// The request-response protocol: entries, counters and peer exchange, as
/// tagged messages ([`wire`]).
pub const PROTOCOL: &str = "/ghcache/entry/1";
/// Context string of the token-derived swarm key.
pub const KDF_CONTEXT: &str = "ghcache swarm key v1";
/// Identity key file in the data directory.
pub const IDENTITY_FILE: &str = "p2p-identity.key";

/// Where the swarm key came from (never the key itself in logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `--swarm-key-file`.
    File,
    /// `GHCACHE_SWARM_KEY`.
    Env,
    /// Derived from the GitHub token.
    Token,
}

/// Settings of the node.
#[derive(Clone)]
pub struct Settings {
    /// Listen address.
    pub listen: Multiaddr,
    /// Peers to dial and keep dialling.
    pub bootstrap: Vec<Multiaddr>,
    /// mDNS discovery on the LAN.
    pub mdns: bool,
    /// The private network key.
    pub psk: PreSharedKey,
    /// Where the identity key is kept.
    pub data_dir: PathBuf,
    /// How long to wait for a peer's answer.
    pub request_timeout: Duration,
    /// Connection limits.
    pub limits: Limits,
}

/// Connection limits (libp2p `connection_limits`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Established connections in total.
    pub established: u32,
    /// Established connections per peer.
    pub per_peer: u32,
    /// Pending (handshaking) connections, each direction.
    pub pending: u32,
    /// Connections with no stream open are closed after this.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            established: 128,
            per_peer: 2,
            pending: 32,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Derives the swarm key from the GitHub token: HKDF-SHA256 with the salt
/// [`KDF_CONTEXT`], so the key says nothing about the token and no other
/// use of the token yields the same bytes.
pub fn derive_psk(token: &str) -> PreSharedKey {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(KDF_CONTEXT.as_bytes()), token.as_bytes());
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit (255 * 32): cannot fail.
    let _ = hk.expand(b"libp2p pnet psk", &mut out);
    PreSharedKey::new(out)
}

/// Parses a swarm key: the file format (`/key/swarm/psk/1.0.0/`,
/// `/base16/`, 64 hex digits) or the 64 hex digits alone.
pub fn parse_psk(text: &str) -> Result<PreSharedKey, String> {
    let text = text.trim();
    let full = if text.starts_with("/key/swarm/") {
        text.to_string()
    } else {
        format!("/key/swarm/psk/1.0.0/\n/base16/\n{text}")
    };
    full.parse::<PreSharedKey>()
        .map_err(|e| format!("invalid swarm key: {e}"))
}

/// Loads the node's ed25519 identity from `dir`, or creates it (mode 0600),
/// so the Peer ID survives restarts.
pub fn load_or_create_identity(dir: &Path) -> io::Result<Keypair> {
    let path = dir.join(IDENTITY_FILE);
    match fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            crate::daemon::private_fs::create_dir(dir)?;
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| io::Error::other(e.to_string()))?;
            let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
            {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

fn score(peer: &PeerId, key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(peer.to_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    h.finalize().into()
}

/// The owner of `key` among `local` and `peers` (rendezvous hashing).
pub fn owner_of(key: &str, local: &PeerId, peers: &[PeerId]) -> PeerId {
    let mut best = (*local, score(local, key));
    for p in peers {
        let s = score(p, key);
        if s > best.1 || (s == best.1 && p.to_bytes() > best.0.to_bytes()) {
            best = (*p, s);
        }
    }
    best.0
}

/// Answers peers' requests: implemented by the daemon over its cache.
pub trait Responder: Send + Sync + 'static {
    /// Answers an `Entry` request (through the single flight, peers off).
    fn entry(&self, req: wire::Request) -> BoxFuture<'static, wire::Response>;
    /// This node's counters.
    fn stats(&self) -> wire::StatsReply;
}

/// P2P counters, shared by the client, the event loop and `/metrics`.
#[derive(Debug, Default)]
pub struct P2pMetrics {
    /// Entry requests sent to owners.
    pub asked: AtomicU64,
    /// Entries received from owners and accepted.
    pub received: AtomicU64,
    /// Asks that failed or were refused: fetched upstream instead.
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
}

impl P2pMetrics {
    /// Adds the node's metrics to a scrape (`ghcache_p2p_*`).
    pub fn expose(&self, out: &mut Exposition) {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.gauge("p2p_peers", "Peers connected.", v(&self.peers));
        out.counter("p2p_asked", "Entry requests sent to owners.", v(&self.asked));
        out.counter("p2p_received", "Entries received from owners.", v(&self.received));
        out.counter(
            "p2p_fallbacks",
            "Owner asks that failed (fetched upstream instead).",
            v(&self.fallbacks),
        );
        out.counter("p2p_served", "Entry requests answered for peers.", v(&self.served));
        out.counter(
            "p2p_bad_frames",
            "Inbound streams dropped for bad frames.",
            v(&self.bad_frames),
        );
        out.counter(
            "p2p_connections_opened",
            "Connections established.",
            v(&self.connections_opened),
        );
        out.counter(
            "p2p_connections_closed",
            "Connections closed.",
            v(&self.connections_closed),
        );
    }
}

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

enum Command {
    Ask {
        peer: PeerId,
        req: wire::Request,
        reply: oneshot::Sender<Result<wire::Response, String>>,
    },
    Respond {
        channel: ResponseChannel<wire::Response>,
        res: wire::Response,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
}

/// A cloneable handle to the running node.
#[derive(Clone)]
pub struct Client {
    local: PeerId,
    tx: mpsc::Sender<Command>,
    connected: watch::Receiver<Arc<Vec<PeerId>>>,
    listen: watch::Receiver<Arc<Vec<Multiaddr>>>,
    timeout: Duration,
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

    /// The owner of `key` over the connected set plus this node.
    pub fn owner(&self, key: &CacheKey) -> PeerId {
        let peers = self.connected();
        owner_of(key.as_str(), &self.local, &peers)
    }

    /// [`Client::ask`], asked a second time after 50 ms when the first
    /// failed fast while the peer is still connected (a connection at its
    /// stream bound drops new streams).
    pub async fn ask_retrying(&self, peer: PeerId, req: wire::Request) -> Result<wire::Response, String> {
        let started = Instant::now();
        match self.ask(peer, req.clone()).await {
            Err(e) if started.elapsed() < Duration::from_secs(1) && self.connected().contains(&peer) => {
                tracing::debug!(%peer, error = %e, "ask failed fast; asking once more");
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.ask(peer, req).await
            }
            other => other,
        }
    }

    /// Sends `req` to `peer` and waits for the answer (bounded by the
    /// request timeout).
    pub async fn ask(&self, peer: PeerId, req: wire::Request) -> Result<wire::Response, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Ask { peer, req, reply })
            .await
            .map_err(|_| "P2P node stopped".to_string())?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("P2P node stopped".into()),
            Err(_) => Err("timed out".into()),
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
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err("timed out".to_string()),
                };
                (p, r)
            }
        });
        futures::future::join_all(asks).await
    }
}

/// The codec of [`PROTOCOL`]: one frame each way ([`wire`]). Counts
/// inbound requests it refuses (request-response reports no event for
/// them: the stream is just closed).
///
/// A request must arrive whole within `read_timeout` (at most 10 s), and
/// request-response bounds each whole inbound exchange by the request
/// timeout: a slow-loris stream is dropped (`tests/p2p_hostile.rs`).
#[derive(Clone)]
pub struct Codec {
    metrics: Arc<P2pMetrics>,
    read_timeout: Duration,
}

/// Concurrent request-response streams per connection, both directions
/// together. Bounds memory: inbound requests are at most
/// [`MAX_REQUEST_FRAME`] each.
pub const MAX_STREAMS: usize = 256;

/// Largest request frame (a key and a path with a few parameters).
pub const MAX_REQUEST_FRAME: usize = 64 * 1024;

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = wire::Request;
    type Response = wire::Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<wire::Request>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let result = match tokio::time::timeout(self.read_timeout, wire::read_frame(io, MAX_REQUEST_FRAME)).await {
            Ok(Ok(frame)) => wire::decode_request(&frame).map_err(io::Error::from),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "request not received in time")),
        };
        if let Err(e) = &result {
            self.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "bad inbound request; stream closed");
        }
        result
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<wire::Response>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let frame = wire::read_frame(io, wire::MAX_FRAME).await?;
        Ok(wire::decode_response(&frame)?)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: wire::Request) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        let payload = wire::encode_request(&req)?;
        wire::write_frame(io, &payload).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: wire::Response) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        let payload = wire::encode_response(&res)?;
        wire::write_frame(io, &payload).await
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    rr: request_response::Behaviour<Codec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// The running node as the core's lifecycle sees it.
pub struct Host {
    peer_id: PeerId,
    stop: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

impl P2pHost for Host {
    fn peer_id(&self) -> String {
        self.peer_id.to_string()
    }

    /// Tells the event loop to stop and waits (at most 5 s) until it has
    /// dropped the swarm: listeners and connections closed. Blocking: call
    /// from a blocking context (the daemon uses `spawn_blocking`).
    fn stop(&self) {
        let taken = lock(&self.stop).take();
        if let Some((tx, done)) = taken {
            let _ = tx.send(());
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut done = done;
            loop {
                match done.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(oneshot::error::TryRecvError::Empty) => {
                        tracing::warn!("P2P event loop did not stop within 5 s");
                        break;
                    }
                    _ => break,
                }
            }
        }
    }
}

/// Builds the swarm, binds the listen address and spawns the event loop on
/// `handle`. Synchronous: the core's lifecycle runs it as the starter. On
/// success logs `Peer ID: <id>` (once per start) and returns the host and
/// its client.
pub fn start(
    settings: Settings,
    handle: &tokio::runtime::Handle,
    responder: Arc<dyn Responder>,
    metrics: Arc<P2pMetrics>,
) -> Result<(Box<dyn P2pHost>, Client), StartError> {
    let _guard = handle.enter();
    let keypair = load_or_create_identity(&settings.data_dir)
        .map_err(|e| format!("identity key in {}: {e}", settings.data_dir.display()))?;
    let local = keypair.public().to_peer_id();
    let psk = settings.psk;
    let limits = settings.limits;
    let mdns_on = settings.mdns;
    let request_timeout = settings.request_timeout;
    let codec_metrics = metrics.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|key| -> Result<_, StartError> {
            let noise = noise::Config::new(key)?;
            Ok(tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                .upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux::Config::default()))
        })?
        .with_behaviour(|key| -> Result<Behaviour, StartError> {
            let local = key.public().to_peer_id();
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local)?)
            } else {
                None
            };
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_established(Some(limits.established))
                        .with_max_established_per_peer(Some(limits.per_peer))
                        .with_max_pending_incoming(Some(limits.pending))
                        .with_max_pending_outgoing(Some(limits.pending)),
                ),
                rr: request_response::Behaviour::with_codec(
                    Codec {
                        metrics: codec_metrics,
                        read_timeout: request_timeout.min(Duration::from_secs(10)),
                    },
                    [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(request_timeout)
                        // Inbound and outbound streams of a connection share
                        // this bound; a burst beyond it fails fast (the asker
                        // retries once, then fetches itself).
                        .with_max_concurrent_streams(MAX_STREAMS),
                ),
                identify: identify::Behaviour::new(
                    identify::Config::new("/ghcache/1.0.0".into(), key.public())
                        .with_agent_version(format!("ghcache/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::new(ping::Config::new()),
                mdns: Toggle::from(mdns),
            })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(limits.idle_timeout))
        // A peer with another swarm key never completes the handshake:
        // give up on it quickly instead of after the default ~10 s.
        .with_connection_timeout(Duration::from_secs(3))
        .build();
    swarm
        .listen_on(settings.listen.clone())
        .map_err(|e| format!("cannot listen on {}: {}", settings.listen, error_chain(&e)))?;

    let (tx, rx) = mpsc::channel(256);
    let (connected_tx, connected) = watch::channel(Arc::new(Vec::new()));
    let (listen_tx, listen) = watch::channel(Arc::new(Vec::new()));
    let (stop_tx, stop_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let client = Client {
        local,
        tx: tx.clone(),
        connected,
        listen,
        timeout: request_timeout,
        metrics: metrics.clone(),
    };
    let bootstrap = settings
        .bootstrap
        .iter()
        .map(|a| Bootstrap {
            addr: a.clone(),
            peer: None,
            dialing: None,
            next_try: Instant::now(),
            backoff: Duration::from_secs(1),
        })
        .collect();
    let event_loop = EventLoop {
        swarm,
        commands: rx,
        self_tx: tx,
        responder,
        metrics,
        connected: connected_tx,
        listen: listen_tx,
        pending: HashMap::new(),
        px_pending: HashSet::new(),
        last_change: Instant::now(),
        last_px: Instant::now(),
        known: HashMap::new(),
        bootstrap,
    };
    handle.spawn(async move {
        event_loop.run(stop_rx).await;
        let _ = done_tx.send(());
    });
    tracing::info!("Peer ID: {local}");
    let host = Host {
        peer_id: local,
        stop: Mutex::new(Some((stop_tx, done_rx))),
    };
    Ok((Box::new(host), client))
}

struct Bootstrap {
    addr: Multiaddr,
    peer: Option<PeerId>,
    dialing: Option<ConnectionId>,
    next_try: Instant,
    backoff: Duration,
}

#[derive(Default)]
struct Known {
    addrs: Vec<Multiaddr>,
    agent: Option<String>,
    rtt: Option<Duration>,
}

/// Owns the swarm; everything else talks to it through [`Command`]s.
struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    self_tx: mpsc::Sender<Command>,
    responder: Arc<dyn Responder>,
    metrics: Arc<P2pMetrics>,
    connected: watch::Sender<Arc<Vec<PeerId>>>,
    /// The addresses listened on, as the swarm reported them.
    listen: watch::Sender<Arc<Vec<Multiaddr>>>,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<wire::Response, String>>>,
    px_pending: HashSet<OutboundRequestId>,
    known: HashMap<PeerId, Known>,
    bootstrap: Vec<Bootstrap>,
    /// When the connected set last changed.
    last_change: Instant,
    /// When peers were last asked for their peers.
    last_px: Instant,
}

/// How often peers are asked for their peers, and bootstrap addresses
/// checked.
const TICK: Duration = Duration::from_secs(3);
/// Peer exchange once the membership has not changed for this long (under
/// the idle connection timeout, so live peers stay connected).
const PX_QUIET: Duration = Duration::from_secs(30);

impl EventLoop {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
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

/// The swarm key the config asks for: the key file, else
/// `GHCACHE_SWARM_KEY`, else derived from the GitHub token. `Ok(None)`: no
/// key and no token.
pub fn resolve_key(config: &Config) -> Result<Option<(PreSharedKey, KeySource)>, String> {
    if let Some(path) = &config.swarm_key_file {
        let text = fs::read_to_string(path).map_err(|e| format!("swarm key file {}: {e}", path.display()))?;
        return parse_psk(&text)
            .map(|k| Some((k, KeySource::File)))
            .map_err(|e| format!("{}: {e}", path.display()));
    }
    if let Some(text) = &config.swarm_key.0 {
        return parse_psk(text)
            .map(|k| Some((k, KeySource::Env)))
            .map_err(|e| format!("GHCACHE_SWARM_KEY: {e}"));
    }
    Ok(config
        .github_token
        .0
        .as_deref()
        .map(|t| (derive_psk(t), KeySource::Token)))
}

/// The node's settings from the daemon's config, or why P2P stays off.
pub fn settings(config: &Config) -> Result<Settings, String> {
    if !config.p2p {
        return Err("P2P disabled (--no-p2p); running local-only".into());
    }
    let (psk, source) = match resolve_key(config)? {
        Some(k) => k,
        None => {
            return Err("P2P off: no swarm key (--swarm-key-file, GHCACHE_SWARM_KEY) and no GitHub token to derive one from; running local-only".into())
        }
    };
    tracing::info!(key_source = ?source, fingerprint = %psk.fingerprint(), "swarm key");
    // An owner may need a full upstream fetch (retries included) to answer.
    let upstream = config.upstream_timeout.saturating_mul(config.upstream_retries + 1);
    Ok(Settings {
        listen: config.p2p_listen.clone(),
        bootstrap: config.bootstrap.clone(),
        mdns: config.mdns,
        psk,
        data_dir: config.data_dir.clone(),
        request_timeout: (upstream + Duration::from_secs(2)).min(Duration::from_secs(60)),
        limits: Limits::default(),
    })
}

struct AppResponder(Arc<App>);

impl Responder for AppResponder {
    fn entry(&self, req: wire::Request) -> BoxFuture<'static, wire::Response> {
        let app = self.0.clone();
        Box::pin(async move { app.serve_peer(req).await })
    }

    fn stats(&self) -> wire::StatsReply {
        self.0.stats_reply()
    }
}

/// How long [`lifecycle`] waits for a started node to report its listen
/// address (it comes with the event loop's first poll).
const LISTEN_REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the node through the core's lifecycle (so at most once at a time,
/// never after shutdown), retrying after failures with the lifecycle's
/// backoff until it runs, degrades or is shut down. On success the client
/// is published in [`App::p2p`]. The responder holds the app; the cycle
/// (app → client → event loop → responder → app) ends when the host stops.
///
/// Each outcome is reported on `ready` ([`super::ready`]): the bound
/// addresses once the listener reported them, or why the node does not
/// run (`retrying` after a failed start, `degraded`, `off`).
pub async fn lifecycle(node: Arc<Node>, app: Arc<App>, settings: Settings, ready: watch::Sender<P2pReady>) {
    let handle = tokio::runtime::Handle::current();
    let not_running = |state, error: String| ready.send_replace(P2pReady::NotRunning { state, error });
    loop {
        let (n, a, s, h) = (node.clone(), app.clone(), settings.clone(), handle.clone());
        let attempt = tokio::task::spawn_blocking(move || {
            let mut client = None;
            let metrics = a.p2p_metrics.clone();
            let outcome = n.start_p2p(|| {
                let (host, c) = start(s, &h, Arc::new(AppResponder(a)), metrics)?;
                client = Some(c);
                Ok(host)
            });
            (outcome, client)
        })
        .await;
        let Ok((outcome, client)) = attempt else { return };
        match outcome {
            StartOutcome::Running { .. } => {
                if let Some(c) = client {
                    app.p2p.send_replace(Some(c.clone()));
                    // The listener is bound; its address comes with the
                    // event loop's first poll.
                    let addrs = match c.listening(LISTEN_REPORT_TIMEOUT).await {
                        Ok(addrs) => addrs,
                        Err(e) => {
                            tracing::warn!(error = %e, "P2P listen address not reported");
                            c.listen_addrs()
                        }
                    };
                    ready.send_replace(P2pReady::Listening {
                        peer_id: c.local_peer_id().to_string(),
                        addrs: addrs.iter().map(|a| a.to_string()).collect(),
                    });
                }
                return;
            }
            StartOutcome::Failed {
                error,
                failures,
                degraded,
            } => {
                tracing::warn!(%error, failures, degraded, "P2P start failed");
                if degraded {
                    tracing::warn!("P2P degraded to local-only after repeated failures");
                    not_running("degraded", error.to_string());
                    return;
                }
                not_running("retrying", error.to_string());
            }
            StartOutcome::BackingOff { retry_at } => {
                let wait = retry_at.since(app.cache.now()).max(Duration::from_millis(10));
                tokio::time::sleep(wait).await;
            }
            StartOutcome::Degraded => {
                tracing::warn!("P2P degraded to local-only after repeated failures");
                not_running("degraded", "repeated start failures".into());
                return;
            }
            StartOutcome::Disabled => {
                not_running("off", "disabled".into());
                return;
            }
            StartOutcome::ShutDown => {
                not_running("off", "shut down".into());
                return;
            }
        }
    }
}

/// Stops P2P for good: unpublishes the client, then stops the host through
/// the lifecycle on a blocking thread (the host's stop waits for its event
/// loop).
pub async fn shutdown(node: Arc<Node>, app: &App) {
    app.p2p.send_replace(None);
    let _ = tokio::task::spawn_blocking(move || node.shutdown_p2p()).await;
}

fn is_unspecified(a: &Multiaddr) -> bool {
    a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

/// An error with its sources: libp2p's transport errors print nothing of
/// their own and keep the cause (`Address already in use`) in `source()`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !more.is_empty() && !text.contains(&more) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_moves_few_keys() {
        let ids: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        let keys: Vec<String> = (0..1000).map(|i| format!("repo:repo=o/r{i}")).collect();
        let all: Vec<_> = keys.iter().map(|k| owner_of(k, &ids[0], &ids[1..])).collect();
        // Every member computes the same owner whatever its own position.
        for k in &keys {
            let a = owner_of(k, &ids[0], &ids[1..]);
            let mut others: Vec<PeerId> = ids.iter().filter(|p| **p != ids[3]).copied().collect();
            others.reverse();
            assert_eq!(a, owner_of(k, &ids[3], &others));
        }
        // Removing one peer moves only the keys it owned.
        let without: Vec<_> = keys.iter().map(|k| owner_of(k, &ids[0], &ids[1..4])).collect();
        for (a, b) in all.iter().zip(&without) {
            assert!(a == b || *a == ids[4]);
        }
        // Spread: each of 5 owns a fair share.
        for p in &ids {
            let n = all.iter().filter(|o| *o == p).count();
            assert!((100..=300).contains(&n), "{n}");
        }
    }

    #[test]
    fn token_key_is_domain_separated_and_stable() {
        let a = derive_psk("ghp_secret");
        assert_eq!(
            a.fingerprint().to_string(),
            derive_psk("ghp_secret").fingerprint().to_string()
        );
        assert_ne!(
            a.fingerprint().to_string(),
            derive_psk("ghp_other").fingerprint().to_string()
        );
        // Not the token's bytes themselves, nor a plain hash of them.
        let plain: [u8; 32] = Sha256::digest(b"ghp_secret").into();
        assert_ne!(
            a.fingerprint().to_string(),
            PreSharedKey::new(plain).fingerprint().to_string()
        );
    }

    #[test]
    fn swarm_key_file_format_and_bare_hex() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let file = format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n");
        assert_eq!(
            parse_psk(&file).unwrap().fingerprint().to_string(),
            parse_psk(hex).unwrap().fingerprint().to_string()
        );
        assert!(parse_psk("nothex").is_err());
        assert!(parse_psk(&hex[..60]).is_err());
    }

    #[test]
    fn identity_survives_and_is_private() {
        let dir = std::env::temp_dir().join(format!("ghcache-p2p-id-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let a = load_or_create_identity(&dir).unwrap();
        let b = load_or_create_identity(&dir).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join(IDENTITY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }
}
