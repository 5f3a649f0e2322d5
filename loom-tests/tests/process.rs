//! Lock path: the process singleton.
#![cfg(loom)]

use std::sync::Arc as StdArc;

use ghcache::core::{CacheConfig, LifecycleConfig, Node};
use loom::thread;
use loom_tests::FrozenClock;

/// Two threads race to create the process's node: exactly one wins, and
/// both then see the same node.
#[test]
fn one_node_per_process() {
    loom_tests::model(|| {
        let init = || {
            Node::init(
                CacheConfig::default(),
                LifecycleConfig::default(),
                StdArc::new(FrozenClock),
            )
        };
        let other = thread::spawn(move || init().is_ok());
        let mine = init().is_ok();
        let theirs = other.join().unwrap();
        assert!(
            mine ^ theirs,
            "exactly one init succeeds (mine={mine}, theirs={theirs})"
        );
        let a = Node::get().unwrap();
        let b = Node::get().unwrap();
        assert!(loom::sync::Arc::ptr_eq(&a, &b));
    });
}
