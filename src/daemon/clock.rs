//! The daemon's clock ([`DaemonClock`]): the core's [`Clock`] on a
//! monotonic source, mapped to wall-clock time for the store.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::core::{Clock, Timestamp};
use crate::sync::{AtomicU64, Ordering};

/// The daemon's clock: monotonic, with its origin set far enough in the past
/// that entries loaded from disk can carry their real (earlier) fetch time,
/// and mapped to wall-clock time for the store. Tests can move it forward.
#[derive(Debug)]
pub struct DaemonClock {
    start: Instant,
    start_unix_ms: u64,
    skew_ms: AtomicU64,
}

impl DaemonClock {
    /// Readings start here (one year in ms), so a loaded entry up to a year
    /// old still maps to a timestamp.
    pub const OFFSET_MS: u64 = 365 * 24 * 3600 * 1000;

    /// A clock starting now.
    pub fn new() -> DaemonClock {
        DaemonClock {
            start: Instant::now(),
            start_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            skew_ms: AtomicU64::new(0),
        }
    }

    /// Moves the clock (and its wall-clock mapping) forward: for tests.
    pub fn advance(&self, d: Duration) {
        self.skew_ms.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// The wall-clock time (Unix ms) of a reading.
    pub fn to_unix_ms(&self, t: Timestamp) -> u64 {
        self.start_unix_ms
            .saturating_add(t.as_millis())
            .saturating_sub(Self::OFFSET_MS)
    }

    /// The reading of a wall-clock time (Unix ms), saturating at the origin
    /// and clamped to now: a time in the future (the wall clock went back
    /// between the run that stored it and this one, or a damaged record)
    /// reads as now, so an entry is never fresh for longer than its TTL.
    pub fn from_unix_ms(&self, unix_ms: u64) -> Timestamp {
        let t = Timestamp::from_millis(
            unix_ms
                .saturating_add(Self::OFFSET_MS)
                .saturating_sub(self.start_unix_ms),
        );
        t.min(self.now())
    }
}

impl Default for DaemonClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for DaemonClock {
    fn now(&self) -> Timestamp {
        let elapsed = self.start.elapsed().as_millis() as u64;
        Timestamp::from_millis(Self::OFFSET_MS + elapsed + self.skew_ms.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Entry, Freshness, Origin};

    #[test]
    fn wall_times_from_the_future_read_as_now() {
        let clock = DaemonClock::new();
        let now_unix = clock.to_unix_ms(clock.now());
        // Round trip for the past.
        let past = clock.from_unix_ms(now_unix - 10_000);
        assert!(clock.now().since(past) >= Duration::from_secs(10));
        // A record stamped a day ahead (the wall clock went back since):
        // clamped to now, so it is fresh for its TTL and no longer.
        let ahead = clock.from_unix_ms(now_unix + 24 * 3600 * 1000);
        assert!(ahead <= clock.now(), "{ahead} > {}", clock.now());
        let entry = Entry {
            status: 200,
            body: bytes::Bytes::from_static(b"{}"),
            etag: None,
            fetched_at: ahead,
            ttl: Duration::from_secs(60),
            origin: Origin::Disk,
        };
        assert_eq!(entry.freshness(clock.now(), Duration::ZERO), Freshness::Fresh);
        clock.advance(Duration::from_secs(61));
        assert_ne!(entry.freshness(clock.now(), Duration::ZERO), Freshness::Fresh);
        // Extremes neither panic nor overflow.
        assert!(clock.from_unix_ms(u64::MAX) <= clock.now());
        assert_eq!(clock.from_unix_ms(0), Timestamp::ZERO);
        let _ = clock.to_unix_ms(Timestamp::from_millis(u64::MAX));
    }
}
