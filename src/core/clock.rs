//! Time, as the core sees it: a monotonic millisecond counter behind the
//! [`Clock`] trait.
//!
//! The core never reads the wall clock. Freshness, expiry and P2P start
//! backoff are all decided from a [`Timestamp`] that a `Clock` hands in, so
//! tests drive time with a [`ManualClock`] and the daemon uses the monotonic
//! [`SystemClock`] (a wall-clock jump cannot make entries fresh again or
//! expire them early).

use std::fmt;
use std::time::Duration;
#[cfg(not(target_os = "linux"))]
use std::time::Instant;

use crate::sync::{AtomicU64, Ordering};

/// A point in time: milliseconds since the clock's own origin.
///
/// Only differences between timestamps of the same clock mean anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The clock's origin.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_millis(d)))
    }

    /// `self - d`, saturating at the origin.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_millis(d)))
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{}ms", self.0)
    }
}

/// A duration in whole milliseconds, saturating instead of overflowing.
pub(crate) fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A source of monotonic time.
pub trait Clock: Send + Sync + 'static {
    /// The current time. Never goes backwards.
    fn now(&self) -> Timestamp;
}

/// The real, monotonic clock; its origin is the moment it was created.
///
/// On Linux it reads `CLOCK_MONOTONIC_COARSE`: the time of the last kernel
/// tick, read from the vDSO without the TSC, a few nanoseconds where a fine
/// reading (`std::time::Instant`) costs ten times that on the lookup path.
/// It trails the fine clock by at most one tick (1 to 4 ms, by the kernel's
/// `HZ`), so an entry can stay fresh up to that much past its TTL; TTLs
/// here are seconds. Elsewhere it reads `Instant`.
#[derive(Debug)]
pub struct SystemClock {
    #[cfg(target_os = "linux")]
    origin_millis: u64,
    #[cfg(not(target_os = "linux"))]
    origin: Instant,
}

/// Milliseconds on `CLOCK_MONOTONIC_COARSE`.
#[cfg(target_os = "linux")]
fn coarse_monotonic_millis() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    // Both fields are non-negative for a monotonic clock.
    (t.tv_sec as u64).saturating_mul(1_000) + t.tv_nsec as u64 / 1_000_000
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        #[cfg(target_os = "linux")]
        return SystemClock {
            origin_millis: coarse_monotonic_millis(),
        };
        #[cfg(not(target_os = "linux"))]
        return SystemClock { origin: Instant::now() };
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        #[cfg(target_os = "linux")]
        return Timestamp(coarse_monotonic_millis().saturating_sub(self.origin_millis));
        #[cfg(not(target_os = "linux"))]
        return Timestamp(duration_millis(self.origin.elapsed()));
    }
}

/// A clock that only moves when told to: for tests, fuzzing and loom models.
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicU64,
}

impl ManualClock {
    /// A clock standing at its origin.
    pub fn new() -> Self {
        ManualClock {
            millis: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.millis.fetch_add(duration_millis(d), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new();
        assert_eq!(clock.now(), Timestamp::ZERO);
        clock.advance(Duration::from_secs(3));
        assert_eq!(clock.now().as_millis(), 3_000);
        assert_eq!(clock.now().since(Timestamp::from_millis(1_000)), Duration::from_secs(2));
        assert_eq!(Timestamp::ZERO.since(clock.now()), Duration::ZERO);
    }

    #[test]
    fn system_clock_is_monotonic_and_keeps_time() {
        let clock = SystemClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(60));
        let slept = started.elapsed();
        let moved = clock.now().since(b);
        // Coarse: it may trail by one kernel tick (at most 4 ms at HZ=250,
        // 10 ms at HZ=100) at either end.
        assert!(moved + Duration::from_millis(20) >= slept, "{moved:?} for {slept:?}");
        assert!(moved <= slept + Duration::from_millis(20), "{moved:?} for {slept:?}");
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        let far = Timestamp::from_millis(u64::MAX - 1);
        assert_eq!(far.saturating_add(Duration::from_secs(1)).as_millis(), u64::MAX);
        assert_eq!(Timestamp::ZERO.saturating_sub(Duration::from_secs(1)), Timestamp::ZERO);
        assert_eq!(duration_millis(Duration::MAX), u64::MAX);
    }
}
