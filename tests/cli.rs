//! The `ghcache daemon` binary as a process: config errors, signals,
//! sd_notify. GitHub is a closed local port: nothing here reaches it.
#![cfg(feature = "daemon")]

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ghcache() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ghcache"));
    c.env("GITHUB_TOKEN", "test-token").env_remove("NOTIFY_SOCKET").env_remove("GHCACHE_MCP_TOKEN");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ghcache-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn bad_config_is_one_line_naming_the_key_and_exit_2() {
    let out = ghcache().args(["daemon", "--listen", "not-an-address"]).output().unwrap();
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
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    None
}

#[test]
fn sigterm_stops_cleanly_within_10s_with_sd_notify() {
    let dir = temp_dir("sigterm");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let closed = free_port();
    let mut child = ghcache()
        .args(["daemon", "--no-p2p", "--listen", "127.0.0.1:0", "--github-api-url", &format!("http://127.0.0.1:{closed}")])
        .arg("--data-dir")
        .arg(dir.join("data"))
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
    // The daemon bound port 0 and says where it listens.
    let ready = std::str::from_utf8(&buf[..n]).unwrap();
    let addr = ready.strip_prefix("READY=1\nSTATUS=listening on ").unwrap_or_else(|| panic!("{ready:?}"));
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    // It serves.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::Write;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"), "{answer}");

    let started = Instant::now();
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let n = recv(&sock, &mut buf).expect("STOPPING=1 within 20 s");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still running 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains("test-token"), "the token must never be logged:\n{log}");
    assert!(dir.join("data/cache.redb").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn example_config_is_valid() {
    let mut config = ghcache::daemon::config::Config::default();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ghcache.example.toml")).unwrap();
    config.apply_toml(&text).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
    assert!(!config.p2p);
}
