//! The fleet-wide messages, published on one gossipsub topic ([`TOPIC`]):
//! membership announcements, members found gone, invalidations and their
//! acknowledgements.
//!
//! ```text
//! message      = JSON object, at most MAX_MESSAGE bytes, tagged by "t":
//!   announce   {"t":"announce","addrs":[multiaddr..],"started_unix_ms","seq","epoch","epoch_ids":[id..],"counters":{..},"leaving","joining","every_ms"}
//!   gone       {"t":"gone","peer":peer id,"started_unix_ms","seq"}
//!   invalidate {"t":"invalidate","id","epoch","what":{"all"|"prefix":s|"repository":"o/r"|"paths":[{"path","tree"}..]},"sent_unix_ms"}
//!   ack        {"t":"ack","id","origin":peer id,"epoch"}
//! ```
//!
//! The sender of a message is gossipsub's signed `source` (the swarm
//! publishes with `MessageAuthenticity::Signed` and validates strictly), so
//! no message names its own sender and none can speak for another peer.
//!
//! Invariants: [`decode`] is a pure function of a byte slice: every input
//! either decodes into a message whose every field is within its bound
//! (addresses parse as multiaddrs, at most [`MAX_ADDRS`]; a prefix at most
//! [`wire::MAX_STRING`] bytes; a repository shaped `owner/name` as the
//! tools accept it; at most [`MAX_PATHS`] paths, each a GitHub API path as
//! the tools accept it) or is an error, never a panic. Gossipsub refuses a
//! message over [`MAX_MESSAGE`] before it reaches here.

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::wire;
use crate::daemon::tools::{Invalidate, PathScope};

/// The one gossipsub topic of the fleet.
pub const TOPIC: &str = "/ghcache/fleet/1";
/// Largest message on the topic (gossipsub's `max_transmit_size`).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most addresses in an announcement.
pub const MAX_ADDRS: usize = wire::MAX_ADDRS;
/// Most paths in one path-scoped invalidation (a webhook event makes a
/// handful stale).
pub const MAX_PATHS: usize = 64;

/// A message on [`TOPIC`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// "I am here": sent every `membership::announce_every(members)`.
    Announce(Announcement),
    /// "This member is gone": its connection to the sender dropped and a
    /// redial failed (see `membership`).
    Gone(Gone),
    /// "Drop this, everyone."
    Invalidate(Invalidation),
    /// "I applied invalidation `id` of `origin`." Acks go to the origin
    /// directly (`wire::Request::Ack`); this is the fallback when that
    /// send fails, and what nodes of the previous version publish.
    Ack(Ack),
}

/// A member's periodic announcement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    /// Where it can be dialled.
    pub addrs: Vec<String>,
    /// When this run of the node started (Unix ms): with `seq`, orders a
    /// member's announcements across restarts.
    pub started_unix_ms: u64,
    /// Counts up from 0 within one run.
    pub seq: u64,
    /// The invalidation epoch it has applied.
    pub epoch: u64,
    /// The ids of the invalidations it applied at `epoch` (at most
    /// `invalidation::ANNOUNCED_IDS`; absent: unknown).
    #[serde(default)]
    pub epoch_ids: Vec<u64>,
    /// Its counters, for fleet stats.
    pub counters: Counters,
    /// It is shutting down: drop it from the view now.
    #[serde(default)]
    pub leaving: bool,
    /// It has just joined and its view is not settled yet: a member, but
    /// no key's owner (see `membership::SETTLE_AFTER_CONNECT`).
    #[serde(default)]
    pub joining: bool,
    /// Its announcement period (ms): silent for `MISSED_ANNOUNCEMENTS` of
    /// them, it leaves the views. 0 (absent): the base period.
    #[serde(default)]
    pub every_ms: u64,
}

/// A member a neighbour found gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gone {
    /// Its Peer ID (text).
    pub peer: String,
    /// The newest announcement of it the sender had heard: a member that
    /// announced since is not gone.
    pub started_unix_ms: u64,
    /// (with `started_unix_ms`)
    pub seq: u64,
}

/// A member's counters, as `gh_get_cache_stats` shows them: the same
/// record `/ghcache/entry/1` answers a `Stats` request with.
pub type Counters = wire::StatsReply;

/// A fleet-wide invalidation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Invalidation {
    /// Random, chosen by the origin; acks name it.
    pub id: u64,
    /// The origin's epoch after this invalidation.
    pub epoch: u64,
    /// What to drop.
    pub what: What,
    /// When the origin published it (Unix ms, its clock): members log how
    /// long it took to reach them (`fleet invalidation applied`,
    /// `delay_ms`), meaningful where the clocks agree (one machine).
    #[serde(default)]
    pub sent_unix_ms: u64,
}

/// [`Invalidate`] on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum What {
    /// Everything.
    All,
    /// Every key starting with this.
    Prefix(String),
    /// Every key of repository `owner/name`.
    Repository(String),
    /// Every key reading one of these paths (or a path under a `tree`).
    Paths(Vec<PathScope>),
}

impl From<&Invalidate> for What {
    fn from(i: &Invalidate) -> What {
        match i {
            Invalidate::All => What::All,
            Invalidate::Prefix(p) => What::Prefix(p.clone()),
            Invalidate::Repository(r) => What::Repository(r.clone()),
            Invalidate::Paths(p) => What::Paths(p.clone()),
        }
    }
}

impl From<&What> for Invalidate {
    fn from(w: &What) -> Invalidate {
        match w {
            What::All => Invalidate::All,
            What::Prefix(p) => Invalidate::Prefix(p.clone()),
            What::Repository(r) => Invalidate::Repository(r.clone()),
            What::Paths(p) => Invalidate::Paths(p.clone()),
        }
    }
}

/// An acknowledgement of an invalidation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The invalidation's id.
    pub id: u64,
    /// The Peer ID (text) of the invalidation's origin.
    pub origin: String,
    /// The acknowledging member's epoch after applying it.
    pub epoch: u64,
}

/// Encodes a message (JSON).
pub fn encode(m: &Message) -> Vec<u8> {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_vec(m).unwrap_or_default()
}

/// Decodes and checks a message from the topic (see the module docs).
pub fn decode(bytes: &[u8]) -> Result<Message, String> {
    if bytes.len() > MAX_MESSAGE {
        return Err(format!("message of {} bytes (at most {MAX_MESSAGE})", bytes.len()));
    }
    let m: Message = serde_json::from_slice(bytes).map_err(|e| format!("bad fleet message: {e}"))?;
    match &m {
        Message::Announce(a) => {
            if a.addrs.len() > MAX_ADDRS {
                return Err(format!("{} addresses (at most {MAX_ADDRS})", a.addrs.len()));
            }
            let most_ids = super::invalidation::ANNOUNCED_IDS;
            if a.epoch_ids.len() > most_ids {
                return Err(format!("{} invalidation ids (at most {most_ids})", a.epoch_ids.len()));
            }
            for addr in &a.addrs {
                addr.parse::<Multiaddr>()
                    .map_err(|e| format!("bad address {addr:?}: {e}"))?;
            }
        }
        Message::Invalidate(i) => match &i.what {
            What::All => {}
            What::Prefix(p) if p.is_empty() || p.len() > wire::MAX_STRING => {
                return Err(format!("prefix of {} bytes (1 to {})", p.len(), wire::MAX_STRING))
            }
            What::Prefix(_) => {}
            What::Repository(r) => match r.split_once('/') {
                Some((o, n)) if crate::daemon::tools::name_ok(o) && crate::daemon::tools::name_ok(n) => {}
                _ => return Err(format!("repository must look like owner/name, got {r:?}")),
            },
            What::Paths(paths) => {
                if paths.is_empty() || paths.len() > MAX_PATHS {
                    return Err(format!("{} paths (1 to {MAX_PATHS})", paths.len()));
                }
                for scope in paths {
                    if scope.path.len() > wire::MAX_STRING || !scope.path.starts_with('/') {
                        return Err(format!("path {:?} is not an API path", scope.path));
                    }
                    crate::daemon::api_base::ApiPath::parse(&scope.path).map_err(|e| e.to_string())?;
                }
            }
        },
        Message::Ack(a) => {
            a.origin
                .parse::<PeerId>()
                .map_err(|e| format!("bad origin {:?}: {e}", a.origin))?;
        }
        Message::Gone(g) => {
            g.peer
                .parse::<PeerId>()
                .map_err(|e| format!("bad peer {:?}: {e}", g.peer))?;
        }
    }
    Ok(m)
}

/// The addresses of an announcement that parse (all of them, after
/// [`decode`]).
pub fn addrs_of(a: &Announcement) -> Vec<Multiaddr> {
    a.addrs.iter().filter_map(|s| s.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let msgs = [
            Message::Announce(Announcement {
                addrs: vec!["/ip4/127.0.0.1/tcp/9100".into()],
                started_unix_ms: 1,
                seq: 2,
                epoch: 3,
                epoch_ids: vec![7, 9],
                counters: Counters {
                    api_calls: 4,
                    ..Default::default()
                },
                leaving: false,
                joining: true,
                every_ms: 30_000,
            }),
            Message::Gone(Gone {
                peer: PeerId::random().to_string(),
                started_unix_ms: 1,
                seq: 7,
            }),
            Message::Invalidate(Invalidation {
                id: 9,
                epoch: 4,
                what: What::Repository("o/r".into()),
                sent_unix_ms: 1,
            }),
            Message::Invalidate(Invalidation {
                id: 10,
                epoch: 5,
                what: What::All,
                sent_unix_ms: 0,
            }),
            Message::Ack(Ack {
                id: 9,
                origin: PeerId::random().to_string(),
                epoch: 4,
            }),
        ];
        for m in msgs {
            assert_eq!(decode(&encode(&m)).unwrap(), m);
        }
    }

    #[test]
    fn out_of_bounds_fields_are_refused() {
        let bad = [
            r#"{"t":"invalidate","id":1,"epoch":1,"what":{"repository":"../etc"}}"#.to_string(),
            r#"{"t":"invalidate","id":1,"epoch":1,"what":{"prefix":""}}"#.to_string(),
            format!(
                r#"{{"t":"invalidate","id":1,"epoch":1,"what":{{"prefix":"{}"}}}}"#,
                "x".repeat(wire::MAX_STRING + 1)
            ),
            r#"{"t":"ack","id":1,"origin":"not a peer","epoch":1}"#.to_string(),
            r#"{"t":"gone","peer":"not a peer","started_unix_ms":1,"seq":1}"#.to_string(),
            r#"{"t":"announce","addrs":["nope"],"started_unix_ms":1,"seq":1,"epoch":1,"counters":{"lookups":0,"hits":0,"misses":0,"api_calls":0,"api_calls_saved":0,"peer_hits":0,"entries":0,"peers":0}}"#.to_string(),
            r#"{"t":"other"}"#.to_string(),
            "[]".to_string(),
        ];
        for b in bad {
            assert!(decode(b.as_bytes()).is_err(), "{b}");
        }
        let many = Announcement {
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into(); MAX_ADDRS + 1],
            started_unix_ms: 0,
            seq: 0,
            epoch: 0,
            epoch_ids: vec![],
            counters: Counters::default(),
            leaving: false,
            joining: false,
            every_ms: 0,
        };
        assert!(decode(&encode(&Message::Announce(many.clone()))).is_err());
        let many_ids = Announcement {
            addrs: vec![],
            epoch_ids: (0..=super::super::invalidation::ANNOUNCED_IDS as u64).collect(),
            ..many
        };
        assert!(decode(&encode(&Message::Announce(many_ids))).is_err());
        assert!(decode(&vec![b' '; MAX_MESSAGE + 1]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(&bytes);
        }
    }
}
