//! The `ghcache daemon` binary as a process: config errors, signals,
//! sd_notify. GitHub is a closed local port: nothing here reaches it.
#![cfg(feature = "daemon")]

mod common;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::KillOnDrop;

fn ghcache() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ghcache"));
    c.env("GITHUB_TOKEN", "test-token")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("GHCACHE_MCP_TOKEN");
    c
}

/// A GitHub URL at a port held by the returned listener for as long as the
/// caller keeps it, so no other socket takes the port; nothing here
/// connects to it.
fn unused_github() -> (std::net::TcpListener, String) {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", held.local_addr().unwrap());
    (held, url)
}

/// A socket for the daemon's sd_notify datagrams (short read timeouts: see
/// [`recv`]).
fn notify_socket(path: &std::path::Path) -> UnixDatagram {
    let sock = UnixDatagram::bind(path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    sock
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ghcache-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn bad_config_is_one_line_naming_the_key_and_exit_2() {
    let out = ghcache()
        .args(["daemon", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("`listen`"), "{err}");

    let dir = temp_dir("badconf");
    let file = dir.join("c.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nmax_concurrent_upstream = \"many\"\n").unwrap();
    let out = ghcache().args(["daemon", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("`max_concurrent_upstream`"), "{err}");

    std::fs::write(&file, "colour = \"blue\"\n").unwrap();
    let out = ghcache().args(["daemon", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`colour`"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// One datagram, waiting up to 20 s (short timeouts, retried: a timed-out
/// or interrupted `recv` is not the end).
fn recv(sock: &UnixDatagram, buf: &mut [u8]) -> Option<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match sock.recv(buf) {
            Ok(n) => return Some(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    None
}

#[test]
fn sigterm_stops_cleanly_within_10s_with_sd_notify() {
    let dir = temp_dir("sigterm");
    let (_github_port, github) = unused_github();
    let data = dir.join("data");
    let (mut child, port, sock) = start_daemon(
        &dir,
        &[
            "--no-p2p",
            "--listen",
            "127.0.0.1:0",
            "--github-api-url",
            &github,
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    let mut buf = [0u8; 256];
    // It serves.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::Write;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
        "{answer}"
    );

    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let n = recv(&sock, &mut buf).expect("STOPPING=1 within 20 s");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains("test-token"), "the token must never be logged:\n{log}");
    assert!(dir.join("data/cache.redb").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("ready"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the ready file goes at a clean stop: {leftovers:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// With P2P on port 0 too, the ready file and `STATUS=` name the ports
/// the kernel chose, the Peer ID is the one the log prints, the P2P port
/// accepts connections, and a stale file from an earlier run is replaced.
#[test]
fn ready_file_names_the_bound_http_and_p2p_addresses() {
    let dir = temp_dir("ready");
    let (_github_port, github) = unused_github();
    let ready = dir.join("ready.json");
    std::fs::write(&ready, "{\"pid\": 1, \"http\": \"127.0.0.1:1\"}\n").unwrap();
    let sock_path = dir.join("notify.sock");
    let sock = notify_socket(&sock_path);
    let mut child = KillOnDrop(
        ghcache()
            .args([
                "daemon",
                "--listen",
                "127.0.0.1:0",
                "--p2p-listen",
                "/ip4/127.0.0.1/tcp/0",
                "--no-store",
            ])
            .args(["--github-api-url", &github, "--data-dir"])
            .arg(dir.join("data"))
            .arg("--ready-file")
            .arg(&ready)
            .env("NOTIFY_SOCKET", &sock_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 512];
    let n = recv(&sock, &mut buf).expect("READY=1 within 20 s");
    let notified = std::str::from_utf8(&buf[..n]).unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    assert_eq!(v["pid"], child.id(), "{v}");
    assert_eq!(v["p2p"], "listening", "{v}");
    let http = v["http"].as_str().unwrap();
    let http_port: u16 = http.strip_prefix("127.0.0.1:").unwrap().parse().unwrap();
    let p2p = v["p2p_listen"][0].as_str().unwrap();
    let p2p_port: u16 = p2p.strip_prefix("/ip4/127.0.0.1/tcp/").unwrap().parse().unwrap();
    assert!(http_port != 0 && p2p_port != 0, "{v}");
    let peer_id = v["peer_id"].as_str().unwrap();
    assert!(
        notified.starts_with(&format!(
            "READY=1\nSTATUS=listening on {http}; P2P on {p2p} as {peer_id}"
        )),
        "{notified:?}"
    );
    std::net::TcpStream::connect(("127.0.0.1", http_port)).expect("HTTP port accepts");
    std::net::TcpStream::connect(("127.0.0.1", p2p_port)).expect("P2P port accepts");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains(&format!("Peer ID: {peer_id}")), "{log}");
    assert!(log.contains("removed a ready file left by an earlier run"), "{log}");
    assert!(!ready.exists(), "the ready file goes at a clean stop");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ready_file_is_a_key_like_the_others() {
    use ghcache::daemon::config::Config;
    let c = Config::from_args(["--ready-file".to_string(), "/run/ghcache/ready.json".to_string()]).unwrap();
    assert_eq!(
        c.ready_file.as_deref(),
        Some(std::path::Path::new("/run/ghcache/ready.json"))
    );
    let mut c = Config::default();
    assert_eq!(c.ready_file, None);
    c.apply_toml("ready_file = \"/tmp/r.json\"\n").unwrap();
    assert_eq!(c.ready_file.as_deref(), Some(std::path::Path::new("/tmp/r.json")));
    let e = Config::from_args(["--ready-file=".to_string()]).unwrap_err();
    assert!(e.0.contains("`ready_file`"), "{e}");
}

#[test]
fn example_config_is_valid() {
    let mut config = ghcache::daemon::config::Config::default();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ghcache.example.toml")).unwrap();
    config.apply_toml(&text).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
    assert!(config.p2p && !config.mdns && config.bootstrap.is_empty());
    assert_eq!(config.p2p_listen.to_string(), "/ip4/0.0.0.0/tcp/9100");
}

/// Every key the example config shows, commented out or not, is also a
/// flag of `ghcache daemon` (a key added to `Config::set` and the example
/// but not to `daemon::flags::DaemonArgs` fails here).
#[test]
fn every_example_config_key_is_a_flag() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ghcache.example.toml")).unwrap();
    let ids: Vec<String> = ghcache::daemon::flags::command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    let mut table = "";
    let mut keys = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name;
            continue;
        }
        let line = line.strip_prefix("# ").unwrap_or(line);
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        if key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            keys.push(if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            });
        }
    }
    assert!(keys.len() > 40, "{keys:?}");
    for key in &keys {
        assert!(ids.contains(key), "key `{key}` of the example config has no flag");
    }
}

/// Starts the binary with `args`, a fresh notify socket and a ready file in
/// `dir`, waits for READY=1; returns the child (stderr piped), its HTTP
/// port (from the ready file, checked against `STATUS=`) and the socket
/// (for STOPPING=1).
fn start_daemon(dir: &std::path::Path, args: &[&str]) -> (KillOnDrop, u16, UnixDatagram) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let sock_path = dir.join(format!("notify-{nanos}.sock"));
    let ready_path = dir.join(format!("ready-{nanos}.json"));
    let sock = notify_socket(&sock_path);
    let mut child = ghcache()
        .arg("daemon")
        .args(args)
        .arg("--ready-file")
        .arg(&ready_path)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let Some(n) = recv(&sock, &mut buf) else {
        let _ = child.kill();
        let mut log = String::new();
        child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        panic!("no READY=1 within 20 s; log:\n{log}");
    };
    // The daemon bound port 0 and says where it listens, in the file and
    // in STATUS=.
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ready_path).unwrap()).unwrap();
    let addr = file["http"].as_str().unwrap_or_else(|| panic!("{file}"));
    let ready = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(
        ready.starts_with(&format!("READY=1\nSTATUS=listening on {addr};")),
        "{ready:?}"
    );
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    (KillOnDrop(child), port, sock)
}

#[test]
fn kill_9_keeps_what_was_written_and_the_store_opens() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gh = rt.block_on(common::FakeGithub::start());
    let dir = temp_dir("kill9");
    let data = dir.join("data");
    let url = gh.url();
    let args = [
        "--no-p2p",
        "--listen",
        "127.0.0.1:0",
        "--github-api-url",
        url.as_str(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let call = |port: u16, repo: &str| -> serde_json::Value {
        let body = serde_json::json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "gh_get_repo", "arguments": {"repo": repo}}, "id": 1});
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}/jsonrpc"))
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            serde_json::from_str(&r.text().await.unwrap()).unwrap()
        })
    };
    let (mut child, port, _) = start_daemon(&dir, &args);
    for i in 0..20 {
        assert_eq!(call(port, &format!("o/r{i}"))["result"]["cache_mode"], "miss");
    }
    std::thread::sleep(Duration::from_millis(500)); // the write-behind queue drains
    child.kill().unwrap(); // SIGKILL: no flush, no goodbye
    child.wait().unwrap();

    let (mut child, port, _) = start_daemon(&dir, &args);
    let v = call(port, "o/r0");
    assert_eq!(
        (v["result"]["cache_mode"].as_str(), v["result"]["origin"].as_str()),
        (Some("hit"), Some("disk")),
        "{v}"
    );
    assert_eq!(gh.requests(), 20);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------
// The command line (clap): every flag name kept, help, the operator
// commands against running daemons, swarm-key, completions.
// ---------------------------------------------------------------------

/// Every flag `ghcache daemon` accepted before clap, with a value it
/// takes (`None`: a switch). A name missing here or refused there breaks
/// deployments: these are contracts.
const DAEMON_FLAGS: &[(&str, Option<&str>)] = &[
    ("listen", Some("127.0.0.1:9001")),
    ("data-dir", Some("/tmp/ghcache-flags")),
    ("github-api-url", Some("http://127.0.0.1:5")),
    ("mcp-token-file", Some("/tmp/token")),
    ("mcp-token", Some("s3cret")),
    ("webhook-secret-file", Some("/tmp/webhook-secret")),
    ("allow-no-token", None),
    ("metrics-require-token", None),
    ("allowed-hosts", Some("a.example,b.example:8080")),
    ("allowed-origins", Some("https://a.example")),
    ("dashboard-repos", Some("octo/hello,o/r")),
    ("no-p2p", None),
    ("p2p", Some("false")),
    ("p2p-listen", Some("/ip4/127.0.0.1/tcp/0")),
    ("bootstrap", Some("/ip4/127.0.0.1/tcp/1")),
    ("mdns", Some("true")),
    ("bootstrap-dns", Some("fleet.example.com:9100")),
    ("discovery-github", Some("o/fleet")),
    ("max-peer-connections", Some("8")),
    ("swarm-key-file", Some("/tmp/swarm.key")),
    ("ready-file", Some("/tmp/ready.json")),
    ("no-store", None),
    ("store", Some("false")),
    ("log-json", None),
    ("max-concurrent-upstream", Some("7")),
    ("upstream-timeout-ms", Some("1234")),
    ("upstream-retries", Some("2")),
    ("retry-base-ms", Some("50")),
    ("max-body-bytes", Some("4096")),
    ("max-upstream-body-bytes", Some("8192")),
    ("max-connections", Some("10")),
    ("max-connections-per-client", Some("5")),
    ("http-idle-timeout-ms", Some("1000")),
    ("http-body-timeout-ms", Some("1000")),
    ("max-mcp-sessions", Some("9")),
    ("max-mcp-sessions-per-client", Some("3")),
    ("mcp-session-idle-secs", Some("60")),
    ("mcp-session-init-secs", Some("10")),
    ("max-batch", Some("4")),
    ("max-upstream-per-request", Some("6")),
    ("client-upstream-per-minute", Some("600")),
    ("max-entries", Some("77")),
    ("max-bytes", Some("65536")),
    ("stale-grace-secs", Some("100")),
    ("ttl-secs.runners", Some("11")),
    ("ttl-secs.workflow-runs", Some("12")),
    ("ttl-secs.workflow-run", Some("13")),
    ("ttl-secs.repos", Some("14")),
    ("ttl-secs.repo", Some("15")),
    ("ttl-secs.issues", Some("16")),
    ("ttl-secs.pull-requests", Some("17")),
    ("ttl-secs.auth-status", Some("18")),
    ("ttl-secs.rate-limit", Some("19")),
    ("ttl-secs.api", Some("20")),
];

fn parse_flags(args: &[&str]) -> Result<ghcache::daemon::config::Config, String> {
    ghcache::daemon::config::Config::from_args(args.iter().map(|s| s.to_string())).map_err(|e| e.0)
}

#[test]
fn every_daemon_flag_name_is_kept() {
    use ghcache::core::Operation;
    let default = ghcache::daemon::config::Config::default();
    for (name, value) in DAEMON_FLAGS {
        for spelling in [format!("--{name}"), format!("--{}", name.replace('-', "_"))] {
            let mut args = vec![spelling.as_str()];
            args.extend(value.iter());
            let c = parse_flags(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let changed = format!("{c:?}") != format!("{default:?}");
            assert!(changed, "{args:?} changed nothing");
            if let Some(v) = value {
                let inline = format!("{spelling}={v}");
                parse_flags(&[inline.as_str()]).unwrap_or_else(|e| panic!("{inline}: {e}"));
            }
        }
    }
    // All of them at once, as a deployment might.
    let mut all = Vec::new();
    for (name, value) in DAEMON_FLAGS {
        all.push(format!("--{name}"));
        all.extend(value.iter().map(|v| v.to_string()));
    }
    let c = ghcache::daemon::config::Config::from_args(all).unwrap();
    assert_eq!(c.listen.port(), 9001);
    assert_eq!(c.limits.client_upstream_per_minute, 600);
    assert_eq!(c.dashboard_repos, ["octo/hello", "o/r"]);
    assert_eq!(c.cache.ttl.ttl(Operation::WorkflowRuns), Duration::from_secs(12));
    assert_eq!(c.cache.ttl.ttl(Operation::Api), Duration::from_secs(20));
    assert!(!c.p2p && !c.store && c.log_json && c.allow_no_token && c.metrics_require_token && c.mdns);
    // Every operation has its TTL flag, and the list above has every flag
    // the command declares.
    for op in Operation::ALL {
        let flag = format!("ttl-secs.{}", op.name().replace('_', "-"));
        assert!(DAEMON_FLAGS.iter().any(|(n, _)| *n == flag), "{flag}");
    }
    let declared: Vec<String> = ghcache::daemon::flags::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(String::from))
        .filter(|l| l != "help" && l != "config")
        .collect();
    for long in &declared {
        assert!(
            DAEMON_FLAGS.iter().any(|(n, _)| n == long),
            "--{long} is not pinned here"
        );
    }
}

#[test]
fn daemon_flags_keep_their_rules() {
    // A later flag wins, across spellings of one key.
    let c = parse_flags(&[
        "--no-p2p",
        "--p2p",
        "true",
        "--listen",
        "127.0.0.1:1",
        "--listen=127.0.0.1:2",
    ])
    .unwrap();
    assert!(c.p2p);
    assert_eq!(c.listen.port(), 2);
    let c = parse_flags(&["--p2p", "true", "--no-p2p"]).unwrap();
    assert!(!c.p2p);
    let c = parse_flags(&["--no-p2p", "--p2p", "true", "--no-p2p"]).unwrap();
    assert!(!c.p2p, "the last of a repeated flag decides");
    let c = parse_flags(&["--no-store", "--store=true", "--no-store", "--store", "yes"]).unwrap();
    assert!(c.store);
    // Switches take `=true|false`, never a separate value.
    assert!(!parse_flags(&["--log-json=false"]).unwrap().log_json);
    let e = parse_flags(&["--log-json", "false"]).unwrap_err();
    assert!(e.contains("unexpected argument \"false\""), "{e}");
    let e = parse_flags(&["--no-p2p=yes"]).unwrap_err();
    assert!(e.contains("`no_p2p`") && e.contains("takes no value"), "{e}");
    // Bootstrap repeats and splits on commas.
    let c = parse_flags(&[
        "--bootstrap",
        "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.1/tcp/2",
        "--bootstrap=/ip4/127.0.0.1/tcp/3",
    ])
    .unwrap();
    assert_eq!(c.bootstrap.len(), 3);
    // Errors: one line naming the key.
    for (args, key, why) in [
        (&["--frobnicate", "1"][..], "`frobnicate`", "unknown key"),
        (&["--listen"][..], "`listen`", "missing value"),
        (&["--max-entries", "many"][..], "`max_entries`", "whole number"),
        (&["--ttl-secs.nope", "1"][..], "`ttl_secs.nope`", "unknown key"),
    ] {
        let e = parse_flags(args).unwrap_err();
        assert!(e.contains(key) && e.contains(why) && !e.contains('\n'), "{args:?}: {e}");
    }
    // The config file first, then the flags over it, whatever their order.
    let dir = temp_dir("flagorder");
    let file = dir.join("c.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:7\"\nmax_entries = 5\n").unwrap();
    let c = parse_flags(&["--listen", "127.0.0.1:8", "--config", file.to_str().unwrap()]).unwrap();
    assert_eq!((c.listen.port(), c.cache.max_entries), (8, 5));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `ghcache ARGS` with `env`, no config file in reach (a fresh
/// XDG_CONFIG_HOME) and no GHCACHE_URL; returns exit code, stdout, stderr.
fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let home = temp_dir(&format!("clihome{run}"));
    let mut c = ghcache();
    c.args(args)
        .env_remove("GHCACHE_URL")
        .env("XDG_CONFIG_HOME", &home)
        .env("HOME", &home)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let _ = std::fs::remove_dir_all(&home);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn help_is_generated_and_says_what_it_said() {
    let (code, top, _) = run_cli(&["--help"], &[]);
    assert_eq!(code, 0);
    for word in [
        "daemon",
        "stats",
        "peers",
        "invalidate",
        "swarm-key",
        "completions",
        "Exit codes:",
        "3  the daemon is unreachable",
    ] {
        assert!(top.contains(word), "{word}:\n{top}");
    }
    let (code, bare, _) = run_cli(&[], &[]);
    assert_eq!((code, bare.as_str()), (0, top.as_str()));
    let (code, version, _) = run_cli(&["--version"], &[]);
    assert_eq!(
        (code, version.trim()),
        (0, concat!("ghcache ", env!("CARGO_PKG_VERSION")))
    );

    let (code, help, _) = run_cli(&["daemon", "--help"], &[]);
    assert_eq!(code, 0);
    // Today's hand-written help listed these; each flag keeps its line.
    for word in [
        "--listen <ADDR>",
        "127.0.0.1:9000",
        "--data-dir <DIR>",
        "$STATE_DIRECTORY",
        "--github-api-url <URL>",
        "https://api.github.com",
        "--mcp-token-file <FILE>",
        "GHCACHE_MCP_TOKEN",
        "mcp-token",
        "--mcp-token <TOKEN>",
        "--allow-no-token",
        "--metrics-require-token",
        "--allowed-hosts",
        "--no-p2p",
        "--p2p-listen <MULTIADDR>",
        "/ip4/0.0.0.0/tcp/9100",
        "--bootstrap <MULTIADDR>",
        "--bootstrap-dns <NAME[:PORT]>",
        "--discovery-github <OWNER/REPO>",
        "--mdns <BOOL>",
        "--swarm-key-file <FILE>",
        "GHCACHE_SWARM_KEY",
        "--ready-file <FILE>",
        "--no-store",
        "--log-json",
        "--config <FILE>",
        "GITHUB_TOKEN, else GH_TOKEN, else `gh auth token`",
        "POST /mcp, POST /jsonrpc, GET /github/<path>, GET /metrics, GET /healthz",
        // --help shows every key; -h the common ones.
        "--max-concurrent-upstream <N>",
        "--ttl-secs.workflow-runs <SECS>",
        "--client-upstream-per-minute <N>",
    ] {
        assert!(help.contains(word), "{word}:\n{help}");
    }
    let (_, short, _) = run_cli(&["daemon", "-h"], &[]);
    assert!(short.contains("--listen") && !short.contains("--max-batch"), "{short}");
    let (code, _, err) = run_cli(&["frobnicate"], &[]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn daemon_flag_errors_are_one_line_and_exit_2() {
    for args in [
        &["daemon", "--frobnicate", "1"][..],
        &["daemon", "--listen"][..],
        &["daemon", "stray"][..],
    ] {
        let (code, _, err) = run_cli(args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("ghcache: "), "{err}");
    }
}

#[test]
fn completions_make_a_bash_script() {
    let (code, script, err) = run_cli(&["completions", "bash"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(script.contains("complete -F") && script.contains("ghcache"), "{script}");
    for word in [
        "swarm-key",
        "invalidate",
        "--prefix",
        "--swarm-key-file",
        "--ttl-secs.runners",
    ] {
        assert!(script.contains(word), "{word}");
    }
    // bash itself accepts it.
    let check = Command::new("bash").args(["-n", "-c", &script]).status();
    if let Ok(status) = check {
        assert!(status.success(), "bash -n rejects the script");
    }
    let (code, _, _) = run_cli(&["completions", "tcsh"], &[]);
    assert_eq!(code, 2);
}

#[test]
fn swarm_key_writes_a_new_0600_file_and_never_overwrites_unforced() {
    use std::os::unix::fs::PermissionsExt;
    use std::str::FromStr;
    let dir = temp_dir("swarmkey");
    let path = dir.join("swarm.key");
    let p = path.to_str().unwrap();
    let (code, _, err) = run_cli(&["swarm-key", "--out", p], &[]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.len(), 4, "{text:?}");
    assert_eq!(&lines[..2], ["/key/swarm/psk/1.0.0/", "/base16/"]);
    assert!(
        lines[2].len() == 64 && lines[2].bytes().all(|b| b.is_ascii_hexdigit()),
        "{text:?}"
    );
    assert_eq!(lines[3], "");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    // The daemon's parser and libp2p's own read it.
    ghcache::daemon::p2p::parse_psk(&text).unwrap();
    libp2p::pnet::PreSharedKey::from_str(&text).unwrap();

    let (code, _, err) = run_cli(&["swarm-key", "--out", p], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "unchanged");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = run_cli(&["swarm-key", "--out", p, "--force"], &[]);
    assert_eq!(code, 0, "{err}");
    let replaced = std::fs::read_to_string(&path).unwrap();
    assert_ne!(replaced, text);
    ghcache::daemon::p2p::parse_psk(&replaced).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let leftovers = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(leftovers, 1, "no temporary file is left");

    let (code, stdout, _) = run_cli(&["swarm-key"], &[]);
    assert_eq!(code, 0);
    ghcache::daemon::p2p::parse_psk(&stdout).unwrap();
    let (code, _, _) = run_cli(&["swarm-key", "--force"], &[]);
    assert_eq!(code, 2, "--force needs --out");
    let (code, _, err) = run_cli(&["swarm-key", "--out", dir.join("no/such/dir").to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ghcache ARGS --json` against a daemon: exit 0 and the parsed JSON.
fn cli_json(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = run_cli(&all, env);
    assert_eq!(code, 0, "{all:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{all:?}: {e}: {out}"))
}

#[test]
fn operator_commands_against_a_fleet_of_two() {
    use common::node::{wait_members, Node};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gh = rt.block_on(common::FakeGithub::start());
    let a = Node::spawn("cli-ops-a", &gh.url(), None, &[]);
    let b = Node::spawn("cli-ops-b", &gh.url(), Some(a.p2p), &[]);
    rt.block_on(wait_members(&[&a, &b], 2));
    let url = format!("http://127.0.0.1:{}", a.http);
    let u = url.as_str();
    for repo in ["o/r", "o/s"] {
        let v = rt.block_on(a.call("gh_get_repo", serde_json::json!({"repo": repo})));
        assert!(v["result"]["cache_mode"].is_string(), "{v}");
    }

    // stats: --json is the tool's result; text is a few lines.
    let stats = cli_json(&["stats", "--url", u], &[]);
    let direct = rt.block_on(a.stats());
    for k in [
        "entries",
        "bytes",
        "hits",
        "misses",
        "api_calls",
        "api_calls_saved",
        "peer_id",
        "store",
    ] {
        assert_eq!(stats[k], direct[k], "{k}: {stats}");
    }
    assert_eq!(stats["entries"], 2, "{stats}");
    let a_id = stats["peer_id"].as_str().unwrap().to_string();
    let (code, text, _) = run_cli(&["stats", "--url", u], &[]);
    assert_eq!(code, 0);
    assert!(text.starts_with("cache    2 entries"), "{text}");
    assert!(
        text.contains(&format!("P2P      running as {a_id}")) && text.contains("fleet of 2 nodes"),
        "{text}"
    );

    // peers: the other node, in a table.
    let b_id = rt.block_on(b.stats())["peer_id"].as_str().unwrap().to_string();
    let peers = cli_json(&["peers"], &[("GHCACHE_URL", u)]);
    assert_eq!(
        (peers["count"].as_u64(), peers["peers"][0]["peer_id"].as_str()),
        (Some(1), Some(b_id.as_str())),
        "{peers}"
    );
    let (code, text, _) = run_cli(&["peers", "--url", u], &[]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("PEER ID") && lines[2].starts_with(&b_id), "{text}");
    // Columns line up: PING starts where the row's second cell does.
    assert_eq!(lines[1].find("PING"), Some(b_id.len() + 2), "{text}");
    assert!(
        lines[2][b_id.len()..].starts_with("  ") && !lines[2][b_id.len() + 2..].starts_with(' '),
        "{text}"
    );

    // invalidate: one repository, then a prefix, then everything.
    let v = cli_json(&["invalidate", "--url", u, "--repo", "o/r"], &[]);
    assert_eq!(
        (v["invalidated"].as_u64(), v["repo"].as_str()),
        (Some(1), Some("o/r")),
        "{v}"
    );
    let v = cli_json(&["invalidate", "--url", u, "--prefix", "runners"], &[]);
    assert_eq!(
        (v["invalidated"].as_u64(), v["pattern"].as_str()),
        (Some(0), Some("runners:")),
        "{v}"
    );
    let (code, text, _) = run_cli(&["invalidate", "--url", u], &[]);
    assert_eq!((code, text.as_str()), (0, "invalidated 1 entry (everything)\n"));
    assert_eq!(cli_json(&["stats", "--url", u], &[])["entries"], 0);

    // The address from the config file's `listen` (default location).
    let home = temp_dir("cliconf");
    std::fs::create_dir_all(home.join("ghcache")).unwrap();
    std::fs::write(
        home.join("ghcache/ghcache.toml"),
        format!("listen = \"0.0.0.0:{}\"\n", a.http),
    )
    .unwrap();
    let v = cli_json(&["peers"], &[("XDG_CONFIG_HOME", home.to_str().unwrap())]);
    assert_eq!(v["peer_id"].as_str(), Some(a_id.as_str()));
    let file = home.join("ghcache/ghcache.toml");
    let v = cli_json(&["peers", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(v["peer_id"].as_str(), Some(a_id.as_str()));
    let _ = std::fs::remove_dir_all(&home);

    // The daemon answers an error: exit 1, its message on stderr.
    let (code, out, err) = run_cli(&["invalidate", "--url", u, "--repo", "not a repo"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("gh_invalidate_cache failed") && err.contains("-32602"),
        "{err}"
    );
}

#[test]
fn operator_exit_codes_for_unreachable_and_tokens() {
    use common::node::Node;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gh = rt.block_on(common::FakeGithub::start());
    let dir = temp_dir("clitoken");
    let token_file = dir.join("mcp-token");
    std::fs::write(&token_file, "right-token\n").unwrap();
    let tf = token_file.to_str().unwrap();
    let node = Node::spawn("cli-token", &gh.url(), None, &["--no-p2p", "--mcp-token-file", tf]);
    let url = format!("http://127.0.0.1:{}", node.http);
    let u = url.as_str();

    // Port 0 is never listening: connection refused, nothing bound.
    let (code, _, err) = run_cli(&["stats", "--url", "http://127.0.0.1:0"], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("cannot reach the daemon at http://127.0.0.1:0/jsonrpc"),
        "{err}"
    );

    let (code, _, err) = run_cli(&["stats", "--url", u], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("401") && err.contains("wants a token"), "{err}");
    let (code, _, err) = run_cli(&["stats", "--url", u], &[("GHCACHE_MCP_TOKEN", "wrong-token")]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("refused") && !err.contains("wrong-token"), "{err}");

    // The right token from each source.
    cli_json(&["stats", "--url", u], &[("GHCACHE_MCP_TOKEN", "right-token")]);
    cli_json(&["stats", "--url", u, "--mcp-token-file", tf], &[]);
    cli_json(
        &["stats", "--url", u, "--mcp-token-file", tf],
        &[("GHCACHE_MCP_TOKEN", "wrong-token")],
    );
    let conf = dir.join("ghcache.toml");
    std::fs::write(
        &conf,
        format!("listen = \"127.0.0.1:{}\"\nmcp_token_file = \"{tf}\"\n", node.http),
    )
    .unwrap();
    cli_json(&["stats", "--config", conf.to_str().unwrap()], &[]);
    // The environment beats a config file's token file.
    std::fs::write(
        &conf,
        format!(
            "listen = \"127.0.0.1:{}\"\nmcp_token_file = \"/nonexistent\"\n",
            node.http
        ),
    )
    .unwrap();
    cli_json(
        &["stats", "--config", conf.to_str().unwrap()],
        &[("GHCACHE_MCP_TOKEN", "right-token")],
    );

    // Usage errors: exit 2.
    for args in [
        &["stats", "--url", "127.0.0.1:9000"][..],
        &["invalidate", "--repo", "o/r", "--prefix", "x"][..],
        &[
            "stats",
            "--mcp-token-file",
            "/nonexistent",
            "--url",
            "http://127.0.0.1:0",
        ][..],
    ] {
        let (code, _, err) = run_cli(args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "listen = 5\n").unwrap();
    let (code, _, err) = run_cli(&["stats", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`listen`"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
