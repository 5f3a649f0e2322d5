//! Starting and stopping the node: building the swarm ([`start`]), the
//! core's lifecycle around it ([`lifecycle`]), and shutdown.
//!
//! Invariants: a start happens through the core's `Node::start_p2p` (at
//! most once at a time, never after shutdown, backoff then degrade);
//! `Peer ID: <id>` is logged once per successful start; [`Host::stop`]
//! waits (bounded) until the event loop has dropped the swarm.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use libp2p::core::upgrade::Version;
use libp2p::core::Transport as _;
use libp2p::pnet::PnetConfig;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{connection_limits, gossipsub, identify, mdns, noise, ping, tcp, yamux, PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot, watch};

use super::client::Client;
use super::codec::{Codec, MAX_STREAMS};
use super::connections::{Connections, Watermarks};
use super::discovery::{self, Discovery, GithubRegistry};
use super::event_loop::{Behaviour, Bootstrap, EventLoop, TARGET_DEGREE};
use super::gossip;
use super::invalidation::Epochs;
use super::keys::{load_or_create_identity, resolve_key};
use super::membership::Membership;
use super::metrics::P2pMetrics;
use super::{wire, Limits, Responder, Settings, PROTOCOL};
use crate::core::{Node, P2pHost, StartError, StartOutcome};
use crate::daemon::config::Config;
use crate::daemon::ready::P2pReady;
use crate::daemon::App;
use crate::sync::{lock, Mutex, StdArc as Arc};

/// The running node as the core's lifecycle sees it.
pub struct Host {
    peer_id: PeerId,
    stop: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
    /// The GitHub registry's task (`--discovery-github`): it deletes this
    /// node's entry once the event loop has ended.
    registry: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl P2pHost for Host {
    fn peer_id(&self) -> String {
        self.peer_id.to_string()
    }

    /// Tells the event loop to stop and waits (at most 5 s in all) until
    /// it has dropped the swarm (listeners and connections closed) and the
    /// registry, if any, has deleted this node's entry. Blocking: call
    /// from a blocking context (the daemon uses `spawn_blocking`).
    fn stop(&self) {
        let taken = lock(&self.stop).take();
        let registry = lock(&self.registry).take();
        let deadline = Instant::now() + Duration::from_secs(5);
        if let Some((tx, done)) = taken {
            let _ = tx.send(());
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
        if let Some(task) = registry {
            while !task.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
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
                // A failed ping makes the event loop redial the peer (a
                // dead one whose connection lingers is then refused).
                ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_EVERY).with_timeout(PING_TIMEOUT)),
                gossip: fleet_gossip(key)?,
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
    let (members_tx, members) = watch::channel(Arc::new(Vec::new()));
    // Alone by configuration (nothing to dial, nothing to discover): the
    // view is settled from the start.
    let alone = settings.alone();
    let (settled_tx, settled) = watch::channel(alone);
    let (owners_tx, owners) = watch::channel(Arc::new(Vec::new()));
    let (listen_tx, listen) = watch::channel(Arc::new(Vec::new()));
    let (stop_tx, stop_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let client = Client {
        local,
        tx: tx.clone(),
        connected,
        members,
        settled,
        owners,
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
    let epoch = responder.stored_epoch();
    metrics.members.store(1, crate::sync::Ordering::Relaxed);
    metrics.epoch.store(epoch, crate::sync::Ordering::Relaxed);
    let event_loop = EventLoop {
        swarm,
        commands: rx,
        self_tx: tx,
        responder,
        metrics,
        connected: connected_tx,
        members: members_tx,
        listen: listen_tx,
        pending: HashMap::new(),
        known: HashMap::new(),
        bootstrap,
        membership: Membership::new(),
        epochs: Epochs::new(epoch),
        topic: gossipsub::IdentTopic::new(gossip::TOPIC),
        started_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        seq: 0,
        last_announce: None,
        announce_soon: false,
        catching_up: false,
        catch_up_ids: Vec::new(),
        epoch_confirmed: false,
        ticks: 0,
        settled: settled_tx,
        settle_announced: alone.then(Instant::now),
        owners: owners_tx,
        started: Instant::now(),
        first_connected: None,
        probes: HashMap::new(),
        view_asks: Default::default(),
        acks_in_flight: Default::default(),
        conns: Connections::new(),
        marks: Watermarks::for_limit(limits.established),
        mesh: Default::default(),
        view_answers: Default::default(),
        dial_unreachable: Default::default(),
    };
    handle.spawn(async move {
        event_loop.run(stop_rx).await;
        let _ = done_tx.send(());
    });
    // Its tasks end when the event loop does (they wait on its channel).
    let registry = super::discovery::spawn(settings.discovery, client.clone());
    tracing::info!("Peer ID: {local}");
    let host = Host {
        peer_id: local,
        stop: Mutex::new(Some((stop_tx, done_rx))),
        registry: Mutex::new(registry),
    };
    Ok((Box::new(host), client))
}

/// How often a connected peer is pinged.
const PING_EVERY: Duration = Duration::from_secs(5);
/// A ping unanswered this long fails (the peer is then redialled).
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Fewest peers in a node's gossip mesh before it grafts more.
pub(super) const MESH_LOW: usize = 4;
/// Most peers in a node's gossip mesh before it prunes some.
pub(super) const MESH_HIGH: usize = 8;

/// The gossipsub behaviour of the fleet topic: signed messages validated
/// strictly (the sender is the signed source), at most
/// [`gossip::MAX_MESSAGE`] each, subscribed to [`gossip::TOPIC`].
///
/// Every copy of a message a node receives costs it a signature check
/// (gossipsub verifies before it drops duplicates) and a trip through
/// pnet, noise and yamux: the idle CPU of a member is mostly that. So the
/// mesh is kept at [`MESH_LOW`]..=[`MESH_HIGH`] peers around
/// [`TARGET_DEGREE`] instead of up to 12: each message reaches a member
/// about once per mesh neighbour. A member's own messages still go to
/// every peer it is connected to (gossipsub's flood publishing): a node
/// that has just joined is often connected only to peers whose mesh is
/// full, and hears them that way.
fn fleet_gossip(key: &libp2p::identity::Keypair) -> Result<gossipsub::Behaviour, StartError> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .max_transmit_size(gossip::MAX_MESSAGE)
        .mesh_n(TARGET_DEGREE)
        .mesh_n_low(MESH_LOW)
        .mesh_n_high(MESH_HIGH)
        .build()
        .map_err(|e| format!("gossipsub config: {e}"))?;
    let mut behaviour = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
        .map_err(|e| format!("gossipsub: {e}"))?;
    behaviour
        .subscribe(&gossipsub::IdentTopic::new(gossip::TOPIC))
        .map_err(|e| format!("gossipsub subscribe: {e}"))?;
    Ok(behaviour)
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
        discovery: Discovery {
            dns: config.bootstrap_dns.clone(),
            github: match &config.discovery_github {
                None => None,
                Some(repo) => Some(GithubRegistry {
                    api_base: crate::daemon::api_base::ApiBase::parse(&config.github_api_url)
                        .map_err(|e| format!("invalid github_api_url: {e}"))?,
                    repo: repo.clone(),
                    token: config.github_token.0.clone(),
                    timeout: config.upstream_timeout,
                }),
            },
            default_port: discovery::default_port(&config.p2p_listen),
        },
        psk,
        data_dir: config.data_dir.clone(),
        request_timeout: (upstream + Duration::from_secs(2)).min(Duration::from_secs(60)),
        limits: Limits::with_established(config.max_peer_connections),
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

    fn invalidate(&self, what: &crate::daemon::tools::Invalidate) -> usize {
        self.0.invalidate(what)
    }

    fn epoch_confirmed(&self) {
        self.0.confirm_disk_entries();
    }

    fn persist_epoch(&self, epoch: u64) {
        if let Some(store) = &self.0.store {
            store.set_epoch(epoch);
        }
    }

    fn stored_epoch(&self) -> u64 {
        self.0.store.as_ref().map_or(0, |s| s.epoch_at_open())
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
