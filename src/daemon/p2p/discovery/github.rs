//! The GitHub registry: `--discovery-github OWNER/REPO`.
//!
//! Each node keeps one repository Actions variable,
//! `GHCACHE_PEER_<32 hex digits of sha256(peer id)>`, whose value is
//! `{"peer": ID, "addrs": [multiaddr, …]}` (what it listens on, loopback
//! last), and reads the others' to dial them. Why variables: a small
//! key-value store with server-side `updated_at` (so age is GitHub's clock,
//! not ours), create / update / delete by name, no notifications and
//! nothing shown in issues or gists, and the same token every member
//! already has (it needs the repository's *Variables: write*
//! permission, or `repo` scope for a classic token).
//!
//! - **Write**: `PATCH /repos/{o}/{r}/actions/variables/{name}` (204); on
//!   404, `POST /repos/{o}/{r}/actions/variables` (201; a 409 from a race
//!   with ourselves is followed by the PATCH again). At start, then every
//!   [`REFRESH_EVERY`].
//! - **Read**: `GET /repos/{o}/{r}/actions/variables?per_page=30&page=N`
//!   (30 is that endpoint's largest page), each page with the ETag it last
//!   had (`If-None-Match`): an unchanged page is a 304, which does not
//!   count against the rate limit. Only while the node is short of members
//!   (`super::Pace`): a node in the fleet learns of the others by gossip.
//! - **Age**: an entry whose `updated_at` is older than [`ENTRY_TTL`] by the
//!   response's `Date` is stale and never dialled; one older than
//!   [`PRUNE_AFTER`] is deleted (`DELETE …/variables/{name}`, 204; at most
//!   [`PRUNE_PER_READ`] per read) so ephemeral nodes do not fill the
//!   repository's 500 variables.
//! - **Leave**: when the node stops (its event loop ends), its own entry
//!   is deleted (`DELETE`, at most [`UNREGISTER_TIMEOUT`]; the host's stop
//!   waits for it within its own bound), so the others stop dialling it at
//!   once rather than for up to [`ENTRY_TTL`]. A node killed, or a delete
//!   that fails, leaves the entry to age out.
//!
//! Cost per node, on the token's 5,000 requests an hour (the fleet shares
//! it): 6 writes an hour; reads only while short of members (at start,
//! then 1 s doubling to 30 s, at most 120 an hour, mostly 304s, which are
//! free). A fleet of 100 settled nodes: about 600 requests an hour.
//!
//! Invariants: every URL is built by [`ApiBase::url_for`] from a checked
//! [`ApiPath`] (a variable name GitHub lists cannot move a `DELETE` off
//! the variables endpoint), and redirects are not followed, so the token
//! reaches the configured API root only; the token goes into the `Authorization` header only; a
//! failed write or read is logged and retried, never fatal; entries are
//! checked (the value parses, the peer ID is the one the name hashes, the
//! addresses parse) before anything is dialled.

use std::collections::HashMap;

use crate::daemon::api_base::{ApiBase, ApiPath};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::{Pace, RETRY_MAX};
use crate::daemon::p2p::client::Client;
use crate::daemon::p2p::event_loop::{is_loopback, is_unspecified};

/// How long an entry counts as live after its last write.
pub const ENTRY_TTL: Duration = Duration::from_secs(30 * 60);
/// How often a node rewrites its entry (a third of the TTL: two missed
/// writes still leave it live).
pub const REFRESH_EVERY: Duration = Duration::from_secs(10 * 60);
/// An entry this old is deleted by whichever node reads it.
pub const PRUNE_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Most stale entries one read deletes.
pub const PRUNE_PER_READ: usize = 3;
/// The prefix of every entry's variable name.
pub const NAME_PREFIX: &str = "GHCACHE_PEER_";
/// The list endpoint's largest page.
const PER_PAGE: usize = 30;
/// Pages read at most (a repository holds at most 500 variables).
const MAX_PAGES: usize = 17;
/// Addresses kept per entry.
const MAX_ADDRS: usize = 16;
/// How long a stopping node waits for the deletion of its entry.
pub const UNREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the registry lives and how to reach it.
#[derive(Clone)]
pub struct GithubRegistry {
    /// The GitHub API root.
    pub api_base: ApiBase,
    /// `owner/name`.
    pub repo: String,
    /// The token (none: the requests go out unauthenticated and fail).
    pub token: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl fmt::Debug for GithubRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubRegistry")
            .field("api_base", &self.api_base.as_str())
            .field("repo", &self.repo)
            .finish_non_exhaustive()
    }
}

/// The variable's value.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The node's Peer ID.
    pub peer: String,
    /// Where it listens.
    pub addrs: Vec<String>,
}

/// One variable as the list endpoint gives it.
#[derive(Deserialize, Clone, Debug)]
pub struct Variable {
    /// Its name (GitHub returns it upper-case).
    pub name: String,
    /// Its value.
    pub value: String,
    /// When it was last written (RFC 3339, GitHub's clock).
    pub updated_at: String,
}

#[derive(Deserialize)]
struct VariableList {
    total_count: usize,
    variables: Vec<Variable>,
}

/// The URL of `repo`'s Actions variables, or of one `variable` among
/// them, under `base` (checked: see the module's invariants).
pub fn variables_url(
    base: &ApiBase,
    repo: &str,
    variable: Option<&str>,
    query: &[(String, String)],
) -> Result<reqwest::Url, String> {
    let mut path = format!("/repos/{repo}/actions/variables");
    if let Some(name) = variable {
        path.push('/');
        path.push_str(name);
    }
    let path = ApiPath::parse(&path).map_err(|e| e.to_string())?;
    base.url_for(&path, query).map_err(|e| e.to_string())
}

/// The variable name of `peer`'s entry.
pub fn entry_name(peer: &PeerId) -> String {
    let digest = sha2::Sha256::digest(peer.to_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02X}")).collect();
    format!("{NAME_PREFIX}{hex}")
}

/// What a read found: the live entries' dial addresses (with `/p2p/ID`),
/// and the names of entries old enough to delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Live peers other than `local`, each with its addresses.
    pub live: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Entries past [`PRUNE_AFTER`].
    pub prune: Vec<String>,
}

/// Sorts the listed variables at server time `now` (Unix seconds): live
/// entries of other peers, stale ones ignored, very old ones to prune.
/// Variables that are not entries (another prefix) are left alone; entries
/// that do not check out (bad JSON, a peer ID that is not the one the name
/// hashes, no parseable address) are ignored.
pub fn sort_entries(vars: &[Variable], now: u64, local: &PeerId) -> Found {
    let mut found = Found::default();
    for var in vars {
        if !var.name.to_ascii_uppercase().starts_with(NAME_PREFIX) {
            continue;
        }
        let Some(updated) = parse_rfc3339(&var.updated_at) else {
            continue;
        };
        let age = now.saturating_sub(updated);
        if age > PRUNE_AFTER.as_secs() {
            found.prune.push(var.name.clone());
            continue;
        }
        if age > ENTRY_TTL.as_secs() {
            continue;
        }
        let Ok(entry) = serde_json::from_str::<Entry>(&var.value) else {
            continue;
        };
        let Ok(peer) = entry.peer.parse::<PeerId>() else {
            continue;
        };
        if peer == *local || !entry_name(&peer).eq_ignore_ascii_case(&var.name) {
            continue;
        }
        let addrs: Vec<Multiaddr> = entry
            .addrs
            .iter()
            .take(MAX_ADDRS)
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .filter(|a| !a.iter().any(|p| matches!(p, Protocol::P2p(_))))
            .map(|a| a.with(Protocol::P2p(peer)))
            .collect();
        if !addrs.is_empty() {
            found.live.push((peer, addrs));
        }
    }
    found
}

/// `YYYY-MM-DDTHH:MM:SSZ` (fractional seconds and an offset of `Z` or
/// `+00:00` accepted) as Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    if !matches!(rest, "Z" | "z" | "+00:00")
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), March-based.
    let (y, m) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

/// The registry client: one node's entry, and the pages it last read.
struct Registry {
    http: reqwest::Client,
    config: GithubRegistry,
    /// This node's variable name.
    name: String,
    /// Page number → (ETag, variables) as last read.
    pages: HashMap<usize, (String, Vec<Variable>)>,
    /// A write of this node's entry was sent (so there may be one to
    /// delete).
    written: bool,
}

/// Keeps this node's entry fresh and, while the node is short of members,
/// reads the others' and dials them; once the event loop ends, deletes the
/// entry.
pub(in crate::daemon::p2p) async fn run(config: GithubRegistry, client: Client) {
    let local = client.local_peer_id();
    let http = match reqwest::Client::builder()
        .user_agent(concat!("ghcache/", env!("CARGO_PKG_VERSION")))
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("GitHub registry off: cannot build its client: {e}");
            return;
        }
    };
    // What this node listens on, once the listener reported it.
    let _ = client.listening(Duration::from_secs(10)).await;
    let mut registry = Registry {
        http,
        name: entry_name(&local),
        config,
        pages: HashMap::new(),
        written: false,
    };
    tracing::info!(repo = %registry.config.repo, variable = %registry.name, "GitHub registry: announcing this node");
    // A request in flight when the node stops is dropped: the entry is
    // deleted now, not after it.
    tokio::select! {
        _ = registry.keep(&client) => {}
        _ = client.stopped() => {}
    }
    if registry.written {
        registry.unregister().await;
    }
}

impl Registry {
    /// Writes this node's entry every [`REFRESH_EVERY`], reads the others'
    /// while short of members, until the event loop ends.
    async fn keep(&mut self, client: &Client) {
        let local = client.local_peer_id();
        let mut next_write = tokio::time::Instant::now();
        let mut pace = Pace::new();
        let mut listed_others = 0;
        let mut read_due = true;
        loop {
            if tokio::time::Instant::now() >= next_write {
                let entry = own_entry(client);
                self.written = true;
                match self.write(&entry).await {
                    Ok(()) => next_write = tokio::time::Instant::now() + REFRESH_EVERY,
                    Err(e) => {
                        tracing::warn!(
                            "GitHub registry: cannot write this node's entry ({e}); retrying in {} s",
                            RETRY_MAX.as_secs()
                        );
                        next_write = tokio::time::Instant::now() + RETRY_MAX;
                    }
                }
            }
            if read_due {
                match self.read(&local).await {
                    Ok(found) => {
                        listed_others = found.live.len();
                        tracing::debug!(live = listed_others, prune = found.prune.len(), "GitHub registry read");
                        self.prune(&found.prune).await;
                        client.dial(found.live.into_iter().flat_map(|(_, a)| a).collect()).await;
                    }
                    Err(e) => {
                        listed_others = 0;
                        tracing::warn!(
                            "GitHub registry: cannot read {} ({e}); retrying in {} s",
                            self.config.repo,
                            pace.next_wait().as_secs()
                        );
                    }
                }
            }
            tokio::select! {
                due = pace.until_due(client, listed_others) => {
                    if !due {
                        return;
                    }
                    read_due = true;
                }
                _ = tokio::time::sleep_until(next_write) => read_due = false,
            }
        }
    }
}

/// This node's entry: what it listens on (unspecified addresses left out,
/// loopback last).
fn own_entry(client: &Client) -> Entry {
    let mut addrs: Vec<Multiaddr> = client
        .listen_addrs()
        .iter()
        .filter(|a| !is_unspecified(a))
        .cloned()
        .collect();
    addrs.sort_by_key(is_loopback);
    Entry {
        peer: client.local_peer_id().to_string(),
        addrs: addrs.iter().take(MAX_ADDRS).map(|a| a.to_string()).collect(),
    }
}

impl Registry {
    fn url(&self, variable: Option<&str>, query: &[(String, String)]) -> Result<reqwest::Url, String> {
        variables_url(&self.config.api_base, &self.config.repo, variable, query)
    }

    fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, url)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        match &self.config.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Updates this node's variable, creating it when absent.
    async fn write(&self, entry: &Entry) -> Result<(), String> {
        let body = serde_json::json!({"name": self.name, "value": serde_json::to_string(entry).unwrap_or_default()})
            .to_string();
        for _ in 0..2 {
            let patch = self.request(reqwest::Method::PATCH, self.url(Some(&self.name), &[])?);
            let status = send(patch.header("content-type", "application/json").body(body.clone()))
                .await?
                .status();
            match status.as_u16() {
                204 | 200 => return Ok(()),
                404 => {}
                s => return Err(format!("PATCH answered {s}")),
            }
            let post = self.request(reqwest::Method::POST, self.url(None, &[])?);
            match send(post.header("content-type", "application/json").body(body.clone()))
                .await?
                .status()
                .as_u16()
            {
                201 | 200 | 204 => return Ok(()),
                // Created meanwhile (a restart racing its previous run):
                // update it.
                409 => continue,
                s => return Err(format!("POST answered {s}")),
            }
        }
        Err("the variable is created and gone again".into())
    }

    /// Reads every page (conditionally) and sorts the entries at GitHub's
    /// time (the first page's `Date`).
    async fn read(&mut self, local: &PeerId) -> Result<Found, String> {
        let mut vars = Vec::new();
        let mut now = None;
        for page in 1..=MAX_PAGES {
            let mut request = self.request(
                reqwest::Method::GET,
                self.url(
                    None,
                    &[
                        ("per_page".into(), PER_PAGE.to_string()),
                        ("page".into(), page.to_string()),
                    ],
                )?,
            );
            if let Some((etag, _)) = self.pages.get(&page) {
                request = request.header("if-none-match", etag.as_str());
            }
            let response = send(request).await?;
            if now.is_none() {
                now = response
                    .headers()
                    .get("date")
                    .and_then(|d| d.to_str().ok())
                    .and_then(|d| httpdate::parse_http_date(d).ok());
            }
            let listed = match response.status().as_u16() {
                304 => self.pages.get(&page).map(|(_, v)| v.clone()).unwrap_or_default(),
                200 => {
                    let etag = response
                        .headers()
                        .get("etag")
                        .and_then(|e| e.to_str().ok())
                        .map(String::from);
                    let bytes = response.bytes().await.map_err(|e| format!("reading the list: {e}"))?;
                    let list: VariableList =
                        serde_json::from_slice(&bytes).map_err(|e| format!("unexpected list: {e}"))?;
                    let total = list.total_count;
                    match etag {
                        Some(etag) => self.pages.insert(page, (etag, list.variables.clone())),
                        None => self.pages.remove(&page),
                    };
                    if page * PER_PAGE >= total {
                        vars.extend(list.variables);
                        break;
                    }
                    list.variables
                }
                s => return Err(format!("GET answered {s}")),
            };
            let last = listed.len() < PER_PAGE;
            vars.extend(listed);
            if last {
                break;
            }
        }
        let now = now.unwrap_or_else(SystemTime::now);
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(sort_entries(&vars, now, local))
    }

    /// Deletes this node's own entry (it stops), waiting at most
    /// [`UNREGISTER_TIMEOUT`]; a failure leaves it to age out.
    async fn unregister(&self) {
        let request = match self.url(Some(&self.name), &[]) {
            Ok(url) => self.request(reqwest::Method::DELETE, url).timeout(UNREGISTER_TIMEOUT),
            Err(e) => {
                tracing::warn!(error = %e, "GitHub registry: this node's entry not deleted");
                return;
            }
        };
        match send(request).await.map(|r| r.status().as_u16()) {
            Ok(204 | 404) => tracing::info!(variable = %self.name, "GitHub registry: this node's entry deleted"),
            Ok(s) => tracing::warn!(
                variable = %self.name,
                status = s,
                "GitHub registry: this node's entry not deleted; it ages out"
            ),
            Err(e) => tracing::warn!(
                variable = %self.name,
                error = %e,
                "GitHub registry: this node's entry not deleted; it ages out"
            ),
        }
    }

    /// Deletes entries past [`PRUNE_AFTER`] (at most [`PRUNE_PER_READ`]);
    /// a failure is left for a later read.
    async fn prune(&mut self, names: &[String]) {
        for name in names.iter().take(PRUNE_PER_READ) {
            let request = match self.url(Some(name), &[]) {
                Ok(url) => self.request(reqwest::Method::DELETE, url),
                Err(e) => {
                    tracing::warn!(variable = %name, error = %e, "GitHub registry: a listed name that is no variable path; not deleted");
                    continue;
                }
            };
            match send(request).await.map(|r| r.status().as_u16()) {
                Ok(204 | 404) => tracing::info!(variable = %name, "GitHub registry: deleted an entry silent for a day"),
                Ok(s) => tracing::debug!(variable = %name, status = s, "GitHub registry: entry not deleted"),
                Err(e) => tracing::debug!(variable = %name, error = %e, "GitHub registry: entry not deleted"),
            }
        }
        if !names.is_empty() {
            // The pages changed: read them afresh next time.
            self.pages.clear();
        }
    }
}

async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
    request.send().await.map_err(|e| crate::daemon::p2p::error_chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519().public().to_peer_id()
    }

    fn var(peer: &PeerId, updated_at: &str) -> Variable {
        Variable {
            name: entry_name(peer),
            value: serde_json::to_string(&Entry {
                peer: peer.to_string(),
                addrs: vec!["/ip4/10.0.0.2/tcp/9100".into()],
            })
            .unwrap(),
            updated_at: updated_at.into(),
        }
    }

    #[test]
    fn rfc3339_is_unix_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2019-08-10T14:59:22Z"), Some(1_565_449_162));
        assert_eq!(parse_rfc3339("2000-02-29T12:00:00.123Z"), Some(951_825_600));
        assert_eq!(parse_rfc3339("2026-12-02T11:00:00+00:00"), Some(1_796_209_200));
        for bad in [
            "",
            "2019-08-10",
            "2019-13-10T14:59:22Z",
            "2019-08-10T14:59:22+02:00",
            "2019-08-10T25:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    /// A name GitHub lists goes into a `DELETE` path: one that would
    /// leave the variables endpoint is refused, never requested.
    #[test]
    fn variable_urls_stay_on_the_variables_endpoint() {
        let base = ApiBase::parse("https://api.github.com").unwrap();
        let url = variables_url(&base, "o/fleet", Some("GHCACHE_PEER_AB"), &[]).unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.github.com/repos/o/fleet/actions/variables/GHCACHE_PEER_AB"
        );
        let list = variables_url(&base, "o/fleet", None, &[("page".into(), "2".into())]).unwrap();
        assert_eq!(
            list.as_str(),
            "https://api.github.com/repos/o/fleet/actions/variables?page=2"
        );
        for hostile in [
            "GHCACHE_PEER_/../../../../../repos/o/r",
            "GHCACHE_PEER_%2e%2e/x",
            "GHCACHE_PEER_\\..\\x",
            "GHCACHE_PEER_?x=1",
            "GHCACHE_PEER_#x",
        ] {
            assert!(
                variables_url(&base, "o/fleet", Some(hostile), &[]).is_err(),
                "{hostile}"
            );
        }
    }

    #[test]
    fn names_are_upper_case_and_per_peer() {
        let (a, b) = (peer(), peer());
        let name = entry_name(&a);
        assert!(
            name.starts_with(NAME_PREFIX) && name.len() == NAME_PREFIX.len() + 32,
            "{name}"
        );
        assert_eq!(name, name.to_ascii_uppercase());
        assert_ne!(name, entry_name(&b));
    }

    #[test]
    fn live_stale_and_old_entries() {
        let now = parse_rfc3339("2026-12-02T12:00:00Z").unwrap();
        let (local, fresh, stale, old) = (peer(), peer(), peer(), peer());
        let vars = vec![
            var(&local, "2026-12-02T11:59:00Z"),
            var(&fresh, "2026-12-02T11:35:00Z"),
            var(&stale, "2026-12-02T11:25:00Z"),
            var(&old, "2026-11-30T11:00:00Z"),
            Variable {
                name: "OTHER".into(),
                value: "x".into(),
                updated_at: "2020-01-01T00:00:00Z".into(),
            },
        ];
        let found = sort_entries(&vars, now, &local);
        let fresh_addr: Multiaddr = format!("/ip4/10.0.0.2/tcp/9100/p2p/{fresh}").parse().unwrap();
        assert_eq!(found.live, vec![(fresh, vec![fresh_addr])]);
        assert_eq!(
            found.prune,
            vec![entry_name(&old)],
            "another prefix is not ours to delete"
        );
    }

    #[test]
    fn entries_that_do_not_check_out_are_ignored() {
        let now = parse_rfc3339("2026-12-02T12:00:00Z").unwrap();
        let (a, b) = (peer(), peer());
        let mut wrong_name = var(&a, "2026-12-02T11:59:00Z");
        wrong_name.name = entry_name(&b);
        let mut bad_json = var(&a, "2026-12-02T11:59:00Z");
        bad_json.value = "{".into();
        let mut bad_addrs = var(&a, "2026-12-02T11:59:00Z");
        bad_addrs.value = serde_json::json!({"peer": a.to_string(), "addrs": ["nope"]}).to_string();
        let found = sort_entries(&[wrong_name, bad_json, bad_addrs], now, &peer());
        assert_eq!(found, Found::default());
    }
}
