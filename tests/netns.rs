//! Fleets of `ghcache daemon` processes, each in a network namespace of its
//! own (`common/netns.rs`): real addresses, multicast between them, and a
//! network that can be cut in two. Behaviour only, through the daemons'
//! HTTP: member views (`gh_list_peers`), answers, and the fake GitHub's
//! request count per path.
//!
//! - mDNS: 3 daemons in 3 namespaces on one segment, no bootstrap address,
//!   `--mdns true`: they find each other, become one fleet, and a key asked
//!   on every node reaches GitHub once.
//! - Partition and heal: N daemons (default 6) on two segments routed
//!   through the test namespace, each side seeded by its first node. The
//!   routing is cut while clients ask new keys on every node, round after
//!   round: every answer arrives and is the fake's body; once each side's
//!   views hold only that side, each key reaches GitHub at most twice (once
//!   per side). Routing restored: every view holds all N again (the time
//!   is printed; bound 30 s) and a new key reaches GitHub once.
//!
//! The partition test is ignored by default (heavy; see its doc). Figures
//! are printed as `partition name=value` lines (`ci/partition`
//! runs the scenario at a larger N in release; knobs
//! `GHCACHE_PARTITION_NODES`, `GHCACHE_PARTITION_SPLIT_SECS`,
//! `GHCACHE_PARTITION_KEYS`).
#![cfg(feature = "daemon")]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::netns::{isolated, Host, Lan};
use common::node::{wait_members, Node};
use common::{runtime, FakeGithub};

/// The P2P port of every node: each has its own address, so one port
/// serves all and seeds are known before anyone starts.
const P2P_PORT: u16 = 9100;

/// How long views may take to hold the whole fleet again after the heal.
const HEAL_BOUND: Duration = Duration::from_secs(30);

/// A daemon in `host`'s namespace, listening on its address, asking the
/// fake GitHub through the segment's gateway. Beyond loopback the daemon
/// wants a token or `--allow-no-token`; the upstream timeout is short so
/// an ask to an owner across a cut gives up in 4 s.
fn spawn_in(host: &Host, name: &str, github: &FakeGithub, bootstrap: &[String], extra: &[&str]) -> Node {
    let prefix = host.prefix();
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let mut flags = vec!["--allow-no-token", "--upstream-timeout-ms", "2000"];
    flags.extend(extra);
    Node::spawn_on(
        &host.ip.to_string(),
        name,
        &github.url_via(IpAddr::V4(host.gateway())),
        bootstrap,
        &flags,
        &prefix,
        &[],
    )
}

fn repo_path(key: &str) -> String {
    format!("/repos/o/{key}")
}

/// What the fake serves for `gh_get_repo` of `o/KEY` (version 0).
fn expected(key: &str) -> Value {
    json!({"path": repo_path(key), "query": "", "version": 0})
}

/// The outcome of asking some keys on some nodes at once.
#[derive(Default)]
struct Round {
    answers: usize,
    /// Calls without an answer (no response, an error, no data).
    failed: Vec<String>,
    /// Answers whose data is not what the fake serves.
    wrong: Vec<String>,
}

impl Round {
    fn add(&mut self, other: Round) {
        self.answers += other.answers;
        self.failed.extend(other.failed);
        self.wrong.extend(other.wrong);
    }
}

/// Asks every key of `keys` on every node of `nodes`, all at once.
async fn ask_everywhere(nodes: &[&Node], keys: &[String]) -> Round {
    let mut calls = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for key in keys {
            calls.push(async move {
                let v = n.call("gh_get_repo", json!({"repo": format!("o/{key}")})).await;
                (i, key, v)
            });
        }
    }
    let mut round = Round::default();
    for (i, key, v) in futures::future::join_all(calls).await {
        round.answers += 1;
        let data = &v["result"]["data"];
        if data.is_null() {
            round.failed.push(format!("node {i} {key}: {v}"));
        } else if *data != expected(key) {
            round.wrong.push(format!("node {i} {key}: {data}"));
        }
    }
    round
}

/// `(member_count, owner_count)` of each node's `gh_list_peers`.
async fn views(nodes: &[&Node]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for n in nodes {
        let v = n.call("gh_list_peers", json!({})).await;
        let count = |f: &str| v["result"][f].as_u64().unwrap_or(0);
        out.push((count("member_count"), count("owner_count")));
    }
    out
}

fn all_hold(views: &[(u64, u64)], want: u64) -> bool {
    views.iter().all(|&(m, o)| m == want && o == want)
}

/// Upstream requests for each key, as the fake counted them.
fn upstream(github: &FakeGithub, keys: &[String]) -> Vec<u64> {
    keys.iter().map(|k| github.requests_for(&repo_path(k))).collect()
}

fn per_key(counts: &[u64]) -> f64 {
    counts.iter().sum::<u64>() as f64 / counts.len().max(1) as f64
}

fn figure(name: &str, value: impl std::fmt::Display) {
    println!("partition {name}={value}");
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn mdns_finds_members_across_network_namespaces() {
    isolated("mdns_finds_members_across_network_namespaces", || {
        runtime().block_on(mdns_fleet())
    });
}

async fn mdns_fleet() {
    let mut lan = Lan::new();
    let segment = lan.add_segment();
    let github = FakeGithub::start_on(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).await;
    let hosts: Vec<Host> = (0..3).map(|_| lan.add_host(segment)).collect();
    let started = Instant::now();
    let nodes: Vec<Node> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| spawn_in(h, &format!("mdns{i}"), &github, &[], &["--mdns", "true"]))
        .collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    // No bootstrap address anywhere: only mDNS can bring them together.
    wait_members(&refs, 3).await;
    eprintln!(
        "mdns: 3 daemons in 3 namespaces, no bootstrap: every view holds 3 members {:.1} s after the first start",
        started.elapsed().as_secs_f64()
    );

    let keys: Vec<String> = (0..20).map(|i| format!("mdns-{i}")).collect();
    let round = ask_everywhere(&refs, &keys).await;
    assert!(round.failed.is_empty(), "failed answers: {:?}", round.failed);
    assert!(round.wrong.is_empty(), "wrong answers: {:?}", round.wrong);
    let counts = upstream(&github, &keys);
    eprintln!("mdns: 20 keys asked on 3 nodes: upstream requests per key {counts:?}");
    assert!(counts.iter().all(|c| *c == 1), "one GitHub request per key: {counts:?}");
    for n in &nodes {
        let _ = std::fs::remove_dir_all(&n.dir);
    }
}

/// Ignored by default: on a 2-core machine loaded by other builds (load
/// average 15–20) the debug daemons' views flap and the run takes over
/// 60 s; `ci/partition` runs it in release.
#[test]
#[ignore = "6 daemons, 40-70 s in debug; ci/partition runs it (release)"]
fn partition_and_heal() {
    isolated("partition_and_heal", || runtime().block_on(partition_fleet()));
}

async fn partition_fleet() {
    let n: usize = env_or("GHCACHE_PARTITION_NODES", 6);
    let split_for = Duration::from_secs(env_or("GHCACHE_PARTITION_SPLIT_SECS", 12));
    let k: usize = env_or("GHCACHE_PARTITION_KEYS", 10);
    assert!(n >= 2, "a partition needs 2 nodes at least");
    let half = n / 2;

    let mut lan = Lan::new();
    let (side_a, side_b) = (lan.add_segment(), lan.add_segment());
    let github = FakeGithub::start_on(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).await;
    let hosts: Vec<Host> = (0..n)
        .map(|i| lan.add_host(if i < half { side_a } else { side_b }))
        .collect();
    let address = |h: &Host| format!("/ip4/{}/tcp/{P2P_PORT}", h.ip);
    // Each side's first node seeds the fleet, as a fleet configured with
    // two seeds would be.
    let seeds = [address(&hosts[0]), address(&hosts[half])];
    let started = Instant::now();
    let nodes: Vec<Node> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let own = address(h);
            let bootstrap: Vec<String> = seeds.iter().filter(|s| **s != own).cloned().collect();
            spawn_in(h, &format!("part{i}"), &github, &bootstrap, &["--p2p-listen", &own])
        })
        .collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let (a, b) = all.split_at(half);
    wait_members(&all, n as u64).await;
    figure("nodes", n);
    figure("sides", format!("{}+{}", a.len(), b.len()));
    figure("start_views_s", format!("{:.1}", started.elapsed().as_secs_f64()));

    let mut total = Round::default();
    let calm: Vec<String> = (0..k).map(|i| format!("calm-{i}")).collect();
    total.add(ask_everywhere(&all, &calm).await);
    let counts = upstream(&github, &calm);
    // A baseline for the figures below; tests/fleet.rs asserts it.
    figure("calm_requests_per_key", format!("{:.2}", per_key(&counts)));

    // The cut. Rounds of new keys on every node while it lasts; a round
    // is "settled" when, before it started, each side's views held only
    // that side.
    lan.set_routing(false);
    let cut = Instant::now();
    let mut views_split: Option<Duration> = None;
    let (mut transition, mut settled) = (Vec::new(), Vec::new());
    let mut round_no = 0;
    while cut.elapsed() < split_for {
        if views_split.is_none()
            && all_hold(&views(a).await, a.len() as u64)
            && all_hold(&views(b).await, b.len() as u64)
        {
            views_split = Some(cut.elapsed());
        }
        let keys: Vec<String> = (0..k).map(|i| format!("split{round_no}-{i}")).collect();
        round_no += 1;
        let t = Instant::now();
        total.add(ask_everywhere(&all, &keys).await);
        eprintln!(
            "partition: round {round_no} at {:.1} s after the cut took {:.1} s; views split: {}",
            (t - cut).as_secs_f64(),
            t.elapsed().as_secs_f64(),
            views_split.is_some()
        );
        let into = if views_split.is_some() {
            &mut settled
        } else {
            &mut transition
        };
        into.extend(upstream(&github, &keys));
    }
    let views_split = views_split.unwrap_or_else(|| panic!("views did not split within {split_for:?}"));
    figure("views_split_s", format!("{:.1}", views_split.as_secs_f64()));
    figure("split_keys_transition", transition.len());
    figure(
        "split_transition_requests_per_key",
        format!(
            "{:.2} max {}",
            per_key(&transition),
            transition.iter().max().unwrap_or(&0)
        ),
    );
    figure("split_keys_settled", settled.len());
    figure(
        "split_settled_requests_per_key",
        format!("{:.2} max {}", per_key(&settled), settled.iter().max().unwrap_or(&0)),
    );

    // The heal.
    lan.set_routing(true);
    let healed = Instant::now();
    let converged = loop {
        let now = views(&all).await;
        if all_hold(&now, n as u64) {
            break healed.elapsed();
        }
        assert!(
            healed.elapsed() < HEAL_BOUND,
            "views not whole {HEAL_BOUND:?} after the heal: (members, owners) {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    figure("heal_converge_s", format!("{:.1}", converged.as_secs_f64()));
    let before = github.requests();
    let last: Vec<String> = (0..k).map(|i| format!("split{}-{i}", round_no - 1)).collect();
    total.add(ask_everywhere(&all, &last).await);
    figure("after_heal_requests_for_split_keys", github.requests() - before);
    let after: Vec<String> = (0..k).map(|i| format!("healed-{i}")).collect();
    total.add(ask_everywhere(&all, &after).await);
    let healed_counts = upstream(&github, &after);
    figure("after_heal_requests_per_key", format!("{:.2}", per_key(&healed_counts)));
    figure("failed_answers", format!("{} of {}", total.failed.len(), total.answers));
    figure("wrong_answers", format!("{} of {}", total.wrong.len(), total.answers));

    assert!(total.failed.is_empty(), "failed answers: {:?}", total.failed);
    assert!(total.wrong.is_empty(), "wrong answers: {:?}", total.wrong);
    assert!(!settled.is_empty(), "no round ran on split views: lengthen the split");
    assert!(
        settled.iter().all(|c| *c <= 2),
        "on split views a key reaches GitHub once per side at most: {settled:?}"
    );
    assert!(
        healed_counts.iter().all(|c| *c == 1),
        "healed: one request per key: {healed_counts:?}"
    );
    for n in &nodes {
        let _ = std::fs::remove_dir_all(&n.dir);
    }
}
