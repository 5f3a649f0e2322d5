//! The synchronisation facade: the **only** module that names `std::sync` or
//! `loom::sync`.
//!
//! Every lock, condition variable, atomic and `Arc` in the core comes from
//! here, so the same code runs on real threads and under
//! [loom](https://docs.rs/loom), which explores every interleaving of a small
//! model (`RUSTFLAGS="--cfg loom"`, see `loom-tests/`).
//!
//! crossbeam's `ShardedLock` (the shard lock, [`ShardLock`]) and
//! `CachePadded` come through here too. loom cannot see inside crossbeam, so
//! under loom `ShardLock` is loom's `RwLock`, whose contract it shares:
//! the models check the protocol against that contract.
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
    atomic::{AtomicU64, AtomicU8, Ordering},
    Arc, Condvar, Mutex, MutexGuard, RwLock as ShardLock, RwLockReadGuard as ShardReadGuard,
    RwLockWriteGuard as ShardWriteGuard,
};

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicU64, AtomicU8, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

/// A reader-writer lock whose readers write no line another thread reads:
/// crossbeam's `ShardedLock` is one `RwLock` per stripe, each on its own
/// cache line; a reader locks the stripe of its thread, a writer locks every
/// stripe in order. Its contract is exactly `RwLock`'s (many readers or one
/// writer), so under loom it is loom's `RwLock`, which the models check.
#[cfg(not(loom))]
pub(crate) use crossbeam_utils::sync::{
    ShardedLock as ShardLock, ShardedLockReadGuard as ShardReadGuard, ShardedLockWriteGuard as ShardWriteGuard,
};

/// Pads a value to its own cache line (two on x86-64, which prefetches
/// pairs), so writes to it never invalidate a neighbour's line.
pub(crate) use crossbeam_utils::CachePadded;

/// How many counter stripes [`stripe`] spreads threads over: one per thread
/// up to this many, then shared (sharing costs speed, never a count).
#[cfg(not(loom))]
pub(crate) const STRIPES: usize = 8;
/// Under loom every thread uses stripe 0 (see [`stripe`]), so there is one.
#[cfg(loom)]
pub(crate) const STRIPES: usize = 1;

/// The counter stripe of the calling thread, below [`STRIPES`]: threads get
/// consecutive stripes in the order they first ask, so up to `STRIPES`
/// threads never share one.
#[cfg(not(loom))]
pub(crate) fn stripe() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// Under loom every thread uses stripe 0: the models then race increments
/// on one stripe, the case where a non-atomic bump would lose one (threads
/// beyond [`STRIPES`] share stripes in real runs too).
#[cfg(loom)]
pub(crate) fn stripe() -> usize {
    0
}

/// std's `Arc`, also in the loom build, for reference counts loom need not
/// model: immutable values (key text, ETags, error messages) and trait
/// objects (`dyn Clock`, `dyn P2pHost`) whose own synchronisation, if any,
/// goes through this facade. (loom's `Arc` cannot hold unsized values.)
pub use std::sync::Arc as StdArc;

/// Locks `mutex`, ignoring poisoning (see the module docs).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Read-locks `lock`, ignoring poisoning.
pub(crate) fn read<T>(lock: &ShardLock<T>) -> ShardReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Write-locks `lock`, ignoring poisoning.
pub(crate) fn write<T>(lock: &ShardLock<T>) -> ShardWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
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
