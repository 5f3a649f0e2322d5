//! The fleet's gossipsub messages (`/ghcache/fleet/1`: announcements,
//! invalidations, acks) on arbitrary bytes, as a hostile member would
//! publish them: `decode` never panics, and a message it accepts survives
//! an encode/decode round trip unchanged (so what a node relays is what it
//! checked).
#![no_main]
use ghcache::daemon::p2p::gossip::{decode, encode};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode(data) {
        let again = encode(&message);
        assert_eq!(decode(&again).as_ref(), Ok(&message));
    }
});
