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
