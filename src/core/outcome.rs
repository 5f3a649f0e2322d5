//! [`OutcomeCell`]: a write-once value that any number of threads or tasks
//! wait for. The one waiting primitive of the core, used by single flight
//! (followers wait for the leader) and by the P2P lifecycle (concurrent
//! starters and shutdowns wait for the one start in progress).
//!
//! # Protocol
//! The cell's own small mutex guards `{ value, wakers }`.
//! - `publish` stores the value and takes the registered wakers under the
//!   lock, then, **after** releasing it, notifies the condition variable and
//!   wakes the wakers (a waker is foreign code: it never runs under a lock).
//! - `wait` (threads) and `poll` (async tasks) check for the value under the
//!   lock and only then block or register a waker, so a publish can never
//!   fall between the check and the wait: no lost wake-up.
//! - The value is state, not an event: a waiter arriving after the publish
//!   returns at once.
//!
//! The cell's lock is a leaf: nothing else is locked while it is held, and it
//! is never taken while a shard or the lifecycle lock is held.

use std::task::{Context, Poll, Waker};

use crate::sync::{lock, wait, Condvar, Mutex};

struct State<T> {
    value: Option<T>,
    wakers: Vec<Waker>,
}

/// See the module docs.
pub(crate) struct OutcomeCell<T> {
    state: Mutex<State<T>>,
    published: Condvar,
}

impl<T: Clone> OutcomeCell<T> {
    pub(crate) fn new() -> Self {
        OutcomeCell {
            state: Mutex::new(State {
                value: None,
                wakers: Vec::new(),
            }),
            published: Condvar::new(),
        }
    }

    /// Stores `value` and wakes every waiter. Only the first publish counts.
    pub(crate) fn publish(&self, value: T) {
        let wakers = {
            let mut state = lock(&self.state);
            if state.value.is_some() {
                debug_assert!(false, "an outcome is published once");
                return;
            }
            state.value = Some(value);
            std::mem::take(&mut state.wakers)
        };
        self.published.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Blocks the calling thread until the value is published.
    pub(crate) fn wait(&self) -> T {
        let mut state = lock(&self.state);
        loop {
            if let Some(value) = &state.value {
                return value.clone();
            }
            state = wait(&self.published, state);
        }
    }

    /// The value if published, else registers `cx`'s waker.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<T> {
        let mut state = lock(&self.state);
        if let Some(value) = &state.value {
            return Poll::Ready(value.clone());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The value if it has been published.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn peek(&self) -> Option<T> {
        lock(&self.state).value.clone()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::task::Wake;

    struct CountingWaker(std::sync::atomic::AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn late_waiters_return_at_once_and_wakers_fire_once() {
        let cell = OutcomeCell::new();
        let counter = std::sync::Arc::new(CountingWaker(Default::default()));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert_eq!(cell.poll(&mut cx), Poll::Pending);
        assert_eq!(cell.poll(&mut cx), Poll::Pending, "same waker registered once");
        assert_eq!(cell.peek(), None);
        cell.publish(7);
        assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(cell.wait(), 7);
        assert_eq!(cell.poll(&mut cx), Poll::Ready(7));
    }

    #[test]
    fn threads_blocked_in_wait_are_released() {
        let cell = crate::sync::Arc::new(OutcomeCell::new());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let cell = cell.clone();
                std::thread::spawn(move || cell.wait())
            })
            .collect();
        cell.publish("done");
        for w in waiters {
            assert_eq!(w.join().unwrap(), "done");
        }
    }
}
