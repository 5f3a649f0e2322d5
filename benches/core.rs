//! Core throughput benchmarks, side by side in one run:
//!
//! - `lookup/{ghcache,quick_cache,moka,dashmap,mutex_map}/{1,2}threads`:
//!   95 % lookups and 5 % inserts, uniform over 10,000 keys that all fit,
//!   512-byte bodies (contenders in `common/`). Throughput is operations per
//!   second over all threads.
//! - `stats/…`: `Cache::stats()` while two threads hammer the cache with the
//!   same workload; criterion reports the mean, and a percentile report
//!   (p50 / p99 / p99.9 / max over many samples) is printed after it.
//!
//! - report mode (`GHCACHE_BENCH_REPORT=SECS`, what `ci/bench` runs for
//!   BENCHMARKS.md): the uniform workload for a fixed time per cell, the
//!   skewed one (zipf 0.99 over 100,000 keys, capacity 10,000, lookup then
//!   insert on a miss, 2 threads; its hit ratio too) for the bounded caches,
//!   printed as `bench ...` lines, plus the stats of a deliberately
//!   nested-lock variant (`NestedLockStats`), which never answers.
//!
//! Hit ratios per workload and capacity, and memory per entry, are the
//! `policy` bench's. Run: `cargo bench --bench core`. Under `cargo test`
//! each benchmark runs once, as a smoke test. `GHCACHE_BENCH_ONLY=ghcache,dashmap`
//! keeps only the contenders named (the stats and nested-lock figures are
//! ghcache's and always run).

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Capacity, Contender, Ghcache, KeySpace, Rng, Zipf};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

/// Keys of the uniform workload (all fit).
const KEYS: usize = 10_000;
/// Keys and capacity of the skewed workload.
const SKEWED_KEYS: usize = 100_000;
const SKEWED_CAPACITY: usize = 10_000;

fn uniform_space() -> Arc<KeySpace> {
    Arc::new(KeySpace::new(KEYS, |_| 512))
}

/// The uniform workload's contenders, prefilled, by name.
fn uniform_contenders() -> Vec<(&'static str, Arc<dyn Contender>)> {
    let space = uniform_space();
    let room = Capacity::Entries(2 * KEYS);
    let all: Vec<(&'static str, Arc<dyn Contender>)> = vec![
        ("ghcache", Arc::new(Ghcache::new(&space, room))),
        ("quick_cache", Arc::new(common::QuickCache::new(&space, room))),
        ("moka", Arc::new(common::Moka::new(&space, room))),
        ("dashmap", Arc::new(common::DashMap::new(&space))),
        ("mutex_map", Arc::new(common::MutexMap::new(&space))),
    ];
    let all = common::only(all);
    for (_, c) in &all {
        for i in 0..KEYS {
            c.put(i);
        }
    }
    all
}

fn ghcache_contender() -> Arc<Ghcache> {
    let c = Ghcache::new(&uniform_space(), Capacity::Entries(2 * KEYS));
    for i in 0..KEYS {
        c.put(i);
    }
    Arc::new(c)
}

/// One operation of the 95 % read / 5 % write mix.
fn mixed_op<C: Contender + ?Sized>(c: &C, rng: &mut Rng) {
    let r = rng.next();
    let i = (r >> 8) as usize % KEYS;
    if r % 100 < 95 {
        black_box(c.get(i));
    } else {
        c.put(i);
    }
}

/// Runs `iters` mixed operations on each of `threads` threads; returns the
/// wall time.
fn run_threads<C: Contender + ?Sized>(c: &Arc<C>, threads: usize, iters: u64) -> Duration {
    let start = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (c, start) = (c.clone(), start.clone());
            thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
                start.wait();
                for _ in 0..iters {
                    mixed_op(&*c, &mut rng);
                }
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    began.elapsed()
}

fn lookup_throughput(crit: &mut Criterion) {
    let mut group = crit.benchmark_group("lookup");
    let contenders = uniform_contenders();
    for threads in [1usize, 2] {
        group.throughput(Throughput::Elements(threads as u64));
        for (name, c) in &contenders {
            group.bench_with_input(
                BenchmarkId::new(*name, format!("{threads}threads")),
                &threads,
                |b, &t| b.iter_custom(|iters| run_threads(c, t, iters)),
            );
        }
    }
    group.finish();
}

/// Threads running the mixed workload on a contender until stopped; the
/// operations they made are counted as they go (in batches of 64), so the
/// count can be read even when a thread never returns (the nested-lock
/// variant below).
///
/// With a trace instead (the skewed workload), each thread walks its own
/// precomputed key stream: lookup, then insert on a miss; lookups and hits
/// are counted too.
struct Hammer {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    lookups: Arc<AtomicU64>,
    hits: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Hammer {
    fn start<C: Contender + ?Sized>(c: &Arc<C>, threads: usize) -> Hammer {
        Hammer::run(c, (0..threads).map(|_| None).collect())
    }

    /// One thread per trace, each replaying its trace in a loop.
    fn replay<C: Contender + ?Sized>(c: &Arc<C>, traces: &[Arc<Vec<usize>>]) -> Hammer {
        Hammer::run(c, traces.iter().cloned().map(Some).collect())
    }

    fn run<C: Contender + ?Sized>(c: &Arc<C>, traces: Vec<Option<Arc<Vec<usize>>>>) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let lookups = Arc::new(AtomicU64::new(0));
        let hits = Arc::new(AtomicU64::new(0));
        let threads = traces
            .into_iter()
            .enumerate()
            .map(|(t, trace)| {
                let (c, stop, ops) = (c.clone(), stop.clone(), ops.clone());
                let (lookups, hits) = (lookups.clone(), hits.clone());
                thread::spawn(move || {
                    let mut rng = Rng(0xDEAD_BEEF ^ (t as u64 + 1));
                    let (mut at, mut looked, mut hit) = (0usize, 0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        match &trace {
                            None => (0..64).for_each(|_| mixed_op(&*c, &mut rng)),
                            Some(trace) => {
                                for _ in 0..64 {
                                    let i = trace[at];
                                    at = (at + 1) % trace.len();
                                    looked += 1;
                                    if c.get(i) {
                                        hit += 1;
                                    } else {
                                        c.put(i);
                                    }
                                }
                            }
                        }
                        ops.fetch_add(64, Ordering::Relaxed);
                    }
                    lookups.fetch_add(looked, Ordering::Relaxed);
                    hits.fetch_add(hit, Ordering::Relaxed);
                })
            })
            .collect();
        Hammer {
            stop,
            ops,
            lookups,
            hits,
            threads,
        }
    }

    /// Stops and joins the threads; (operations, lookups, hits).
    fn stop_counting(self) -> (u64, u64, u64) {
        let (lookups, hits) = (self.lookups.clone(), self.hits.clone());
        let ops = self.stop();
        (ops, lookups.load(Ordering::Relaxed), hits.load(Ordering::Relaxed))
    }

    fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// The operations made during the next second (zero when every
    /// thread is stuck).
    fn ops_in_next_second(&self) -> u64 {
        let before = self.ops();
        thread::sleep(Duration::from_secs(1));
        self.ops() - before
    }

    /// Stops and joins the threads; the operations they made.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.ops.load(Ordering::Relaxed)
    }
}

fn stats_under_load(crit: &mut Criterion) {
    let cache = ghcache_contender();
    let hammer = Hammer::start(&cache, 2);
    crit.bench_function("stats/while_2_threads_hammer", |b| {
        b.iter(|| black_box(cache.cache.stats()))
    });
    hammer.stop();
}

/// Percentiles of `stats()` latency under load (criterion reports means).
fn stats_percentiles(samples: usize) {
    let cache = ghcache_contender();
    let hammer = Hammer::start(&cache, 2);
    thread::sleep(Duration::from_millis(50));
    let nanos: Vec<u64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            black_box(cache.cache.stats());
            t.elapsed().as_nanos() as u64
        })
        .collect();
    let ops = hammer.stop();
    let l = Latencies::new(nanos);
    println!(
        "stats() under load ({samples} samples, hammer did {ops} ops): p50 {:.2} µs  p99 {:.2} µs  p99.9 {:.2} µs  max {:.2} µs",
        l.pct(0.50),
        l.pct(0.99),
        l.pct(0.999),
        l.max()
    );
}

/// Sorted latency samples, read in microseconds.
struct Latencies(Vec<u64>);

impl Latencies {
    fn new(mut nanos: Vec<u64>) -> Latencies {
        nanos.sort_unstable();
        Latencies(nanos)
    }
    fn pct(&self, p: f64) -> f64 {
        self.0[((self.0.len() - 1) as f64 * p) as usize] as f64 / 1000.0
    }
    fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(0) as f64 / 1000.0
    }
    /// `samples=N p50_us=… p99_us=… max_us=…` (just `samples=0` when empty).
    fn fields(&self) -> String {
        if self.0.is_empty() {
            return "samples=0".into();
        }
        format!(
            "samples={} p50_us={:.2} p99_us={:.2} max_us={:.2}",
            self.0.len(),
            self.pct(0.50),
            self.pct(0.99),
            self.max()
        )
    }
}

/// For the record: a stats call that re-takes its own lock, built around
/// the real cache. Its counters sit under one `std::sync::Mutex`; `stats()` takes
/// that lock, then calls a helper that takes it again. `std::sync::Mutex`
/// is not reentrant: the second `lock()` on the same thread blocks forever
/// (its documentation allows a deadlock or a panic; on Linux it is a
/// deadlock), and every thread that counts an operation then queues behind
/// it. This lives in this bench only, never in the daemon.
struct NestedLockStats {
    inner: Arc<Ghcache>,
    counters: Mutex<SeedCounters>,
}

#[derive(Default, Clone, Copy)]
struct SeedCounters {
    lookups: u64,
    hits: u64,
    inserts: u64,
}

impl Contender for NestedLockStats {
    fn get(&self, i: usize) -> bool {
        let hit = self.inner.get(i);
        let mut c = self.counters.lock().unwrap();
        c.lookups += 1;
        c.hits += u64::from(hit);
        hit
    }
    fn put(&self, i: usize) {
        self.inner.put(i);
        self.counters.lock().unwrap().inserts += 1;
    }
}

impl NestedLockStats {
    fn stats(&self) -> (SeedCounters, f64) {
        let counters = self.counters.lock().unwrap();
        // The bug: a helper that takes the lock this function holds.
        (*counters, self.hit_rate())
    }
    fn hit_rate(&self) -> f64 {
        let c = self.counters.lock().unwrap();
        c.hits as f64 / c.lookups.max(1) as f64
    }
}

/// Calls `stats` back to back on its own thread for `window` and collects
/// the latency of each answer. The thread is left behind when it does not
/// come back (the nested-lock variant); the process ends with `main`.
fn answers_within(window: Duration, stats: impl Fn() + Send + 'static) -> Latencies {
    let (tx, rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                stats();
                if tx.send(t.elapsed().as_nanos() as u64).is_err() {
                    break;
                }
            }
        })
    };
    let deadline = Instant::now() + window;
    let mut nanos = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(n) => nanos.push(n),
            Err(_) => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    if caller.is_finished() || !nanos.is_empty() {
        let _ = caller.join();
    }
    Latencies::new(nanos)
}

/// [`answers_within`] for the real `Cache::stats()`.
fn real_stats(cache: &Arc<Ghcache>, window: Duration) -> Latencies {
    let cache = cache.clone();
    answers_within(window, move || {
        black_box(cache.cache.stats());
    })
}

/// `GHCACHE_BENCH_REPORT=SECS cargo bench --bench core`: instead of
/// criterion, fixed-length runs of SECS seconds each, printed as
/// `bench <what> key=value ...` lines for `ci/bench` (BENCHMARKS.md).
/// `GHCACHE_BENCH_NESTED_SECS` (default 5) is the window given to each
/// stats variant in the nested-lock measurement.
fn report(secs: f64) {
    let run = Duration::from_secs_f64(secs);
    for threads in [1, 2] {
        for (name, c) in &uniform_contenders() {
            let hammer = Hammer::start(c, threads);
            let t = Instant::now();
            thread::sleep(run);
            let elapsed = t.elapsed();
            let ops = hammer.stop();
            println!(
                "bench core_lookup impl={name} threads={threads} ops={ops} ops_per_sec={:.0}",
                ops as f64 / elapsed.as_secs_f64()
            );
        }
    }
    skewed(run);

    // stats() latency, idle and while 2 threads hammer the cache.
    let cache = ghcache_contender();
    let idle = real_stats(&cache, run);
    println!("bench core_stats load=idle hammer_ops=0 {}", idle.fields());
    let hammer = Hammer::start(&cache, 2);
    let loaded = real_stats(&cache, run);
    let ops = hammer.stop();
    println!("bench core_stats load=2_threads hammer_ops={ops} {}", loaded.fields());

    // For the record: the real stats() and the nested-lock variant, each
    // while 2 threads hammer, each given the same window.
    let window = Duration::from_secs_f64(
        std::env::var("GHCACHE_BENCH_NESTED_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5.0),
    );
    let hammer = Hammer::start(&cache, 2);
    let real = real_stats(&cache, window);
    let (during, after) = (hammer.ops(), hammer.ops_in_next_second());
    hammer.stop();
    println!(
        "bench nested_lock impl=real window_s={} hammer_ops={during} hammer_ops_next_s={after} {}",
        window.as_secs_f64(),
        real.fields()
    );
    let seed = Arc::new(NestedLockStats {
        inner: cache,
        counters: Mutex::new(SeedCounters::default()),
    });
    let hammer = Hammer::start(&seed, 2);
    let nested = {
        let seed = seed.clone();
        answers_within(window, move || {
            black_box(seed.stats());
        })
    };
    let (during, after) = (hammer.ops(), hammer.ops_in_next_second());
    // Not stopped: its threads may be blocked on the lock for good.
    println!(
        "bench nested_lock impl=nested window_s={} hammer_ops={during} hammer_ops_next_s={after} {}",
        window.as_secs_f64(),
        nested.fields()
    );
}

/// The skewed workload: zipf 0.99 over 100,000 keys, capacity 10,000,
/// lookup then insert on a miss, 2 threads each replaying its own stream
/// (warmed by one pass first); throughput and hit ratio per bounded cache.
fn skewed(run: Duration) {
    let space = Arc::new(KeySpace::new(SKEWED_KEYS, |_| 512));
    let zipf = Zipf::new(SKEWED_KEYS, 0.99, 7);
    let traces: Vec<Arc<Vec<usize>>> = (0..2).map(|t| Arc::new(zipf.trace(1 << 20, 11 + t))).collect();
    for (name, c) in common::bounded(&space, Capacity::Entries(SKEWED_CAPACITY)) {
        for &i in traces[0].iter() {
            if !c.get(i) {
                c.put(i);
            }
        }
        let hammer = Hammer::replay(&c, &traces);
        let t = Instant::now();
        thread::sleep(run);
        let elapsed = t.elapsed();
        let (ops, lookups, hits) = hammer.stop_counting();
        println!(
            "bench core_skewed impl={name} threads=2 ops={ops} ops_per_sec={:.0} hit_ratio={:.4}",
            ops as f64 / elapsed.as_secs_f64(),
            hits as f64 / lookups.max(1) as f64
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = lookup_throughput, stats_under_load
}

fn main() {
    if let Some(secs) = std::env::var("GHCACHE_BENCH_REPORT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        report(secs);
        // The nested-lock variant's threads are still blocked: end here.
        std::process::exit(0);
    }
    benches();
    let benchmarking = std::env::args().any(|a| a == "--bench");
    stats_percentiles(if benchmarking { 200_000 } else { 1_000 });
    Criterion::default().configure_from_args().final_summary();
}
