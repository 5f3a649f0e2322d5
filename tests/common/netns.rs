//! Network namespaces for multi-node tests, without root.
//!
//! A test that needs a network of its own wraps its body in [`isolated`].
//! Outside, that runs the test binary again, this one test only, under
//! `unshare --user --map-root-user --net --pid --fork --mount-proc
//! --kill-child`: the copy is root of a fresh user namespace, with a network
//! namespace of its own (the *test namespace*) and a PID namespace of its
//! own. Inside, it runs the body. When the body ends, however it ends, the
//! PID namespace ends with it: no daemon, no namespace outlives the test.
//!
//! Inside, [`Lan`] builds the network:
//! - a **segment** `S` (1, 2, …) is a bridge `brS` in the test namespace
//!   with the address `10.77.S.1/24`; multicast (mDNS) crosses a bridge;
//! - a **host** is a network namespace of its own, held open by a `sleep`
//!   process and named by that process (`/proc/PID/ns/net`, so no
//!   `/run/netns` is needed), joined to its segment by a veth pair (`vhN` on
//!   the bridge, `eth0` inside) with the address `10.77.S.(10 + k)/24` and
//!   a default route through `10.77.S.1`. [`Host::prefix`] is the command
//!   line that runs a program in it (`nsenter --net=…`);
//! - the test namespace **routes** between segments. [`Lan::set_routing`]
//!   `(false)` partitions them: packets from one segment to another are
//!   dropped without an answer (no ICMP), as in a real split, while every
//!   host still reaches the test namespace's own addresses (where a test
//!   runs its fake GitHub and from where it calls the daemons).
//!
//! Ports cannot collide across hosts: each host has its own.
//!
//! Needs `unshare` and `nsenter` (util-linux), `ip` (iproute2) and
//! unprivileged user namespaces that may create bridges and veth pairs.
//! When one is missing the test is skipped, saying why; under `CI=true` it
//! fails instead.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the copy of the test binary that runs inside the namespaces.
const INSIDE: &str = "GHCACHE_NETNS_INSIDE";

/// The `unshare` flags of the test namespace (see the module docs).
const UNSHARE: &[&str] = &[
    "--user",
    "--map-root-user",
    "--net",
    "--pid",
    "--fork",
    "--mount-proc",
    "--kill-child",
];

/// Runs `body` inside a fresh test namespace: outside, runs this test
/// (`test`, its exact name) again under `unshare` and fails when that copy
/// fails (its output is printed); inside, runs `body`. Skips (or fails
/// under `CI=true`) when the facilities are missing.
pub fn isolated(test: &str, body: impl FnOnce()) {
    if std::env::var_os(INSIDE).is_some() {
        body();
        return;
    }
    if let Err(why) = available() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why} (CI=true: a missing facility fails the test)");
        }
        eprintln!("SKIPPED {test}: {why}");
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // Process ids inside start again at 1: the copy gets a temporary
    // directory of its own (TMPDIR) so its files cannot meet another run's.
    let tmp = std::env::temp_dir().join(format!("ghcache-netns-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new("unshare")
        .args(UNSHARE)
        .arg(exe)
        .args([test, "--exact", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .output()
        .expect("unshare runs");
    let _ = std::fs::remove_dir_all(&tmp);
    // Through the test harness's capture: shown when this test fails, or
    // with --nocapture.
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} failed inside its namespace ({}); its output is above",
        out.status
    );
}

/// `Ok` when this machine can build a [`Lan`]; else what is missing.
fn available() -> Result<(), String> {
    for (tool, package) in [("ip", "iproute2"), ("unshare", "util-linux"), ("nsenter", "util-linux")] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Err(format!("`{tool}` not found (install {package})"));
        }
    }
    let probe = Command::new("unshare")
        .args(UNSHARE)
        .args([
            "sh",
            "-c",
            "ip link add probebr type bridge && ip link add probe0 type veth peer name probe1",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "no unprivileged user and network namespaces with bridges and veth pairs here: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    Ok(())
}

/// The network inside the test namespace (module docs). Its hosts' holder
/// processes are killed on drop (and with the PID namespace in any case).
pub struct Lan {
    segments: u8,
    hosts: Vec<Child>,
    /// Hosts per segment so far, indexed by segment − 1.
    per_segment: Vec<u8>,
}

/// A network namespace joined to a segment.
pub struct Host {
    pub ip: Ipv4Addr,
    pub segment: u8,
    /// The process holding the namespace open.
    holder: u32,
}

impl Host {
    /// The command line that runs a program in this host's network
    /// namespace: the program and its arguments follow it.
    pub fn prefix(&self) -> Vec<String> {
        vec!["nsenter".into(), format!("--net=/proc/{}/ns/net", self.holder)]
    }

    /// The address of the test namespace on this host's segment.
    pub fn gateway(&self) -> Ipv4Addr {
        gateway(self.segment)
    }
}

fn gateway(segment: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, segment, 1)
}

impl Lan {
    /// Loopback up and routing on in the test namespace; no segment yet.
    /// Only inside [`isolated`].
    pub fn new() -> Lan {
        assert!(
            std::env::var_os(INSIDE).is_some(),
            "Lan::new outside netns::isolated would change this machine's network"
        );
        ip(&["link", "set", "lo", "up"]);
        let lan = Lan {
            segments: 0,
            hosts: Vec::new(),
            per_segment: Vec::new(),
        };
        lan.set_routing(true);
        lan
    }

    /// A new segment (a bridge with the address `10.77.S.1/24`); returns S.
    pub fn add_segment(&mut self) -> u8 {
        self.segments += 1;
        self.per_segment.push(0);
        let s = self.segments;
        let bridge = format!("br{s}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}/24", gateway(s)), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        s
    }

    /// A new host on `segment`: its own network namespace, `eth0` at
    /// `10.77.S.(10 + k)/24`, the default route through the segment's
    /// bridge address.
    pub fn add_host(&mut self, segment: u8) -> Host {
        let k = self.per_segment[usize::from(segment) - 1];
        self.per_segment[usize::from(segment) - 1] += 1;
        let holder = Command::new("unshare")
            .args(["--net", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare --net sleep");
        let pid = holder.id();
        self.hosts.push(holder);
        // `unshare` enters the new namespace and then becomes `sleep`:
        // wait until the process is in a namespace other than ours.
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{pid}/ns/net")).ok().as_ref() == Some(&ours) {
            assert!(Instant::now() < deadline, "unshare --net did not enter a namespace");
            std::thread::sleep(Duration::from_millis(5));
        }
        let host = Host {
            ip: Ipv4Addr::new(10, 77, segment, 10 + k),
            segment,
            holder: pid,
        };
        let outside = format!("vh{}", self.hosts.len());
        ip(&[
            "link",
            "add",
            &outside,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pid.to_string(),
        ]);
        ip(&["link", "set", &outside, "master", &format!("br{segment}"), "up"]);
        let inside = |args: &[&str]| {
            let mut all: Vec<String> = host.prefix();
            all.push("ip".into());
            all.extend(args.iter().map(|a| a.to_string()));
            run(&all);
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["addr", "add", &format!("{}/24", host.ip), "dev", "eth0"]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&["route", "add", "default", "via", &gateway(segment).to_string()]);
        host
    }

    /// Routing between segments on (`true`) or off: off, a packet from one
    /// segment to another is dropped silently; the test namespace's own
    /// addresses stay reachable from every segment.
    pub fn set_routing(&self, on: bool) {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", if on { "1" } else { "0" })
            .expect("write /proc/sys/net/ipv4/ip_forward");
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

/// Runs `ip ARGS` in the test namespace; panics with its stderr on failure.
pub fn ip(args: &[&str]) {
    let mut all = vec!["ip".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    run(&all);
}

fn run(argv: &[String]) {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
