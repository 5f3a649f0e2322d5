//! Start (ok, failing, slow, raced by shutdown) / shutdown / clock sequences
//! against the model of the P2P lifecycle.
#![no_main]
use ghcache_fuzz::lifecycle_model::{run, LifeOp, LifecycleSetup};

// Panics abort under libFuzzer, so a panicking starter is played as a failing one.
libfuzzer_sys::fuzz_target!(|input: (LifecycleSetup, Vec<LifeOp>)| run(&input.0, &input.1, false));
