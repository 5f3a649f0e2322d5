//! Cache entries and their freshness rules.
//!
//! An [`Entry`] is one GitHub answer: status, body bytes, the ETag GitHub
//! sent, when it was fetched, how long it stays fresh, and where it came
//! from. Its age decides what a lookup answers:
//!
//! ```text
//!   age <  ttl                  Fresh  served as is
//!   ttl <= age < ttl + grace    Stale  revalidate with If-None-Match (a 304 is free)
//!   ttl + grace <= age          expired: dropped, the lookup is a miss
//! ```

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::clock::Timestamp;
use super::key::{CacheKey, Operation};
use crate::sync::StdArc;

/// Where an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Fetched from GitHub by this node.
    Upstream,
    /// Received from a peer.
    Peer,
    /// Loaded from the on-disk store at start.
    Disk,
}

/// An entity tag as GitHub sent it (e.g. `W/"abc"`), kept verbatim for
/// `If-None-Match`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ETag(StdArc<str>);

impl ETag {
    /// Longest ETag accepted; GitHub's are well under 100 bytes.
    pub const MAX_LEN: usize = 256;

    /// Accepts visible ASCII (and spaces) up to [`ETag::MAX_LEN`] bytes, so
    /// a tag can always be sent back as a header value.
    pub fn new(text: &str) -> Option<ETag> {
        let ok =
            !text.is_empty() && text.len() <= Self::MAX_LEN && text.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
        ok.then(|| ETag(StdArc::from(text)))
    }

    /// The tag text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({:?})", &*self.0)
    }
}

impl Serialize for ETag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ETag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ETag::new(&text).ok_or_else(|| serde::de::Error::custom("invalid ETag"))
    }
}

/// One cached GitHub answer. Cheap to clone: the body and tag are shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// HTTP status of the answer (200 for almost everything cached).
    pub status: u16,
    /// Response body, as received.
    pub body: Bytes,
    /// The ETag to revalidate with, if GitHub sent one.
    pub etag: Option<ETag>,
    /// When it was fetched (or last revalidated), on the cache's clock.
    pub fetched_at: Timestamp,
    /// How long it stays fresh after `fetched_at`.
    pub ttl: Duration,
    /// Where it came from.
    pub origin: Origin,
}

impl Entry {
    /// A 200 answer fetched at `now` with `ttl`.
    pub fn new(body: impl Into<Bytes>, etag: Option<ETag>, now: Timestamp, ttl: Duration, origin: Origin) -> Entry {
        Entry {
            status: 200,
            body: body.into(),
            etag,
            fetched_at: now,
            ttl,
            origin,
        }
    }

    /// How old the entry is at `now`.
    pub fn age(&self, now: Timestamp) -> Duration {
        now.since(self.fetched_at)
    }

    /// Fresh, stale or expired at `now`, given the stale grace period.
    pub fn freshness(&self, now: Timestamp, stale_grace: Duration) -> Freshness {
        let age = self.age(now);
        if age < self.ttl {
            Freshness::Fresh
        } else if age < self.ttl.saturating_add(stale_grace) {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }

    /// The bytes this entry counts against the cache's byte bound, stored
    /// under `key`: key text + body + ETag. (Fixed per-entry overhead is
    /// bounded separately, by the entry-count bound.)
    pub fn weight(&self, key: &CacheKey) -> usize {
        key.as_str().len() + self.body.len() + self.etag.as_ref().map_or(0, |t| t.as_str().len())
    }

    /// The same answer, confirmed unchanged by a 304 at `now`: fresh again
    /// for `ttl`, same body and tag.
    pub fn revalidated(&self, now: Timestamp, ttl: Duration) -> Entry {
        Entry {
            fetched_at: now,
            ttl,
            ..self.clone()
        }
    }
}

/// What an entry's age means (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Younger than its TTL.
    Fresh,
    /// Past its TTL but within the grace period: worth a conditional request.
    Stale,
    /// Too old to keep.
    Expired,
}

/// Per-operation TTLs: the defaults of [`Operation::default_ttl`] unless
/// overridden.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    ttls: [Duration; Operation::ALL.len()],
}

impl TtlPolicy {
    /// The TTL for entries of `op`.
    pub fn ttl(&self, op: Operation) -> Duration {
        self.ttls[op as usize]
    }

    /// Overrides the TTL of `op`.
    pub fn with(mut self, op: Operation, ttl: Duration) -> TtlPolicy {
        self.ttls[op as usize] = ttl;
        self
    }
}

impl Default for TtlPolicy {
    fn default() -> Self {
        TtlPolicy {
            ttls: Operation::ALL.map(Operation::default_ttl),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn entry_at(ms: u64, ttl_s: u64) -> Entry {
        Entry::new(
            "x",
            None,
            Timestamp::from_millis(ms),
            Duration::from_secs(ttl_s),
            Origin::Upstream,
        )
    }

    #[test]
    fn freshness_boundaries() {
        let e = entry_at(1_000, 30);
        let grace = Duration::from_secs(60);
        assert_eq!(e.freshness(Timestamp::from_millis(1_000), grace), Freshness::Fresh);
        assert_eq!(e.freshness(Timestamp::from_millis(30_999), grace), Freshness::Fresh);
        assert_eq!(e.freshness(Timestamp::from_millis(31_000), grace), Freshness::Stale);
        assert_eq!(e.freshness(Timestamp::from_millis(90_999), grace), Freshness::Stale);
        assert_eq!(e.freshness(Timestamp::from_millis(91_000), grace), Freshness::Expired);
        // A clock reading before fetched_at counts as age zero.
        assert_eq!(e.freshness(Timestamp::ZERO, grace), Freshness::Fresh);
    }

    #[test]
    fn etags_must_be_header_safe() {
        assert!(ETag::new("W/\"abc\"").is_some());
        assert!(ETag::new("").is_none());
        assert!(ETag::new("a\r\nX-Evil: 1").is_none());
        assert!(ETag::new(&"a".repeat(ETag::MAX_LEN + 1)).is_none());
    }

    #[test]
    fn weight_counts_key_body_and_tag() {
        let key = CacheKey::new(Operation::Repo, [("repo", Some("o/r"))]);
        let mut e = entry_at(0, 1);
        e.etag = ETag::new("\"t\"");
        assert_eq!(e.weight(&key), key.as_str().len() + 1 + 3);
    }

    #[test]
    fn ttl_policy_defaults_and_overrides() {
        let p = TtlPolicy::default().with(Operation::Runners, Duration::from_secs(5));
        assert_eq!(p.ttl(Operation::Runners), Duration::from_secs(5));
        assert_eq!(p.ttl(Operation::Repos), Duration::from_secs(300));
    }

    #[test]
    fn revalidation_keeps_body_and_tag() {
        let mut e = entry_at(0, 1);
        e.etag = ETag::new("\"t\"");
        let r = e.revalidated(Timestamp::from_millis(5_000), Duration::from_secs(9));
        assert_eq!(
            (r.body, r.etag, r.fetched_at, r.ttl),
            (e.body, e.etag, Timestamp::from_millis(5_000), Duration::from_secs(9))
        );
    }
}
