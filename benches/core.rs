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
//! Run: `cargo bench --bench core` (figures in the closing note of the
//! core issue). Under `cargo test` each benchmark runs once, as a smoke
//! test.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
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
fn mixed_op<C: Contender>(c: &C, rng: &mut Rng) {
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

/// Two threads hammering `cache` until the guard is dropped.
struct Hammer {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<u64>>,
}

impl Hammer {
    fn start(cache: &Arc<Ghcache>) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|t| {
                let (cache, stop) = (cache.clone(), stop.clone());
                thread::spawn(move || {
                    let mut rng = Rng(0xDEAD_BEEF ^ (t + 1));
                    let mut ops = 0;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            mixed_op(&*cache, &mut rng);
                        }
                        ops += 64;
                    }
                    ops
                })
            })
            .collect();
        Hammer { stop, threads }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().map(|t| t.join().unwrap()).sum()
    }
}

fn stats_under_load(crit: &mut Criterion) {
    let cache = ghcache_contender();
    let hammer = Hammer::start(&cache);
    crit.bench_function("stats/while_2_threads_hammer", |b| {
        b.iter(|| black_box(cache.cache.stats()))
    });
    hammer.stop();
}

/// Percentiles of `stats()` latency under load (criterion reports means).
fn stats_percentiles(samples: usize) {
    let cache = ghcache_contender();
    let hammer = Hammer::start(&cache);
    thread::sleep(Duration::from_millis(50));
    let mut nanos: Vec<u64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            black_box(cache.cache.stats());
            t.elapsed().as_nanos() as u64
        })
        .collect();
    let ops = hammer.stop();
    nanos.sort_unstable();
    let pct = |p: f64| nanos[((nanos.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    println!(
        "stats() under load ({samples} samples, hammer did {ops} ops): p50 {:.2} µs  p99 {:.2} µs  p99.9 {:.2} µs  max {:.2} µs",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        *nanos.last().unwrap() as f64 / 1000.0
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = lookup_throughput, stats_under_load
}

fn main() {
    benches();
    let benchmarking = std::env::args().any(|a| a == "--bench");
    stats_percentiles(if benchmarking { 200_000 } else { 1_000 });
    Criterion::default().configure_from_args().final_summary();
}
