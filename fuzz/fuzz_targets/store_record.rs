//! The on-disk store's record decoder on arbitrary bytes: never panics, and
//! whatever it accepts encodes back to the very same bytes (so a corrupt
//! record can only be refused, never misread).
#![no_main]
use ghcache::daemon::store::{decode_record, encode_record};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = decode_record(data) {
        assert_eq!(encode_record(&entry), data, "accepted bytes re-encode differently");
    }
});
