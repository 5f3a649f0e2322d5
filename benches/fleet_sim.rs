//! The fleet at 1,000, 3,000 and 10,000 nodes, simulated (issue 14): runs
//! `ghcache::daemon::p2p::sim` (the real member view and owner choice over
//! a model of libp2p's connections and gossip mesh) and prints one
//! `fleet-sim nodes=N name=value` line per figure. `ci/fleet-sim` runs it.
//!
//! ```text
//! fleet_sim [N ...] [--seconds S] [--warmup S] [--join-rate R] [--churn F]
//!           [--seeds K] [--shared-seeds K] [--latency-ms LO-HI] [--keys K]
//!           [--invalidations I] [--max-connections C] [--timeout S] [--seed X]
//!           [--what-if upkeep-to-mesh-low]
//! ```
//!
//! Without N it runs the list in `GHCACHE_FLEET_SIM_NODES` (what
//! `ci/fleet-sim` sets: 1000 3000 10000 by default), or, when that is unset
//! too (`cargo test --all-targets`, a bare `cargo bench`), one short run of
//! 100 nodes so the target cannot rot.

use std::process::exit;
use std::time::Duration;

use ghcache::daemon::p2p::sim::{run, Settings};

fn usage(msg: &str) -> ! {
    eprintln!("fleet_sim: {msg}");
    eprintln!(
        "usage: fleet_sim [N ...] [--seconds S] [--warmup S] [--join-rate R] [--churn F] [--seeds K] \
         [--shared-seeds K] [--latency-ms LO-HI] [--keys K] [--invalidations I] [--max-connections C] \
         [--timeout S] [--seed X] [--what-if upkeep-to-mesh-low]"
    );
    exit(2)
}

fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> T {
    v.and_then(|v| v.parse().ok())
        .unwrap_or_else(|| usage(&format!("{flag} needs a number")))
}

fn main() {
    let mut nodes: Vec<usize> = Vec::new();
    let mut base = Settings::new(0);
    let mut smoke = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            // Added by `cargo bench`.
            "--bench" => {}
            "--seconds" => base.steady = Duration::from_secs_f64(num(&a, args.next())),
            "--warmup" => base.warmup = Duration::from_secs_f64(num(&a, args.next())),
            "--join-rate" => base.join_rate = num(&a, args.next()),
            "--churn" => base.churn = num(&a, args.next()),
            "--seeds" => base.seeds_per_node = num(&a, args.next()),
            "--shared-seeds" => base.shared_seeds = num(&a, args.next()),
            "--keys" => base.keys = num(&a, args.next()),
            "--invalidations" => base.invalidations = num(&a, args.next()),
            "--max-connections" => base.max_connections = Some(num(&a, args.next())),
            "--timeout" => base.converge_timeout = Duration::from_secs_f64(num(&a, args.next())),
            "--seed" => base.seed = num(&a, args.next()),
            "--what-if" => match args.next().as_deref() {
                Some("upkeep-to-mesh-low") => base.what_if.upkeep_to_mesh_low = true,
                _ => usage("--what-if takes upkeep-to-mesh-low"),
            },
            "--latency-ms" => {
                let v = args.next().unwrap_or_default();
                let (lo, hi) = v.split_once('-').unwrap_or_else(|| usage("--latency-ms needs LO-HI"));
                let (lo, hi): (f64, f64) = (num(&a, Some(lo.into())), num(&a, Some(hi.into())));
                if !(0.0 < lo && lo <= hi) {
                    usage("--latency-ms needs 0 < LO <= HI");
                }
                base.latency = (Duration::from_secs_f64(lo / 1e3), Duration::from_secs_f64(hi / 1e3));
            }
            n => match n.parse::<usize>() {
                Ok(n) if n >= 2 => {
                    nodes.push(n);
                    smoke = false;
                }
                _ => usage(&format!("unknown argument {n:?}")),
            },
        }
    }
    if nodes.is_empty() {
        if let Ok(list) = std::env::var("GHCACHE_FLEET_SIM_NODES") {
            nodes = list
                .split_whitespace()
                .map(|n| num("GHCACHE_FLEET_SIM_NODES", Some(n.into())))
                .collect();
            smoke = false;
        }
    }
    if smoke && nodes.is_empty() {
        nodes.push(100);
        base.warmup = Duration::from_secs(5);
        base.steady = Duration::from_secs(10);
        base.invalidations = 3;
        base.keys = 100;
    }
    if base.join_rate.is_nan() || base.join_rate <= 0.0 || !(0.0..1.0).contains(&base.churn) {
        usage("--join-rate must be > 0 and --churn in [0, 1)");
    }
    for n in nodes {
        let s = Settings {
            nodes: n,
            ..base.clone()
        };
        eprintln!("fleet_sim: {n} nodes ({s:?})");
        let report = run(&s);
        for (name, value) in report.pairs() {
            if name != "nodes" {
                println!("fleet-sim nodes={n} {name}={value}");
            }
        }
    }
}
