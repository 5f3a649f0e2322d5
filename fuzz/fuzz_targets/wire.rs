//! The P2P wire codec (`/ghcache/entry/1` and friends) on arbitrary bytes,
//! as a hostile peer would send them: the decoders never panic, and a
//! message they accept survives an encode/decode round trip unchanged.
#![no_main]
use ghcache::daemon::p2p::wire::{decode_request, decode_response, encode_request, encode_response};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_request(data) {
        let again = encode_request(&request).expect("an accepted request encodes");
        assert_eq!(decode_request(&again).as_ref(), Ok(&request));
    }
    if let Ok(response) = decode_response(data) {
        let again = encode_response(&response).expect("an accepted response encodes");
        assert_eq!(decode_response(&again).as_ref(), Ok(&response));
    }
});
