//! The P2P node in-process, on 127.0.0.1: a wrong swarm key cannot connect
//! nor join the member view; entries travel; garbage on the port does not
//! hurt; shutdown leaves no file descriptor behind.
#![cfg(feature = "daemon")]

use std::io::Write as _;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ghcache::core::P2pHost;
use ghcache::daemon::p2p::{self, wire, Client, Limits, P2pMetrics, Responder, Settings};
use libp2p::pnet::PreSharedKey;
use libp2p::Multiaddr;
use std::sync::Arc;

struct Fixed;

impl Responder for Fixed {
    fn entry(&self, req: wire::Request) -> BoxFuture<'static, wire::Response> {
        Box::pin(async move {
            match req {
                wire::Request::Entry { key, .. } => wire::Response::Entry {
                    key,
                    status: 200,
                    etag: Some("\"v1\"".into()),
                    age_ms: 10,
                    ttl_ms: 60_000,
                    body: b"{\"ok\":true}".to_vec(),
                },
                _ => wire::Response::Error("no".into()),
            }
        })
    }
    fn stats(&self) -> wire::StatsReply {
        wire::StatsReply {
            api_calls: 7,
            ..Default::default()
        }
    }
}

/// Settings listening on port 0: the bound address comes from the node.
fn settings(name: &str, psk: PreSharedKey, bootstrap: Option<&Multiaddr>) -> Settings {
    let dir = std::env::temp_dir().join(format!("ghcache-p2p-{name}-{}", std::process::id()));
    Settings {
        listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        bootstrap: bootstrap.cloned().into_iter().collect(),
        mdns: false,
        discovery: Default::default(),
        psk,
        data_dir: dir,
        request_timeout: Duration::from_secs(5),
        limits: Limits::default(),
    }
}

/// Starts a node and waits for the address it bound.
fn start(s: Settings, rt: &tokio::runtime::Runtime) -> (Box<dyn P2pHost>, Client, Multiaddr) {
    let (host, client) = p2p::start(s, rt.handle(), Arc::new(Fixed), Arc::new(P2pMetrics::default())).unwrap();
    let addrs = rt.block_on(client.listening(Duration::from_secs(10))).unwrap();
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    let addr = addrs[0].clone();
    assert_ne!(tcp_port(&addr), 0, "the bound port, not the one asked for: {addr}");
    (host, client, addr)
}

fn tcp_port(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap()
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// One test, so that the fd count is not disturbed by other tests' sockets.
#[test]
fn private_swarm_entries_garbage_and_fds() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Let the runtime open what it opens for itself first.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    let fds_before = open_fds();

    let key = p2p::derive_psk("test-token");
    let other = p2p::derive_psk("another-token");
    let (ha, ca, a_addr) = start(settings("a", key, None), &rt);
    let (hb, cb, _) = start(settings("b", key, Some(&a_addr)), &rt);
    let (hc, cc, _) = start(settings("c", other, Some(&a_addr)), &rt);
    let pa = tcp_port(&a_addr);

    wait_until("a and b to connect", 10, || {
        ca.connected().len() == 1 && cb.connected().len() == 1
    });
    assert_eq!(ca.connected()[0], cb.local_peer_id());
    // The member view comes from announcements on gossipsub: each sees the
    // other (and never the node with another key).
    wait_until("a and b to see each other as members", 10, || {
        *ca.members() == vec![cb.local_peer_id()] && *cb.members() == vec![ca.local_peer_id()]
    });

    // Entries and stats travel.
    let res = rt.block_on(cb.ask(
        ca.local_peer_id(),
        wire::Request::Entry {
            key: "repo:repo=o/r".into(),
            path: "/repos/o/r".into(),
            query: vec![],
            shape: wire::WireShape::Single,
            limit: None,
        },
    ));
    match res {
        Ok(wire::Response::Entry { key, body, .. }) => {
            assert_eq!(key, "repo:repo=o/r");
            assert_eq!(body, b"{\"ok\":true}");
        }
        other => panic!("{other:?}"),
    }
    let stats = rt.block_on(cb.fleet_stats(Duration::from_secs(2)));
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].1.as_ref().unwrap().api_calls, 7);

    // Garbage and an oversized "frame" straight at the TCP port: the pnet
    // handshake fails, the connection is dropped, a keeps serving.
    for junk in [vec![0xffu8; 100_000], b"GET / HTTP/1.1\r\n\r\n".to_vec(), vec![]] {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", pa)) {
            let _ = s.write_all(&junk);
        }
    }

    // The node with another swarm key never gets in, and cannot ask.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        cc.connected().is_empty(),
        "wrong-key node connected: {:?}",
        cc.connected()
    );
    assert_eq!(ca.connected().len(), 1, "{:?}", ca.connected());
    assert!(cc.members().is_empty() && !ca.members().contains(&cc.local_peer_id()));
    let res = rt.block_on(cc.ask(ca.local_peer_id(), wire::Request::Stats));
    assert!(res.is_err(), "{res:?}");
    assert!(
        rt.block_on(cb.ask(ca.local_peer_id(), wire::Request::Stats)).is_ok(),
        "a still serves after garbage"
    );

    // Shutdown: listeners, connections and event loops go; so do their fds.
    for h in [ha, hb, hc] {
        h.stop();
    }
    drop((ca, cb, cc));
    let mut now = open_fds();
    let deadline = Instant::now() + Duration::from_secs(5);
    while now > fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        now = open_fds();
    }
    assert_eq!(now, fds_before, "fds before start {fds_before}, after shutdown {now}");
    for n in ["a", "b", "c"] {
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("ghcache-p2p-{n}-{}", std::process::id())));
    }
}
