//! Sequential models of the ghcache core, shared by the fuzz targets in
//! `fuzz_targets/` and by the property tests in `src/core/proptests.rs`
//! (which include these model files with `#[path]`).
//!
//! Each model file has a setup type, a `#[derive(Arbitrary)]` operation
//! enum, a harness that applies every operation to the real core and to the
//! model and compares them after each one, and a `run(setup, ops, ..)`
//! entry point: a fuzz target is `fuzz_target!(|input| run(..))`, one file.
//!
//! The model files name the core as `crate::core` (here a re-export of
//! `ghcache::core`, there the crate's own module) and each other as
//! `super::`, so the same text compiles in both places.

/// The core, under the path the model files use.
pub mod core {
    pub use ghcache::core::*;
}

pub mod cache_model;
pub mod flight_model;
pub mod lifecycle_model;
