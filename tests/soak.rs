//! The soak: a fake GitHub and 3 `ghcache daemon` processes in one swarm on
//! 127.0.0.1, under mixed MCP (Streamable HTTP sessions), `/jsonrpc` and
//! `/github/*` proxy traffic for `SOAK_SECONDS`, while the fake GitHub flips
//! between healthy, slow, failing and rate-limited, and every few minutes
//! daemon 2 is, in turn, killed (SIGKILL) and restarted, stopped (SIGTERM)
//! and restarted, or frozen for 5 s (SIGSTOP, then SIGCONT).
//!
//! Every sample period it reads each daemon's open fds (`/proc/PID/fd`),
//! threads and RSS (`/proc/PID/status`) and times one `gh_get_cache_stats`,
//! and writes a row per daemon to `SOAK_OUT/soak.csv` (`ci/soak` plots it).
//!
//! # Pass rule
//! The soak fails when any of these happens:
//! - **hung**: a request gets no answer within [`REQUEST_TIMEOUT`] while its
//!   daemon stayed up;
//! - **slow stats**: a `gh_get_cache_stats` (the sampler's or the load's)
//!   takes over 1 s;
//! - **wrong or broken**: a 200 whose body is not the asked repository's, a
//!   500, a connection error from a daemon that was up, a SIGTERM that does
//!   not exit 0 within 10 s, a restart not serving within 30 s, a panic in a
//!   log;
//! - **upward trend**: daemons 0 and 1 are never restarted; over their
//!   samples after the warm-up (a fifth of the run, at most 6 min: rmcp
//!   keeps an abandoned MCP session 5 min, so the session population is
//!   steady only after that), the median of the last third exceeds the
//!   median of the first third by more than 20 % plus a slack (fds 8,
//!   threads 4, RSS 8 MiB: the load's keep-alive connections, tokio's
//!   blocking pool, allocator noise). For daemon 2, the same comparison is
//!   made between its first and its last process;
//! - **not at rest**: once the load stops and its connections close, a
//!   daemon holds more than 4 fds beyond what it held at rest before the
//!   load, not counting idle connections in its upstream pool (which must
//!   stay within `max_concurrent_upstream`, 25).
//!
//! Knobs (env): `SOAK_SECONDS` (60), `SOAK_SAMPLE_SECONDS` (10; 2 when the
//! run is under 10 min), `SOAK_RESTART_SECONDS` (a tenth of the run, 15 to
//! 180), `SOAK_PHASE_SECONDS` (upstream mode length, a thirtieth of the run,
//! 5 to 60), `SOAK_RPS` (300, over all workers), `SOAK_OUT` (`target/soak`).
#![cfg(feature = "daemon")]

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::node::{proc_figures, wait_members, Node};
use common::FakeGithub;

/// A request without an answer after this long is hung.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Stats must answer within this.
const STATS_LIMIT: Duration = Duration::from_secs(1);
/// Distinct repositories asked for (more than a daemon keeps: evictions).
const KEYS: u64 = 3000;
const DAEMONS: usize = 3;
/// The daemon that is killed and restarted.
const RESTARTED: usize = 2;
const WORKERS: usize = 8;

struct Settings {
    seconds: u64,
    sample: Duration,
    restart_every: Duration,
    phase: Duration,
    warmup: Duration,
    rps: u64,
    out: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let seconds = var("SOAK_SECONDS").unwrap_or(60);
        let sample = var("SOAK_SAMPLE_SECONDS").unwrap_or(if seconds < 600 { 2 } else { 10 });
        let restart = var("SOAK_RESTART_SECONDS").unwrap_or((seconds / 10).clamp(15, 180));
        let phase = var("SOAK_PHASE_SECONDS").unwrap_or((seconds / 30).clamp(5, 60));
        let out = std::env::var_os("SOAK_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/soak")));
        Settings {
            seconds,
            sample: Duration::from_secs(sample.max(1)),
            restart_every: Duration::from_secs(restart.max(5)),
            phase: Duration::from_secs(phase.max(1)),
            warmup: Duration::from_secs((seconds / 5).min(360)),
            rps: var("SOAK_RPS").unwrap_or(300).max(1),
            out,
        }
    }
}

/// What the fake GitHub does during a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upstream {
    Healthy,
    Slow,
    Failing,
    RateLimited,
}

impl Upstream {
    const CYCLE: [Upstream; 6] = [
        Upstream::Healthy,
        Upstream::Slow,
        Upstream::Healthy,
        Upstream::Failing,
        Upstream::Healthy,
        Upstream::RateLimited,
    ];

    fn name(self) -> &'static str {
        match self {
            Upstream::Healthy => "healthy",
            Upstream::Slow => "slow",
            Upstream::Failing => "failing",
            Upstream::RateLimited => "rate-limited",
        }
    }

    fn apply(self, github: &FakeGithub, phase: Duration) {
        let s = &github.state;
        s.delay_ms.store(0, Ordering::SeqCst);
        s.down.store(false, Ordering::SeqCst);
        s.remaining.store(-1, Ordering::SeqCst);
        s.reset_in_secs.store(0, Ordering::SeqCst);
        match self {
            // New ETags: revalidations come back 200 once.
            Upstream::Healthy => {
                s.version.fetch_add(1, Ordering::SeqCst);
            }
            // Slow, but under the daemon's 10 s upstream timeout.
            Upstream::Slow => s.delay_ms.store(1500, Ordering::SeqCst),
            Upstream::Failing => s.down.store(true, Ordering::SeqCst),
            // Out of quota until the end of the phase.
            Upstream::RateLimited => {
                s.reset_in_secs.store(phase.as_secs().max(1), Ordering::SeqCst);
                s.remaining.store(0, Ordering::SeqCst);
            }
        }
    }
}

/// What happens to daemon 2 every restart period, in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    Term,
    Freeze,
}

impl Fault {
    const ROTATION: [Fault; 3] = [Fault::Kill, Fault::Term, Fault::Freeze];

    fn describe(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL-ed and restarted",
            Fault::Term => "SIGTERM-ed (exit 0) and restarted",
            Fault::Freeze => "frozen 5 s (SIGSTOP) and thawed",
        }
    }
}

/// Per daemon: whether it serves, its process generation (bumped before a
/// kill, so that a request that spans it is excused), its HTTP client
/// (replaced on restart: no pooled connection to a dead process).
struct Target {
    port: u16,
    up: AtomicBool,
    generation: AtomicU64,
    /// Bumped on restart: which process of this daemon a sample is from.
    process: AtomicU64,
    client: Mutex<reqwest::Client>,
}

impl Target {
    fn client(&self) -> reqwest::Client {
        self.client.lock().unwrap().clone()
    }
}

fn new_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(WORKERS)
        .build()
        .unwrap()
}

/// Everything the load, the sampler and the restarter report.
#[derive(Default)]
struct Tally {
    /// Answers by daemon and status (0: excused connection error).
    statuses: Mutex<HashMap<(usize, u16), u64>>,
    /// Failures of the pass rule, first ones kept in full.
    failures: Mutex<Vec<String>>,
    failure_count: AtomicU64,
    hung: AtomicU64,
    /// Slowest stats answer: how long, who asked, when.
    slowest_stats: Mutex<Option<(Duration, String, Instant)>>,
    stats_samples: Mutex<Vec<u64>>,
    mcp_sessions: AtomicU64,
    mcp_abandoned: AtomicU64,
    /// Faults injected on daemon 2 (kills, stops, freezes).
    faults: AtomicU64,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failure_count.fetch_add(1, Ordering::SeqCst);
        let mut f = self.failures.lock().unwrap();
        if f.len() < 20 {
            eprintln!("soak failure: {what}");
            f.push(what);
        }
    }

    fn status(&self, daemon: usize, status: u16) {
        *self.statuses.lock().unwrap().entry((daemon, status)).or_default() += 1;
    }

    fn stats_latency(&self, took: Duration, who: &str) {
        {
            let mut slowest = self.slowest_stats.lock().unwrap();
            if slowest.as_ref().is_none_or(|(t, ..)| took > *t) {
                *slowest = Some((took, who.to_string(), Instant::now()));
            }
        }
        if took > STATS_LIMIT {
            self.fail(format!("{who}: gh_get_cache_stats took {took:?}"));
        }
    }
}

/// The load's choices, reproducible per worker.
struct Rng(fastrand::Rng);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.u64(..n)
    }
    /// Skewed towards small numbers: some keys are hot, most are cold.
    fn key(&mut self) -> u64 {
        let span = self.below(KEYS) + 1;
        self.below(span)
    }
}

/// How one request ended.
enum Outcome {
    Answer(u16, String),
    /// No answer to look at: none (or a late one) because the daemon went
    /// down or froze meanwhile, which is expected, or a failure of the pass
    /// rule, already reported.
    Excused,
}

/// Sends `req` to daemon `d`, applying the pass rule to transport failures.
async fn send(targets: &[Target], d: usize, tally: &Tally, what: &str, req: reqwest::RequestBuilder) -> Outcome {
    match exchange(targets, d, tally, what, req).await {
        Some((status, _, text)) => Outcome::Answer(status, text),
        None => Outcome::Excused,
    }
}

/// [`send`], with the answer's headers; None when there is no answer to
/// look at (excused, or a failure already reported).
async fn exchange(
    targets: &[Target],
    d: usize,
    tally: &Tally,
    what: &str,
    req: reqwest::RequestBuilder,
) -> Option<(u16, reqwest::header::HeaderMap, String)> {
    let generation = targets[d].generation.load(Ordering::SeqCst);
    let result = async {
        let r = req.send().await?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await?;
        Ok::<_, reqwest::Error>((status, headers, text))
    }
    .await;
    let stayed_up = targets[d].up.load(Ordering::SeqCst) && targets[d].generation.load(Ordering::SeqCst) == generation;
    match result {
        Ok((status, ..)) if !stayed_up => {
            tally.status(d, status);
            None
        }
        Ok((status, headers, text)) => {
            tally.status(d, status);
            if status == 500 {
                tally.fail(format!("daemon {d}: {what}: 500 {text}"));
            }
            Some((status, headers, text))
        }
        Err(_) if !stayed_up => {
            tally.status(d, 0);
            None
        }
        Err(e) if e.is_timeout() => {
            tally.hung.fetch_add(1, Ordering::SeqCst);
            tally.fail(format!(
                "daemon {d}: {what}: no answer within {REQUEST_TIMEOUT:?} (hung)"
            ));
            None
        }
        Err(e) => {
            tally.fail(format!("daemon {d}: {what}: {e:?}"));
            None
        }
    }
}

/// The JSON-RPC answer in a Streamable HTTP body (JSON, or SSE `data:` lines).
fn rpc_answer(text: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Some(v);
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
}

/// One worker's MCP session on one daemon.
struct Session {
    id: String,
    generation: u64,
    calls_left: u32,
}

struct Worker {
    n: usize,
    rng: Rng,
    sessions: HashMap<usize, Session>,
}

impl Worker {
    fn pick_daemon(&mut self, targets: &[Target]) -> Option<usize> {
        let start = self.rng.below(DAEMONS as u64) as usize;
        (0..DAEMONS)
            .map(|i| (start + i) % DAEMONS)
            .find(|d| targets[*d].up.load(Ordering::SeqCst))
    }

    async fn one(&mut self, targets: &[Target], tally: &Tally) {
        let Some(d) = self.pick_daemon(targets) else { return };
        let base = format!("http://127.0.0.1:{}", targets[d].port);
        let client = targets[d].client();
        let roll = self.rng.below(100);
        if roll < 35 {
            let k = self.rng.key();
            let what = format!("GET /github/repos/o/r{k}");
            if let Outcome::Answer(200, body) = send(
                targets,
                d,
                tally,
                &what,
                client.get(format!("{base}/github/repos/o/r{k}")),
            )
            .await
            {
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                if v["path"] != json!(format!("/repos/o/r{k}")) {
                    tally.fail(format!("daemon {d}: {what}: wrong body {body:.200}"));
                }
            }
        } else if roll < 45 {
            let page = self.rng.below(9) + 1;
            let url = format!("{base}/github/repos/o/r/issues?per_page=30&page={page}");
            send(targets, d, tally, "GET issues page", client.get(url)).await;
        } else if roll < 55 {
            let k = self.rng.key();
            let url = format!("{base}/github/repos/o/r{k}/actions/runners");
            send(targets, d, tally, "GET runners", client.get(url)).await;
        } else if roll < 80 {
            self.mcp(targets, d, &client, &base, tally).await;
        } else if roll < 97 {
            let (name, args) = match self.rng.below(4) {
                0 => ("gh_get_cache_stats", json!({})),
                1 => ("gh_list_issues", json!({"repo": "o/r", "limit": 60})),
                _ => ("gh_get_repo", json!({"repo": format!("o/r{}", self.rng.key())})),
            };
            let body =
                json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": name, "arguments": args}, "id": 1});
            let t = Instant::now();
            let req = client
                .post(format!("{base}/jsonrpc"))
                .header("content-type", "application/json")
                .body(body.to_string());
            let out = send(targets, d, tally, name, req).await;
            if name == "gh_get_cache_stats" {
                if let Outcome::Answer(..) = out {
                    tally.stats_latency(t.elapsed(), &format!("daemon {d} (load)"));
                }
            }
        } else if roll < 98 {
            let body = json!({"jsonrpc": "2.0", "method": "tools/call",
                "params": {"name": "gh_invalidate_cache", "arguments": {"pattern": format!("repo:repo=o/r{}", self.rng.below(50))}}, "id": 1});
            send(
                targets,
                d,
                tally,
                "invalidate",
                client.post(format!("{base}/jsonrpc")).body(body.to_string()),
            )
            .await;
        } else {
            send(targets, d, tally, "GET /metrics", client.get(format!("{base}/metrics"))).await;
        }
    }

    /// A tool call in this worker's MCP session on `d`: a session lives for
    /// 20-80 calls, then is closed with DELETE, or (one in three) abandoned
    /// like a client that vanished.
    async fn mcp(&mut self, targets: &[Target], d: usize, client: &reqwest::Client, base: &str, tally: &Tally) {
        let url = format!("{base}/mcp");
        let generation = targets[d].generation.load(Ordering::SeqCst);
        let post = |body: Value, session: Option<&str>| {
            let mut r = client
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-06-18")
                .body(body.to_string());
            if let Some(s) = session {
                r = r.header("mcp-session-id", s);
            }
            r
        };
        let stale = self.sessions.get(&d).is_some_and(|s| s.generation != generation);
        if stale {
            self.sessions.remove(&d);
        }
        if !self.sessions.contains_key(&d) {
            let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": format!("soak-{}", self.n), "version": "0"}}});
            let Some((status, headers, _)) = exchange(targets, d, tally, "MCP initialize", post(init, None)).await
            else {
                return;
            };
            let Some(id) = headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(String::from)
            else {
                tally.fail(format!("daemon {d}: MCP initialize without a session id: {status}"));
                return;
            };
            let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
            send(targets, d, tally, "MCP initialized", post(done, Some(&id))).await;
            tally.mcp_sessions.fetch_add(1, Ordering::SeqCst);
            let calls_left = 20 + self.rng.below(60) as u32;
            self.sessions.insert(
                d,
                Session {
                    id,
                    generation,
                    calls_left,
                },
            );
        }
        let session = self.sessions.get_mut(&d).unwrap();
        let (name, args) = match self.rng.below(3) {
            0 => ("gh_get_cache_stats", json!({})),
            1 => ("gh_list_runners", json!({"repo": format!("o/r{}", self.rng.key())})),
            _ => ("gh_get_repo", json!({"repo": format!("o/r{}", self.rng.key())})),
        };
        let call =
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}});
        let t = Instant::now();
        let what = format!("MCP {name}");
        match send(targets, d, tally, &what, post(call, Some(&session.id))).await {
            Outcome::Answer(200, body) => {
                if name == "gh_get_cache_stats" {
                    tally.stats_latency(t.elapsed(), &format!("daemon {d} (MCP)"));
                }
                match rpc_answer(&body) {
                    Some(v) if v.get("result").is_some() => {}
                    _ => tally.fail(format!("daemon {d}: {what}: no JSON-RPC result in {body:.300}")),
                }
            }
            // The session is gone (a restart raced the generation check).
            Outcome::Answer(404, _) | Outcome::Excused => {
                self.sessions.remove(&d);
                return;
            }
            Outcome::Answer(status, body) => tally.fail(format!("daemon {d}: {what}: {status} {body:.300}")),
        }
        session.calls_left -= 1;
        if session.calls_left == 0 {
            let session = self.sessions.remove(&d).unwrap();
            if self.rng.below(3) == 0 {
                tally.mcp_abandoned.fetch_add(1, Ordering::SeqCst);
            } else {
                let req = client.delete(&url).header("mcp-session-id", &session.id);
                send(targets, d, tally, "MCP DELETE", req).await;
            }
        }
    }
}

/// One sample of a process.
#[derive(Clone, Copy, Debug, Default)]
struct ProcSample {
    fds: u64,
    /// Of the fds: TCP connections to the fake GitHub (the daemon's
    /// upstream pool keeps idle ones for a while).
    upstream: u64,
    threads: u64,
    rss_kib: u64,
}

/// Remote ports of the TCP sockets in `/proc/PID/net/tcp{,6}`, by inode.
fn tcp_remote_ports(pid: u32) -> HashMap<u64, u16> {
    let mut map = HashMap::new();
    for file in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(inode)) = (cols.get(2), cols.get(9)) else {
                continue;
            };
            let port = remote.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if let (Some(port), Ok(inode)) = (port, inode.parse()) {
                map.insert(inode, port);
            }
        }
    }
    map
}

/// TCP connections of `pid` to `port` (the daemon's upstream pool).
fn connections_to(pid: u32, port: u16) -> u64 {
    let ports = tcp_remote_ports(pid);
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()?;
            ports.get(&inode).copied()
        })
        .filter(|p| *p == port)
        .count() as u64
}

/// None once the process is gone.
fn read_proc(pid: u32, upstream_port: u16) -> Option<ProcSample> {
    let [fds, threads, rss_kib] = proc_figures(pid).map(|v| v as u64);
    (threads > 0).then(|| ProcSample {
        fds,
        // Read a moment apart from `fds`: never more than it.
        upstream: connections_to(pid, upstream_port).min(fds),
        threads,
        rss_kib,
    })
}

/// A watched figure: name, unit, slack of the trend rule, how to read it.
type Watched<'a> = (&'a str, &'a str, u64, &'a dyn Fn(&ProcSample) -> u64);

/// A row of soak.csv.
struct Row {
    t: f64,
    daemon: usize,
    run: u64,
    proc: ProcSample,
    stats_ms: f64,
    mode: &'static str,
}

async fn stats_call(client: &reqwest::Client, port: u16) -> Result<Value, String> {
    let body = json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "gh_get_cache_stats", "arguments": {}}, "id": 1});
    let r = client
        .post(format!("http://127.0.0.1:{port}/jsonrpc"))
        .timeout(Duration::from_secs(5))
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let text = r.text().await.map_err(|e| format!("{e:?}"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text:.200}"))?;
    Ok(v["result"].clone())
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Last-third median against first-third median (see the module doc).
fn trend_failure(what: &str, unit: &str, first: &[u64], last: &[u64], slack: u64) -> Option<String> {
    let (a, b) = (median(first.to_vec()), median(last.to_vec()));
    let limit = a + a / 5 + slack;
    let line = format!("{what}: median {a} {unit} -> {b} {unit} (limit {limit})");
    eprintln!("  {line}");
    (b > limit).then(|| format!("upward trend: {line}"))
}

#[test]
#[ignore = "soak: run by ci/soak (SOAK_SECONDS, default there 1800) and by .ci/run (60 s)"]
fn soak() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(Settings::from_env()));
}

async fn run(settings: Settings) {
    std::fs::create_dir_all(&settings.out).unwrap();
    let github = Arc::new(FakeGithub::start().await);
    let config = settings.out.join("soak-daemon.toml");
    // Short TTLs (revalidation all the time) and a cache smaller than the
    // key space (evictions all the time).
    std::fs::write(
        &config,
        "max_entries = 1500\nupstream_timeout_ms = 10000\n[ttl_secs]\nrepo = 5\nrunners = 3\nissues = 10\napi = 5\n",
    )
    .unwrap();
    let extra = ["--config", config.to_str().unwrap()];
    let mut nodes = vec![Node::spawn("soak0", &github.url(), None, &extra)];
    for i in 1..DAEMONS {
        let boot = nodes[0].p2p;
        nodes.push(Node::spawn(&format!("soak{i}"), &github.url(), Some(boot), &extra));
    }
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        wait_members(&refs, DAEMONS as u64).await;
    }
    let targets: Arc<Vec<Target>> = Arc::new(
        nodes
            .iter()
            .map(|n| Target {
                port: n.http,
                up: AtomicBool::new(true),
                generation: AtomicU64::new(0),
                process: AtomicU64::new(0),
                client: Mutex::new(new_client()),
            })
            .collect(),
    );
    let pids: Arc<Mutex<Vec<u32>>> = Arc::new(Mutex::new(
        nodes.iter().map(|n| n.child.as_ref().unwrap().id()).collect(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_rest_before: Vec<ProcSample> = pids
        .lock()
        .unwrap()
        .iter()
        .map(|p| read_proc(*p, github.addr.port()).unwrap())
        .collect();
    eprintln!(
        "soak: {} s, sample every {:?}, restart daemon {RESTARTED} every {:?}, upstream phase {:?}, warm-up {:?}, {} req/s; at rest: {at_rest_before:?}",
        settings.seconds, settings.sample, settings.restart_every, settings.phase, settings.warmup, settings.rps
    );

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(settings.seconds);
    let mode = Arc::new(Mutex::new(Upstream::Healthy));

    // The load.
    let mut load = Vec::new();
    for n in 0..WORKERS {
        let (targets, tally) = (targets.clone(), tally.clone());
        let pause = Duration::from_secs_f64(WORKERS as f64 / settings.rps as f64);
        load.push(tokio::spawn(async move {
            let mut w = Worker {
                n,
                rng: Rng(fastrand::Rng::with_seed(n as u64 + 1)),
                sessions: HashMap::new(),
            };
            let mut next = Instant::now();
            while Instant::now() < deadline {
                w.one(&targets, &tally).await;
                next += pause;
                tokio::time::sleep_until(next.into()).await;
            }
        }));
    }

    // The upstream's moods.
    let moods = {
        let (github, mode, phase) = (github.clone(), mode.clone(), settings.phase);
        tokio::spawn(async move {
            for m in Upstream::CYCLE.iter().cycle() {
                m.apply(&github, phase);
                *mode.lock().unwrap() = *m;
                tokio::time::sleep(phase).await;
                if Instant::now() >= deadline {
                    break;
                }
            }
            Upstream::Healthy.apply(&github, phase);
        })
    };

    // The sampler.
    let sampler = {
        let (targets, tally, pids, mode) = (targets.clone(), tally.clone(), pids.clone(), mode.clone());
        let every = settings.sample;
        let upstream_port = github.addr.port();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut rows = Vec::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            while Instant::now() < deadline {
                tick.tick().await;
                for d in 0..DAEMONS {
                    let t = &targets[d];
                    let generation = t.generation.load(Ordering::SeqCst);
                    if !t.up.load(Ordering::SeqCst) {
                        continue;
                    }
                    let pid = pids.lock().unwrap()[d];
                    let Some(proc) = read_proc(pid, upstream_port) else {
                        continue;
                    };
                    let t0 = Instant::now();
                    let stats = stats_call(&client, t.port).await;
                    let took = t0.elapsed();
                    let still = t.up.load(Ordering::SeqCst) && t.generation.load(Ordering::SeqCst) == generation;
                    match stats {
                        // A fault was injected on it meanwhile (e.g. frozen
                        // with the call in flight): not its latency.
                        Ok(_) if !still => continue,
                        Ok(_) => tally.stats_latency(took, &format!("daemon {d} (sampler)")),
                        Err(e) if still => tally.fail(format!("daemon {d}: sampler's stats call failed: {e}")),
                        Err(_) => continue,
                    }
                    tally.stats_samples.lock().unwrap().push(took.as_micros() as u64);
                    rows.push(Row {
                        t: started.elapsed().as_secs_f64(),
                        daemon: d,
                        run: t.process.load(Ordering::SeqCst),
                        proc,
                        stats_ms: took.as_secs_f64() * 1000.0,
                        mode: mode.lock().unwrap().name(),
                    });
                }
            }
            rows
        })
    };

    // The restarter, here: it owns the processes.
    let mut next_restart = started + settings.restart_every;
    let mut kills = 0u64;
    while Instant::now() + Duration::from_millis(100) < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if Instant::now() < next_restart || next_restart + Duration::from_secs(15) > deadline {
            continue;
        }
        let node = &mut nodes[RESTARTED];
        let target = &targets[RESTARTED];
        target.up.store(false, Ordering::SeqCst);
        target.generation.fetch_add(1, Ordering::SeqCst);
        let fault = Fault::ROTATION[kills as usize % Fault::ROTATION.len()];
        kills += 1;
        let mut child = node.child.take().unwrap();
        let signal = |name: &str, pid: u32| {
            std::process::Command::new("kill")
                .args([&format!("-{name}"), &pid.to_string()])
                .status()
                .unwrap()
        };
        match fault {
            Fault::Kill => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Fault::Term => {
                let t0 = Instant::now();
                signal("TERM", child.id());
                let status = loop {
                    if let Some(s) = child.try_wait().unwrap() {
                        break Some(s);
                    }
                    if t0.elapsed() > Duration::from_secs(10) {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                match status {
                    Some(s) if s.code() == Some(0) => {}
                    other => {
                        tally.fail(format!("daemon {RESTARTED}: SIGTERM -> {other:?} within 10 s"));
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
            }
            // A hung process: its peers must not hang with it.
            Fault::Freeze => {
                signal("STOP", child.id());
                tokio::time::sleep(Duration::from_secs(5)).await;
                signal("CONT", child.id());
                node.child = Some(child);
            }
        }
        if fault != Fault::Freeze {
            tokio::time::sleep(Duration::from_secs(2)).await;
            node.start();
            pids.lock().unwrap()[RESTARTED] = node.child.as_ref().unwrap().id();
            target.process.fetch_add(1, Ordering::SeqCst);
            // Back on its ports (the load and its peers know them), or the
            // reason it is not: a port taken while it was down.
            if let Err(e) = node.ready(Duration::from_secs(30)).await {
                tally.fail(format!("daemon {RESTARTED}: {e}"));
            }
        }
        let t0 = Instant::now();
        let client = new_client();
        loop {
            let ok = client
                .get(format!("http://127.0.0.1:{}/healthz", target.port))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                tally.fail(format!(
                    "daemon {RESTARTED}: not serving 30 s after restart; log:\n{}",
                    node.log()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        *target.client.lock().unwrap() = client;
        target.up.store(true, Ordering::SeqCst);
        tally.faults.fetch_add(1, Ordering::SeqCst);
        eprintln!(
            "soak: {:>5.0} s: daemon {RESTARTED} {}; serving after {:?}",
            started.elapsed().as_secs_f64(),
            fault.describe(),
            t0.elapsed()
        );
        next_restart += settings.restart_every;
    }

    for l in load {
        l.await.unwrap();
    }
    moods.await.unwrap();
    let rows = sampler.await.unwrap();

    // At rest: the load's connections closed, the fleet settled.
    for t in targets.iter() {
        *t.client.lock().unwrap() = new_client();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let at_rest_after: Vec<ProcSample> = pids
        .lock()
        .unwrap()
        .iter()
        .map(|p| read_proc(*p, github.addr.port()).unwrap_or_default())
        .collect();

    // CSV, then the verdict.
    let mut csv = String::from("t_s,daemon,run,fds,threads,rss_kib,stats_ms,upstream_mode,upstream_conns\n");
    for r in &rows {
        writeln!(
            csv,
            "{:.1},{},{},{},{},{},{:.3},{},{}",
            r.t, r.daemon, r.run, r.proc.fds, r.proc.threads, r.proc.rss_kib, r.stats_ms, r.mode, r.proc.upstream
        )
        .unwrap();
    }
    std::fs::write(settings.out.join("soak.csv"), csv).unwrap();

    let mut summary = String::new();
    let warm = settings.warmup.as_secs_f64();
    eprintln!("soak: trends (pass rule in tests/soak.rs)");
    let series = |d: usize, run: Option<u64>, f: &dyn Fn(&ProcSample) -> u64| -> Vec<u64> {
        rows.iter()
            .filter(|r| r.daemon == d && run.is_none_or(|x| r.run == x) && (run.is_some() || r.t >= warm))
            .map(|r| f(&r.proc))
            .collect()
    };
    let metrics: [Watched; 3] = [
        ("fds", "", 8, &|p| p.fds),
        ("threads", "", 4, &|p| p.threads),
        ("RSS", "KiB", 8 * 1024, &|p| p.rss_kib),
    ];
    for d in 0..DAEMONS {
        for (name, unit, slack, f) in &metrics {
            let (first, last, label) = if d == RESTARTED {
                let runs = rows.iter().filter(|r| r.daemon == d).map(|r| r.run).max().unwrap_or(0);
                if runs == 0 {
                    let all = series(d, Some(0), f);
                    let third = all.len() / 3;
                    if third == 0 {
                        continue;
                    }
                    (
                        all[..third].to_vec(),
                        all[all.len() - third..].to_vec(),
                        "first vs last third".to_string(),
                    )
                } else {
                    (
                        series(d, Some(0), f),
                        series(d, Some(runs), f),
                        format!("process 1 vs process {}", runs + 1),
                    )
                }
            } else {
                let all = series(d, None, f);
                let third = all.len() / 3;
                if third == 0 {
                    tally.fail(format!("daemon {d}: too few samples after the warm-up ({})", all.len()));
                    continue;
                }
                (
                    all[..third].to_vec(),
                    all[all.len() - third..].to_vec(),
                    "first vs last third after warm-up".to_string(),
                )
            };
            if first.is_empty() || last.is_empty() {
                continue;
            }
            let what = format!("daemon {d} {name} ({label})");
            if let Some(f) = trend_failure(&what, unit, &first, &last, *slack) {
                tally.fail(f);
            }
            writeln!(
                summary,
                "{what}: median {} -> {}, max {}",
                median(first.clone()),
                median(last.clone()),
                rows.iter()
                    .filter(|r| r.daemon == d)
                    .map(|r| f(&r.proc))
                    .max()
                    .unwrap_or(0)
            )
            .unwrap();
        }
    }
    for d in 0..DAEMONS {
        let (before, after) = (&at_rest_before[d], &at_rest_after[d]);
        writeln!(
            summary,
            "daemon {d} fds at rest: {} before the load, {} after ({} of them idle upstream connections)",
            before.fds, after.fds, after.upstream
        )
        .unwrap();
        if after.fds - after.upstream > before.fds - before.upstream + 4 {
            tally.fail(format!(
                "daemon {d}: not at rest after the load: {after:?}, before: {before:?}"
            ));
        }
        if after.upstream > 25 {
            tally.fail(format!(
                "daemon {d}: {} upstream connections, more than max_concurrent_upstream",
                after.upstream
            ));
        }
    }
    for (d, n) in nodes.iter().enumerate() {
        if n.log().contains("panicked") {
            tally.fail(format!("daemon {d} panicked:\n{}", n.log()));
        }
    }

    let mut stats_us = tally.stats_samples.lock().unwrap().clone();
    stats_us.sort_unstable();
    let pct = |p: f64| {
        stats_us
            .get(((stats_us.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let statuses = tally.statuses.lock().unwrap().clone();
    let mut by_status: Vec<(u16, u64)> = statuses
        .iter()
        .fold(HashMap::<u16, u64>::new(), |mut m, ((_, s), n)| {
            *m.entry(*s).or_default() += n;
            m
        })
        .into_iter()
        .collect();
    by_status.sort();
    let total: u64 = by_status.iter().map(|(_, n)| n).sum();
    writeln!(
        summary,
        "requests: {total} in {} s ({:.0}/s); by status (0 = connection error while its daemon was down): {by_status:?}",
        settings.seconds,
        total as f64 / settings.seconds as f64
    )
    .unwrap();
    writeln!(
        summary,
        "stats latency (sampler, {} calls): p50 {} us, p99 {} us, max {} us; slowest answered stats call: {} (limit 1 s)",
        stats_us.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        match &*tally.slowest_stats.lock().unwrap() {
            Some((took, who, at)) => format!(
                "{} us, {who} at {:.0} s",
                took.as_micros(),
                at.duration_since(started).as_secs_f64()
            ),
            None => "none".to_string(),
        }
    )
    .unwrap();
    writeln!(
        summary,
        "hung requests: {}; faults injected on daemon {RESTARTED}: {}; MCP sessions: {} ({} abandoned); fake GitHub requests: {}",
        tally.hung.load(Ordering::SeqCst),
        tally.faults.load(Ordering::SeqCst),
        tally.mcp_sessions.load(Ordering::SeqCst),
        tally.mcp_abandoned.load(Ordering::SeqCst),
        github.requests()
    )
    .unwrap();
    let failures = tally.failure_count.load(Ordering::SeqCst);
    writeln!(
        summary,
        "verdict: {}",
        if failures == 0 {
            "PASS".to_string()
        } else {
            format!("FAIL ({failures} failures)")
        }
    )
    .unwrap();
    std::fs::write(settings.out.join("summary.txt"), &summary).unwrap();
    eprintln!("{summary}");
    for n in &nodes {
        let _ = std::fs::remove_dir_all(&n.dir);
    }
    let f = tally.failures.lock().unwrap();
    assert!(
        failures == 0,
        "soak failed ({failures} failures), first ones:\n{}",
        f.join("\n")
    );
}

/// The trend rule itself, on made-up series: flat and noisy passes, a
/// leak of a few percent a third fails only past the slack.
#[test]
fn trend_rule_flags_growth_beyond_the_slack() {
    let flat = [30, 31, 29, 30, 32, 30];
    assert_eq!(trend_failure("fds", "", &flat, &[29, 31, 30, 30, 32, 31], 8), None);
    // 30 -> 44: 20 % (6) plus the slack (8) is exactly the limit.
    assert_eq!(trend_failure("fds", "", &flat, &[44, 44, 44], 8), None);
    assert!(trend_failure("fds", "", &flat, &[45, 45, 45], 8).is_some());
    // The median, not the mean: one spike is not a trend.
    assert_eq!(trend_failure("threads", "", &[5, 5, 5], &[5, 50, 5], 4), None);
    // 20,000 KiB -> 32,000 is within 20 % + 8 MiB; -> 33,000 is not.
    assert_eq!(trend_failure("RSS", "KiB", &[20_000; 5], &[32_000; 5], 8 * 1024), None);
    assert!(trend_failure("RSS", "KiB", &[20_000; 5], &[33_000; 5], 8 * 1024).is_some());
}
