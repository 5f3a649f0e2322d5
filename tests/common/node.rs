//! `ghcache daemon` processes for fleet, soak and fault tests: spawn with a
//! fresh data directory, kill, restart with the same arguments, call tools
//! over /jsonrpc, read /proc figures. A node listens on 127.0.0.1, or on
//! another address of the network namespace its `prefix` runs it in
//! ([`Node::spawn_on`], see `netns.rs`).
//!
//! # Ports
//! No port is picked by the harness. A node's first start listens on port
//! 0 (HTTP and P2P) and the harness reads the ports the kernel chose from
//! the daemon's ready file (`--ready-file`, written once both listeners
//! are bound): [`Node::spawn`] returns once it is there, so `node.http`
//! and `node.p2p` are known and later nodes can bootstrap from `node.p2p`.
//! A restart ([`Node::start`]) asks for the same ports again, so peers and
//! clients that know them find the node; if another socket took one while
//! the node was down, waiting for the node ([`Node::wait_ready`],
//! [`Node::ready`]) says so — `port N was taken by another socket` —
//! instead of timing out later on a mesh.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a spawned node may take to write its ready file.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Node {
    pub child: Option<Child>,
    /// The address both listeners bind and the harness calls.
    pub host: String,
    /// The HTTP port, from the ready file (0 before the first start).
    pub http: u16,
    /// The P2P port, from the ready file (0 while P2P does not listen).
    pub p2p: u16,
    pub dir: std::path::PathBuf,
    /// The daemon's flags after the listen addresses and the ready file
    /// (a later flag overrides an earlier one: `extra` may set
    /// `--p2p-listen`).
    pub args: Vec<String>,
    pub client: reqwest::Client,
    /// A command line the binary runs under (`unshare -m sh -c '... exec
    /// "$0" "$@"'`): the binary and its arguments follow it. Empty: none.
    pub prefix: Vec<String>,
    /// Extra environment (e.g. `LD_PRELOAD` for libfaketime).
    pub env: Vec<(String, String)>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Node {
    /// Starts a node with a fresh data directory and waits (blocking, at
    /// most [`READY_TIMEOUT`]) for its ready file; `bootstrap` is another
    /// node's `p2p` port.
    pub fn spawn(name: &str, github: &str, bootstrap: Option<u16>, extra: &[&str]) -> Node {
        Node::spawn_with(name, github, bootstrap, extra, &[], &[])
    }

    /// [`Node::spawn`] under a `prefix` command and with extra `env`.
    pub fn spawn_with(
        name: &str,
        github: &str,
        bootstrap: Option<u16>,
        extra: &[&str],
        prefix: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        let bootstrap: Vec<String> = bootstrap
            .map(|b| format!("/ip4/127.0.0.1/tcp/{b}"))
            .into_iter()
            .collect();
        Node::spawn_on("127.0.0.1", name, github, &bootstrap, extra, prefix, env)
    }

    /// [`Node::spawn_with`] listening on `host` (an address of the network
    /// namespace `prefix` runs the daemon in), bootstrapping from the
    /// multiaddrs `bootstrap`.
    pub fn spawn_on(
        host: &str,
        name: &str,
        github: &str,
        bootstrap: &[String],
        extra: &[&str],
        prefix: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        let dir = std::env::temp_dir().join(format!("ghcache-fleet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> = [
            "--github-api-url",
            github,
            "--data-dir",
            dir.to_str().unwrap(),
            "--upstream-retries",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for b in bootstrap {
            args.push("--bootstrap".into());
            args.push(b.clone());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut node = Node {
            child: None,
            host: host.to_string(),
            http: 0,
            p2p: 0,
            dir,
            args,
            client: reqwest::Client::new(),
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        node.start();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match node.poll_ready() {
                Some(Ok(())) => break,
                Some(Err(e)) => panic!("{e}"),
                None if Instant::now() > deadline => {
                    panic!("no ready file within {READY_TIMEOUT:?}; log:\n{}", node.log())
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        node
    }

    /// The daemon's ready file.
    pub fn ready_file(&self) -> std::path::PathBuf {
        self.dir.join("ready.json")
    }

    /// Starts the process (does not wait: see [`Node::wait_ready`]). On a
    /// restart it asks for the ports it had.
    pub fn start(&mut self) {
        let _ = std::fs::remove_file(self.ready_file());
        let log = std::fs::File::create(self.dir.join("stderr.log")).unwrap();
        let bin = env!("CARGO_BIN_EXE_ghcache");
        let mut command = match self.prefix.split_first() {
            None => Command::new(bin),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
        };
        let child = command
            .arg("daemon")
            .args(["--listen", &format!("{}:{}", self.host, self.http)])
            .args(["--p2p-listen", &format!("/ip4/{}/tcp/{}", self.host, self.p2p)])
            .arg("--ready-file")
            .arg(self.ready_file())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("GITHUB_TOKEN", "test-token")
            .env(
                "RUST_LOG",
                std::env::var("GHCACHE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("GHCACHE_SWARM_KEY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("GHCACHE_MCP_TOKEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the node with SIGTERM (its graceful shutdown) and waits for
    /// it to exit: its status, and how long that took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let mut c = self.child.take().expect("running");
        let t0 = Instant::now();
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        (c.wait().unwrap(), t0.elapsed())
    }

    /// The process id while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// One look at the started process: `None` while its ready file is not
    /// there; `Some(Ok)` once it is (the ports read into `http` and `p2p`);
    /// `Some(Err)` when the process exited first, or a port asked for again
    /// on a restart was taken by another socket, saying which.
    pub fn poll_ready(&mut self) -> Option<Result<(), String>> {
        if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
            let log = self.log();
            let taken = if self.http != 0 && log.contains(&format!("cannot listen on {}:{}", self.host, self.http)) {
                format!(
                    "HTTP port {} was taken by another socket while the node was down; ",
                    self.http
                )
            } else {
                String::new()
            };
            return Some(Err(format!(
                "{taken}the daemon exited ({status}) before it was ready; log:\n{log}"
            )));
        }
        let text = std::fs::read_to_string(self.ready_file()).ok()?;
        let ready: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => return Some(Err(format!("unreadable ready file ({e}): {text:?}"))),
        };
        let port_of = |addr: &str| addr.rsplit(['/', ':']).next().and_then(|p| p.parse::<u16>().ok());
        let Some(http) = ready["http"].as_str().and_then(port_of) else {
            return Some(Err(format!("no HTTP address in the ready file: {ready}")));
        };
        self.http = http;
        if ready["p2p"] == "retrying" && self.p2p != 0 {
            let error = ready["p2p_error"].as_str().unwrap_or_default();
            if error.contains(&format!("/tcp/{}", self.p2p)) && error.contains("in use") {
                return Some(Err(format!(
                    "P2P port {} was taken by another socket while the node was down: {error}",
                    self.p2p
                )));
            }
        }
        self.p2p = match ready["p2p_listen"].as_array().and_then(|a| a.first()) {
            Some(addr) => addr
                .as_str()
                .and_then(port_of)
                .unwrap_or_else(|| panic!("bad P2P address in the ready file: {ready}")),
            None => 0,
        };
        Some(Ok(()))
    }

    /// Waits (at most `timeout`) for the ready file; the error says why
    /// not (see [`Node::poll_ready`]).
    pub async fn ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.poll_ready() {
                Some(done) => return done,
                None if Instant::now() > deadline => {
                    return Err(format!("no ready file within {timeout:?}; log:\n{}", self.log()))
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Waits for the ready file, then until /healthz answers; panics with
    /// the reason and the log when the process exits first, a port was
    /// taken, or `timeout` passes.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if let Err(e) = self.ready(timeout).await {
            panic!("{e}");
        }
        let url = format!("http://{}:{}/healthz", self.host, self.http);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("the daemon exited ({status}) before answering; log:\n{}", self.log());
            }
            if let Ok(r) = self.client.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no /healthz within {timeout:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    pub async fn call(&self, name: &str, args: Value) -> Value {
        let body =
            json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": name, "arguments": args}, "id": 1});
        let r = self
            .client
            .post(format!("http://{}:{}/jsonrpc", self.host, self.http))
            .body(body.to_string())
            .send()
            .await;
        match r {
            Ok(r) => serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}:{}/metrics", self.host, self.http);
        self.client.get(url).send().await.unwrap().text().await.unwrap()
    }

    pub async fn stats(&self) -> Value {
        self.call("gh_get_cache_stats", json!({})).await["result"].clone()
    }
}

/// Waits (at most 30 s each) until every node's member view holds
/// `members` members (itself included), and all of them own keys (none is
/// still joining), so every node picks the same owners.
pub async fn wait_members(nodes: &[&Node], members: u64) {
    wait_peer_list(nodes, "member_count", members, "member views").await;
    wait_peer_list(nodes, "owner_count", members, "owner views").await
}

/// Waits until `field` of every node's `gh_list_peers` equals `want`;
/// panics after 30 s with the counts, the logs, and any P2P port another
/// socket took.
async fn wait_peer_list(nodes: &[&Node], field: &str, want: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut counts = Vec::new();
        for n in nodes {
            let v = n.call("gh_list_peers", json!({})).await;
            counts.push(v["result"][field].as_u64().unwrap_or(0));
        }
        if counts.iter().all(|c| *c == want) {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes.iter().map(|n| n.log()).collect();
            let taken: Vec<String> = nodes
                .iter()
                .filter(|n| n.p2p != 0 && n.log().contains(&format!("/tcp/{}: ", n.p2p)) && n.log().contains("in use"))
                .map(|n| format!("P2P port {} was taken by another socket", n.p2p))
                .collect();
            panic!(
                "{what} not {want} within 30 s: {counts:?} {taken:?}\n{}",
                logs.join("\n-----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Open fds and threads of a process.
pub fn proc_counts(pid: u32) -> (usize, usize) {
    let [fds, threads, _] = proc_figures(pid);
    (fds, threads)
}

/// Open fds, threads and resident memory (kB) of a process, from /proc
/// (zeros once it is gone).
pub fn proc_figures(pid: u32) -> [usize; 3] {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    };
    [fds, field("Threads:"), field("VmRSS:")]
}
