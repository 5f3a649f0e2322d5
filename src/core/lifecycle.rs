//! The P2P lifecycle: start at most once at a time, stop exactly once,
//! nothing after shutdown.
//!
//! # States
//! ```text
//!              start()                 starter Ok
//!   Idle ──────────────▶ Starting ───────────────────▶ Running ──┐
//!    ▲                     │  │ starter Err                      │ shutdown()
//!    │   retry_at passed   │  ▼                                  ▼
//!   BackingOff ◀───────────┘  failures == max ──▶ Degraded     Stopping ──▶ Stopped
//!
//!   Disabled: P2P off by configuration (local-only); never leaves.
//!   Idle, BackingOff, Degraded, Disabled ── shutdown() ──▶ Stopped
//!   Starting ── shutdown() ──▶ (stop requested) ── starter returns ──▶ Stopping ──▶ Stopped
//! ```
//!
//! # Invariants
//! - **One starter at a time.** Only the caller that moves the state from
//!   `Idle`/`BackingOff` to `Starting` runs the starter; every concurrent
//!   caller of [`Node::start_p2p`](super::Node::start_p2p) waits on the same
//!   [`OutcomeCell`] and returns the same [`StartOutcome`].
//! - **No lock across foreign code.** The starter, `P2pHost::peer_id`,
//!   `P2pHost::stop` and the clock all run with the lifecycle lock released.
//! - **Stopped means stopped.** When shutdown races a start in progress it
//!   only records the request; the starter's caller, on return, moves to
//!   `Stopping`, stops the new host, records `Stopped`, and only then
//!   publishes the outcome that shutdown waits for. A shutdown arriving in
//!   between finds `Stopping` and waits too. So when any `shutdown` returns
//!   no host is running, and none can be started again: `Stopped` is final.
//!   Recording `Stopped` before the host is stopped would let a second
//!   shutdown return while the host still runs: the spin model's
//!   `BUG_STOPPED_BEFORE_STOP` variant and a known-bad loom model show it.
//! - **Exactly one stop.** A host is moved out of the state by whoever
//!   stops it, so it cannot be stopped twice; concurrent shutdowns wait for
//!   the one in progress (`Stopping`).
//! - **Backoff.** The `n`th consecutive failure waits
//!   `min(backoff_base * 2^(n-1), backoff_max)` before the next attempt; at
//!   `max_start_failures` the node degrades to local-only for good.
//! - Every path out of a starter or a stop (return or panic) publishes its
//!   outcome, so no waiter waits forever.

use std::error::Error;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::clock::Timestamp;
use super::outcome::OutcomeCell;
use crate::sync::{lock, Arc};

/// A running P2P host, as the core sees it.
pub trait P2pHost: Send + Sync + 'static {
    /// The host's peer id.
    fn peer_id(&self) -> String;
    /// Stops the host: listeners, connections, tasks. Called exactly once.
    fn stop(&self);
}

/// The error a starter returns.
pub type StartError = Box<dyn Error + Send + Sync>;

/// Settings of the P2P lifecycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// Whether P2P may start at all (`false`: local-only, `disabled`).
    pub enabled: bool,
    /// Consecutive start failures after which the node degrades to
    /// local-only (0 behaves like 1: the first failure degrades).
    pub max_start_failures: u32,
    /// Wait after the first failure; doubles with each further one.
    pub backoff_base: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
}

impl LifecycleConfig {
    /// P2P off.
    pub fn disabled() -> Self {
        LifecycleConfig {
            enabled: false,
            ..Self::default()
        }
    }

    /// The wait after the `failures`th consecutive failure.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.backoff_base.saturating_mul(1 << doublings).min(self.backoff_max)
    }
}

impl Default for LifecycleConfig {
    /// Enabled; 5 failures; 1 s doubling to at most 60 s.
    fn default() -> Self {
        LifecycleConfig {
            enabled: true,
            max_start_failures: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// The lifecycle state, without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum P2pPhase {
    /// Off by configuration.
    Disabled,
    /// Not started yet.
    Idle,
    /// A starter is running.
    Starting,
    /// A host is running.
    Running,
    /// The last start failed; the next may begin at `retry_at`.
    BackingOff,
    /// Too many failures: local-only for good.
    Degraded,
    /// Shutdown is stopping the host.
    Stopping,
    /// Shut down: final.
    Stopped,
}

/// The lifecycle as reported in stats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct P2pStatus {
    /// Current state.
    pub phase: P2pPhase,
    /// The host's peer id, when running.
    pub peer_id: Option<String>,
    /// Consecutive start failures.
    pub failures: u32,
    /// The last start error.
    pub last_error: Option<String>,
    /// When the next start may begin, when backing off.
    pub retry_at: Option<Timestamp>,
    /// Whether shutdown has been asked for (also while a start it waits for
    /// is still running).
    pub shutdown_requested: bool,
}

/// What a call to start saw. All callers that overlap one attempt get the
/// same outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    /// A host is running (started by this call or an earlier one).
    Running {
        /// Its peer id.
        peer_id: String,
    },
    /// The attempt failed.
    Failed {
        /// The starter's error.
        error: String,
        /// Consecutive failures so far.
        failures: u32,
        /// Whether this failure degraded the node to local-only.
        degraded: bool,
    },
    /// Too soon after a failure.
    BackingOff {
        /// When the next attempt may begin.
        retry_at: Timestamp,
    },
    /// Degraded to local-only after too many failures.
    Degraded,
    /// P2P is off by configuration.
    Disabled,
    /// Shutdown has begun or finished: nothing starts any more.
    ShutDown,
}

/// A host that came up after a shutdown asked for the stop, and the
/// `Stopping` cell to publish once it is stopped.
type HostToStop = (Box<dyn P2pHost>, Arc<OutcomeCell<()>>);

enum State {
    Disabled,
    Idle,
    Starting {
        attempt: Arc<OutcomeCell<StartOutcome>>,
        stop_requested: bool,
    },
    Running {
        host: Box<dyn P2pHost>,
        peer_id: String,
    },
    BackingOff {
        retry_at: Timestamp,
    },
    Degraded,
    Stopping {
        done: Arc<OutcomeCell<()>>,
    },
    Stopped,
}

/// The lifecycle data, guarded by the cache's lifecycle lock.
pub(crate) struct Lifecycle {
    state: State,
    failures: u32,
    last_error: Option<String>,
    config: LifecycleConfig,
}

impl Lifecycle {
    pub(crate) fn new(config: LifecycleConfig) -> Lifecycle {
        Lifecycle {
            state: if config.enabled { State::Idle } else { State::Disabled },
            failures: 0,
            last_error: None,
            config,
        }
    }

    pub(crate) fn status(&self) -> P2pStatus {
        let shutdown_requested = matches!(
            self.state,
            State::Starting {
                stop_requested: true,
                ..
            } | State::Stopping { .. }
                | State::Stopped
        );
        let (phase, peer_id, retry_at) = match &self.state {
            State::Disabled => (P2pPhase::Disabled, None, None),
            State::Idle => (P2pPhase::Idle, None, None),
            State::Starting { .. } => (P2pPhase::Starting, None, None),
            State::Running { peer_id, .. } => (P2pPhase::Running, Some(peer_id.clone()), None),
            State::BackingOff { retry_at } => (P2pPhase::BackingOff, None, Some(*retry_at)),
            State::Degraded => (P2pPhase::Degraded, None, None),
            State::Stopping { .. } => (P2pPhase::Stopping, None, None),
            State::Stopped => (P2pPhase::Stopped, None, None),
        };
        P2pStatus {
            phase,
            peer_id,
            failures: self.failures,
            last_error: self.last_error.clone(),
            retry_at,
            shutdown_requested,
        }
    }

    /// Records a finished start attempt (lock held). Returns the outcome and,
    /// if shutdown asked for it meanwhile, the host to stop with the
    /// `Stopping` cell to publish once it is stopped.
    fn finish_start(
        &mut self,
        result: Result<(Box<dyn P2pHost>, String), String>,
        now: Timestamp,
    ) -> (StartOutcome, Option<HostToStop>) {
        let stop_requested = match &self.state {
            State::Starting { stop_requested, .. } => *stop_requested,
            _ => unreachable!("only the starter leaves Starting"),
        };
        match (result, stop_requested) {
            (Ok((host, _)), true) => {
                // Not `Stopped` yet: the host runs until the starter's caller
                // stops it, and a shutdown arriving meanwhile must wait.
                let done = Arc::new(OutcomeCell::new());
                self.state = State::Stopping { done: done.clone() };
                (StartOutcome::ShutDown, Some((host, done)))
            }
            (Err(error), true) => {
                self.last_error = Some(error);
                self.state = State::Stopped;
                (StartOutcome::ShutDown, None)
            }
            (Ok((host, peer_id)), false) => {
                self.failures = 0;
                self.last_error = None;
                self.state = State::Running {
                    host,
                    peer_id: peer_id.clone(),
                };
                (StartOutcome::Running { peer_id }, None)
            }
            (Err(error), false) => {
                self.failures += 1;
                self.last_error = Some(error.clone());
                let degraded = self.failures >= self.config.max_start_failures;
                self.state = if degraded {
                    State::Degraded
                } else {
                    State::BackingOff {
                        retry_at: now.saturating_add(self.config.backoff(self.failures)),
                    }
                };
                let outcome = StartOutcome::Failed {
                    error,
                    failures: self.failures,
                    degraded,
                };
                (outcome, None)
            }
        }
    }
}

/// Finishes a start attempt on every path out of the starter, panics
/// included.
struct StartAttempt<'a> {
    cache: &'a super::Cache,
    attempt: Arc<OutcomeCell<StartOutcome>>,
    finished: bool,
}

impl StartAttempt<'_> {
    fn finish(mut self, result: Result<(Box<dyn P2pHost>, String), String>) -> StartOutcome {
        self.finished = true;
        self.record(result)
    }

    fn record(&self, result: Result<(Box<dyn P2pHost>, String), String>) -> StartOutcome {
        let now = self.cache.now();
        let (outcome, to_stop) = lock(&self.cache.shared.lifecycle).finish_start(result, now);
        // Published when this goes out of scope: after the host is stopped
        // (a shutdown waiting on the outcome returns only once the host is
        // down), and even if `stop` panics.
        let _publish = PublishOnDrop {
            cell: &self.attempt,
            value: Some(outcome.clone()),
        };
        if let Some((host, done)) = to_stop {
            // Dropped before `_publish`: `Stopped` and the `Stopping` waiters
            // are released first, then the attempt's waiters.
            let _finish = StopInProgress {
                cache: self.cache,
                done,
            };
            host.stop();
        }
        outcome
    }
}

impl Drop for StartAttempt<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.record(Err("the P2P starter panicked".to_owned()));
        }
    }
}

/// Publishes `value` to `cell` when dropped, panics included.
struct PublishOnDrop<'a, T: Clone> {
    cell: &'a OutcomeCell<T>,
    value: Option<T>,
}

impl<T: Clone> Drop for PublishOnDrop<'_, T> {
    fn drop(&mut self) {
        if let Some(value) = self.value.take() {
            self.cell.publish(value);
        }
    }
}

/// Finishes a stop on every path out of `P2pHost::stop`, panics included.
struct StopInProgress<'a> {
    cache: &'a super::Cache,
    done: Arc<OutcomeCell<()>>,
}

impl Drop for StopInProgress<'_> {
    fn drop(&mut self) {
        lock(&self.cache.shared.lifecycle).state = State::Stopped;
        self.done.publish(());
    }
}

impl super::Cache {
    /// See [`Node::start_p2p`](super::Node::start_p2p).
    pub(crate) fn start_p2p<S>(&self, starter: S) -> StartOutcome
    where
        S: FnOnce() -> Result<Box<dyn P2pHost>, StartError>,
    {
        let now = self.now();
        let attempt = {
            let mut lifecycle = lock(&self.shared.lifecycle);
            match &lifecycle.state {
                State::Disabled => return StartOutcome::Disabled,
                State::Degraded => return StartOutcome::Degraded,
                State::Stopping { .. } | State::Stopped => return StartOutcome::ShutDown,
                State::Running { peer_id, .. } => {
                    return StartOutcome::Running {
                        peer_id: peer_id.clone(),
                    }
                }
                State::BackingOff { retry_at } if now < *retry_at => {
                    return StartOutcome::BackingOff { retry_at: *retry_at }
                }
                State::Starting { attempt, .. } => {
                    let attempt = attempt.clone();
                    drop(lifecycle);
                    return attempt.wait();
                }
                State::Idle | State::BackingOff { .. } => {
                    let attempt = Arc::new(OutcomeCell::new());
                    lifecycle.state = State::Starting {
                        attempt: attempt.clone(),
                        stop_requested: false,
                    };
                    attempt
                }
            }
        };
        let guard = StartAttempt {
            cache: self,
            attempt,
            finished: false,
        };
        let result = starter()
            .map(|host| {
                let peer_id = host.peer_id();
                (host, peer_id)
            })
            .map_err(|e| e.to_string());
        guard.finish(result)
    }

    /// See [`Node::shutdown_p2p`](super::Node::shutdown_p2p).
    pub(crate) fn shutdown_p2p(&self) {
        enum Then {
            Return,
            WaitForStop(Arc<OutcomeCell<()>>),
            WaitForStarter(Arc<OutcomeCell<StartOutcome>>),
            Stop(Box<dyn P2pHost>, Arc<OutcomeCell<()>>),
        }
        let then = {
            let mut lifecycle = lock(&self.shared.lifecycle);
            match &mut lifecycle.state {
                State::Stopped => Then::Return,
                State::Stopping { done } => Then::WaitForStop(done.clone()),
                State::Starting {
                    attempt,
                    stop_requested,
                } => {
                    *stop_requested = true;
                    Then::WaitForStarter(attempt.clone())
                }
                State::Running { .. } => {
                    let done = Arc::new(OutcomeCell::new());
                    let running = std::mem::replace(&mut lifecycle.state, State::Stopping { done: done.clone() });
                    let State::Running { host, .. } = running else {
                        unreachable!("matched Running above")
                    };
                    Then::Stop(host, done)
                }
                State::Idle | State::Disabled | State::BackingOff { .. } | State::Degraded => {
                    lifecycle.state = State::Stopped;
                    Then::Return
                }
            }
        };
        match then {
            Then::Return => {}
            Then::WaitForStop(done) => done.wait(),
            Then::WaitForStarter(attempt) => {
                attempt.wait();
            }
            Then::Stop(host, done) => {
                let _finish = StopInProgress { cache: self, done };
                host.stop();
            }
        }
    }
}
