//! What the core benchmarks share: the contenders (ghcache's `Cache` and the
//! caches and maps it is compared with), their key spaces, and the
//! workloads' key streams (uniform, zipf, scan-polluted, a GitHub fleet).
//!
//! Every contender stores the same thing per key: a body (`Bytes`) under the
//! key's canonical text. A hit hands out one reference count: ghcache its
//! `Arc<Entry>`, the others a clone of the `Bytes`. ghcache also keeps an
//! ETag and a TTL (that is its job); moka gets a TTL too and the mutex map
//! checks one, so every read pays for freshness. quick_cache and dashmap
//! have no TTL.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ghcache::core::{Cache, CacheConfig, CacheKey, ETag, Lookup, Operation, Origin, SystemClock};

/// The TTL given to every contender that has one.
pub const TTL: Duration = Duration::from_secs(300);

/// The operations every contender implements, by key index.
pub trait Contender: Send + Sync + 'static {
    /// Is key `i` held (and fresh)? Clones the body out, as a reader would.
    fn get(&self, i: usize) -> bool;
    /// Stores key `i`'s answer.
    fn put(&self, i: usize);
}

/// How much a bounded contender may hold.
#[derive(Clone, Copy, Debug)]
pub enum Capacity {
    /// At most this many entries.
    Entries(usize),
    /// At most this many bytes of key text + body (+ ETag for ghcache).
    Bytes(usize),
}

/// The keys and answers of one workload: key `i`'s text and body.
pub struct KeySpace {
    pub keys: Vec<CacheKey>,
    pub bodies: Vec<Bytes>,
}

impl KeySpace {
    /// `n` repository keys whose bodies are `body_len(i)` bytes, each its own
    /// allocation (as real answers are).
    pub fn new(n: usize, body_len: impl Fn(usize) -> usize) -> KeySpace {
        KeySpace {
            keys: (0..n).map(key).collect(),
            bodies: (0..n).map(|i| Bytes::from(vec![b'x'; body_len(i)])).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    fn texts(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.as_str().to_owned()).collect()
    }

    /// Key text + body: what the byte bounds count (ghcache adds the ETag).
    pub fn weight(&self, i: usize) -> usize {
        self.keys[i].as_str().len() + self.bodies[i].len()
    }
}

/// Key `i`: a repository read, as the daemon would key it.
pub fn key(i: usize) -> CacheKey {
    CacheKey::new(Operation::Repo, [("repo", Some(format!("org{}/repo{}", i % 97, i)))])
}

pub struct Ghcache {
    pub cache: Cache,
    space: Arc<KeySpace>,
    etags: Vec<ETag>,
}

impl Ghcache {
    pub fn new(space: &Arc<KeySpace>, capacity: Capacity) -> Ghcache {
        let (max_entries, max_bytes) = match capacity {
            Capacity::Entries(n) => (n, usize::MAX / 2),
            Capacity::Bytes(b) => (usize::MAX / 2, b),
        };
        let config = CacheConfig {
            max_entries,
            max_bytes,
            ..CacheConfig::default()
        };
        Ghcache {
            cache: Cache::new(config, Arc::new(SystemClock::new())),
            space: space.clone(),
            etags: (0..space.len())
                .map(|i| ETag::new(&format!("W/\"{i:016x}\"")).unwrap())
                .collect(),
        }
    }
}

impl Contender for Ghcache {
    fn get(&self, i: usize) -> bool {
        matches!(self.cache.lookup(&self.space.keys[i]), Lookup::Fresh(e) if !e.body.is_empty())
    }
    fn put(&self, i: usize) {
        let key = &self.space.keys[i];
        let entry = self.cache.new_entry(
            key,
            self.space.bodies[i].clone(),
            Some(self.etags[i].clone()),
            Origin::Upstream,
        );
        self.cache.insert(key, entry);
    }
}

/// Weighs quick_cache entries: 1 each (an entry bound) or key text + body
/// (a byte bound, as ghcache counts).
#[derive(Clone)]
pub struct Weigh {
    bytes: bool,
}

impl quick_cache::Weighter<String, Bytes> for Weigh {
    fn weight(&self, key: &String, body: &Bytes) -> u64 {
        if self.bytes {
            (key.len() + body.len()) as u64
        } else {
            1
        }
    }
}

pub struct QuickCache {
    cache: quick_cache::sync::Cache<String, Bytes, Weigh>,
    texts: Vec<String>,
    space: Arc<KeySpace>,
}

impl QuickCache {
    pub fn new(space: &Arc<KeySpace>, capacity: Capacity) -> QuickCache {
        let cache = match capacity {
            Capacity::Entries(n) => quick_cache::sync::Cache::with_weighter(n, n as u64, Weigh { bytes: false }),
            Capacity::Bytes(b) => {
                let mean = (0..space.len()).map(|i| space.weight(i)).sum::<usize>() / space.len().max(1);
                quick_cache::sync::Cache::with_weighter(b / mean.max(1), b as u64, Weigh { bytes: true })
            }
        };
        QuickCache {
            cache,
            texts: space.texts(),
            space: space.clone(),
        }
    }
}

impl Contender for QuickCache {
    fn get(&self, i: usize) -> bool {
        self.cache.get(&self.texts[i]).is_some_and(|b| !b.is_empty())
    }
    fn put(&self, i: usize) {
        self.cache.insert(self.texts[i].clone(), self.space.bodies[i].clone());
    }
}

pub struct Moka {
    cache: moka::sync::Cache<String, Bytes>,
    texts: Vec<String>,
    space: Arc<KeySpace>,
}

impl Moka {
    pub fn new(space: &Arc<KeySpace>, capacity: Capacity) -> Moka {
        let builder = moka::sync::Cache::builder().time_to_live(TTL);
        let cache = match capacity {
            Capacity::Entries(n) => builder.max_capacity(n as u64).build(),
            Capacity::Bytes(b) => builder
                .max_capacity(b as u64)
                .weigher(|k: &String, v: &Bytes| (k.len() + v.len()).try_into().unwrap_or(u32::MAX))
                .build(),
        };
        Moka {
            cache,
            texts: space.texts(),
            space: space.clone(),
        }
    }
}

impl Contender for Moka {
    fn get(&self, i: usize) -> bool {
        self.cache.get(&self.texts[i]).is_some_and(|b| !b.is_empty())
    }
    fn put(&self, i: usize) {
        self.cache.insert(self.texts[i].clone(), self.space.bodies[i].clone());
    }
}

/// dashmap 6: sharded `RwLock<HashMap>`s, no bound, no TTL.
pub struct DashMap {
    map: dashmap::DashMap<String, Bytes>,
    texts: Vec<String>,
    space: Arc<KeySpace>,
}

impl DashMap {
    pub fn new(space: &Arc<KeySpace>) -> DashMap {
        DashMap {
            map: dashmap::DashMap::new(),
            texts: space.texts(),
            space: space.clone(),
        }
    }
}

impl Contender for DashMap {
    fn get(&self, i: usize) -> bool {
        self.map.get(&self.texts[i]).is_some_and(|b| !b.clone().is_empty())
    }
    fn put(&self, i: usize) {
        self.map.insert(self.texts[i].clone(), self.space.bodies[i].clone());
    }
}

/// One `Mutex<HashMap>` checking a TTL on every read; no bound.
pub struct MutexMap {
    map: Mutex<HashMap<String, (Instant, Bytes)>>,
    texts: Vec<String>,
    space: Arc<KeySpace>,
}

impl MutexMap {
    pub fn new(space: &Arc<KeySpace>) -> MutexMap {
        MutexMap {
            map: Mutex::new(HashMap::new()),
            texts: space.texts(),
            space: space.clone(),
        }
    }
}

impl Contender for MutexMap {
    fn get(&self, i: usize) -> bool {
        let map = self.map.lock().unwrap();
        match map.get(&self.texts[i]) {
            Some((at, body)) if at.elapsed() < TTL => !body.clone().is_empty(),
            _ => false,
        }
    }
    fn put(&self, i: usize) {
        self.map
            .lock()
            .unwrap()
            .insert(self.texts[i].clone(), (Instant::now(), self.space.bodies[i].clone()));
    }
}

/// The bounded contenders, by name (the ones with an eviction policy), as
/// [`only`] selects them.
pub fn bounded(space: &Arc<KeySpace>, capacity: Capacity) -> Vec<(&'static str, Arc<dyn Contender>)> {
    let all: Vec<(&'static str, Arc<dyn Contender>)> = vec![
        ("ghcache", Arc::new(Ghcache::new(space, capacity))),
        ("quick_cache", Arc::new(QuickCache::new(space, capacity))),
        ("moka", Arc::new(Moka::new(space, capacity))),
    ];
    only(all)
}

/// The contenders named in `GHCACHE_BENCH_ONLY` (comma-separated, e.g.
/// `ghcache` while tuning the policy), or all of them when it is unset.
pub fn only<T>(contenders: Vec<(&'static str, T)>) -> Vec<(&'static str, T)> {
    match std::env::var("GHCACHE_BENCH_ONLY") {
        Ok(names) => contenders
            .into_iter()
            .filter(|(name, _)| names.split(',').any(|n| n.trim() == *name))
            .collect(),
        Err(_) => contenders,
    }
}

/// xorshift64*: cheap, per-thread, deterministic.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() >> 8) as usize % n
    }
}

/// Zipf(`s`) over `n` keys: key `i` (rank `i + 1`) is drawn with weight
/// `1 / (i + 1)^s`. Keys are permuted so rank does not follow key order.
pub struct Zipf {
    cdf: Vec<f64>,
    permutation: Vec<usize>,
}

impl Zipf {
    pub fn new(n: usize, s: f64, seed: u64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for i in 0..n {
            total += 1.0 / ((i + 1) as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        let mut permutation: Vec<usize> = (0..n).collect();
        let mut rng = Rng(seed | 1);
        for i in (1..n).rev() {
            permutation.swap(i, rng.below(i + 1));
        }
        Zipf { cdf, permutation }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        let rank = self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1);
        self.permutation[rank]
    }

    /// `len` draws.
    pub fn trace(&self, len: usize, seed: u64) -> Vec<usize> {
        let mut rng = Rng(seed | 1);
        (0..len).map(|_| self.sample(&mut rng)).collect()
    }
}

/// A hot zipf(0.99) stream over `hot` keys, broken every `period` requests
/// by a burst of `burst` one-off keys (never asked again), as a crawler or a
/// one-time export does. Keys `hot..` are the one-offs; returns the trace
/// and the number of keys it uses.
pub fn scan_polluted(hot: usize, len: usize, period: usize, burst: usize, seed: u64) -> (Vec<usize>, usize) {
    let zipf = Zipf::new(hot, 0.99, seed);
    let mut rng = Rng(seed | 1);
    let mut next_one_off = hot;
    let mut trace = Vec::with_capacity(len);
    while trace.len() < len {
        for _ in 0..period {
            trace.push(zipf.sample(&mut rng));
        }
        for _ in 0..burst {
            trace.push(next_one_off);
            next_one_off += 1;
        }
    }
    trace.truncate(len);
    (trace, next_one_off)
}

/// A synthetic GitHub fleet, as key indices with body sizes:
/// - dashboards: 40 dashboards, each polling its 30 keys (runners and
///   workflow runs of its repositories, ~2 KiB and ~20 KiB answers) in a
///   loop; repositories are shared by zipf(0.9) popularity, so many
///   dashboards watch the same few;
/// - CI jobs: a job starts on a repository (zipf(0.8) over `repos`, 20,000
///   in the report) and
///   reads its issues, pulls and metadata (~30, ~40, ~6 KiB) 3 to 8 times
///   while it runs; 16 jobs run at once;
/// - full listings: every 200,000 requests someone lists all the
///   repositories' metadata once, in order.
///
/// Dashboards make 45 % of the requests, CI jobs 55 %, plus the listings.
/// Returns the trace and the body size of each key.
pub struct Fleet {
    pub trace: Vec<usize>,
    pub body_len: Vec<usize>,
}

impl Fleet {
    /// Per repository: runners, runs, issues, pulls, metadata.
    const KINDS: [usize; 5] = [2 << 10, 20 << 10, 30 << 10, 40 << 10, 6 << 10];

    pub fn new(repos: usize, len: usize, seed: u64) -> Fleet {
        let key_of = |repo: usize, kind: usize| repo * Self::KINDS.len() + kind;
        let body_len = (0..repos * Self::KINDS.len())
            .map(|k| {
                let base = Self::KINDS[k % Self::KINDS.len()];
                // Sizes vary by ±50 % per key, deterministically.
                base / 2 + (k.wrapping_mul(2_654_435_761) % base.max(1))
            })
            .collect();
        let mut rng = Rng(seed | 1);
        let popular = Zipf::new(repos, 0.9, seed ^ 1);
        let dashboards: Vec<Vec<usize>> = (0..40)
            .map(|_| {
                (0..15)
                    .flat_map(|_| {
                        let repo = popular.sample(&mut rng);
                        [key_of(repo, 0), key_of(repo, 1)]
                    })
                    .collect()
            })
            .collect();
        let mut cursors = vec![0usize; dashboards.len()];
        let ci_repo = Zipf::new(repos, 0.8, seed ^ 2);
        // A job: (repository, reads left).
        let mut jobs: Vec<(usize, usize)> = (0..16).map(|_| (ci_repo.sample(&mut rng), 3 + rng.below(6))).collect();
        let mut trace = Vec::with_capacity(len);
        while trace.len() < len {
            if trace.len() % 200_000 == 199_999 {
                trace.extend((0..repos).map(|r| key_of(r, 4)));
                continue;
            }
            if rng.below(100) < 45 {
                let d = rng.below(dashboards.len());
                trace.push(dashboards[d][cursors[d]]);
                cursors[d] = (cursors[d] + 1) % dashboards[d].len();
            } else {
                let j = rng.below(jobs.len());
                let (repo, left) = jobs[j];
                trace.push(key_of(repo, 2 + rng.below(3)));
                jobs[j] = if left > 1 {
                    (repo, left - 1)
                } else {
                    (ci_repo.sample(&mut rng), 3 + rng.below(6))
                };
            }
        }
        trace.truncate(len);
        Fleet { trace, body_len }
    }

    /// Total bytes of all keys' bodies (to size capacities against).
    pub fn total_bytes(&self) -> usize {
        self.body_len.iter().sum()
    }
}
