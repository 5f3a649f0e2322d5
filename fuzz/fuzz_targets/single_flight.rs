//! Interleavings of up to three callers' single-flight steps (begin, complete
//! with a value / 304 / peer answer / error, abandon, poll, wait), cache
//! operations and real-thread races, against the model.
#![no_main]
use ghcache_fuzz::cache_model::CacheSetup;
use ghcache_fuzz::flight_model::{run, FlightOp};

// Panics abort under libFuzzer, so a panicking fetch is played as a dropped
// leader (the same code path: the FlightLeader's Drop).
libfuzzer_sys::fuzz_target!(|input: (CacheSetup, Vec<FlightOp>)| run(&input.0, &input.1, false));
