//! Core benchmarks, side by side in one run:
//!
//! - `lookup/{ghcache,moka,mutex_map}/{1,2}threads`: a cached-lookup
//!   workload of 95 % lookups and 5 % inserts over 10,000 keys, for ghcache's
//!   `Cache`, moka's `sync::Cache` (with a TTL) and a `Mutex<HashMap>` that
//!   checks a TTL on every read. Throughput is operations per second over
//!   all threads.
//! - `stats/…`: `Cache::stats()` while two threads hammer the cache with the
//!   same workload; criterion reports the mean, and a percentile report
//!   (p50 / p99 / p99.9 / max over many samples) is printed after it.
//!
//! - report mode (`GHCACHE_BENCH_REPORT=SECS`, what `ci/bench` runs for
//!   BENCHMARKS.md): the same workloads for a fixed time each, printed as
//!   `bench ...` lines, plus the stats of a deliberately nested-lock
//!   variant (`NestedLockStats`, a stats call that re-takes its lock),
//!   which never answers.
//!
//! Run: `cargo bench --bench core` (figures in the closing note of the
//! core issue; current ones in BENCHMARKS.md). Under `cargo test` each
//! benchmark runs once, as a smoke test.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use ghcache::core::{Cache, CacheConfig, CacheKey, ETag, Operation, Origin, SystemClock};

const KEYS: usize = 10_000;
const TTL: Duration = Duration::from_secs(300);

/// The operations every contender implements.
trait Contender: Send + Sync + 'static {
    fn get(&self, i: usize) -> bool;
    fn put(&self, i: usize);
}

/// Per key, as real answers are: its own body allocation and its own ETag.
fn bodies() -> Vec<Bytes> {
    (0..KEYS).map(|i| Bytes::from(format!("{i:0>512}"))).collect()
}

struct Ghcache {
    cache: Cache,
    keys: Vec<CacheKey>,
    bodies: Vec<Bytes>,
    etags: Vec<ETag>,
}

impl Contender for Ghcache {
    fn get(&self, i: usize) -> bool {
        matches!(self.cache.lookup(&self.keys[i]), ghcache::core::Lookup::Fresh(e) if !e.body.is_empty())
    }
    fn put(&self, i: usize) {
        let key = &self.keys[i];
        let entry = self.cache.new_entry(
            key,
            self.bodies[i].clone(),
            Some(self.etags[i].clone()),
            Origin::Upstream,
        );
        self.cache.insert(key, entry);
    }
}

struct Moka {
    cache: moka::sync::Cache<String, Bytes>,
    keys: Vec<String>,
    bodies: Vec<Bytes>,
}

impl Contender for Moka {
    fn get(&self, i: usize) -> bool {
        self.cache.get(&self.keys[i]).is_some_and(|b| !b.is_empty())
    }
    fn put(&self, i: usize) {
        self.cache.insert(self.keys[i].clone(), self.bodies[i].clone());
    }
}

struct MutexMap {
    map: Mutex<HashMap<String, (Instant, Bytes)>>,
    keys: Vec<String>,
    bodies: Vec<Bytes>,
}

impl Contender for MutexMap {
    fn get(&self, i: usize) -> bool {
        let map = self.map.lock().unwrap();
        match map.get(&self.keys[i]) {
            Some((at, body)) if at.elapsed() < TTL => !body.clone().is_empty(),
            _ => false,
        }
    }
    fn put(&self, i: usize) {
        self.map
            .lock()
            .unwrap()
            .insert(self.keys[i].clone(), (Instant::now(), self.bodies[i].clone()));
    }
}

fn key_text(i: usize) -> (CacheKey, String) {
    let key = CacheKey::new(Operation::Repo, [("repo", Some(format!("org{}/repo{}", i % 97, i)))]);
    let text = key.as_str().to_owned();
    (key, text)
}

fn ghcache_contender() -> Arc<Ghcache> {
    let config = CacheConfig {
        max_entries: 2 * KEYS,
        ..CacheConfig::default()
    };
    let c = Ghcache {
        cache: Cache::new(config, Arc::new(SystemClock::new())),
        keys: (0..KEYS).map(|i| key_text(i).0).collect(),
        bodies: bodies(),
        etags: (0..KEYS)
            .map(|i| ETag::new(&format!("W/\"{i:016x}\"")).unwrap())
            .collect(),
    };
    prefill(c)
}

fn moka_contender() -> Arc<Moka> {
    let c = Moka {
        cache: moka::sync::Cache::builder()
            .max_capacity(2 * KEYS as u64)
            .time_to_live(TTL)
            .build(),
        keys: (0..KEYS).map(|i| key_text(i).1).collect(),
        bodies: bodies(),
    };
    prefill(c)
}

fn mutex_map_contender() -> Arc<MutexMap> {
    let c = MutexMap {
        map: Mutex::new(HashMap::new()),
        keys: (0..KEYS).map(|i| key_text(i).1).collect(),
        bodies: bodies(),
    };
    prefill(c)
}

fn prefill<C: Contender>(c: C) -> Arc<C> {
    for i in 0..KEYS {
        c.put(i);
    }
    Arc::new(c)
}

/// xorshift64*: cheap, per-thread, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
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
fn run_threads<C: Contender>(c: &Arc<C>, threads: usize, iters: u64) -> Duration {
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
    let ghcache = ghcache_contender();
    let moka = moka_contender();
    let mutex_map = mutex_map_contender();
    for threads in [1usize, 2] {
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_with_input(
            BenchmarkId::new("ghcache", format!("{threads}threads")),
            &threads,
            |b, &t| b.iter_custom(|iters| run_threads(&ghcache, t, iters)),
        );
        group.bench_with_input(
            BenchmarkId::new("moka", format!("{threads}threads")),
            &threads,
            |b, &t| b.iter_custom(|iters| run_threads(&moka, t, iters)),
        );
        group.bench_with_input(
            BenchmarkId::new("mutex_map", format!("{threads}threads")),
            &threads,
            |b, &t| b.iter_custom(|iters| run_threads(&mutex_map, t, iters)),
        );
    }
    group.finish();
}

/// Threads running the mixed workload on a contender until stopped; the
/// operations they made are counted as they go (in batches of 64), so the
/// count can be read even when a thread never returns (the nested-lock
/// variant below).
struct Hammer {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Hammer {
    fn start<C: Contender + ?Sized>(c: &Arc<C>, threads: usize) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|t| {
                let (c, stop, ops) = (c.clone(), stop.clone(), ops.clone());
                thread::spawn(move || {
                    let mut rng = Rng(0xDEAD_BEEF ^ (t as u64 + 1));
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            mixed_op(&*c, &mut rng);
                        }
                        ops.fetch_add(64, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Hammer { stop, ops, threads }
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
    let contenders: [(&str, Arc<dyn Contender>); 3] = [
        ("ghcache", ghcache_contender()),
        ("moka", moka_contender()),
        ("mutex_map", mutex_map_contender()),
    ];
    for threads in [1, 2] {
        for (name, c) in &contenders {
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
    drop(contenders);

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
