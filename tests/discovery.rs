//! Discovery without `--bootstrap`: a DNS seed and the GitHub registry
//! (docs/p2p.md, *Discovery*). Daemon processes find each other only
//! through the name or the registry.
//!
//! The DNS tests run in a test namespace of their own
//! ([`common::netns::isolated`]: a private user, network, PID and mount
//! namespace, no root needed): inside, the test brings `lo` up,
//! bind-mounts its own resolv.conf (`nameserver 127.0.0.1`) over
//! /etc/resolv.conf and serves the zone from a small DNS server on
//! 127.0.0.1:53 ([`common::dns_server`], the fake of the world's DNS).
//! Where such namespaces are not allowed they are skipped with the reason;
//! under `CI=true` they fail instead.
//!
//! The registry test runs against the fake GitHub's Actions variables
//! ([`common::variables`]), on loopback.
#![cfg(feature = "daemon")]

mod common;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::dns_server::{DnsServer, Record};
use common::netns::{isolated, Host, Lan};
use common::node::{wait_members, Node};
use common::{runtime, FakeGithub};
use ghcache::daemon::p2p::discovery::github::{entry_name, Entry};

/// Inside the namespace: `lo` up, and /etc/resolv.conf pointing at
/// `nameserver` (a bind mount, private to this mount namespace).
fn set_up_namespace(nameserver: &str) {
    common::netns::ip(&["link", "set", "lo", "up"]);
    let conf = std::env::temp_dir().join(format!("ghcache-discovery-resolv-{}", std::process::id()));
    std::fs::write(
        &conf,
        format!("nameserver {nameserver}\noptions timeout:1 attempts:2\n"),
    )
    .unwrap();
    let mount = Command::new("mount")
        .arg("--bind")
        .arg(&conf)
        .arg("/etc/resolv.conf")
        .status()
        .unwrap();
    assert!(mount.success(), "mount --bind over /etc/resolv.conf");
}

async fn member_count(n: &Node) -> u64 {
    n.call("gh_list_peers", json!({})).await["result"]["member_count"]
        .as_u64()
        .unwrap_or(0)
}

fn peer_id(n: &Node) -> String {
    let ready: Value = serde_json::from_str(&std::fs::read_to_string(n.ready_file()).unwrap()).unwrap();
    ready["peer_id"].as_str().unwrap().to_string()
}

/// Waits until the three `nodes` see each other, which the seed's
/// `records` (A or AAAA) brought about: the name always resolved.
async fn formed_through(dns: &DnsServer, nodes: &[Node], records: &str, started: Instant) {
    wait_members(&nodes.iter().collect::<Vec<_>>(), 3).await;
    eprintln!(
        "  3 nodes found each other through {records} records in {:.1} s ({} DNS queries)",
        started.elapsed().as_secs_f64(),
        dns.queries.load(std::sync::atomic::Ordering::SeqCst)
    );
    for n in nodes {
        assert!(!n.log().contains("did not resolve"), "{}", n.log());
    }
}

/// Three daemons, each on its own loopback address and the same port,
/// find each other through the A records of one name: the seed names no
/// port, so each dials the others at its own P2P port.
#[test]
fn dns_seed_a_records_form_the_fleet() {
    isolated("dns_seed_a_records_form_the_fleet", dns_seed_a_records);
}

fn dns_seed_a_records() {
    set_up_namespace("127.0.0.1");
    runtime().block_on(async {
        let dns = DnsServer::start("127.0.0.1:53")
            .await
            .expect("port 53 in the namespace");
        let name = "fleet.ghcache.test";
        dns.set(name, (2..=4).map(|i| Record::A([127, 0, 0, i].into())).collect());
        let github = FakeGithub::start().await;
        let started = Instant::now();
        let nodes: Vec<Node> = (2..=4)
            .map(|i| {
                let listen = format!("/ip4/127.0.0.{i}/tcp/9100");
                Node::spawn(
                    &format!("dns-a-{i}"),
                    &github.url(),
                    None,
                    &["--p2p-listen", &listen, "--bootstrap-dns", name],
                )
            })
            .collect();
        formed_through(&dns, &nodes, "A", started).await;
    });
}

/// The same over IPv6: three daemons, each in a network namespace of its
/// own on one segment ([`Lan`]) with an IPv6 address there (fd77::10 to
/// fd77::12) and the same port, find each other through the AAAA records
/// of one name (no A record). One namespace per node: with three
/// addresses on one `lo` every dial failed the noise handshake (likely a
/// dial reusing the listen port took the destination's own address as its
/// source and connected to itself).
#[test]
fn dns_seed_aaaa_records_form_the_fleet() {
    isolated("dns_seed_aaaa_records_form_the_fleet", dns_seed_aaaa_records);
}

fn dns_seed_aaaa_records() {
    let mut lan = Lan::new();
    let segment = lan.add_segment();
    common::netns::ip(&[
        "-6",
        "addr",
        "add",
        "fd77::1/64",
        "dev",
        &format!("br{segment}"),
        "nodad",
    ]);
    let hosts: Vec<Host> = (0..3).map(|_| lan.add_host(segment)).collect();
    // The hosts share this mount namespace, so this resolv.conf, and reach
    // the DNS server at the segment's gateway.
    set_up_namespace(&hosts[0].gateway().to_string());
    let addrs: Vec<std::net::Ipv6Addr> = (0..3).map(|i| format!("fd77::{}", 10 + i).parse().unwrap()).collect();
    for (h, a) in hosts.iter().zip(&addrs) {
        let status = Command::new(&h.prefix()[0])
            .args(&h.prefix()[1..])
            .args(["ip", "-6", "addr", "add", &format!("{a}/64"), "dev", "eth0", "nodad"])
            .status()
            .unwrap();
        assert!(status.success(), "ip -6 addr add {a} in a host");
    }
    runtime().block_on(async {
        let dns = DnsServer::start(&format!("{}:53", hosts[0].gateway()))
            .await
            .expect("port 53 in the namespace");
        let name = "fleet6.ghcache.test";
        dns.set(name, addrs.iter().map(|a| Record::Aaaa(*a)).collect());
        let github = FakeGithub::start_on(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).await;
        let started = Instant::now();
        let nodes: Vec<Node> = hosts
            .iter()
            .zip(&addrs)
            .enumerate()
            .map(|(i, (h, a))| {
                let listen = format!("/ip6/{a}/tcp/9100");
                let prefix = h.prefix();
                let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
                Node::spawn_on(
                    &h.ip.to_string(),
                    &format!("dns-aaaa-{i}"),
                    &github.url_via(IpAddr::V4(h.gateway())),
                    &[],
                    &["--allow-no-token", "--p2p-listen", &listen, "--bootstrap-dns", name],
                    &prefix,
                    &[],
                )
            })
            .collect();
        formed_through(&dns, &nodes, "AAAA", started).await;
        for n in &nodes {
            assert!(n.log().contains("/ip6/fd77::"), "{}", n.log());
        }
    });
}

/// Three daemons on port 0 with a name that does not resolve yet: each
/// says so and retries, alone and running; once the name's TXT records
/// list their multiaddrs (with `/p2p/ID`, with the `dnsaddr=` prefix,
/// bare, beside a TXT string that is no address) they find each other.
#[test]
fn dns_seed_txt_records_form_the_fleet_after_a_name_that_did_not_resolve() {
    isolated(
        "dns_seed_txt_records_form_the_fleet_after_a_name_that_did_not_resolve",
        dns_seed_txt_records,
    );
}

fn dns_seed_txt_records() {
    set_up_namespace("127.0.0.1");
    runtime().block_on(async {
        let dns = DnsServer::start("127.0.0.1:53")
            .await
            .expect("port 53 in the namespace");
        let name = "txt.ghcache.test";
        let github = FakeGithub::start().await;
        let mut nodes: Vec<Node> = (0..3)
            .map(|i| Node::spawn(&format!("dns-txt-{i}"), &github.url(), None, &["--bootstrap-dns", name]))
            .collect();
        // Not resolvable: a clear line, retried, the node alone and alive.
        let deadline = Instant::now() + Duration::from_secs(15);
        let said = format!("DNS seed {name} did not resolve");
        while !nodes.iter().all(|n| n.log().matches(&said).count() >= 2) {
            assert!(
                Instant::now() < deadline,
                "no repeated `{said}` line within 15 s:\n{}",
                nodes[0].log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let line = nodes[0].log().lines().find(|l| l.contains(&said)).unwrap().to_string();
        eprintln!("  the log says: {line}");
        assert!(line.contains("retrying in"), "{line}");
        for n in nodes.iter_mut() {
            assert_eq!(member_count(n).await, 1, "found a peer without the name:\n{}", n.log());
            assert!(
                n.child.as_mut().unwrap().try_wait().unwrap().is_none(),
                "exited:\n{}",
                n.log()
            );
        }
        let records = vec![
            Record::Txt(format!(
                "/ip4/127.0.0.1/tcp/{}/p2p/{}",
                nodes[0].p2p,
                peer_id(&nodes[0])
            )),
            Record::Txt(format!("dnsaddr=/ip4/127.0.0.1/tcp/{}", nodes[1].p2p)),
            Record::Txt("v=spf1 -all".into()),
            Record::Txt(format!("/ip4/127.0.0.1/tcp/{}", nodes[2].p2p)),
        ];
        dns.set(name, records);
        let listed = Instant::now();
        wait_members(&nodes.iter().collect::<Vec<_>>(), 3).await;
        eprintln!(
            "  3 nodes found each other {:.1} s after the TXT records appeared",
            listed.elapsed().as_secs_f64()
        );
    });
}

/// A planted registry entry for a made-up peer whose address is a listener
/// of this test, written `age` ago.
fn plant(github: &FakeGithub, repo: &str, age: Duration) -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let peer = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
    let entry = Entry {
        peer: peer.to_string(),
        addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", listener.local_addr().unwrap().port())],
    };
    github
        .state
        .variables
        .insert_aged(repo, &entry_name(&peer), &serde_json::to_string(&entry).unwrap(), age);
    listener
}

fn was_dialled(listener: &TcpListener) -> bool {
    listener.accept().is_ok()
}

/// Three daemons with only the token and `--discovery-github` find each
/// other through the repository's Actions variables; a stale entry (40
/// minutes old) is never dialled, one silent for two days is deleted, and
/// a fresh one is dialled (the control: planted entries are read). A node
/// stopped cleanly (SIGTERM) deletes its own entry; a killed one cannot,
/// and its entry stays (to age out).
#[test]
fn github_registry_forms_the_fleet_and_ignores_stale_entries() {
    runtime().block_on(async {
        let github = FakeGithub::start().await;
        let repo = "o/fleet";
        let stale = plant(&github, repo, Duration::from_secs(40 * 60));
        let old = plant(&github, repo, Duration::from_secs(2 * 86_400));
        let fresh = plant(&github, repo, Duration::from_secs(60));
        let old_name = github
            .state
            .variables
            .of(repo)
            .into_iter()
            .find(|(_, v)| v.value.contains(&format!("/tcp/{}", old.local_addr().unwrap().port())));
        let old_name = old_name.unwrap().0;
        let started = Instant::now();
        let mut nodes: Vec<Node> = (0..3)
            .map(|i| {
                Node::spawn(
                    &format!("registry-{i}"),
                    &github.url(),
                    None,
                    &["--discovery-github", repo],
                )
            })
            .collect();
        wait_members(&nodes.iter().collect::<Vec<_>>(), 3).await;
        let vars = &github.state.variables;
        eprintln!(
            "3 nodes found each other through the registry in {:.1} s; the fake GitHub saw {} requests \
             ({} registry writes, {} conditional list reads, {} answered 304)",
            started.elapsed().as_secs_f64(),
            github.requests(),
            vars.writes.load(std::sync::atomic::Ordering::SeqCst),
            vars.conditional.load(std::sync::atomic::Ordering::SeqCst),
            vars.not_modified.load(std::sync::atomic::Ordering::SeqCst),
        );
        let now = vars.of(repo);
        for n in &nodes {
            let peer: libp2p::PeerId = peer_id(n).parse().unwrap();
            let own = now
                .get(&entry_name(&peer))
                .unwrap_or_else(|| panic!("no entry for {peer}: {now:?}"));
            let entry: Entry = serde_json::from_str(&own.value).unwrap();
            assert_eq!(entry.peer, peer.to_string());
            assert!(
                entry.addrs.iter().any(|a| a.ends_with(&format!("/tcp/{}", n.p2p))),
                "{entry:?}"
            );
        }
        assert!(
            !now.contains_key(&old_name),
            "the entry silent for two days is deleted: {now:?}"
        );
        assert!(
            vars.conditional.load(std::sync::atomic::Ordering::SeqCst) > 0,
            "list reads are conditional"
        );
        // Dials of a read's entries start at once; give them a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !was_dialled(&fresh) {
            assert!(Instant::now() < deadline, "the fresh planted entry was never dialled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!was_dialled(&stale), "a stale entry was dialled");
        assert!(!was_dialled(&old), "an entry silent for two days was dialled");

        // A clean stop deletes the node's entry, within the shutdown's
        // bound; a killed node leaves its own.
        let names: Vec<String> = nodes.iter().map(|n| entry_name(&peer_id(n).parse().unwrap())).collect();
        let (status, took) = nodes[0].terminate();
        assert_eq!(status.code(), Some(0), "{}", nodes[0].log());
        assert!(took < Duration::from_secs(10), "{}", nodes[0].log());
        nodes[1].kill();
        let left = vars.of(repo);
        eprintln!(
            "  stopped cleanly in {:.2} s; its entry {}",
            took.as_secs_f64(),
            if left.contains_key(&names[0]) {
                "is still there"
            } else {
                "is deleted"
            }
        );
        assert!(
            !left.contains_key(&names[0]),
            "the stopped node's entry is deleted: {left:?}\n{}",
            nodes[0].log()
        );
        assert!(
            nodes[0].log().contains("this node's entry deleted"),
            "{}",
            nodes[0].log()
        );
        assert!(left.contains_key(&names[1]), "a killed node cannot delete its entry");
        assert!(left.contains_key(&names[2]), "the running node keeps its entry");
    });
}
