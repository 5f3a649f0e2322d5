//! The webhook event table on arbitrary event names and bodies: never
//! panics; a known event yields scopes whose every name is a valid GitHub
//! name (no scope widened by `/`, `..` or an empty segment) or a
//! `Malformed` naming the event; an unknown event is ignored.
//!
//! The first byte picks a known event most of the time (so the JSON paths
//! of the table are reached), else the name is taken from the input.
#![no_main]
use ghcache::daemon::tools::Invalidate;
use ghcache::daemon::webhook::events::{map, Malformed, Mapped, EVENTS};

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
        && s != ".."
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (event, body) = if usize::from(pick) < EVENTS.len() * 4 {
        (EVENTS[usize::from(pick) % EVENTS.len()].to_string(), rest)
    } else {
        let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        (String::from_utf8_lossy(&rest[..split]).into_owned(), rest.get(split + 1..).unwrap_or_default())
    };
    match map(&event, body) {
        Ok(Mapped::Ignored) => assert!(!EVENTS.contains(&event.as_str()), "{event} is in the table"),
        Ok(Mapped::Known(scopes)) => {
            assert!(EVENTS.contains(&event.as_str()));
            for what in scopes {
                match what {
                    Invalidate::All => {}
                    Invalidate::Prefix(p) => panic!("the table makes no prefix scopes: {p:?}"),
                    Invalidate::Repository(r) => {
                        let (owner, name) = r.split_once('/').expect("owner/name");
                        assert!(valid_name(owner) && valid_name(name), "{r:?}");
                    }
                    Invalidate::Paths(paths) => {
                        assert!(!paths.is_empty());
                        for scope in paths {
                            let p = &scope.path;
                            assert!(p.starts_with('/') && !p.ends_with('/'), "{p:?}");
                            for segment in p[1..].split('/') {
                                assert!(valid_name(segment), "{p:?}");
                            }
                        }
                    }
                }
            }
        }
        Err(Malformed(message)) => {
            assert!(EVENTS.contains(&event.as_str()));
            assert!(message.starts_with(&event), "{message}");
        }
    }
});
