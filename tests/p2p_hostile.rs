//! A peer inside the swarm (right key) that speaks `/ghcache/entry/1`
//! badly: oversized length prefixes, garbage, truncated frames, trailing
//! bytes, a slow-loris stream. Each stream is closed without an answer, the node does not
//! panic, counts the bad frames, and keeps serving well-behaved peers.
#![cfg(feature = "daemon")]

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use ghcache::daemon::p2p::{self, wire, Limits, P2pMetrics, Responder, Settings};
use libp2p::core::upgrade::Version;
use libp2p::core::Transport as _;
use libp2p::pnet::PnetConfig;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, StreamProtocol};

struct Fixed;

impl Responder for Fixed {
    fn entry(&self, _: wire::Request) -> BoxFuture<'static, wire::Response> {
        Box::pin(async { wire::Response::Error("fixed".into()) })
    }
    fn stats(&self) -> wire::StatsReply {
        wire::StatsReply {
            hits: 1,
            ..Default::default()
        }
    }
}

/// Writes whatever bytes it is given as the request; reads whatever comes
/// back (at most 1 MiB).
#[derive(Clone, Default)]
struct Raw;

impl request_response::Codec for Raw {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> io::Result<Vec<u8>> {
        Err(io::ErrorKind::Unsupported.into())
    }
    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        io.take(1 << 20).read_to_end(&mut v).await?;
        Ok(v)
    }
    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        // "SLOW": a slow-loris that sends 6 bytes of a valid frame, waits
        // 8 s, then the rest. A node that waited would answer it.
        if let Some(frame) = req.strip_prefix(b"SLOW") {
            io.write_all(&frame[..6]).await?;
            io.flush().await?;
            tokio::time::sleep(Duration::from_secs(8)).await;
            io.write_all(&frame[6..]).await?;
            return io.close().await;
        }
        io.write_all(&req).await?;
        io.close().await
    }
    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()> {
        Ok(())
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

#[test]
fn hostile_frames_close_the_stream_and_the_node_keeps_serving() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let psk = p2p::derive_psk("test-token");
    let dir = std::env::temp_dir().join(format!("ghcache-p2p-hostile-{}", std::process::id()));
    let metrics = Arc::new(P2pMetrics::default());
    let settings = Settings {
        listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        bootstrap: Vec::new(),
        mdns: false,
        discovery: Default::default(),
        psk,
        data_dir: dir.clone(),
        request_timeout: Duration::from_secs(3),
        limits: Limits::default(),
    };
    let (host, client) = p2p::start(settings, rt.handle(), Arc::new(Fixed), metrics.clone()).unwrap();
    // The address the node bound (port 0 asked for).
    let node_addr = rt.block_on(client.listening(Duration::from_secs(10))).unwrap()[0].clone();

    let _guard = rt.enter();
    let mut evil = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            let noise = noise::Config::new(key)?;
            Ok(tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .and_then(move |s, _| PnetConfig::new(psk).handshake(s))
                .upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux::Config::default()))
        })
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::<Raw>::new(
                [(StreamProtocol::new(p2p::PROTOCOL), ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
            )
        })
        .unwrap()
        .build();

    let mut valid_with_tail = frame(&wire::encode_request(&wire::Request::Stats).unwrap());
    valid_with_tail.extend_from_slice(b"tail");
    let mut trailing = wire::encode_request(&wire::Request::Stats).unwrap();
    trailing.push(0);
    let entry = wire::Request::Entry {
        key: "repo:repo=o/r".into(),
        path: "/repos/o/r".into(),
        query: Vec::new(),
        shape: wire::WireShape::Single,
        limit: None,
    };
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        (
            "oversized prefix",
            [&u32::MAX.to_be_bytes()[..], &[0xAA; 1000][..]].concat(),
        ),
        (
            "64 KiB + 1 prefix",
            [&((64 * 1024 + 1) as u32).to_be_bytes()[..], &[0; 10][..]].concat(),
        ),
        ("garbage", (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect()),
        ("truncated", [&100u32.to_be_bytes()[..], &[1, 2, 3][..]].concat()),
        ("trailing bytes in the payload", frame(&trailing)),
        ("unknown version", frame(&[9, 2])),
        ("empty", Vec::new()),
        (
            "slow loris",
            [&b"SLOW"[..], &frame(&wire::encode_request(&entry).unwrap())].concat(),
        ),
    ];
    let answers: Vec<(String, Result<Vec<u8>, String>)> = rt.block_on(async {
        evil.dial(node_addr.clone()).unwrap();
        let mut ids = std::collections::HashMap::new();
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            let ev = tokio::time::timeout_at(deadline, evil.select_next_some())
                .await
                .expect("hostile peer timed out");
            match ev {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    for (name, bytes) in &hostile {
                        ids.insert(
                            evil.behaviour_mut().send_request(&peer_id, bytes.clone()),
                            name.to_string(),
                        );
                    }
                    // The last one is well formed: the node still answers.
                    let ok = frame(&wire::encode_request(&wire::Request::Stats).unwrap());
                    ids.insert(evil.behaviour_mut().send_request(&peer_id, ok), "valid".to_string());
                }
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, response },
                    ..
                }) => out.push((ids[&request_id].clone(), Ok(response))),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, error, .. }) => {
                    out.push((ids[&request_id].clone(), Err(error.to_string())))
                }
                _ => {}
            }
            if !ids.is_empty() && out.len() == ids.len() {
                break out;
            }
        }
    });
    for (name, answer) in &answers {
        if name == "valid" {
            let bytes = answer.as_ref().unwrap_or_else(|e| panic!("valid request failed: {e}"));
            assert!(bytes.len() >= 4);
            let decoded = wire::decode_response(&bytes[4..]).unwrap();
            assert!(
                matches!(decoded, wire::Response::Stats(ref s) if s.hits == 1),
                "{decoded:?}"
            );
        } else {
            // Closed without an answer: an empty read or a failure.
            assert!(
                matches!(answer, Ok(b) if b.is_empty()) || answer.is_err(),
                "{name}: {answer:?}"
            );
        }
    }
    let bad = || metrics.bad_frames.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while bad() < 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("answers: {answers:?}\nbad frames counted: {}", bad());
    assert!(bad() >= 5, "bad frames counted: {}", bad());
    drop(_guard);
    ghcache::core::P2pHost::stop(&*host);
    let _ = std::fs::remove_dir_all(&dir);
}
