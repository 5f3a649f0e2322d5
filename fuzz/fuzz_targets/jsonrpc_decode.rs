//! The `/jsonrpc` request decoder on arbitrary bytes: never panics, and
//! anything it refuses gets a standard JSON-RPC error code.
#![no_main]
use ghcache::daemon::jsonrpc::{decode, Body};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Body::Invalid(error) = decode(data) {
        assert!(matches!(error.code, -32700 | -32600), "unexpected code {}", error.code);
        assert!(!error.message.is_empty());
    }
});
