//! The fleet at 1,000 to 10,000 nodes, by discrete-event simulation
//! (issue 14): per-node connections, messages per second and convergence
//! time against N, without 10,000 processes.
//!
//! # What is real and what is modelled
//! Real, called as the daemon calls it: the member view
//! ([`Membership`](super::membership::Membership): `heard`, `learned`,
//! `gone`, `forget_old`, liveness by the silence bound), the announcement
//! period ([`announce_every`](super::membership::announce_every)), the
//! owner choice ([`owner_of`](super::owner_of)), and every constant the
//! event loop and the gossip mesh use (`TARGET_DEGREE`, `MESH_LOW`,
//! `MESH_HIGH`, `TICK`, `UPKEEP_TICKS`, `VIEW_ASKS`, `ELIGIBLE_AFTER`,
//! `SETTLE_AFTER_CONNECT`, `SETTLE_MAX`, `MAX_MEMBERS`,
//! `Limits::default()`), imported, never copied.
//!
//! Modelled: what libp2p provides (connections, latency, gossipsub's mesh
//! and its spreading of a message: [`overlay`]) and what each node's event
//! loop does on each event and timer ([`fleet`]); both modules list their
//! simplifications. One queue of timed events drives it all; simulated
//! time is in µs and has nothing to do with the wall clock.
//!
//! # Scenarios ([`run`])
//! 1. **Start**: N nodes start, one every `1 / join_rate` s, each
//!    bootstrapping from `seeds_per_node` random earlier nodes (or, with
//!    `shared_seeds`, everyone from the first few: the herd of
//!    docs/p2p.md); time from the last start until every view equals the
//!    live set (members; then owners: live members that no longer join).
//! 2. **Steady state**: after a warm-up, fleet messages received per node
//!    per second (first copies, what the event loop handles; and all
//!    copies, each a signature check), connections and mesh peers per
//!    node, member records per node.
//! 3. **Invalidation**: invalidations published from random members: hops
//!    and delay to each member, and to the last one.
//! 4. **Churn**: a share of the nodes killed at once and as many new ones
//!    started at the join rate; time from the kills until every view
//!    equals the new live set; the share of keys whose owner moved
//!    (rendezvous hashing over the old and the new live sets).
//!
//! Invariants: deterministic for a given [`Settings::seed`] (one seeded
//! generator, no wall clock in the model); no I/O.

pub mod fleet;
pub mod overlay;

use std::time::{Duration, Instant};

use libp2p::PeerId;

use fleet::Fleet;

/// The knobs of one run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Nodes at start (and after churn).
    pub nodes: usize,
    /// Seeds each node bootstraps from, drawn from the nodes started
    /// before it.
    pub seeds_per_node: usize,
    /// When non-zero: every node bootstraps from nodes `0..shared_seeds`
    /// instead.
    pub shared_seeds: usize,
    /// Nodes started per second (start and churn).
    pub join_rate: f64,
    /// One-way latency of a link, drawn uniformly per pair in this range.
    pub latency: (Duration, Duration),
    /// Steady-state warm-up, then measurement window.
    pub warmup: Duration,
    /// (see `warmup`)
    pub steady: Duration,
    /// Share of the nodes killed and replaced.
    pub churn: f64,
    /// Keys whose owners are compared before and after churn.
    pub keys: usize,
    /// Invalidations published in steady state (one a second).
    pub invalidations: usize,
    /// Simulated time allowed for views to converge.
    pub converge_timeout: Duration,
    /// Convergence is checked this often (the figures' resolution).
    pub check_every: Duration,
    /// Established connections per node (default: `Limits::default()`).
    pub max_connections: Option<usize>,
    /// Seed of the generator.
    pub seed: u64,
    /// Changes to the daemon's behaviour to try (all off: the daemon as it
    /// is).
    pub what_if: WhatIf,
}

/// Behaviours the daemon does not have, to measure before building them.
/// All off by default: the simulation runs the daemon's behaviour.
#[derive(Clone, Copy, Debug, Default)]
pub struct WhatIf {
    /// Upkeep dials members only while the node has fewer than `MESH_LOW`
    /// connections, which gossipsub then grafts (the daemon: fewer than
    /// `TARGET_DEGREE`, whose extra connections gossipsub may not graft,
    /// so they idle out and are dialled again).
    pub upkeep_to_mesh_low: bool,
}

impl Settings {
    /// The defaults of `ci/fleet-sim` for `nodes` nodes.
    pub fn new(nodes: usize) -> Settings {
        Settings {
            nodes,
            seeds_per_node: 3,
            shared_seeds: 0,
            join_rate: 100.0,
            latency: (Duration::from_millis(1), Duration::from_millis(5)),
            warmup: Duration::from_secs(30),
            steady: Duration::from_secs(60),
            churn: 0.25,
            keys: 1000,
            invalidations: 20,
            converge_timeout: Duration::from_secs(300),
            check_every: Duration::from_millis(100),
            max_connections: None,
            seed: 1,
            what_if: WhatIf::default(),
        }
    }
}

/// min / median / p99 / max / mean of a set of per-node figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Spread {
    /// Of `v` (empty: all zero).
    pub fn of(mut v: Vec<f64>) -> Spread {
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        Spread {
            min: v[0],
            p50: q(0.5),
            p99: q(0.99),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }

    fn show(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            round(self.min),
            round(self.p50),
            round(self.p99),
            round(self.max)
        )
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Views that did not converge in time: how far off they were.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Residue {
    /// Nodes whose view is not the live set.
    pub nodes: usize,
    /// Live members missing, summed over those views.
    pub missing: usize,
    /// Dead members still in them, summed.
    pub stale: usize,
}

/// The figures of one run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// N.
    pub nodes: usize,
    /// From the last start until every view holds exactly the live set.
    pub start_views_s: Option<f64>,
    /// … and every owner view (members that no longer join).
    pub start_owners_s: Option<f64>,
    /// From the first start until the member views converged.
    pub start_total_s: Option<f64>,
    /// Fleet messages received per node per second during the start, mean
    /// over nodes (first copies / all copies).
    pub start_unique_per_s: f64,
    /// (see `start_unique_per_s`)
    pub start_copies_per_s: f64,
    /// What was left when the start did not converge.
    pub start_residue: Residue,
    /// Steady state, per node: fleet messages received per second (first
    /// copies).
    pub steady_unique_per_s: Spread,
    /// … every copy.
    pub steady_copies_per_s: Spread,
    /// … established connections at the end of the window.
    pub connections: Spread,
    /// … gossip mesh peers.
    pub mesh: Spread,
    /// … member records kept (the O(N) state).
    pub records: Spread,
    /// Announcements published fleet-wide per second in steady state.
    pub fleet_announcements_per_s: f64,
    /// Connections opened fleet-wide per second in steady state.
    pub fleet_connections_opened_per_s: f64,
    /// Invalidations: delay from publication to each member (ms).
    pub invalidation_delay_ms: Spread,
    /// … to the last member of each (ms).
    pub invalidation_last_ms: Spread,
    /// … hops to each member.
    pub invalidation_hops: Spread,
    /// … reached every live member.
    pub invalidations_complete: usize,
    /// … published.
    pub invalidations: usize,
    /// Nodes killed (and started) in the churn.
    pub churned: usize,
    /// From the kills until every view holds exactly the new live set.
    pub churn_views_s: Option<f64>,
    /// … and every owner view.
    pub churn_owners_s: Option<f64>,
    /// What was left when the churn did not converge.
    pub churn_residue: Residue,
    /// "gone" messages published during the churn.
    pub churn_gone_published: u64,
    /// Fleet messages received per node per second from the kills until
    /// convergence (first copies / all copies), mean over nodes.
    pub churn_unique_per_s: f64,
    /// (see `churn_unique_per_s`)
    pub churn_copies_per_s: f64,
    /// Share of keys whose owner moved.
    pub keys_moved: f64,
    /// What rendezvous hashing predicts: 1 − survivors / (N + joiners).
    pub keys_moved_expected: f64,
    /// Wall-clock seconds the run took.
    pub wall_s: f64,
}

impl Report {
    /// One `name=value` pair per figure, for `fleet-sim` lines.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let s = |x: Option<f64>| x.map_or("none".to_string(), |v| round(v).to_string());
        let residue = |r: &Residue| format!("{}/{}/{}", r.nodes, r.missing, r.stale);
        vec![
            ("nodes", self.nodes.to_string()),
            ("start_views_s", s(self.start_views_s)),
            ("start_owners_s", s(self.start_owners_s)),
            ("start_total_s", s(self.start_total_s)),
            ("start_residue_nodes_missing_stale", residue(&self.start_residue)),
            ("start_msgs_per_node_s", round(self.start_unique_per_s).to_string()),
            ("start_copies_per_node_s", round(self.start_copies_per_s).to_string()),
            (
                "steady_msgs_per_node_s_min_p50_p99_max",
                self.steady_unique_per_s.show(),
            ),
            (
                "steady_copies_per_node_s_min_p50_p99_max",
                self.steady_copies_per_s.show(),
            ),
            (
                "steady_msgs_per_node_s_mean",
                round(self.steady_unique_per_s.mean).to_string(),
            ),
            (
                "steady_copies_per_node_s_mean",
                round(self.steady_copies_per_s.mean).to_string(),
            ),
            (
                "fleet_announcements_per_s",
                round(self.fleet_announcements_per_s).to_string(),
            ),
            (
                "fleet_connections_opened_per_s",
                round(self.fleet_connections_opened_per_s).to_string(),
            ),
            ("connections_per_node_min_p50_p99_max", self.connections.show()),
            ("connections_per_node_mean", round(self.connections.mean).to_string()),
            ("mesh_per_node_min_p50_p99_max", self.mesh.show()),
            ("records_per_node_p50", round(self.records.p50).to_string()),
            (
                "invalidation_delay_ms_p50_p99_max",
                format!(
                    "{}/{}/{}",
                    round(self.invalidation_delay_ms.p50),
                    round(self.invalidation_delay_ms.p99),
                    round(self.invalidation_delay_ms.max)
                ),
            ),
            (
                "invalidation_last_member_ms_p50_max",
                format!(
                    "{}/{}",
                    round(self.invalidation_last_ms.p50),
                    round(self.invalidation_last_ms.max)
                ),
            ),
            (
                "invalidation_hops_p50_max",
                format!("{}/{}", self.invalidation_hops.p50, self.invalidation_hops.max),
            ),
            (
                "invalidations_reaching_all",
                format!("{}/{}", self.invalidations_complete, self.invalidations),
            ),
            ("churned", self.churned.to_string()),
            ("churn_views_s", s(self.churn_views_s)),
            ("churn_owners_s", s(self.churn_owners_s)),
            ("churn_residue_nodes_missing_stale", residue(&self.churn_residue)),
            ("churn_gone_published", self.churn_gone_published.to_string()),
            ("churn_msgs_per_node_s", round(self.churn_unique_per_s).to_string()),
            ("churn_copies_per_node_s", round(self.churn_copies_per_s).to_string()),
            ("keys_moved", format!("{:.3}", self.keys_moved)),
            ("keys_moved_expected", format!("{:.3}", self.keys_moved_expected)),
            ("wall_s", round(self.wall_s).to_string()),
        ]
    }
}

/// A small seeded generator (splitmix64): the model needs reproducible
/// draws, not cryptographic ones.
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next draw.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// splitmix64's finalizer: a well-spread hash of one word.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// Runs until every live view is exact (members, then owners) or the
/// deadline; times are from `from`, in seconds.
fn converge(f: &mut Fleet, s: &Settings, from: u64) -> (Option<f64>, Option<f64>, Residue) {
    let live = f.live_nodes();
    let deadline = f.now + micros(s.converge_timeout);
    let (mut members, mut owners) = (None, None);
    // Where the last check failed: most checks fail on the same node.
    let (mut cursor_m, mut cursor_o) = (0, 0);
    let exact = |f: &Fleet, cursor: &mut usize, owners: bool| {
        for i in 0..live.len() {
            let k = (*cursor + i) % live.len();
            if !f.view_exact(live[k], owners) {
                *cursor = k;
                return false;
            }
        }
        true
    };
    loop {
        let secs = (f.now - from) as f64 / 1e6;
        if members.is_none() && exact(f, &mut cursor_m, false) {
            members = Some(secs);
        }
        if owners.is_none() && exact(f, &mut cursor_o, true) {
            owners = Some(secs);
        }
        if (members.is_some() && owners.is_some()) || f.now >= deadline {
            break;
        }
        f.run_until(f.now + micros(s.check_every));
    }
    let mut residue = Residue::default();
    if members.is_none() {
        for &n in &live {
            let (missing, stale) = f.view_error(n);
            if missing + stale > 0 {
                residue.nodes += 1;
                residue.missing += missing;
                residue.stale += stale;
            }
        }
    }
    (members, owners, residue)
}

/// Mean over `nodes` of (counter now − counter before) / seconds.
fn rate(now: &[u64], before: &[u64], nodes: &[u32], secs: f64) -> Vec<f64> {
    nodes
        .iter()
        .map(|&n| (now[n as usize] - before.get(n as usize).copied().unwrap_or(0)) as f64 / secs)
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The owner of each key over `members` (rendezvous hashing, as every
/// node with that view computes it).
fn owners_of(keys: &[String], members: &[PeerId]) -> Vec<PeerId> {
    keys.iter()
        .map(|k| super::owner_of(k, &members[0], &members[1..]))
        .collect()
}

/// Runs the four scenarios on one fleet of `s.nodes` nodes.
pub fn run(s: &Settings) -> Report {
    let wall = Instant::now();
    let mut f = Fleet::new(s);
    let mut r = Report {
        nodes: s.nodes,
        ..Report::default()
    };
    let gap = (1e6 / s.join_rate) as u64;

    // 1. Start.
    for i in 0..s.nodes as u64 {
        f.add_node(i * gap);
    }
    let last_start = (s.nodes as u64 - 1) * gap;
    f.run_until(last_start);
    let (views, owners, residue) = converge(&mut f, s, last_start);
    r.start_views_s = views;
    r.start_owners_s = owners;
    r.start_total_s = views.map(|v| v + last_start as f64 / 1e6);
    r.start_residue = residue;
    let live = f.live_nodes();
    let start_secs = f.now as f64 / 1e6;
    // Each node counted over the time since it started.
    let per_node = |counts: &[u64]| -> f64 {
        let v: Vec<f64> = live
            .iter()
            .map(|&n| counts[n as usize] as f64 / (start_secs - n as f64 * gap as f64 / 1e6).max(1.0))
            .collect();
        mean(&v)
    };
    r.start_unique_per_s = per_node(&f.unique);
    r.start_copies_per_s = per_node(&f.copies);

    // 2. Steady state.
    f.run_until(f.now + micros(s.warmup));
    let (unique0, copies0, published0, opened0) = (f.unique.clone(), f.copies.clone(), f.published, f.opened);
    f.run_until(f.now + micros(s.steady));
    let secs = s.steady.as_secs_f64();
    r.steady_unique_per_s = Spread::of(rate(&f.unique, &unique0, &live, secs));
    r.steady_copies_per_s = Spread::of(rate(&f.copies, &copies0, &live, secs));
    r.fleet_announcements_per_s = (f.published[0] - published0[0]) as f64 / secs;
    r.fleet_connections_opened_per_s = (f.opened - opened0) as f64 / secs;
    r.connections = Spread::of(live.iter().map(|&n| f.overlay.degree(n) as f64).collect());
    r.mesh = Spread::of(live.iter().map(|&n| f.overlay.mesh_degree(n) as f64).collect());
    r.records = Spread::of(
        live.iter()
            .map(|&n| f.nodes[n as usize].membership.records().count() as f64)
            .collect(),
    );

    // 3. Invalidations, one a second from random members.
    let mut rng = Rng::new(s.seed ^ 0x1d);
    for _ in 0..s.invalidations {
        let n = live[rng.below(live.len() as u64) as usize];
        f.invalidate(n);
        f.run_until(f.now + 1_000_000);
    }
    let mut delays = Vec::new();
    let mut hops = Vec::new();
    let mut last = Vec::new();
    for p in &f.propagations {
        delays.extend(p.reached.iter().map(|(d, _)| *d as f64 / 1e3));
        hops.extend(p.reached.iter().map(|(_, h)| *h as f64));
        last.push(p.reached.iter().map(|(d, _)| *d as f64 / 1e3).fold(0.0, f64::max));
        if p.reached.len() >= p.members {
            r.invalidations_complete += 1;
        }
    }
    r.invalidations = f.propagations.len();
    r.invalidation_delay_ms = Spread::of(delays);
    r.invalidation_hops = Spread::of(hops);
    r.invalidation_last_ms = Spread::of(last);

    // 4. Churn: kill a share at once, start as many at the join rate.
    let keys: Vec<String> = (0..s.keys).map(|i| format!("repo:repo=o/r{i}")).collect();
    let ids = |f: &Fleet| -> Vec<PeerId> { f.live_nodes().iter().map(|&n| f.nodes[n as usize].id).collect() };
    let before = owners_of(&keys, &ids(&f));
    let mut victims = live.clone();
    rng.shuffle(&mut victims);
    victims.truncate(((s.nodes as f64 * s.churn).round() as usize).min(s.nodes.saturating_sub(1)));
    r.churned = victims.len();
    let killed_at = f.now;
    let (unique0, copies0, gone0) = (f.unique.clone(), f.copies.clone(), f.published[1]);
    for &v in &victims {
        f.kill(v);
    }
    for i in 0..victims.len() as u64 {
        f.add_node(killed_at + i * gap);
    }
    f.run_until(killed_at + victims.len().saturating_sub(1) as u64 * gap);
    let (views, owners, residue) = converge(&mut f, s, killed_at);
    r.churn_views_s = views;
    r.churn_owners_s = owners;
    r.churn_residue = residue;
    r.churn_gone_published = f.published[1] - gone0;
    let churn_secs = ((f.now - killed_at) as f64 / 1e6).max(1.0);
    let survivors: Vec<u32> = live.iter().copied().filter(|n| f.nodes[*n as usize].alive).collect();
    r.churn_unique_per_s = mean(&rate(&f.unique, &unique0, &survivors, churn_secs));
    r.churn_copies_per_s = mean(&rate(&f.copies, &copies0, &survivors, churn_secs));
    let after = owners_of(&keys, &ids(&f));
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    r.keys_moved = moved as f64 / s.keys.max(1) as f64;
    r.keys_moved_expected = 1.0 - survivors.len() as f64 / (s.nodes + victims.len()) as f64;
    r.wall_s = wall.elapsed().as_secs_f64();
    r
}

#[cfg(test)]
mod tests {
    use super::super::membership::{announce_every, FLEET_ANNOUNCEMENTS_PER_S};
    use super::super::Limits;
    use super::*;

    /// Short windows, so a debug build runs it in seconds.
    fn quick(nodes: usize) -> Settings {
        Settings {
            warmup: Duration::from_secs(20),
            steady: Duration::from_secs(30),
            invalidations: 5,
            keys: 400,
            converge_timeout: Duration::from_secs(120),
            ..Settings::new(nodes)
        }
    }

    #[test]
    fn a_fleet_of_200_converges_with_bounded_connections() {
        let r = run(&quick(200));
        for (k, v) in r.pairs() {
            eprintln!("{k}={v}");
        }
        assert!(
            r.start_views_s.is_some_and(|s| s < 10.0),
            "start: {:?}",
            r.start_residue
        );
        assert!(r.start_owners_s.is_some_and(|s| s < 15.0), "owners after start");
        assert!(
            r.churn_views_s.is_some_and(|s| s < 15.0),
            "churn: {:?}",
            r.churn_residue
        );
        assert!(r.churn_owners_s.is_some_and(|s| s < 20.0), "owners after churn");
        assert!(r.connections.max <= Limits::default().established as f64);
        assert!(r.mesh.min >= 1.0, "every node in the mesh");
        assert_eq!(
            r.invalidations_complete, r.invalidations,
            "every invalidation reaches every member"
        );
        assert!(
            (r.keys_moved - r.keys_moved_expected).abs() < 0.1,
            "{} moved, {} expected",
            r.keys_moved,
            r.keys_moved_expected
        );
    }

    /// Mean fleet messages a node receives per second in steady state,
    /// over `window` (a whole announcement period when the fleet
    /// announces only on its timers: starts close together bunch the
    /// announcements).
    fn steady_rate(nodes: usize, what_if: WhatIf, window: Duration) -> f64 {
        let s = Settings {
            warmup: Duration::from_secs(10),
            steady: window,
            invalidations: 0,
            keys: 1,
            churn: 0.0,
            what_if,
            ..Settings::new(nodes)
        };
        let r = run(&s);
        assert!(r.start_views_s.is_some(), "{nodes} nodes: views converged");
        r.steady_unique_per_s.mean
    }

    #[test]
    fn per_node_messages_do_not_grow_with_n() {
        // Each node receives every announcement once, so its rate is the
        // fleet's, which `announce_every` bounds whatever N. A node that
        // announced early to every new connection (not only to a peer new
        // to its view) would break this: upkeep's connections to members
        // it knows would each cost two fleet-wide announcements.
        let (small, big) = (100, 400);
        let rates = (
            steady_rate(small, WhatIf::default(), announce_every(small)),
            steady_rate(big, WhatIf::default(), announce_every(big)),
        );
        let bound = FLEET_ANNOUNCEMENTS_PER_S as f64 * 1.25;
        assert!(rates.0 <= bound && rates.1 <= bound, "{rates:?} above {bound}");
        assert!(rates.1 < 1.5 * rates.0, "{rates:?}: grows with N");
    }
}
