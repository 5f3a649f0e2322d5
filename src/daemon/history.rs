//! The last hour of reads, for the dashboard's plots: a bounded ring of
//! samples, one per interval (10 s by default, 360 of them: an hour).
//!
//! Each read that goes through [`App::read`](super::App::read) is
//! [`observe`](History::observe)d: its latency and whether the cache
//! answered it. A sample holds, for its interval: how many reads, how many
//! were fresh hits, how many failed, the mean, the 95th percentile (read
//! off a histogram of power-of-two microsecond buckets, so it is an upper
//! bound within a factor of two) and the maximum latency.
//!
//! # Invariants
//! - **Bounded**: at most `capacity` closed samples are kept; the oldest
//!   goes first. Memory does not grow with traffic or uptime.
//! - **No gaps in time**: an interval with no reads is a sample of zeros,
//!   so the samples are evenly spaced and `index` counts intervals since
//!   the daemon started. Nothing runs in the background: an interval is
//!   closed by the first [`observe`](History::observe) or
//!   [`samples`](History::samples) after it ends.
//! - **No lock on the read path unless an interval ended**: `observe` adds
//!   to atomics of the open interval. The ring's lock is a leaf, held only
//!   to close intervals and to copy the ring; nothing is awaited or called
//!   under it.
//!
//! A read that lands while an interval is being closed may count in one
//! interval and its latency in the next: these figures are for plots, and
//! the exact counters are the core's ([`StatsSnapshot`](crate::core::StatsSnapshot)).

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::sync::{lock, AtomicU64, Mutex, Ordering};

/// Histogram buckets: bucket `b` holds latencies below `2^b` µs (the last
/// one everything above), so 1 µs to about 17 minutes.
const BUCKETS: usize = 31;

/// One interval's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Intervals since the history started (the first is 0).
    pub index: u64,
    /// When the interval started (Unix milliseconds).
    pub start_unix_ms: u64,
    /// Reads in the interval.
    pub reads: u64,
    /// Reads answered fresh from this node's cache.
    pub hits: u64,
    /// Reads that ended in an error.
    pub errors: u64,
    /// Mean latency (ms), 0 without reads.
    pub mean_ms: f64,
    /// 95th percentile (ms; the upper edge of its bucket), 0 without reads.
    pub p95_ms: f64,
    /// Slowest read (ms), 0 without reads.
    pub max_ms: f64,
}

/// The open interval's accumulators.
#[derive(Debug, Default)]
struct Open {
    reads: AtomicU64,
    hits: AtomicU64,
    errors: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

/// The open interval's figures, as loaded or taken.
struct Figures {
    reads: u64,
    hits: u64,
    errors: u64,
    sum_us: u64,
    max_us: u64,
    buckets: [u64; BUCKETS],
}

impl Figures {
    fn sample(&self, index: u64, start_unix_ms: u64) -> Sample {
        Sample {
            index,
            start_unix_ms,
            reads: self.reads,
            hits: self.hits,
            errors: self.errors,
            mean_ms: if self.reads == 0 {
                0.0
            } else {
                self.sum_us as f64 / self.reads as f64 / 1000.0
            },
            p95_ms: percentile_ms(&self.buckets, 0.95),
            max_ms: self.max_us as f64 / 1000.0,
        }
    }
}

impl Open {
    /// The figures, each read with `f` (a load, or a swap with zero).
    fn figures(&self, f: impl Fn(&AtomicU64) -> u64) -> Figures {
        Figures {
            reads: f(&self.reads),
            hits: f(&self.hits),
            errors: f(&self.errors),
            sum_us: f(&self.sum_us),
            max_us: f(&self.max_us),
            buckets: std::array::from_fn(|b| f(&self.buckets[b])),
        }
    }
}

/// The upper edge (ms) of the bucket holding quantile `q` of `buckets`.
fn percentile_ms(buckets: &[u64], q: f64) -> f64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (b, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return (1u64 << b) as f64 / 1000.0;
        }
    }
    (1u64 << (BUCKETS - 1)) as f64 / 1000.0
}

fn bucket_of(us: u64) -> usize {
    // Below 2^b µs for the smallest b.
    ((u64::BITS - us.leading_zeros()) as usize).min(BUCKETS - 1)
}

/// An interval without reads.
const IDLE: Figures = Figures {
    reads: 0,
    hits: 0,
    errors: 0,
    sum_us: 0,
    max_us: 0,
    buckets: [0; BUCKETS],
};

/// The closed samples and where the open interval stands.
#[derive(Debug)]
struct Ring {
    samples: VecDeque<Sample>,
    /// Index of the open interval.
    open_index: u64,
}

/// The ring of samples (module docs).
#[derive(Debug)]
pub struct History {
    interval: Duration,
    capacity: usize,
    origin: Instant,
    origin_unix_ms: u64,
    /// The open interval ends here (ms since `origin`); read without the
    /// lock to decide whether an interval must be closed.
    open_until_ms: AtomicU64,
    open: Open,
    /// Leaf lock (module docs).
    ring: Mutex<Ring>,
}

impl History {
    /// The default: one sample per 10 s, an hour of them.
    pub fn hour() -> History {
        History::new(Duration::from_secs(10), 360, Instant::now())
    }

    /// A history of `capacity` samples of `interval` each, starting at
    /// `origin`. `interval` is at least 1 ms and `capacity` at least 1.
    pub fn new(interval: Duration, capacity: usize, origin: Instant) -> History {
        let interval = interval.max(Duration::from_millis(1));
        let origin_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            .saturating_sub(Instant::now().saturating_duration_since(origin).as_millis() as u64);
        History {
            interval,
            capacity: capacity.max(1),
            origin,
            origin_unix_ms,
            open_until_ms: AtomicU64::new(interval.as_millis() as u64),
            open: Open::default(),
            ring: Mutex::new(Ring {
                samples: VecDeque::with_capacity(capacity.max(1)),
                open_index: 0,
            }),
        }
    }

    /// The sampling interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The most closed samples kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Counts one read that took `latency` and ended at `now`: `hit` when
    /// the cache answered it fresh, `error` when it failed.
    pub fn observe(&self, now: Instant, latency: Duration, hit: bool, error: bool) {
        self.close_ended(now);
        let us = latency.as_micros().min(u64::MAX as u128) as u64;
        let open = &self.open;
        open.reads.fetch_add(1, Ordering::Relaxed);
        open.hits.fetch_add(u64::from(hit), Ordering::Relaxed);
        open.errors.fetch_add(u64::from(error), Ordering::Relaxed);
        open.sum_us.fetch_add(us, Ordering::Relaxed);
        open.max_us.fetch_max(us, Ordering::Relaxed);
        open.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// The closed samples, oldest first, then the open interval's figures
    /// so far (so a plot moves as soon as reads happen).
    pub fn samples(&self, now: Instant) -> Vec<Sample> {
        self.close_ended(now);
        let ring = lock(&self.ring);
        let mut out: Vec<Sample> = ring.samples.iter().cloned().collect();
        let open = self.open.figures(|a| a.load(Ordering::Relaxed));
        out.push(open.sample(ring.open_index, self.start_unix_ms(ring.open_index)));
        out
    }

    fn ms_since_origin(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_millis() as u64
    }

    fn start_unix_ms(&self, index: u64) -> u64 {
        self.origin_unix_ms
            .saturating_add(index.saturating_mul(self.interval.as_millis() as u64))
    }

    /// Closes every interval that ended before `now`: the open one with its
    /// figures, then zero samples for the idle ones (at most `capacity`).
    fn close_ended(&self, now: Instant) {
        let elapsed = self.ms_since_origin(now);
        if elapsed < self.open_until_ms.load(Ordering::Acquire) {
            return;
        }
        let step = self.interval.as_millis() as u64;
        let mut ring = lock(&self.ring);
        let now_index = elapsed / step;
        if now_index <= ring.open_index {
            return; // another caller closed it meanwhile
        }
        let closed = ring.open_index;
        let taken = self.open.figures(|a| a.swap(0, Ordering::Relaxed));
        ring.samples.push_back(taken.sample(closed, self.start_unix_ms(closed)));
        let idle_from = (closed + 1).max(now_index.saturating_sub(self.capacity as u64));
        for index in idle_from..now_index {
            ring.samples.push_back(IDLE.sample(index, self.start_unix_ms(index)));
        }
        while ring.samples.len() > self.capacity {
            ring.samples.pop_front();
        }
        ring.open_index = now_index;
        self.open_until_ms
            .store((now_index + 1).saturating_mul(step), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn reads_land_in_their_interval() {
        let t0 = Instant::now();
        let h = History::new(Duration::from_secs(10), 6, t0);
        h.observe(t0 + Duration::from_secs(1), 2 * MS, true, false);
        h.observe(t0 + Duration::from_secs(2), 4 * MS, false, false);
        let open = h.samples(t0 + Duration::from_secs(3));
        assert_eq!(open.len(), 1, "only the open interval");
        assert_eq!((open[0].index, open[0].reads, open[0].hits), (0, 2, 1));
        assert_eq!(open[0].mean_ms, 3.0);
        assert_eq!(open[0].max_ms, 4.0);
        h.observe(t0 + Duration::from_secs(11), 8 * MS, false, true);
        let s = h.samples(t0 + Duration::from_secs(12));
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].index, s[0].reads, s[0].errors), (0, 2, 0));
        assert_eq!((s[1].index, s[1].reads, s[1].errors), (1, 1, 1));
        assert_eq!(s[1].start_unix_ms - s[0].start_unix_ms, 10_000);
    }

    #[test]
    fn idle_intervals_are_zeros_and_the_ring_is_bounded() {
        let t0 = Instant::now();
        let h = History::new(Duration::from_secs(10), 6, t0);
        h.observe(t0, MS, true, false);
        // 35 s of silence: intervals 1, 2, 3 closed with zeros; 3 is open.
        let s = h.samples(t0 + Duration::from_secs(35));
        let indexes: Vec<u64> = s.iter().map(|x| x.index).collect();
        assert_eq!(indexes, [0, 1, 2, 3]);
        assert_eq!(s.iter().map(|x| x.reads).collect::<Vec<_>>(), [1, 0, 0, 0]);
        // A day later: still at most capacity closed samples + the open one,
        // evenly spaced, the newest last.
        let s = h.samples(t0 + Duration::from_secs(86_400));
        assert_eq!(s.len(), 7);
        assert!(s.windows(2).all(|w| w[1].index == w[0].index + 1), "{s:?}");
        assert_eq!(s[6].index, 8640);
        assert!(s.iter().all(|x| x.reads == 0));
    }

    #[test]
    fn percentile_is_the_bucket_edge_above() {
        let t0 = Instant::now();
        let h = History::new(Duration::from_secs(10), 6, t0);
        for _ in 0..95 {
            h.observe(t0, Duration::from_micros(100), true, false);
        }
        for _ in 0..5 {
            h.observe(t0, Duration::from_millis(50), false, false);
        }
        let s = &h.samples(t0)[0];
        assert_eq!(s.p95_ms, 0.128, "100 µs lies below 128 µs");
        assert_eq!(s.max_ms, 50.0);
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn concurrent_reads_are_all_counted() {
        let t0 = Instant::now();
        let h = std::sync::Arc::new(History::new(Duration::from_secs(3600), 4, t0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        h.observe(t0, MS, false, false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.samples(t0)[0].reads, 4000);
    }
}
