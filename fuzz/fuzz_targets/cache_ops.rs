//! Lookup / insert / invalidate / invalidate-prefix / clear / clock / record /
//! stats sequences against the sequential cache model.
#![no_main]
use ghcache_fuzz::cache_model::{run, CacheOp, CacheSetup};

libfuzzer_sys::fuzz_target!(|input: (CacheSetup, Vec<CacheOp>)| run(&input.0, &input.1));
