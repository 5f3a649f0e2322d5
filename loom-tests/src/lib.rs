//! Shared helpers for the loom models in `tests/`.
