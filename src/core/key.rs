//! Canonical cache keys for GitHub reads.
//!
//! A key names one GitHub read: an [`Operation`] plus its parameters. Its
//! text form is
//!
//! ```text
//! <operation>:<name>=<value>&<name>=<value>...
//! ```
//!
//! with parameters sorted by name, absent (`None`) parameters left out, and
//! `%`, `&` and `=` in values percent-encoded, so two requests that mean the
//! same read always get the same key and no two different reads share one:
//! `runners:repo=o/r`, `issues:limit=30&repo=o/r&state=open`, `auth_status:`.
//! Every key of one operation starts with `<operation>:`, which is what
//! prefix invalidation (`runners:`) relies on.
//!
//! The key carries its hash, computed once, so shard selection and map probes
//! never rehash the text.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sync::StdArc;

/// The kinds of GitHub read the cache knows, each with a default TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Self-hosted runners of a repository or organisation.
    Runners,
    /// A page of workflow runs.
    WorkflowRuns,
    /// One workflow run.
    WorkflowRun,
    /// A list of repositories.
    Repos,
    /// One repository.
    Repo,
    /// A list of issues.
    Issues,
    /// A list of pull requests.
    PullRequests,
    /// Who the token belongs to.
    AuthStatus,
    /// The rate-limit status (free to read upstream).
    RateLimit,
    /// Any other GET, keyed by path and query.
    Api,
}

impl Operation {
    /// Every operation, in key order.
    pub const ALL: [Operation; 10] = [
        Operation::Runners,
        Operation::WorkflowRuns,
        Operation::WorkflowRun,
        Operation::Repos,
        Operation::Repo,
        Operation::Issues,
        Operation::PullRequests,
        Operation::AuthStatus,
        Operation::RateLimit,
        Operation::Api,
    ];

    /// The name used in keys, e.g. `workflow_runs`.
    pub const fn name(self) -> &'static str {
        match self {
            Operation::Runners => "runners",
            Operation::WorkflowRuns => "workflow_runs",
            Operation::WorkflowRun => "workflow_run",
            Operation::Repos => "repos",
            Operation::Repo => "repo",
            Operation::Issues => "issues",
            Operation::PullRequests => "pull_requests",
            Operation::AuthStatus => "auth_status",
            Operation::RateLimit => "rate_limit",
            Operation::Api => "api",
        }
    }

    /// The operation whose [`name`](Self::name) is `name`.
    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }

    /// How long an answer stays fresh unless configured otherwise:
    /// runners 30 s, workflow runs 60 s, repositories, issues and pull
    /// requests 300 s, auth status 30 s, rate limit 5 s, other GETs 60 s.
    pub const fn default_ttl(self) -> Duration {
        Duration::from_secs(match self {
            Operation::Runners | Operation::AuthStatus => 30,
            Operation::WorkflowRuns | Operation::WorkflowRun | Operation::Api => 60,
            Operation::Repos | Operation::Repo | Operation::Issues | Operation::PullRequests => 300,
            Operation::RateLimit => 5,
        })
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a text is not a canonical key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyError(String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid cache key: {}", self.0)
    }
}

impl std::error::Error for KeyError {}

/// A canonical key for one GitHub read (see the module docs for the form).
///
/// Cheap to clone (a reference count) and compared by text.
#[derive(Clone)]
pub struct CacheKey {
    hash: u64,
    op: Operation,
    text: StdArc<str>,
}

impl CacheKey {
    /// The key for `op` with `params`; `None` values are left out and a
    /// repeated name keeps its last value.
    pub fn new<'a, V, I>(op: Operation, params: I) -> CacheKey
    where
        V: AsRef<str> + 'a,
        I: IntoIterator<Item = (&'a str, Option<V>)>,
    {
        let mut sorted = BTreeMap::new();
        for (name, value) in params {
            if let Some(value) = value {
                sorted.insert(name, value);
            }
        }
        let escaped_len: usize = sorted.iter().map(|(n, v)| n.len() + v.as_ref().len() + 2).sum();
        let mut text = String::with_capacity(op.name().len() + 1 + escaped_len);
        text.push_str(op.name());
        text.push(':');
        for (i, (name, value)) in sorted.iter().enumerate() {
            if i > 0 {
                text.push('&');
            }
            escape_into(&mut text, name);
            text.push('=');
            escape_into(&mut text, value.as_ref());
        }
        CacheKey::from_canonical(op, text)
    }

    /// Parses the text form, accepting only canonical keys (what
    /// [`CacheKey::new`] would produce). For keys that arrive from outside,
    /// such as from a peer.
    pub fn parse(text: &str) -> Result<CacheKey, KeyError> {
        let (op_name, query) = text
            .split_once(':')
            .ok_or_else(|| KeyError(format!("{text:?} has no ':'")))?;
        let op = Operation::from_name(op_name).ok_or_else(|| KeyError(format!("unknown operation {op_name:?}")))?;
        let mut params = Vec::new();
        if !query.is_empty() {
            for pair in query.split('&') {
                let (name, value) = pair
                    .split_once('=')
                    .ok_or_else(|| KeyError(format!("parameter {pair:?} has no '='")))?;
                params.push((unescape(name)?, unescape(value)?));
            }
        }
        let key = CacheKey::new(op, params.iter().map(|(n, v)| (n.as_str(), Some(v))));
        if key.as_str() != text {
            return Err(KeyError(format!(
                "{text:?} is not canonical (expected {:?})",
                key.as_str()
            )));
        }
        Ok(key)
    }

    fn from_canonical(op: Operation, text: String) -> CacheKey {
        let hash = KEY_HASHER.hash_one(text.as_bytes());
        CacheKey {
            hash,
            op,
            text: StdArc::from(text),
        }
    }

    /// The operation this key reads.
    pub fn operation(&self) -> Operation {
        self.op
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Does the text start with `prefix`?
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.text.starts_with(prefix)
    }

    /// Does this key name repository `repo` (`owner/name`): a `repo`
    /// parameter equal to it, or a `path` parameter under `/repos/<repo>`?
    /// GitHub's names are case-insensitive, and so is this.
    pub fn names_repository(&self, repo: &str) -> bool {
        key_text_names_repository(&self.text, repo)
    }

    /// The precomputed hash (stable within a process).
    pub(crate) fn hash_value(&self) -> u64 {
        self.hash
    }
}

/// [`CacheKey::names_repository`] on a key's text (as the store keeps it).
pub fn key_text_names_repository(text: &str, repo: &str) -> bool {
    let text = text.to_ascii_lowercase();
    let repo = repo.to_ascii_lowercase();
    let param_start = |i: usize| i == 0 || matches!(text.as_bytes()[i - 1], b':' | b'&');
    let found = |needle: &str, ends: &[u8]| {
        text.match_indices(needle).any(|(i, _)| {
            let after = text.as_bytes().get(i + needle.len());
            param_start(i) && after.is_none_or(|b| ends.contains(b))
        })
    };
    found(&format!("repo={repo}"), b"&") || found(&format!("path=/repos/{repo}"), b"&/")
}

/// A fixed-seed hasher: keys hash the same in every cache of the process.
const KEY_HASHER: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x6768_6361_6368_6521);

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.text == other.text
    }
}

impl Eq for CacheKey {}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for CacheKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CacheKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({:?})", &*self.text)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for CacheKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for CacheKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        CacheKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A `BuildHasher` for maps keyed by [`CacheKey`]: it passes the precomputed
/// hash through instead of hashing again.
#[derive(Clone, Copy, Default)]
pub(crate) struct PrehashedKey;

impl BuildHasher for PrehashedKey {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

/// See [`PrehashedKey`].
#[derive(Default)]
pub(crate) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is expected; fold anything else in deterministically.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn escape_into(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(at) = rest.find(['%', '&', '=']) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'%' => "%25",
            b'&' => "%26",
            _ => "%3D",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

fn unescape(text: &str) -> Result<String, KeyError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let code = rest.get(pos + 1..pos + 3);
        out.push(match code {
            Some("25") => '%',
            Some("26") => '&',
            Some("3D") => '=',
            _ => return Err(KeyError(format!("bad escape in {text:?}"))),
        });
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_sorted_and_none_is_dropped() {
        let a = CacheKey::new(
            Operation::Issues,
            [("state", Some("open")), ("repo", Some("o/r")), ("labels", None)],
        );
        let b = CacheKey::new(Operation::Issues, [("repo", Some("o/r")), ("state", Some("open"))]);
        assert_eq!(a.as_str(), "issues:repo=o/r&state=open");
        assert_eq!(a, b);
        assert_eq!(a.hash_value(), b.hash_value());
    }

    #[test]
    fn documented_examples() {
        assert_eq!(
            CacheKey::new(Operation::Runners, [("repo", Some("o/r"))]).as_str(),
            "runners:repo=o/r"
        );
        assert_eq!(
            CacheKey::new::<&str, _>(Operation::AuthStatus, []).as_str(),
            "auth_status:"
        );
    }

    #[test]
    fn separators_in_values_cannot_forge_another_key() {
        let k = |op, params: &[(&str, &str)]| CacheKey::new(op, params.iter().map(|(k, v)| (*k, Some(*v))));
        assert!(k(Operation::Repo, &[("repo", "O/R")]).names_repository("o/r"));
        assert!(k(Operation::Issues, &[("limit", "30"), ("path", "/repos/o/r/issues")]).names_repository("o/r"));
        assert!(k(Operation::Api, &[("path", "/repos/o/r")]).names_repository("o/r"));
        assert!(!k(Operation::Api, &[("path", "/repos/o/r2")]).names_repository("o/r"));
        assert!(!k(Operation::Repo, &[("repo", "o/r2")]).names_repository("o/r"));
        assert!(!k(Operation::Repo, &[("repo", "xo/r")]).names_repository("o/r"));
        assert!(!k(Operation::Api, &[("path", "/x/repos/o/r")]).names_repository("o/r"));
        let tricky = CacheKey::new(Operation::Api, [("path", Some("/a&q=b"))]);
        let honest = CacheKey::new(Operation::Api, [("path", Some("/a")), ("q", Some("b"))]);
        assert_ne!(tricky, honest);
        assert_eq!(tricky.as_str(), "api:path=/a%26q%3Db");
    }

    #[test]
    fn parse_round_trips_and_rejects_non_canonical_text() {
        for key in [
            CacheKey::new(Operation::Api, [("path", Some("/x%y&z=1")), ("a", Some(""))]),
            CacheKey::new::<&str, _>(Operation::RateLimit, []),
            CacheKey::new(Operation::Runners, [("org", Some("acme"))]),
        ] {
            assert_eq!(CacheKey::parse(key.as_str()), Ok(key.clone()));
        }
        for bad in [
            "",
            "runners",
            "nope:x=1",
            "issues:state=open&repo=o/r",
            "api:path",
            "api:p=%4",
            "api:p=%41",
        ] {
            assert!(CacheKey::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_operation_name_round_trips_and_prefixes_its_keys() {
        for op in Operation::ALL {
            assert_eq!(Operation::from_name(op.name()), Some(op));
            let key = CacheKey::new(op, [("x", Some("1"))]);
            assert!(key.has_prefix(&format!("{}:", op.name())));
            assert_eq!(key.operation(), op);
            assert!(op.default_ttl() > Duration::ZERO);
        }
    }

    #[test]
    fn default_ttls_match_the_specification() {
        assert_eq!(Operation::Runners.default_ttl(), Duration::from_secs(30));
        assert_eq!(Operation::WorkflowRuns.default_ttl(), Duration::from_secs(60));
        assert_eq!(Operation::Repo.default_ttl(), Duration::from_secs(300));
        assert_eq!(Operation::Issues.default_ttl(), Duration::from_secs(300));
        assert_eq!(Operation::PullRequests.default_ttl(), Duration::from_secs(300));
        assert_eq!(Operation::AuthStatus.default_ttl(), Duration::from_secs(30));
    }
}
