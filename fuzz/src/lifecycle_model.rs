//! The P2P lifecycle, modelled: start (succeeding, failing, panicking, slow
//! with the clock moving meanwhile, or raced by a shutdown on another
//! thread), shutdown and clock moves against a plain state machine written
//! from the documented rules:
//! - a start runs the starter only from `Idle`, or from `BackingOff` once
//!   the clock reaches `retry_at`; `Running` answers its peer id, `Disabled`,
//!   `Degraded`, `Stopped` answer so, and no starter runs;
//! - success resets the failure count; the `n`th consecutive failure (a
//!   panic counts as one) backs off `min(base * 2^(n-1), max)` from the
//!   moment the failure is recorded, and at `max_start_failures` degrades
//!   for good;
//! - shutdown stops a running host exactly once, is idempotent, makes every
//!   later start answer `ShutDown`; raced with a start in progress it waits
//!   for the starter and the new host is stopped before shutdown returns.
//!
//! Besides the status, the harness counts hosts: never two alive at once,
//! none alive after shutdown, each stopped at most once, and a starter runs
//! exactly when the model says it does.
//!
//! Shared by the `lifecycle` fuzz target and `src/core/proptests.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::core::{
    CacheConfig, Clock, LifecycleConfig, ManualClock, Node, P2pHost, P2pPhase, P2pStatus, StartError, StartOutcome,
    Timestamp,
};

/// How the node is configured.
#[derive(Clone, Debug)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub struct LifecycleSetup {
    /// P2P enabled (when false the node is `Disabled`).
    pub enabled: bool,
    /// Failures before degrading: this % 6.
    pub max_failures: u8,
    /// Backoff base in ms (this % 4000).
    pub base_ms: u16,
    /// Backoff cap in ms (this % 10000).
    pub max_ms: u16,
}

/// How a starter ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum StartResult {
    Ok,
    Err,
    /// The starter panics (with unwinding harnesses only; otherwise it
    /// returns the error a panic is recorded as).
    Panic,
}

/// One step.
#[derive(Clone, Debug)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum LifeOp {
    /// `start_p2p`; a starter that runs first moves the clock by
    /// `slow_ms` and checks the status says `Starting`.
    Start { result: StartResult, slow_ms: u16 },
    /// `start_p2p` whose starter, once running, has another thread call
    /// `shutdown_p2p`, waits until the shutdown request is visible, then
    /// ends per `result`.
    StartRacedByShutdown { ok: bool },
    /// `shutdown_p2p`.
    Shutdown,
    /// Moves the clock.
    Advance { ms: u16 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Disabled,
    Idle,
    Running { host: usize },
    BackingOff { retry_at: u64 },
    Degraded,
    Stopped,
}

/// Host bookkeeping shared with the test hosts: stop calls per host.
#[derive(Default)]
struct Hosts {
    stops: Mutex<Vec<usize>>,
}

struct TestHost {
    index: usize,
    hosts: Arc<Hosts>,
}

impl P2pHost for TestHost {
    fn peer_id(&self) -> String {
        format!("12D3KooWpeer{}", self.index)
    }
    fn stop(&self) {
        self.hosts.stops.lock().unwrap()[self.index] += 1;
    }
}

/// A node, its clock, its hosts and the model, stepped together.
pub struct LifecycleHarness {
    node: Node,
    clock: Arc<ManualClock>,
    hosts: Arc<Hosts>,
    starters_run: Arc<AtomicUsize>,
    config: LifecycleConfig,
    // The model:
    now: u64,
    phase: Phase,
    failures: u32,
    last_error: Option<String>,
    hosts_started: usize,
    starters_expected: usize,
    unwinding: bool,
}

impl LifecycleSetup {
    pub fn config(&self) -> LifecycleConfig {
        LifecycleConfig {
            enabled: self.enabled,
            max_start_failures: u32::from(self.max_failures % 6),
            backoff_base: Duration::from_millis(u64::from(self.base_ms % 4000)),
            backoff_max: Duration::from_millis(u64::from(self.max_ms % 10000)),
        }
    }
}

const STARTER_ERROR: &str = "port in use";
const PANIC_ERROR: &str = "the P2P starter panicked";

impl LifecycleHarness {
    pub fn new(setup: &LifecycleSetup, unwinding: bool) -> LifecycleHarness {
        let clock = Arc::new(ManualClock::new());
        let config = setup.config();
        let node = Node::new_for_tests(CacheConfig::default(), config.clone(), clock.clone());
        let h = LifecycleHarness {
            node,
            clock,
            hosts: Arc::default(),
            starters_run: Arc::default(),
            phase: if config.enabled { Phase::Idle } else { Phase::Disabled },
            config,
            now: 0,
            failures: 0,
            last_error: None,
            hosts_started: 0,
            starters_expected: 0,
            unwinding,
        };
        h.check();
        h
    }

    fn peer_id(host: usize) -> String {
        format!("12D3KooWpeer{host}")
    }

    /// Backoff after the `n`th failure per the documentation.
    fn backoff_ms(&self, n: u32) -> u64 {
        let base = self.config.backoff_base.as_millis();
        let grown = base << (n.max(1) - 1).min(40);
        grown.min(self.config.backoff_max.as_millis()) as u64
    }

    /// What a start answers without running a starter, or `None` when the
    /// starter runs.
    fn refusal(&self) -> Option<StartOutcome> {
        match &self.phase {
            Phase::Disabled => Some(StartOutcome::Disabled),
            Phase::Degraded => Some(StartOutcome::Degraded),
            Phase::Stopped => Some(StartOutcome::ShutDown),
            Phase::Running { host } => Some(StartOutcome::Running {
                peer_id: Self::peer_id(*host),
            }),
            Phase::BackingOff { retry_at } if self.now < *retry_at => Some(StartOutcome::BackingOff {
                retry_at: Timestamp::from_millis(*retry_at),
            }),
            Phase::Idle | Phase::BackingOff { .. } => None,
        }
    }

    /// The model's record of a finished starter (not raced by shutdown).
    fn finish(&mut self, result: Result<usize, &str>) -> StartOutcome {
        match result {
            Ok(host) => {
                self.failures = 0;
                self.last_error = None;
                self.phase = Phase::Running { host };
                StartOutcome::Running {
                    peer_id: Self::peer_id(host),
                }
            }
            Err(error) => {
                self.failures += 1;
                self.last_error = Some(error.to_owned());
                let degraded = self.failures >= self.config.max_start_failures;
                self.phase = if degraded {
                    Phase::Degraded
                } else {
                    Phase::BackingOff {
                        retry_at: self.now + self.backoff_ms(self.failures),
                    }
                };
                StartOutcome::Failed {
                    error: error.to_owned(),
                    failures: self.failures,
                    degraded,
                }
            }
        }
    }

    fn new_host(hosts: &Arc<Hosts>, starters_run: &AtomicUsize) -> Box<dyn P2pHost> {
        starters_run.fetch_add(1, Ordering::SeqCst);
        let mut stops = hosts.stops.lock().unwrap();
        stops.push(0);
        Box::new(TestHost {
            index: stops.len() - 1,
            hosts: hosts.clone(),
        })
    }

    pub fn step(&mut self, op: &LifeOp) {
        match *op {
            LifeOp::Start { result, slow_ms } => self.start(result, slow_ms),
            LifeOp::StartRacedByShutdown { ok } => self.start_raced(ok),
            LifeOp::Shutdown => {
                self.node.shutdown_p2p();
                self.phase = Phase::Stopped;
            }
            LifeOp::Advance { ms } => {
                self.clock.advance(Duration::from_millis(u64::from(ms)));
                self.now += u64::from(ms);
            }
        }
        self.check();
    }

    fn start(&mut self, result: StartResult, slow_ms: u16) {
        if let Some(refused) = self.refusal() {
            let got = self
                .node
                .start_p2p(|| panic!("a starter ran where the model refuses: {refused:?}"));
            assert_eq!(got, refused);
            return;
        }
        self.starters_expected += 1;
        let result = if result == StartResult::Panic && !self.unwinding {
            StartResult::Err
        } else {
            result
        };
        let (node, clock, hosts, run) = (&self.node, &self.clock, &self.hosts, &self.starters_run);
        let starter = move || -> Result<Box<dyn P2pHost>, StartError> {
            let s = node.stats().p2p;
            assert_eq!(
                (s.phase, s.shutdown_requested),
                (P2pPhase::Starting, false),
                "status while starting"
            );
            clock.advance(Duration::from_millis(u64::from(slow_ms)));
            match result {
                StartResult::Ok => Ok(Self::new_host(hosts, run)),
                StartResult::Err => {
                    run.fetch_add(1, Ordering::SeqCst);
                    Err(STARTER_ERROR.into())
                }
                StartResult::Panic => {
                    run.fetch_add(1, Ordering::SeqCst);
                    panic!("planned panic in a starter")
                }
            }
        };
        let got = if result == StartResult::Panic {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.start_p2p(starter)));
            assert!(r.is_err(), "the starter's panic reaches its caller");
            None
        } else {
            Some(node.start_p2p(starter))
        };
        self.now += u64::from(slow_ms);
        let want = match result {
            StartResult::Ok => {
                self.hosts_started += 1;
                self.finish(Ok(self.hosts_started - 1))
            }
            StartResult::Err => self.finish(Err(STARTER_ERROR)),
            StartResult::Panic => self.finish(Err(PANIC_ERROR)),
        };
        if let Some(got) = got {
            assert_eq!(got, want, "start outcome");
        }
    }

    fn start_raced(&mut self, ok: bool) {
        if self.refusal().is_some() {
            // No starter would run: a plain refused start, then a shutdown.
            self.start(StartResult::Ok, 0);
            self.step(&LifeOp::Shutdown);
            return;
        }
        self.starters_expected += 1;
        let (node, hosts, run) = (&self.node, &self.hosts, &self.starters_run);
        let stops_seen_by_shutdown = std::thread::scope(|s| {
            let mut shutdown = None;
            let got = node.start_p2p(|| -> Result<Box<dyn P2pHost>, StartError> {
                shutdown = Some(s.spawn(move || {
                    node.shutdown_p2p();
                    hosts.stops.lock().unwrap().clone()
                }));
                // Wait (no timing: until it is visible) for the shutdown request.
                while !node.stats().p2p.shutdown_requested {
                    std::thread::yield_now();
                }
                assert_eq!(
                    node.stats().p2p.phase,
                    P2pPhase::Starting,
                    "shutdown waits for the starter"
                );
                if ok {
                    Ok(Self::new_host(hosts, run))
                } else {
                    run.fetch_add(1, Ordering::SeqCst);
                    Err(STARTER_ERROR.into())
                }
            });
            assert_eq!(got, StartOutcome::ShutDown, "a start raced by shutdown");
            shutdown.expect("the starter ran").join().unwrap()
        });
        if ok {
            self.hosts_started += 1;
            assert_eq!(
                stops_seen_by_shutdown.last(),
                Some(&1),
                "the new host was stopped before shutdown returned"
            );
        } else {
            self.last_error = Some(STARTER_ERROR.to_owned());
        }
        self.phase = Phase::Stopped;
    }

    /// Compares the status and the hosts with the model.
    fn check(&self) {
        let stats = self.node.stats();
        stats.check_consistency().unwrap();
        let (phase, peer_id, retry_at) = match &self.phase {
            Phase::Disabled => (P2pPhase::Disabled, None, None),
            Phase::Idle => (P2pPhase::Idle, None, None),
            Phase::Running { host } => (P2pPhase::Running, Some(Self::peer_id(*host)), None),
            Phase::BackingOff { retry_at } => (P2pPhase::BackingOff, None, Some(Timestamp::from_millis(*retry_at))),
            Phase::Degraded => (P2pPhase::Degraded, None, None),
            Phase::Stopped => (P2pPhase::Stopped, None, None),
        };
        let want = P2pStatus {
            phase,
            peer_id,
            failures: self.failures,
            last_error: self.last_error.clone(),
            retry_at,
            shutdown_requested: self.phase == Phase::Stopped,
        };
        assert_eq!(stats.p2p, want, "P2P status");
        assert_eq!(self.clock.now().as_millis(), self.now, "clock");
        assert_eq!(
            self.starters_run.load(Ordering::SeqCst),
            self.starters_expected,
            "starters run"
        );
        let stops = self.hosts.stops.lock().unwrap().clone();
        assert_eq!(stops.len(), self.hosts_started, "hosts started");
        assert!(stops.iter().all(|&n| n <= 1), "a host stopped twice: {stops:?}");
        let alive: Vec<usize> = (0..stops.len()).filter(|&i| stops[i] == 0).collect();
        match &self.phase {
            Phase::Running { host } => assert_eq!(alive, [*host], "exactly the running host is alive"),
            _ => assert_eq!(alive, Vec::<usize>::new(), "no host alive unless running"),
        }
    }
}

/// The whole `lifecycle` check; ends with a shutdown (which must leave no
/// host alive) and a start (which must not run).
pub fn run(setup: &LifecycleSetup, ops: &[LifeOp], unwinding: bool) {
    let mut h = LifecycleHarness::new(setup, unwinding);
    for op in ops {
        h.step(op);
    }
    h.step(&LifeOp::Shutdown);
    h.step(&LifeOp::Start {
        result: StartResult::Ok,
        slow_ms: 0,
    });
}
