//! Lock path: the P2P lifecycle (start, start failure, shutdown), racing
//! itself and stats.
#![cfg(loom)]

use ghcache::core::{P2pHost, P2pPhase, StartError, StartOutcome};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{node, start_host, HostLedger};

/// Two concurrent starts run one starter and both see its outcome.
#[test]
fn concurrent_starts_run_one_starter() {
    loom_tests::model(|| {
        let node = node();
        let ledger = Arc::new(HostLedger::default());
        let other = {
            let (node, ledger) = (node.clone(), ledger.clone());
            thread::spawn(move || node.start_p2p(|| start_host(&ledger)))
        };
        let mine = node.start_p2p(|| start_host(&ledger));
        let theirs = other.join().unwrap();
        let running = StartOutcome::Running {
            peer_id: "12D3KooWloom".into(),
        };
        assert_eq!((mine, theirs), (running.clone(), running));
        assert_eq!(ledger.starts.load(Ordering::SeqCst), 1);
    });
}

/// Two concurrent starts with a failing starter: it runs once; the other
/// caller shares the failure or finds the node backing off.
#[test]
fn concurrent_failing_starts_run_one_starter_and_back_off() {
    loom_tests::model(|| {
        let node = node();
        let calls = Arc::new(AtomicUsize::new(0));
        let fail = {
            let calls = calls.clone();
            move || -> Result<Box<dyn P2pHost>, StartError> {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("address in use".into())
            }
        };
        let other = {
            let (node, fail) = (node.clone(), fail.clone());
            thread::spawn(move || node.start_p2p(fail))
        };
        let outcomes = [node.start_p2p(fail), other.join().unwrap()];
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        for outcome in outcomes {
            assert!(
                matches!(
                    outcome,
                    StartOutcome::Failed {
                        failures: 1,
                        degraded: false,
                        ..
                    } | StartOutcome::BackingOff { .. }
                ),
                "{outcome:?}"
            );
        }
        assert_eq!(node.stats().p2p.phase, P2pPhase::BackingOff);
    });
}

/// Shutdown racing a start: when shutdown returns, no host is running, and
/// none runs afterwards; a host that was started is stopped exactly once.
#[test]
fn shutdown_racing_start_stops_the_host() {
    loom_tests::model(|| {
        let node = node();
        let ledger = Arc::new(HostLedger::default());
        let starter = {
            let (node, ledger) = (node.clone(), ledger.clone());
            thread::spawn(move || node.start_p2p(|| start_host(&ledger)))
        };
        node.shutdown_p2p();
        assert_eq!(ledger.running(), 0, "a host is running after shutdown returned");
        let outcome = starter.join().unwrap();
        assert_eq!(ledger.running(), 0, "a host started after shutdown");
        assert!(
            matches!(outcome, StartOutcome::ShutDown | StartOutcome::Running { .. }),
            "{outcome:?}"
        );
        assert_eq!(
            ledger.stops.load(Ordering::SeqCst),
            ledger.starts.load(Ordering::SeqCst)
        );
        assert_eq!(node.stats().p2p.phase, P2pPhase::Stopped);
    });
}

/// Two shutdowns of a running host: one stop, and neither returns before it.
#[test]
fn concurrent_shutdowns_stop_once() {
    loom_tests::model(|| {
        let node = node();
        let ledger = Arc::new(HostLedger::default());
        node.start_p2p(|| start_host(&ledger));
        let other = {
            let (node, ledger) = (node.clone(), ledger.clone());
            thread::spawn(move || {
                node.shutdown_p2p();
                assert_eq!(ledger.running(), 0, "second shutdown returned while the host ran");
            })
        };
        node.shutdown_p2p();
        assert_eq!(ledger.running(), 0);
        other.join().unwrap();
        assert_eq!(ledger.stops.load(Ordering::SeqCst), 1);
    });
}

/// The starter and the host's `stop` call back into the node (stats, a
/// nested start, a nested shutdown's view): with the lifecycle lock held
/// across them this deadlocks.
#[test]
fn start_and_stop_callbacks_may_call_back_into_the_node() {
    struct ReentrantHost(Arc<ghcache::core::Node>, Arc<HostLedger>);
    impl P2pHost for ReentrantHost {
        fn peer_id(&self) -> String {
            self.0.stats().check_consistency().unwrap();
            "12D3KooWloom".into()
        }
        fn stop(&self) {
            assert_eq!(self.0.stats().p2p.phase, P2pPhase::Stopping);
            self.1.stops.fetch_add(1, Ordering::SeqCst);
        }
    }
    loom_tests::model(|| {
        let node = node();
        let ledger = Arc::new(HostLedger::default());
        let other = {
            let node = node.clone();
            thread::spawn(move || node.stats().check_consistency().unwrap())
        };
        let outcome = node.start_p2p(|| {
            assert_eq!(node.stats().p2p.phase, P2pPhase::Starting);
            ledger.starts.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(ReentrantHost(node.clone(), ledger.clone())))
        });
        assert!(matches!(outcome, StartOutcome::Running { .. }));
        node.shutdown_p2p();
        other.join().unwrap();
        assert_eq!(ledger.running(), 0);
    });
}

/// Nothing starts after shutdown: a start racing a shutdown of an idle node
/// either finishes first (and is then stopped) or is refused.
#[test]
fn nothing_starts_after_shutdown() {
    loom_tests::model(|| {
        let node = node();
        let ledger = Arc::new(HostLedger::default());
        let starters: Vec<_> = (0..2)
            .map(|_| {
                let (node, ledger) = (node.clone(), ledger.clone());
                thread::spawn(move || node.start_p2p(|| start_host(&ledger)))
            })
            .collect();
        node.shutdown_p2p();
        assert_eq!(ledger.running(), 0, "a host is running after shutdown returned");
        for starter in starters {
            starter.join().unwrap();
        }
        assert_eq!(ledger.running(), 0);
        assert!(ledger.starts.load(Ordering::SeqCst) <= 1);
        assert_eq!(node.start_p2p(|| start_host(&ledger)), StartOutcome::ShutDown);
    });
}

/// Two shutdowns racing a start (found by the spin model, `model/`): the
/// start's host must be stopped before *either* shutdown returns, including
/// one that arrives after the starter has taken the host out but before it
/// has stopped it.
#[test]
fn two_shutdowns_racing_a_start_both_wait_for_the_stop() {
    loom_tests::model(|| {
        let node = node();
        let ledger = Arc::new(HostLedger::default());
        let starter = {
            let (node, ledger) = (node.clone(), ledger.clone());
            thread::spawn(move || node.start_p2p(|| start_host(&ledger)))
        };
        let other = {
            let (node, ledger) = (node.clone(), ledger.clone());
            thread::spawn(move || {
                node.shutdown_p2p();
                assert_eq!(
                    ledger.running(),
                    0,
                    "a host is running after the second shutdown returned"
                );
            })
        };
        node.shutdown_p2p();
        assert_eq!(ledger.running(), 0, "a host is running after shutdown returned");
        other.join().unwrap();
        starter.join().unwrap();
        assert_eq!(
            ledger.stops.load(Ordering::SeqCst),
            ledger.starts.load(Ordering::SeqCst)
        );
    });
}
