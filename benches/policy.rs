//! Eviction policy benchmarks: hit ratios and memory per entry, for
//! ghcache's `Cache` beside quick_cache and moka, in one run.
//!
//! Every bounded contender replays the same key stream on one thread
//! (lookup, then insert on a miss) and reports its hit ratio: the share of
//! lookups that did not go to GitHub. One thread makes the figures
//! deterministic for ghcache and quick_cache; moka's policy runs its
//! maintenance as it goes, which is how it is used.
//!
//! - `bench hit_ratio workload=W impl=I capacity=C hit_ratio=R`: zipf 0.6,
//!   0.8, 0.99 and 1.2 over 100,000 keys at capacity 10,000 entries; a
//!   scan-polluted stream (zipf 0.99 over 100,000 keys broken by bursts of
//!   one-off keys) at 10,000 entries; a synthetic GitHub fleet (see
//!   `common::Fleet`) with a **byte** capacity of 5 % of all its bodies.
//! - `bench hit_curve workload=W impl=I capacity=C hit_ratio=R`: the same
//!   for a range of capacities (the plot in BENCHMARKS.md).
//! - `bench memory impl=I entries=N bytes_per_entry=B`: heap bytes each
//!   entry costs beyond its key text and body, by counting allocations
//!   while 100,000 entries with one shared (uncounted) body go in.
//!
//! `GHCACHE_BENCH_REPORT=1` runs the full set (what `ci/bench` does);
//! without it (`cargo test`, `cargo bench`) a short smoke run.
//! `GHCACHE_BENCH_ONLY=ghcache` keeps only the bounded contenders named
//! (comma-separated) in the hit-ratio lines, e.g. while tuning the policy.

mod common;

use std::alloc::System;
use std::sync::Arc;

use bytes::Bytes;
use common::{Capacity, Contender, Fleet, KeySpace, Zipf};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

/// Counts heap bytes (for the memory figures).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Live heap bytes by the counting allocator's books.
fn live() -> isize {
    let s = GLOBAL.stats();
    s.bytes_allocated as isize - s.bytes_deallocated as isize + s.bytes_reallocated
}

/// The share of `trace`'s lookups that hit, on `c`.
fn hit_ratio(c: &dyn Contender, trace: &[usize]) -> f64 {
    let mut hits = 0usize;
    for &i in trace {
        if c.get(i) {
            hits += 1;
        } else {
            c.put(i);
        }
    }
    hits as f64 / trace.len().max(1) as f64
}

/// Runs `trace` on every bounded contender at `capacity`, printing a line
/// of `kind` per contender.
fn compare(kind: &str, workload: &str, space: &Arc<KeySpace>, trace: &[usize], capacity: Capacity) {
    let shown = match capacity {
        Capacity::Entries(n) => format!("{n}"),
        Capacity::Bytes(b) => format!("{b}B"),
    };
    for (name, c) in common::bounded(space, capacity) {
        let r = hit_ratio(&*c, trace);
        println!("bench {kind} workload={workload} impl={name} capacity={shown} hit_ratio={r:.4}");
    }
}

/// Builds a contender.
type Make<'a> = Box<dyn Fn() -> Arc<dyn Contender> + 'a>;

/// Heap bytes per entry of each contender beyond key text and body: the
/// keys are built first (so their text is not counted) and every entry
/// shares one static body.
fn memory(entries: usize) {
    let space = Arc::new(KeySpace {
        keys: (0..entries).map(common::key).collect(),
        bodies: vec![Bytes::from_static(b"{}"); entries],
    });
    let mut contenders: Vec<(&str, Make)> = vec![
        (
            "ghcache",
            Box::new(|| Arc::new(common::Ghcache::new(&space, Capacity::Entries(entries)))),
        ),
        (
            "quick_cache",
            Box::new(|| Arc::new(common::QuickCache::new(&space, Capacity::Entries(entries)))),
        ),
        (
            "moka",
            Box::new(|| Arc::new(common::Moka::new(&space, Capacity::Entries(entries)))),
        ),
        ("dashmap", Box::new(|| Arc::new(common::DashMap::new(&space)))),
        ("mutex_map", Box::new(|| Arc::new(common::MutexMap::new(&space)))),
    ];
    for (name, make) in contenders.drain(..) {
        // The contender's own copies of the key texts (and ghcache's ETags)
        // exist before the first insert, so they are not counted.
        let c = make();
        let before = live();
        for i in 0..entries {
            c.put(i);
        }
        let after = live();
        let held = (0..entries).filter(|&i| c.get(i)).count();
        println!(
            "bench memory impl={name} entries={held} bytes_per_entry={:.1}",
            (after - before) as f64 / held.max(1) as f64
        );
    }
}

fn main() {
    let full = std::env::var("GHCACHE_BENCH_REPORT").is_ok();
    let (keys, len) = if full { (100_000, 2_000_000) } else { (10_000, 50_000) };
    let capacity = keys / 10;
    let space = Arc::new(KeySpace::new(keys, |_| 512));

    for s in [0.6, 0.8, 0.99, 1.2] {
        let trace = Zipf::new(keys, s, 7).trace(len, 11);
        compare(
            "hit_ratio",
            &format!("zipf{s}"),
            &space,
            &trace,
            Capacity::Entries(capacity),
        );
    }

    let (trace, used) = common::scan_polluted(keys, len, keys / 2, keys / 5, 13);
    let scan_space = Arc::new(KeySpace::new(used, |_| 512));
    compare("hit_ratio", "scan", &scan_space, &trace, Capacity::Entries(capacity));

    let fleet = Fleet::new(if full { 20_000 } else { 500 }, len, 17);
    let fleet_space = Arc::new(KeySpace::new(fleet.body_len.len(), |i| fleet.body_len[i]));
    let fleet_bytes = fleet.total_bytes() / 20;
    compare(
        "hit_ratio",
        "fleet",
        &fleet_space,
        &fleet.trace,
        Capacity::Bytes(fleet_bytes),
    );

    let zipf = Zipf::new(keys, 0.99, 7).trace(len, 11);
    for share in [0.01, 0.025, 0.05, 0.1, 0.2, 0.4] {
        let cap = ((keys as f64 * share) as usize).max(16);
        compare("hit_curve", "zipf0.99", &space, &zipf, Capacity::Entries(cap));
    }
    for share in [0.01, 0.025, 0.05, 0.1, 0.2, 0.4] {
        let cap = (fleet.total_bytes() as f64 * share) as usize;
        compare("hit_curve", "fleet", &fleet_space, &fleet.trace, Capacity::Bytes(cap));
    }

    memory(if full { 100_000 } else { 10_000 });
}
