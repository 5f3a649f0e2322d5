//! A cached answer as the proxy replays it, built once per entry and `Host`.
//!
//! What `GET /github/…` answers from a cache entry depends on three things:
//! the entry (GitHub's status, kept headers and body, in the
//! [`response`](crate::daemon::response) envelope), the proxy base this
//! client reached (absolute URLs under the API root are rewritten to it),
//! and facts of the request itself (the quota as the daemon knows it now,
//! `X-Cache-Mode`, a matching `If-None-Match`, HEAD). The first two are the
//! same for every hit on one entry through one `Host`, so a [`Replay`]
//! holds what they make (status, rewritten header block, rewritten body)
//! and [`Replays`] keeps the recent ones: decoding the envelope, checking
//! every header and scanning and copying the body happen once per entry
//! and `Host` instead of once per answer. The per-request facts are added
//! to a copy of the header block by the proxy on every answer; a replay
//! never holds those headers, even when an entry carries them.
//!
//! Invariants:
//! - **A replay is found only for the entry it was built from.** A slot
//!   holds a `Weak` of its entry, and an allocation that a `Weak` still
//!   points to is never freed, so no other entry can live at that address:
//!   equal pointers mean the same entry. An entry replaced in the cache (a
//!   refetch, a 304's new freshness, an invalidation) is a new allocation
//!   and misses.
//! - **A replay is found only for the `Host` it was rewritten for** (the
//!   base is `http://<Host>/github`): the `Host` is part of the slot's
//!   identity, compared in full.
//! - **The table never chooses what is served.** The read path has already
//!   picked the entry for this request's key (its credential partition,
//!   its freshness); the table only saves rebuilding bytes from that entry.
//!   So nothing reaches a partition it does not belong to.
//! - **Bounded**: [`SLOTS`] slots, direct-mapped (a newer replay takes its
//!   slot), and bodies over [`MAX_BODY`] are never kept (they are built per
//!   answer), so the table holds at most `SLOTS × MAX_BODY` body bytes of
//!   its own.
//! - **Locks**: each slot's lock is a leaf, held only to clone or replace
//!   an `Arc`; a replay is built with no lock held.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Weak;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::core::Entry;
use crate::daemon::response;
use crate::daemon::upstream::is_json_type;
use crate::sync::{lock, Mutex, StdArc as Arc};

/// Slots in the table.
pub const SLOTS: usize = 128;

/// Largest body a replay is kept for.
pub const MAX_BODY: usize = 128 * 1024;

/// Headers the proxy adds to every answer at most; room for them is kept
/// in each header block's index (which a copy keeps), so adding them to a
/// copy never rehashes it.
pub const PER_ANSWER_HEADERS: usize = 8;

/// One entry's answer for one `Host` (module docs).
#[derive(Debug)]
pub struct Replay {
    entry: Weak<Entry>,
    host: Box<str>,
    /// GitHub's status.
    pub status: StatusCode,
    /// GitHub's kept headers (`Link` and `Location` rewritten) and the
    /// entry's `ETag`.
    pub headers: HeaderMap,
    /// The body, rewritten when it is JSON.
    pub body: Bytes,
    /// Whether `headers` name a content type.
    pub typed: bool,
}

impl Replay {
    /// Builds the replay of `entry` for a client that reached the proxy at
    /// `host`, with URLs under `upstream_base` rewritten to its base.
    pub fn build(entry: &Arc<Entry>, upstream_base: &str, host: &str) -> Replay {
        let base = &base_of(host);
        let stored = response::Response::decode(entry.status, &entry.body);
        let mut headers = HeaderMap::with_capacity(stored.headers.len() + PER_ANSWER_HEADERS);
        for (name, value) in &stored.headers {
            if is_per_answer(name) {
                continue;
            }
            let rewrite = matches!(name.as_str(), "link" | "location");
            put_header(&mut headers, name, value, rewrite, upstream_base, base);
        }
        if let Some(tag) = entry.etag.as_ref().and_then(|t| HeaderValue::from_str(t.as_str()).ok()) {
            headers.insert(header::ETAG, tag);
        }
        let body = if is_json(stored.header("content-type")) {
            rewrite_urls(&stored.body, upstream_base, base)
        } else {
            stored.body
        };
        Replay {
            typed: headers.contains_key(header::CONTENT_TYPE),
            entry: Arc::downgrade(entry),
            host: host.into(),
            status: StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
            headers,
            body,
        }
    }

    fn is_for(&self, entry: &Arc<Entry>, host: &str) -> bool {
        std::ptr::eq(self.entry.as_ptr(), Arc::as_ptr(entry)) && *self.host == *host
    }
}

/// The recent replays (module docs).
pub struct Replays {
    slots: Box<[Mutex<Option<Arc<Replay>>>]>,
    hasher: foldhash::fast::FixedState,
}

impl std::fmt::Debug for Replays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replays").field("slots", &self.slots.len()).finish()
    }
}

impl Default for Replays {
    fn default() -> Self {
        Replays {
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
            hasher: foldhash::fast::FixedState::default(),
        }
    }
}

impl Replays {
    /// The replay of `entry` for `host`: the kept one, or one built now
    /// (and kept when its body is small enough).
    pub fn get(&self, entry: &Arc<Entry>, upstream_base: &str, host: &str) -> Arc<Replay> {
        let slot = &self.slots[self.slot_of(entry, host)];
        if let Some(replay) = lock(slot).as_ref().filter(|r| r.is_for(entry, host)) {
            return replay.clone();
        }
        let replay = Arc::new(Replay::build(entry, upstream_base, host));
        if replay.body.len() <= MAX_BODY {
            *lock(slot) = Some(replay.clone());
        }
        replay
    }

    fn slot_of(&self, entry: &Arc<Entry>, host: &str) -> usize {
        let mut h = self.hasher.build_hasher();
        (Arc::as_ptr(entry) as usize).hash(&mut h);
        host.hash(&mut h);
        (h.finish() as usize) % self.slots.len()
    }
}

/// Is `name` (lowercase) a header the proxy writes on every answer from
/// what it knows then (`X-RateLimit-*`, `X-Cache-Mode`), so never one a
/// replay holds, whatever an entry (a peer's, say) carries?
fn is_per_answer(name: &str) -> bool {
    name.starts_with("x-ratelimit-") || name == "x-cache-mode"
}

/// The proxy's base as a client that sent `Host: host` reached it.
pub fn base_of(host: &str) -> String {
    format!("http://{host}/github")
}

/// Replaces every absolute URL under the API root (`from`) in `bytes` by
/// the same URL under `to`. A match must end at a URL boundary, so
/// `https://api.github.com.evil.example` is left alone. Returns the same
/// buffer when there is nothing to rewrite.
pub fn rewrite_urls(bytes: &Bytes, from: &str, to: &str) -> Bytes {
    let finder = memchr::memmem::Finder::new(from.as_bytes());
    let boundary = |at: usize| {
        bytes
            .get(at)
            .is_none_or(|b| matches!(b, b'/' | b'"' | b'?' | b'>' | b'#' | b'\\'))
    };
    let mut hits = finder.find_iter(bytes).filter(|&i| boundary(i + from.len())).peekable();
    if hits.peek().is_none() {
        return bytes.clone();
    }
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut last = 0;
    for i in hits {
        out.extend_from_slice(&bytes[last..i]);
        out.extend_from_slice(to.as_bytes());
        last = i + from.len();
    }
    out.extend_from_slice(&bytes[last..]);
    Bytes::from(out)
}

/// Is this content type JSON (whose body URLs are rewritten)?
pub fn is_json(content_type: Option<&[u8]>) -> bool {
    content_type
        .and_then(|t| std::str::from_utf8(t).ok())
        .is_some_and(is_json_type)
}

/// Appends one of GitHub's headers to `out`; when `rewrite` is set, the
/// URLs under the API root (`from`) in it are rewritten to the proxy
/// (`to`). A name or value that is not a valid header is dropped.
pub fn put_header(out: &mut HeaderMap, name: &str, value: &Bytes, rewrite: bool, from: &str, to: &str) {
    let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
        return;
    };
    let value = if rewrite {
        rewrite_urls(value, from, to)
    } else {
        value.clone()
    };
    if let Ok(value) = HeaderValue::from_maybe_shared(value) {
        out.append(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rewritten_at_boundaries_only() {
        let from = "https://api.github.com";
        let to = "http://127.0.0.1:9000/github";
        let body = Bytes::from_static(
            br#"{"url":"https://api.github.com/repos/o/r","x":"https://api.github.com.evil.example/a","y":"https://api.github.com"}"#,
        );
        let out = rewrite_urls(&body, from, to);
        assert_eq!(
            &out[..],
            br#"{"url":"http://127.0.0.1:9000/github/repos/o/r","x":"https://api.github.com.evil.example/a","y":"http://127.0.0.1:9000/github"}"#
        );
        let link = Bytes::from_static(b"<https://api.github.com/x?page=2>; rel=\"next\"");
        assert_eq!(
            &rewrite_urls(&link, from, to)[..],
            b"<http://127.0.0.1:9000/github/x?page=2>; rel=\"next\""
        );
        let untouched = Bytes::from_static(b"[1,2,3]");
        assert_eq!(rewrite_urls(&untouched, from, to).as_ptr(), untouched.as_ptr());
    }

    const UPSTREAM: &str = "https://api.github.com";

    fn entry(json: &str) -> Arc<Entry> {
        let stored = response::Response {
            status: 200,
            headers: vec![
                ("content-type".into(), Bytes::from_static(b"application/json")),
                (
                    "link".into(),
                    Bytes::from(format!("<{UPSTREAM}/x?page=2>; rel=\"next\"")),
                ),
            ],
            body: Bytes::from(json.to_string()),
        };
        let etag = crate::core::ETag::new("\"e1\"");
        Arc::new(Entry::new(
            stored.encode(),
            etag,
            crate::core::Timestamp::ZERO,
            std::time::Duration::from_secs(60),
            crate::core::Origin::Upstream,
        ))
    }

    fn body(replay: &Replay) -> &str {
        std::str::from_utf8(&replay.body).unwrap()
    }

    #[test]
    fn a_replay_is_rewritten_for_its_base_and_kept() {
        let replays = Replays::default();
        let e = entry(&format!(r#"{{"url":"{UPSTREAM}/repos/o/r"}}"#));
        let a = replays.get(&e, UPSTREAM, "127.0.0.1:1");
        assert_eq!(body(&a), r#"{"url":"http://127.0.0.1:1/github/repos/o/r"}"#);
        assert_eq!(a.headers["link"], "<http://127.0.0.1:1/github/x?page=2>; rel=\"next\"");
        assert_eq!(a.headers["etag"], "\"e1\"");
        assert!(Arc::ptr_eq(&a, &replays.get(&e, UPSTREAM, "127.0.0.1:1")));
        // Another Host gets its own base, and the first keeps its own.
        let b = replays.get(&e, UPSTREAM, "localhost:1");
        assert_eq!(body(&b), r#"{"url":"http://localhost:1/github/repos/o/r"}"#);
        let a_again = replays.get(&e, UPSTREAM, "127.0.0.1:1");
        assert_eq!(body(&a_again), body(&a));
    }

    #[test]
    fn a_replay_serves_only_the_entry_it_was_built_from() {
        let replays = Replays::default();
        let host = "127.0.0.1:1";
        // Entries of the same size, each dropped before the next is made,
        // so the allocator would hand out the same address again were a
        // replay not holding on to its entry's allocation.
        for i in 0..100 {
            let e = entry(&format!(r#"{{"n":{i:03}}}"#));
            let r = replays.get(&e, UPSTREAM, host);
            assert_eq!(body(&r), format!(r#"{{"n":{i:03}}}"#));
            drop((e, r));
        }
    }

    #[test]
    fn headers_written_per_answer_are_never_replayed() {
        let stored = response::Response {
            status: 200,
            headers: vec![
                ("x-ratelimit-remaining".into(), Bytes::from_static(b"1")),
                ("x-cache-mode".into(), Bytes::from_static(b"hit")),
                ("x-github-media-type".into(), Bytes::from_static(b"github.v3")),
            ],
            body: Bytes::from_static(b"[]"),
        };
        let e = Arc::new(Entry::new(
            stored.encode(),
            None,
            crate::core::Timestamp::ZERO,
            std::time::Duration::from_secs(60),
            crate::core::Origin::Peer,
        ));
        let r = Replays::default().get(&e, UPSTREAM, "127.0.0.1:1");
        let names: Vec<_> = r.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-github-media-type"]);
        assert!(!r.typed);
    }

    #[test]
    fn large_bodies_are_built_per_answer_not_kept() {
        let replays = Replays::default();
        let e = entry(&format!(r#"{{"x":"{}"}}"#, "y".repeat(MAX_BODY)));
        let host = "127.0.0.1:1";
        assert!(!Arc::ptr_eq(
            &replays.get(&e, UPSTREAM, host),
            &replays.get(&e, UPSTREAM, host)
        ));
    }
}
