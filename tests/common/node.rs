//! `ghcache daemon` processes on 127.0.0.1 for fleet, soak and fault
//! tests: spawn with a fresh data directory, kill, restart with the same
//! arguments, call tools over /jsonrpc, read /proc figures.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::free_port;

pub struct Node {
    pub child: Option<Child>,
    pub http: u16,
    pub p2p: u16,
    pub dir: std::path::PathBuf,
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
        let dir = std::env::temp_dir().join(format!("ghcache-fleet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (http, p2p) = (free_port(), free_port());
        let mut args: Vec<String> = [
            "daemon",
            "--listen",
            &format!("127.0.0.1:{http}"),
            "--p2p-listen",
            &format!("/ip4/127.0.0.1/tcp/{p2p}"),
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
        if let Some(b) = bootstrap {
            args.push("--bootstrap".into());
            args.push(format!("/ip4/127.0.0.1/tcp/{b}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut node = Node {
            child: None,
            http,
            p2p,
            dir,
            args,
            client: reqwest::Client::new(),
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        node.start();
        node
    }

    pub fn start(&mut self) {
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

    /// The process id while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits until /healthz answers; panics with the log when the process
    /// exits first or `timeout` passes.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let url = format!("http://127.0.0.1:{}/healthz", self.http);
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
            .post(format!("http://127.0.0.1:{}/jsonrpc", self.http))
            .body(body.to_string())
            .send()
            .await;
        match r {
            Ok(r) => serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.http);
        self.client.get(url).send().await.unwrap().text().await.unwrap()
    }

    pub async fn peer_count(&self) -> u64 {
        self.call("gh_list_peers", json!({})).await["result"]["count"]
            .as_u64()
            .unwrap_or(0)
    }

    pub async fn stats(&self) -> Value {
        self.call("gh_get_cache_stats", json!({})).await["result"].clone()
    }
}

pub async fn wait_mesh(nodes: &[&Node], peers: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut counts = Vec::new();
        for n in nodes {
            counts.push(n.peer_count().await);
        }
        if counts.iter().all(|c| *c == peers) {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes.iter().map(|n| n.log()).collect();
            panic!(
                "no full mesh within 30 s: peer counts {counts:?}\n{}",
                logs.join("\n-----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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
