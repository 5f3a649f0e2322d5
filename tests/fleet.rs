//! A fleet of `ghcache daemon` processes on 127.0.0.1 in one private swarm,
//! in front of one fake GitHub: each key is fetched from GitHub once for
//! the whole fleet; the others are peer hits; killing an owner leaves the
//! others answering; a restarted node keeps its Peer ID; an invalidation
//! on one node reaches every member, and a member that missed it catches up
//! when it rejoins.
//!
//! Membership is the member view (announcements on gossipsub), not the
//! connections: the tests wait for views (`wait_members`), not for a full
//! mesh of connections.
#![cfg(feature = "daemon")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::node::{proc_figures, wait_members, Node};
use common::FakeGithub;

async fn read_all(nodes: &[&Node], keys: std::ops::Range<u32>) -> Vec<String> {
    let mut calls = Vec::new();
    for n in nodes {
        for i in keys.clone() {
            calls.push(async move {
                let v = n.call("gh_get_repo", json!({"repo": format!("o/r{i}")})).await;
                assert_eq!(v["result"]["data"]["path"], json!(format!("/repos/o/r{i}")), "{v}");
                v["result"]["cache_mode"].as_str().unwrap().to_string()
            });
        }
    }
    futures::future::join_all(calls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_asks_github_once_per_key_survives_an_owner_and_keeps_peer_ids() {
    let github = FakeGithub::start().await;
    // Node 0 is the bootstrap; 1 and 2 know only node 0 and must learn of
    // each other through the announcements on gossipsub.
    let mut n0 = Node::spawn("n0", &github.url(), None, &[]);
    let n1 = Node::spawn("n1", &github.url(), Some(n0.p2p), &[]);
    let mut n2 = Node::spawn("n2", &github.url(), Some(n0.p2p), &[]);
    wait_members(&[&n0, &n1, &n2], 3).await;
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for n in [&n0, &n1, &n2] {
            v.push(
                n.stats().await["peer_id"]
                    .as_str()
                    .expect("peer_id while running")
                    .to_string(),
            );
        }
        v
    };
    for n in [&n0, &n1, &n2] {
        assert_eq!(n.log().matches("Peer ID: ").count(), 1, "{}", n.log());
    }

    // 50 keys, each asked on all 3 nodes at once.
    let before = github.requests();
    let modes = read_all(&[&n0, &n1, &n2], 0..50).await;
    let upstream = github.requests() - before;
    let peer = modes.iter().filter(|m| *m == "peer").count();
    eprintln!(
        "3 nodes x 50 keys: fake GitHub saw {upstream} requests; {peer} of {} answers were peer hits",
        modes.len()
    );
    assert_eq!(upstream, 50, "one GitHub request per key across the fleet");
    // The aggregate is built from the counters members announce (every
    // 2 s): wait for the announcements that follow the reads.
    let deadline = Instant::now() + Duration::from_secs(10);
    let agg = loop {
        let agg = n0.stats().await["aggregate"].clone();
        if agg["api_calls"] == json!(50) && agg["peer_hits"].as_u64() == Some(peer as u64) || Instant::now() > deadline
        {
            break agg;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("aggregate: {agg}");
    assert_eq!(agg["nodes"], json!(3), "{agg}");
    assert_eq!(agg["api_calls"], json!(50), "{agg}");
    assert_eq!(agg["peer_hits"].as_u64().unwrap() as usize, peer, "{agg}");
    assert!(peer >= 90, "most non-owner reads are peer hits: {peer}");

    // Kill node 2 (owner of about a third of the keys) while it is asking
    // GitHub on the others' behalf: their asks fail (fallback), node 2
    // leaves their views at once, and the keys' next owner fetches; every
    // read still answers.
    github.state.delay_ms.store(400, std::sync::atomic::Ordering::SeqCst);
    let pair = [&n0, &n1];
    let reads = read_all(&pair, 100..130);
    let killer = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        n2.kill();
    };
    let (modes, ()) = tokio::join!(reads, killer);
    github.state.delay_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(modes.len(), 60);
    let mut fallbacks = 0;
    for n in [&n0, &n1] {
        let m = n.metrics().await;
        fallbacks += m
            .lines()
            .find_map(|l| l.strip_prefix("ghcache_p2p_fallbacks_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap();
    }
    eprintln!("owner killed mid-fetch: {fallbacks} asks fell back to GitHub; all 60 reads answered");
    assert!(fallbacks > 0, "some asks were in flight at the killed owner");
    // Silent past the failure bound, n2 leaves both views.
    wait_members(&[&n0, &n1], 2).await;

    // Restarted with the same data directory: the same Peer ID, and it
    // rejoins every view.
    n2.start();
    n2.wait_ready(Duration::from_secs(20)).await;
    wait_members(&[&n0, &n1, &n2], 3).await;
    let again = n2.stats().await["peer_id"].as_str().unwrap().to_string();
    assert_eq!(again, ids[2]);
    assert_eq!(n2.log().matches("Peer ID: ").count(), 1);
    let metrics = n0.metrics().await;
    assert!(metrics.contains("ghcache_p2p_members 3"), "{metrics}");

    // SIGTERM: the graceful shutdown stops the P2P node too, in time.
    let (status, took) = n0.terminate();
    assert_eq!(status.code(), Some(0), "{}", n0.log());
    assert!(took < Duration::from_secs(10));
    assert!(n0.log().contains("P2P node stopping"), "{}", n0.log());
    // It said it was leaving: out of the views without waiting for the
    // failure bound.
    wait_members(&[&n1, &n2], 2).await;

    // The bootstrap node stays down past a redial tick, then comes back:
    // the others (short of connections) redial it with backoff, and the
    // views hold all three again.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    n0.start();
    n0.wait_ready(Duration::from_secs(20)).await;
    wait_members(&[&n0, &n1, &n2], 3).await;
    assert!(
        n1.log().contains("bootstrap peer unreachable"),
        "n1 redialled while n0 was down"
    );
    for n in [&n0, &n1, &n2] {
        let _ = std::fs::remove_dir_all(&n.dir);
    }
}

#[tokio::test]
async fn no_swarm_key_and_no_token_keeps_p2p_off_and_says_so() {
    let dir = std::env::temp_dir().join(format!("ghcache-fleet-nokey-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ghcache"))
        .args([
            "daemon",
            "--listen",
            "127.0.0.1:0",
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-store",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("GITHUB_TOKEN")
        .env_remove("GH_TOKEN")
        .env_remove("GHCACHE_SWARM_KEY")
        .env("PATH", "/nonexistent") // no `gh` to ask for a token
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("listening") || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.contains("P2P off: no swarm key"), "{log}");
    assert!(!log.contains("Peer ID:"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The figures of docs/p2p.md and BENCHMARKS.md (`ci/bench`):
/// `cargo test --release --test fleet -- --ignored --nocapture bench_nodes`.
/// For each fleet size in `BENCH_NODES` (default `1 3 5`): `BENCH_KEYS`
/// keys (default 200) asked on every node at once, by a P2P fleet and by
/// the same number of `--no-p2p` nodes (the baseline); peer-hit and
/// local-hit latency; fds, threads and RSS per node at rest and at their
/// peak under that load. Prints `bench ...` lines; asserts nothing timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark; prints figures"]
async fn bench_nodes() {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let keys: u32 = env("BENCH_KEYS", "200").parse().unwrap();
    for n in env("BENCH_NODES", "1 3 5").split_whitespace() {
        let n: usize = n.parse().unwrap();
        bench_fleet(n, keys, false).await;
        bench_fleet(n, keys, true).await;
    }
}

async fn bench_fleet(size: usize, keys: u32, p2p: bool) {
    let github = FakeGithub::start().await;
    let tag = if p2p { "p2p" } else { "nop2p" };
    let extra: &[&str] = if p2p { &[] } else { &["--no-p2p"] };
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..size {
        let boot = nodes.first().filter(|_| p2p).map(|n| n.p2p);
        nodes.push(Node::spawn(
            &format!("bench-{tag}-{size}-{i}"),
            &github.url(),
            boot,
            extra,
        ));
    }
    for n in &mut nodes {
        n.wait_ready(Duration::from_secs(20)).await;
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    if p2p {
        wait_members(&refs, size as u64).await;
    }
    let pids: Vec<u32> = nodes.iter().map(|n| n.child.as_ref().unwrap().id()).collect();
    let rest: Vec<[usize; 3]> = pids.iter().map(|p| proc_figures(*p)).collect();

    // `keys` keys asked on every node at once, while fds, threads and RSS
    // are sampled.
    let before = github.requests();
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (pids, sampling) = (pids.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut peak = vec![[0; 3]; pids.len()];
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                for (i, p) in pids.iter().enumerate() {
                    let now = proc_figures(*p);
                    for (max, v) in peak[i].iter_mut().zip(now) {
                        *max = (*max).max(v);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };
    let t0 = Instant::now();
    let modes = read_all(&refs, 0..keys).await;
    let elapsed = t0.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.await.unwrap();
    let upstream = github.requests() - before;
    let peer = modes.iter().filter(|m| *m == "peer").count();
    println!(
        "bench fleet nodes={size} p2p={p2p} keys={keys} upstream={upstream} per_key={:.2} peer_answers={peer} answers={} elapsed_ms={}",
        upstream as f64 / keys as f64,
        modes.len(),
        elapsed.as_millis()
    );
    for (i, (r, p)) in rest.iter().zip(&peak).enumerate() {
        for (state, [fds, threads, rss_kb]) in [("rest", r), ("load", p)] {
            println!(
                "bench node_res nodes={size} p2p={p2p} node={i} state={state} fds={fds} threads={threads} rss_kb={rss_kb}"
            );
        }
    }

    // Latency: node 0 reads `keys` new keys (in a fleet each owner
    // fetches its share); then the last node reads them one by one (the
    // keys others own are peer hits served from the owner's cache), then
    // once more (local hits).
    read_all(&refs[..1], 1000..1000 + keys).await;
    let reader = &nodes[size - 1];
    for want in ["peer", "hit"] {
        let mut lat = Vec::new();
        for i in 1000..1000 + keys {
            let t = Instant::now();
            let v = reader.call("gh_get_repo", json!({"repo": format!("o/r{i}")})).await;
            if v["result"]["cache_mode"] == want {
                lat.push(t.elapsed());
            }
        }
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
        if lat.is_empty() {
            println!("bench read_latency nodes={size} p2p={p2p} mode={want} samples=0");
        } else {
            println!(
                "bench read_latency nodes={size} p2p={p2p} mode={want} samples={} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
                lat.len(),
                pct(0.5),
                pct(0.99),
                pct(1.0)
            );
        }
    }
    if p2p && size > 1 {
        let mut p2p_lines = Vec::new();
        for n in &nodes {
            let m = n.metrics().await;
            p2p_lines.push(
                m.lines()
                    .filter(|l| l.starts_with("ghcache_p2p_") && !l.contains("bad_frames"))
                    .map(String::from)
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        eprintln!("P2P metrics per node ({size} nodes):\n{}", p2p_lines.join("\n"));
    }
    if std::env::var_os("GHCACHE_TEST_LOG").is_some() {
        for n in &nodes {
            for l in n.log().lines().filter(|l| l.contains("did not answer")).take(3) {
                eprintln!("{l}");
            }
        }
    }
    for n in &nodes {
        let _ = std::fs::remove_dir_all(&n.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_port_in_use_backs_off_serves_locally_then_starts() {
    let github = FakeGithub::start().await;
    // The test is about a fixed port: one outside the ephemeral range, so
    // that once released no other socket takes it before the daemon does.
    let taken = common::fixed_port_listener();
    let port = taken.local_addr().unwrap().port();
    // A later --p2p-listen overrides Node::spawn's port 0.
    let node = Node::spawn(
        "busy",
        &github.url(),
        None,
        &["--p2p-listen", &format!("/ip4/127.0.0.1/tcp/{port}")],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let stats = loop {
        let s = node.stats().await;
        if s["p2p"]["failures"].as_u64().unwrap_or(0) >= 1 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stats["peer_id"], Value::Null, "{stats}");
    // A clear error: the address, and why.
    let log = node.log();
    let failed = log
        .lines()
        .find(|l| l.contains("P2P start failed"))
        .unwrap_or_else(|| panic!("no `P2P start failed` line:\n{log}"));
    assert!(
        failed.contains(&format!("/tcp/{port}")) && failed.contains("in use"),
        "the error names the address and the cause: {failed}"
    );
    assert!(
        stats["p2p"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("in use")),
        "{stats}"
    );
    // Ready all the same (it serves locally), and the ready file says why
    // P2P does not run.
    let ready =
        |node: &Node| -> Value { serde_json::from_str(&std::fs::read_to_string(node.ready_file()).unwrap()).unwrap() };
    let r = ready(&node);
    assert_eq!(
        (r["p2p"].as_str(), r["peer_id"].is_null()),
        (Some("retrying"), true),
        "{r}"
    );
    assert!(r["p2p_error"].as_str().is_some_and(|e| e.contains("in use")), "{r}");
    // Local-only meanwhile: reads work.
    let v = node.call("gh_get_repo", json!({"repo": "o/busy"})).await;
    assert_eq!(v["result"]["cache_mode"], "miss", "{v}");
    // The port frees up: a later attempt (after the backoff) starts it.
    drop(taken);
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.stats().await["peer_id"].is_null() {
        assert!(Instant::now() < deadline, "P2P never started: {}", node.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(node.log().matches("Peer ID: ").count(), 1, "{}", node.log());
    // The ready file is replaced: it now names the P2P address.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(&node)["p2p"] != "listening" {
        assert!(Instant::now() < deadline, "ready file not updated: {}", ready(&node));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = ready(&node);
    assert_eq!(r["p2p_listen"], json!([format!("/ip4/127.0.0.1/tcp/{port}")]), "{r}");
    assert_eq!(r["peer_id"], node.stats().await["peer_id"], "{r}");
    let _ = std::fs::remove_dir_all(&node.dir);
}

/// Stats must answer within 1 s (the soak's rule) whatever the peers do:
/// the aggregate comes from the counters members announced, so a peer that
/// hangs (here: SIGSTOP) is never waited for; silent past the failure
/// bound, it is listed as silent (and unreachable) and left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_does_not_wait_for_a_frozen_peer() {
    let github = FakeGithub::start().await;
    let n0 = Node::spawn("frz0", &github.url(), None, &[]);
    let n1 = Node::spawn("frz1", &github.url(), Some(n0.p2p), &[]);
    wait_members(&[&n0, &n1], 2).await;
    let pid = n1.child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let stats = loop {
        let t0 = Instant::now();
        let stats = n0.stats().await;
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(1), "stats took {took:?} with a frozen peer");
        if stats["aggregate"]["silent"].as_array().map(Vec::len) == Some(1) || Instant::now() > deadline {
            break stats;
        }
        let row = &stats["aggregate"]["per_peer"][1];
        assert!(
            row["age_ms"].as_u64().is_some(),
            "a live member's row has its age: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let agg = &stats["aggregate"];
    assert_eq!(agg["silent"].as_array().map(Vec::len), Some(1), "{stats}");
    assert_eq!(agg["unreachable"], agg["silent"], "{stats}");
    assert_eq!(agg["nodes"], json!(1), "{stats}");
    assert!(
        agg["silent"][0]["age_ms"].as_u64().unwrap() >= agg["silent_after_ms"].as_u64().unwrap(),
        "{stats}"
    );
    // Thawed, the peer announces again and counts again (polled: the
    // view watch may still show it while its record is already silent).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let agg = n0.stats().await["aggregate"].clone();
        if agg["nodes"] == json!(2) && agg["silent"] == json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "the thawed peer never counted again: {agg}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in [&n0, &n1] {
        let _ = std::fs::remove_dir_all(&n.dir);
    }
}

/// Reads keys `keys` on every node; returns how many answers carried a
/// version other than `want` (the fake GitHub's data version).
async fn old_answers(nodes: &[&Node], keys: std::ops::Range<u32>, want: u64) -> usize {
    let mut calls = Vec::new();
    for n in nodes {
        for i in keys.clone() {
            calls.push(async move {
                let v = n.call("gh_get_repo", json!({"repo": format!("inv/r{i}")})).await;
                assert_eq!(v["result"]["data"]["path"], json!(format!("/repos/inv/r{i}")), "{v}");
                v["result"]["data"]["version"].as_u64().unwrap()
            });
        }
    }
    futures::future::join_all(calls)
        .await
        .into_iter()
        .filter(|v| *v != want)
        .count()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Issue 15's scenario: 3 nodes, 20 keys read on every node, the data
/// changed on GitHub, `gh_invalidate_cache` on node 0: every member
/// applies it before the call returns, so none of the 60 answers that
/// follow is old. Then a member hangs, the data changes again and is
/// invalidated without it (the reply names it as missing); killed and
/// restarted from its on-disk store, it revalidates what it loaded until it
/// has heard the fleet's higher epoch, then clears, and serves no old
/// answer either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalidation_reaches_every_member_and_a_restarted_one_catches_up() {
    let github = FakeGithub::start().await;
    let n0 = Node::spawn("inv0", &github.url(), None, &[]);
    let n1 = Node::spawn("inv1", &github.url(), Some(n0.p2p), &[]);
    let mut n2 = Node::spawn("inv2", &github.url(), Some(n0.p2p), &[]);
    wait_members(&[&n0, &n1, &n2], 3).await;
    let id2 = n2.stats().await["peer_id"].as_str().unwrap().to_string();

    let all = [&n0, &n1, &n2];
    assert_eq!(old_answers(&all, 0..20, 0).await, 0);
    github.state.version.store(1, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        old_answers(&all, 0..20, 1).await,
        60,
        "cached: all 60 answers are old before"
    );
    let v = n0.call("gh_invalidate_cache", json!({})).await;
    let r = &v["result"];
    eprintln!("fleet invalidation: {r}");
    assert_eq!(
        (&r["members"], &r["applied"], &r["missing"]),
        (&json!(3), &json!(3), &json!([])),
        "{v}"
    );
    assert!(r["invalidated"].as_u64().unwrap() >= 20, "{v}");
    // The acks went to node 0 directly, none on gossip (a member counts
    // its ack once node 0's answer is back, just after the call returned).
    for n in [&n1, &n2] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = n.metrics().await;
            let acks = (
                metric(&m, "ghcache_p2p_acks_direct_total"),
                metric(&m, "ghcache_p2p_acks_gossiped_total"),
            );
            if acks == (1, 0) {
                break;
            }
            assert!(
                acks.0 == 0 && acks.1 == 0 && Instant::now() < deadline,
                "acks {acks:?}:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let stored = |stats: Value| stats["store"]["written"].as_u64().unwrap();
    let written_before = stored(n2.stats().await);
    let old = old_answers(&all, 0..20, 1).await;
    eprintln!("after gh_invalidate_cache on node 0: {old} old answers of 60");
    assert_eq!(old, 0);
    for n in all {
        assert_eq!(metric(&n.metrics().await, "ghcache_p2p_epoch"), 1);
    }

    // The store writes behind: n2 is stopped once its 20 new entries are
    // committed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored(n2.stats().await) < written_before + 20 {
        assert!(
            Instant::now() < deadline,
            "n2 never stored its 20 entries: {}",
            n2.stats().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // n2 hangs holding the 20 entries in its store (SIGSTOP: its
    // connections stay open, so it stays in the views until a ping to it
    // fails; a killed member would leave them at once, its neighbours
    // finding it gone); the data changes and is invalidated meanwhile: the
    // reply names it.
    let pid = n2.pid().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    github.state.version.store(2, std::sync::atomic::Ordering::SeqCst);
    let v = n0.call("gh_invalidate_cache", json!({"repo": "inv/r3"})).await;
    let v = if v["result"]["members"] == json!(3) {
        v
    } else {
        panic!("n2 left the view too early for this check: {v}")
    };
    assert_eq!(v["result"]["missing"], json!([id2]), "{v}");
    assert_eq!(v["result"]["applied"], json!(2), "{v}");
    let v = n1.call("gh_invalidate_cache", json!({})).await;
    assert!(v["result"]["applied"].as_u64().unwrap() >= 2, "{v}");
    n2.kill();

    // Restarted from its store (entries of version 1, epoch 1): it hears
    // the fleet at epoch 3, clears, and takes that epoch.
    n2.start();
    n2.wait_ready(Duration::from_secs(20)).await;
    let loaded = n2.stats().await["store"]["loaded"].as_u64().unwrap();
    assert!(loaded >= 20, "n2 restarted from its store: loaded {loaded}");
    // Before it has heard the fleet's epoch, what it loaded is revalidated
    // with GitHub, never served as it is.
    let old = old_answers(&[&n2], 0..20, 2).await;
    eprintln!("restarted member before comparing epochs: {old} old answers of 20");
    assert_eq!(old, 0);
    wait_members(&[&n0, &n1, &n2], 3).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&n2.metrics().await, "ghcache_p2p_epoch") < 3 {
        assert!(Instant::now() < deadline, "n2 never caught up:\n{}", n2.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&n2.metrics().await, "ghcache_p2p_epoch_catch_ups_total"), 1);
    assert!(n2.log().contains("missed fleet invalidations"), "{}", n2.log());
    let old = old_answers(&[&n2], 0..20, 2).await;
    eprintln!("restarted member after catching up: {old} old answers of 20");
    assert_eq!(old, 0);
    for n in [&n0, &n1, &n2] {
        let _ = std::fs::remove_dir_all(&n.dir);
    }
}
