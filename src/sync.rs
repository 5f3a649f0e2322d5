//! The synchronisation facade: the **only** module that names `std::sync` or
//! `loom::sync`.
//!
//! Every lock, condition variable, atomic and `Arc` in the core comes from
//! here, so the same code runs on real threads and under
//! [loom](https://docs.rs/loom), which explores every interleaving of a small
//! model (`RUSTFLAGS="--cfg loom"`, see `loom-tests/`).
//!
//! # Why the plain `loom` cfg is safe here
//! A global `--cfg loom` reaches every crate in the build. tokio reacts to it
//! (its IO driver then panics at start) and so do some queue crates, which is
//! why the loom build is **core-only**: `loom-tests` depends on ghcache with
//! `default-features = false`, so no async or network crate is compiled into
//! it. Building the `daemon` feature with the loom cfg is refused at compile
//! time (see `lib.rs`) rather than left to fail at run time.
//!
//! # Poisoning
//! No critical section in the core runs foreign code (callbacks are always
//! invoked with no lock held), so a poisoned lock can only come from a bug in
//! the core itself; [`lock`] takes the data anyway so that one panicking
//! thread cannot turn every later call into a panic.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

/// std's `Arc`, also in the loom build, for reference counts loom need not
/// model: immutable values (key text, ETags, error messages) and trait
/// objects (`dyn Clock`, `dyn P2pHost`) whose own synchronisation, if any,
/// goes through this facade. (loom's `Arc` cannot hold unsized values.)
pub use std::sync::Arc as StdArc;

/// Locks `mutex`, ignoring poisoning (see the module docs).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Blocks on `condvar` until woken, ignoring poisoning.
pub(crate) fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar.wait(guard).unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Declares a process-wide static holding a [`Mutex`].
///
/// On real threads this is a plain `static` (std's `Mutex::new` is `const`);
/// under loom it is a `loom::lazy_static!`, which loom resets at the start of
/// every explored execution, so each model sees a fresh process.
macro_rules! process_static {
    (static $name:ident : Mutex<$t:ty> = Mutex::new($init:expr);) => {
        #[cfg(not(loom))]
        static $name: $crate::sync::Mutex<$t> = $crate::sync::Mutex::new($init);
        #[cfg(loom)]
        loom::lazy_static! {
            static ref $name: $crate::sync::Mutex<$t> = $crate::sync::Mutex::new($init);
        }
    };
}
pub(crate) use process_static;
