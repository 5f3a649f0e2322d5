//! The daemon's settings: flags, a TOML file with the same keys, and the
//! environment for secrets.
//!
//! This file reads values (`Config::set`, one arm per key, for the file and
//! the flags alike); `daemon::flags` declares the flags for clap.
//!
//! Precedence: built-in defaults < `--config FILE` < flags < environment
//! (secrets only: `GITHUB_TOKEN` / `GH_TOKEN`, `GHCACHE_MCP_TOKEN`,
//! `GHCACHE_WEBHOOK_SECRET`). Every
//! problem becomes one [`ConfigError`] line naming the key; `main` prints it
//! and exits with code 2.
//!
//! Keys (flag `--foo-bar` is key `foo_bar`):
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `listen` | `127.0.0.1:9000` | HTTP address |
//! | `data_dir` | `$STATE_DIRECTORY`, `$XDG_STATE_HOME/ghcache`, `~/.local/state/ghcache` | where the store lives |
//! | `github_api_url` | `https://api.github.com` | GitHub (Enterprise: `https://HOST/api/v3`) |
//! | `mcp_token` | none | bearer token required on `/mcp` and `/jsonrpc` |
//! | `p2p` | `true` (`--no-p2p` sets false) | run the P2P node (needs a swarm key or a GitHub token) |
//! | `p2p_listen` | `/ip4/0.0.0.0/tcp/9100` | P2P listen multiaddr |
//! | `bootstrap` | `[]` | peers to dial (flag repeatable; TOML list), e.g. `/ip4/10.0.0.2/tcp/9100` |
//! | `mdns` | `false` | find peers on the LAN with mDNS |
//! | `bootstrap_dns` | `[]` | DNS seeds `NAME[:PORT]` (flag repeatable or comma-separated; TOML list): A/AAAA records dialled at PORT (else this node's P2P port), TXT records holding multiaddrs |
//! | `discovery_github` | none | `owner/name`: announce this node in, and find peers through, that repository's Actions variables (needs *Variables: write*; docs/p2p.md) |
//! | `max_peer_connections` | 32 | most established P2P connections (owners are dialled on demand; idle ones close) |
//! | `swarm_key_file` | none | swarm key file (`/key/swarm/psk/1.0.0/`); env `GHCACHE_SWARM_KEY` holds the key itself; neither: derived from the GitHub token |
//! | `webhook_secret_file` | none | file holding the GitHub webhook secret; turns `POST /webhook` on (env `GHCACHE_WEBHOOK_SECRET` holds the secret itself; see docs/webhooks.md) |
//! | `ready_file` | none | once listening, write the bound addresses here as JSON (see `daemon::ready`) |
//! | `log_json` | `false` | JSON log lines |
//! | `store` | `true` | persist entries under `data_dir` |
//! | `max_concurrent_upstream` | 25 | GitHub requests at once |
//! | `upstream_timeout_ms` | 10000 | per request |
//! | `upstream_retries` | 3 | extra attempts after a 5xx or timeout |
//! | `retry_base_ms` | 250 | first backoff (doubles, jittered) |
//! | `max_body_bytes` | 1048576 | request body limit on `/mcp` and `/jsonrpc` |
//! | `max_upstream_body_bytes` | 33554432 (32 MiB) | largest GitHub answer read; a larger one is an error, never buffered |
//! | `allowed_origins` | `[]` | browser origins allowed besides localhost ones |
//! | `max_entries` / `max_bytes` | 10000 / 256 MiB | cache bounds (the store keeps at most `max_entries`) |
//! | `stale_grace_secs` | 86400 | how long past its TTL an entry may be revalidated or served stale |
//! | `ttl_secs.<operation>` | see `Operation::default_ttl` | e.g. `ttl_secs.runners = 10` |
//! | `dashboard_repos` | `[]` | repositories (`owner/name`, at most 20; flag: comma-separated) whose runners and latest workflow runs the dashboard at `GET /` shows |

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::{CacheConfig, Operation};

/// One bad setting: printed as a single line, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn bad(key: &str, why: impl fmt::Display) -> ConfigError {
    ConfigError(format!("invalid config key `{key}`: {why}"))
}

/// Where the GitHub token came from (never the token itself in logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `GITHUB_TOKEN`.
    GithubToken,
    /// `GH_TOKEN`.
    GhToken,
    /// `gh auth token`.
    GhCli,
    /// Set directly (tests).
    Explicit,
    /// None: unauthenticated (60 requests an hour).
    None,
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub Option<String>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Secret(***)"
        } else {
            "Secret(None)"
        })
    }
}

/// Everything the daemon needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Data directory (the store file lives here).
    pub data_dir: PathBuf,
    /// GitHub REST base URL, without a trailing slash.
    pub github_api_url: String,
    /// Bearer token required on the RPC endpoints, if set.
    pub mcp_token: Secret,
    /// The GitHub token.
    pub github_token: Secret,
    /// Where the GitHub token came from.
    pub token_source: TokenSource,
    /// P2P wanted.
    pub p2p: bool,
    /// P2P listen address.
    pub p2p_listen: libp2p::Multiaddr,
    /// Peers to dial.
    pub bootstrap: Vec<libp2p::Multiaddr>,
    /// mDNS discovery.
    pub mdns: bool,
    /// DNS seeds to resolve for peers.
    pub bootstrap_dns: Vec<crate::daemon::p2p::discovery::DnsSeed>,
    /// The repository whose Actions variables are the fleet's registry.
    pub discovery_github: Option<String>,
    /// Most established P2P connections.
    pub max_peer_connections: u32,
    /// Swarm key file.
    pub swarm_key_file: Option<PathBuf>,
    /// Swarm key text from `GHCACHE_SWARM_KEY`.
    pub swarm_key: Secret,
    /// Where to write the bound addresses once listening ([`super::ready`]).
    pub ready_file: Option<PathBuf>,
    /// JSON logs.
    pub log_json: bool,
    /// Persist entries.
    pub store: bool,
    /// Most GitHub requests in flight.
    pub max_concurrent_upstream: usize,
    /// Per-request timeout.
    pub upstream_timeout: Duration,
    /// Extra attempts after a 5xx or a timeout.
    pub upstream_retries: u32,
    /// First retry backoff.
    pub retry_base: Duration,
    /// Body limit on the RPC endpoints.
    pub max_body_bytes: usize,
    /// Largest upstream (GitHub) body read.
    pub max_upstream_body_bytes: usize,
    /// Extra allowed browser origins (exact `scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    /// Extra accepted `Host` names (`host` or `host:port`), beside the
    /// names of this machine when listening on loopback.
    pub allowed_hosts: Vec<String>,
    /// Where `mcp_token` is read from (a file; systemd credentials).
    pub mcp_token_file: Option<PathBuf>,
    /// Where the GitHub webhook secret is read from.
    pub webhook_secret_file: Option<PathBuf>,
    /// The GitHub webhook secret (`webhook_secret_file` or
    /// `GHCACHE_WEBHOOK_SECRET`); none: `POST /webhook` is off.
    pub webhook_secret: Secret,
    /// Start beyond loopback without `mcp_token` (an open proxy).
    pub allow_no_token: bool,
    /// `/metrics` requires the token too.
    pub metrics_require_token: bool,
    /// Connection, session, batch and upstream bounds of the HTTP surface.
    pub limits: HttpLimits,
    /// The cache's settings.
    pub cache: CacheConfig,
    /// Repositories whose runners and workflow runs the dashboard shows.
    pub dashboard_repos: Vec<String>,
}

/// The HTTP surface's bounds (each refusal is counted on `/metrics` as
/// `ghcache_http_refused_total{reason}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Open connections, all clients (`max_connections`).
    pub max_connections: usize,
    /// Open connections from one IP address (`max_connections_per_client`).
    pub max_connections_per_client: usize,
    /// A connection with no request in progress (still sending its headers,
    /// or idle between requests) is closed after this (`http_idle_timeout_ms`).
    pub idle_timeout: Duration,
    /// Most time to receive a request body (`http_body_timeout_ms`).
    pub body_timeout: Duration,
    /// Open MCP sessions, all clients (`max_mcp_sessions`).
    pub max_mcp_sessions: usize,
    /// Open MCP sessions of one IP address (`max_mcp_sessions_per_client`).
    pub max_mcp_sessions_per_client: usize,
    /// An MCP session unused this long is closed (`mcp_session_idle_secs`).
    pub mcp_session_idle: Duration,
    /// A session that made no request after `initialize` is closed after
    /// this (`mcp_session_init_secs`).
    pub mcp_session_init: Duration,
    /// Calls in one JSON-RPC batch (`max_batch`).
    pub max_batch: usize,
    /// GitHub requests one HTTP request may cause (`max_upstream_per_request`).
    pub max_upstream_per_request: u32,
    /// GitHub requests one client address may cause per minute, with the
    /// daemon's token (`client_upstream_per_minute`).
    pub client_upstream_per_minute: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 1024,
            max_connections_per_client: 256,
            idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_mcp_sessions: 1000,
            max_mcp_sessions_per_client: 100,
            mcp_session_idle: Duration::from_secs(300),
            mcp_session_init: Duration::from_secs(30),
            max_batch: 100,
            max_upstream_per_request: 50,
            client_upstream_per_minute: 1200,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            data_dir: default_data_dir(),
            github_api_url: "https://api.github.com".into(),
            mcp_token: Secret(None),
            github_token: Secret(None),
            token_source: TokenSource::None,
            p2p: true,
            p2p_listen: "/ip4/0.0.0.0/tcp/9100".parse().expect("a valid multiaddr"),
            bootstrap: Vec::new(),
            mdns: false,
            bootstrap_dns: Vec::new(),
            discovery_github: None,
            max_peer_connections: 32,
            swarm_key_file: None,
            swarm_key: Secret(None),
            ready_file: None,
            log_json: false,
            store: true,
            max_concurrent_upstream: 25,
            upstream_timeout: Duration::from_secs(10),
            upstream_retries: 3,
            retry_base: Duration::from_millis(250),
            max_body_bytes: 1 << 20,
            max_upstream_body_bytes: 32 << 20,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            mcp_token_file: None,
            webhook_secret_file: None,
            webhook_secret: Secret(None),
            allow_no_token: false,
            metrics_require_token: false,
            limits: HttpLimits::default(),
            cache: CacheConfig::default(),
            dashboard_repos: Vec::new(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = env("STATE_DIRECTORY") {
        // systemd may pass several, colon-separated.
        let first = dir.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        return PathBuf::from(first);
    }
    if let Some(dir) = env("XDG_STATE_HOME") {
        return dir.join("ghcache");
    }
    if let Some(home) = env("HOME") {
        return home.join(".local/state/ghcache");
    }
    PathBuf::from("ghcache-data")
}

/// A value as it arrives: a flag's text or a TOML value.
enum Raw<'a> {
    Text(&'a str),
    Toml(&'a toml::Value),
}

impl Raw<'_> {
    fn string(&self, key: &str) -> Result<String, ConfigError> {
        match self {
            Raw::Text(s) => Ok(s.to_string()),
            Raw::Toml(toml::Value::String(s)) => Ok(s.clone()),
            Raw::Toml(v) => Err(bad(key, format!("expected a string, got {}", v.type_str()))),
        }
    }

    fn uint(&self, key: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
        let n = match self {
            Raw::Text(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| bad(key, format!("expected a whole number, got {s:?}")))?,
            Raw::Toml(toml::Value::Integer(i)) => {
                u64::try_from(*i).map_err(|_| bad(key, format!("expected a non-negative number, got {i}")))?
            }
            Raw::Toml(v) => return Err(bad(key, format!("expected a number, got {}", v.type_str()))),
        };
        if n < min || n > max {
            return Err(bad(key, format!("{n} is out of range {min}..={max}")));
        }
        Ok(n)
    }

    /// A list: comma-separated text, or a TOML array of strings.
    fn strings(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        match self {
            Raw::Text(s) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()),
            Raw::Toml(toml::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| bad(key, "expected a list of strings"))
                })
                .collect(),
            Raw::Toml(v) => Err(bad(key, format!("expected a list of strings, got {}", v.type_str()))),
        }
    }

    fn boolean(&self, key: &str) -> Result<bool, ConfigError> {
        match self {
            Raw::Text("true" | "1" | "yes") => Ok(true),
            Raw::Text("false" | "0" | "no") => Ok(false),
            Raw::Text(s) => Err(bad(key, format!("expected true or false, got {s:?}"))),
            Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
            Raw::Toml(v) => Err(bad(key, format!("expected true or false, got {}", v.type_str()))),
        }
    }
}

impl Config {
    fn set(&mut self, key: &str, raw: Raw<'_>) -> Result<(), ConfigError> {
        const MAX: u64 = u64::MAX >> 1;
        match key {
            "listen" => {
                let s = raw.string(key)?;
                self.listen = s
                    .parse()
                    .map_err(|_| bad(key, format!("expected an address like 127.0.0.1:9000, got {s:?}")))?;
            }
            "data_dir" => {
                let s = raw.string(key)?;
                if s.is_empty() {
                    return Err(bad(key, "must not be empty"));
                }
                self.data_dir = PathBuf::from(s);
            }
            "github_api_url" => {
                let s = raw.string(key)?;
                let base = super::api_base::ApiBase::parse(&s).map_err(|e| bad(key, e))?;
                self.github_api_url = base.as_str().to_string();
            }
            "mcp_token_file" => {
                let s = raw.string(key)?;
                if s.is_empty() {
                    return Err(bad(key, "must not be empty"));
                }
                self.mcp_token_file = Some(PathBuf::from(s));
            }
            "webhook_secret_file" => {
                let s = raw.string(key)?;
                if s.is_empty() {
                    return Err(bad(key, "must not be empty"));
                }
                self.webhook_secret_file = Some(PathBuf::from(s));
            }
            "allow_no_token" => self.allow_no_token = raw.boolean(key)?,
            "metrics_require_token" => self.metrics_require_token = raw.boolean(key)?,
            "allowed_hosts" => {
                let list = raw.strings(key)?;
                if let Some(h) = list.iter().find(|h| !valid_authority(h)) {
                    return Err(bad(key, format!("{h:?} is not a host or host:port")));
                }
                self.allowed_hosts = list.into_iter().map(|h| h.to_ascii_lowercase()).collect();
            }
            "max_connections" => self.limits.max_connections = raw.uint(key, 1, 1 << 20)? as usize,
            "max_connections_per_client" => {
                self.limits.max_connections_per_client = raw.uint(key, 1, 1 << 20)? as usize
            }
            "http_idle_timeout_ms" => self.limits.idle_timeout = Duration::from_millis(raw.uint(key, 100, 3_600_000)?),
            "http_body_timeout_ms" => self.limits.body_timeout = Duration::from_millis(raw.uint(key, 100, 3_600_000)?),
            "max_mcp_sessions" => self.limits.max_mcp_sessions = raw.uint(key, 1, 1 << 20)? as usize,
            "max_mcp_sessions_per_client" => {
                self.limits.max_mcp_sessions_per_client = raw.uint(key, 1, 1 << 20)? as usize
            }
            "mcp_session_idle_secs" => self.limits.mcp_session_idle = Duration::from_secs(raw.uint(key, 1, 86_400)?),
            "mcp_session_init_secs" => self.limits.mcp_session_init = Duration::from_secs(raw.uint(key, 1, 86_400)?),
            "max_batch" => self.limits.max_batch = raw.uint(key, 1, 100_000)? as usize,
            "max_upstream_per_request" => self.limits.max_upstream_per_request = raw.uint(key, 1, 100_000)? as u32,
            "client_upstream_per_minute" => {
                self.limits.client_upstream_per_minute = raw.uint(key, 1, 1_000_000)? as u32
            }
            "mcp_token" => {
                let s = raw.string(key)?;
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(bad(key, "must be non-empty visible ASCII"));
                }
                self.mcp_token = Secret(Some(s));
            }
            "p2p" => self.p2p = raw.boolean(key)?,
            "mdns" => self.mdns = raw.boolean(key)?,
            "max_peer_connections" => self.max_peer_connections = raw.uint(key, 2, 100_000)? as u32,
            "p2p_listen" => {
                let s = raw.string(key)?;
                self.p2p_listen = s.parse().map_err(|_| {
                    bad(
                        key,
                        format!("expected a multiaddr like /ip4/0.0.0.0/tcp/9100, got {s:?}"),
                    )
                })?;
            }
            "bootstrap" => {
                for s in raw.strings(key)? {
                    let addr = s.parse().map_err(|_| {
                        bad(
                            key,
                            format!("expected a multiaddr like /ip4/10.0.0.2/tcp/9100, got {s:?}"),
                        )
                    })?;
                    self.bootstrap.push(addr);
                }
            }
            "bootstrap_dns" => {
                for s in raw.strings(key)? {
                    self.bootstrap_dns.push(s.parse().map_err(|e: String| bad(key, e))?);
                }
            }
            "discovery_github" => {
                let s = raw.string(key)?;
                if !super::tools::is_repo_name(&s) {
                    return Err(bad(key, format!("expected owner/name, got {s:?}")));
                }
                self.discovery_github = Some(s);
            }
            "swarm_key_file" => {
                let s = raw.string(key)?;
                if s.is_empty() {
                    return Err(bad(key, "must not be empty"));
                }
                self.swarm_key_file = Some(PathBuf::from(s));
            }
            "ready_file" => {
                let s = raw.string(key)?;
                if s.is_empty() {
                    return Err(bad(key, "must not be empty"));
                }
                self.ready_file = Some(PathBuf::from(s));
            }
            "log_json" => self.log_json = raw.boolean(key)?,
            "store" => self.store = raw.boolean(key)?,
            "max_concurrent_upstream" => self.max_concurrent_upstream = raw.uint(key, 1, 10_000)? as usize,
            "upstream_timeout_ms" => self.upstream_timeout = Duration::from_millis(raw.uint(key, 1, 600_000)?),
            "upstream_retries" => self.upstream_retries = raw.uint(key, 0, 10)? as u32,
            "retry_base_ms" => self.retry_base = Duration::from_millis(raw.uint(key, 0, 60_000)?),
            "max_body_bytes" => self.max_body_bytes = raw.uint(key, 1024, 1 << 30)? as usize,
            "max_upstream_body_bytes" => self.max_upstream_body_bytes = raw.uint(key, 1024, 1 << 32)? as usize,
            "max_entries" => self.cache.max_entries = raw.uint(key, 1, MAX)? as usize,
            "max_bytes" => self.cache.max_bytes = raw.uint(key, 1, MAX)? as usize,
            "stale_grace_secs" => self.cache.stale_grace = Duration::from_secs(raw.uint(key, 0, 365 * 86_400)?),
            "allowed_origins" => {
                let list = raw.strings(key)?;
                if let Some(o) = list
                    .iter()
                    .find(|o| !(o.starts_with("http://") || o.starts_with("https://")))
                {
                    return Err(bad(key, format!("origin {o:?} must start with http:// or https://")));
                }
                self.allowed_origins = list.into_iter().map(|o| o.trim_end_matches('/').to_string()).collect();
            }
            "dashboard_repos" => {
                let list = raw.strings(key)?;
                if list.len() > 20 {
                    return Err(bad(key, format!("{} repositories; at most 20", list.len())));
                }
                if let Some(r) = list.iter().find(|r| !super::tools::is_repo_name(r)) {
                    return Err(bad(key, format!("{r:?} is not owner/name")));
                }
                self.dashboard_repos = list;
            }
            _ => {
                if let Some(op_name) = key.strip_prefix("ttl_secs.") {
                    let op = Operation::from_name(op_name).ok_or_else(|| bad(key, "unknown operation"))?;
                    let ttl = Duration::from_secs(raw.uint(key, 0, 365 * 86_400)?);
                    self.cache.ttl = std::mem::take(&mut self.cache.ttl).with(op, ttl);
                } else {
                    return Err(bad(key, "unknown key"));
                }
            }
        }
        Ok(())
    }

    /// Applies a TOML document (same keys as the flags; `ttl_secs` is a
    /// table).
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let msg = e.message().replace('\n', " ");
            ConfigError(format!("invalid config file: {msg}"))
        })?;
        for (key, value) in &table {
            if key == "ttl_secs" {
                let inner = value
                    .as_table()
                    .ok_or_else(|| bad(key, "expected a table like [ttl_secs] runners = 30"))?;
                for (op, v) in inner {
                    self.set(&format!("ttl_secs.{op}"), Raw::Toml(v))?;
                }
            } else {
                self.set(key, Raw::Toml(value))?;
            }
        }
        Ok(())
    }

    /// Reads and applies a TOML file.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "invalid config key `config`: cannot read {}: {e}",
                path.display()
            ))
        })?;
        self.apply_toml(&text)
            .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Sets one key from its text, as a flag gives it (`daemon::flags`
    /// calls this for every flag, in command-line order).
    pub fn set_text(&mut self, key: &str, text: &str) -> Result<(), ConfigError> {
        self.set(key, Raw::Text(text))
    }

    /// Fills in secrets from the environment and files: the MCP token from
    /// `mcp_token_file`, else `GHCACHE_MCP_TOKEN`, else the systemd
    /// credential `mcp-token` (`$CREDENTIALS_DIRECTORY/mcp-token`), else the
    /// `--mcp-token` flag; the webhook secret from `webhook_secret_file`,
    /// else `GHCACHE_WEBHOOK_SECRET`; the GitHub token from `GITHUB_TOKEN`,
    /// `GH_TOKEN`, else `gh auth token`.
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        self.resolve_mcp_token()?;
        if let Some(path) = self.webhook_secret_file.clone() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| bad("webhook_secret_file", format!("cannot read {}: {e}", path.display())))?;
            let secret = text.trim_end_matches(['\n', '\r']);
            if secret.is_empty() {
                return Err(bad("webhook_secret_file", format!("{} is empty", path.display())));
            }
            self.webhook_secret = Secret(Some(secret.to_string()));
        } else if let Some(s) = std::env::var("GHCACHE_WEBHOOK_SECRET").ok().filter(|s| !s.is_empty()) {
            self.webhook_secret = Secret(Some(s));
        }
        if let Some(k) = std::env::var("GHCACHE_SWARM_KEY").ok().filter(|t| !t.trim().is_empty()) {
            self.swarm_key = Secret(Some(k));
        }
        let (token, source) = if let Some(t) = env_token("GITHUB_TOKEN") {
            (Some(t), TokenSource::GithubToken)
        } else if let Some(t) = env_token("GH_TOKEN") {
            (Some(t), TokenSource::GhToken)
        } else if let Some(t) = gh_cli_token() {
            (Some(t), TokenSource::GhCli)
        } else {
            (None, TokenSource::None)
        };
        self.github_token = Secret(token);
        self.token_source = source;
        Ok(())
    }

    /// Sets `mcp_token` the way the daemon finds it: `mcp_token_file`, else
    /// `GHCACHE_MCP_TOKEN`, else the systemd credential `mcp-token`, else
    /// the `mcp_token` key as given. The operator commands (`ghcache
    /// stats`, ...) call this too, so they send the token the daemon wants.
    pub fn resolve_mcp_token(&mut self) -> Result<(), ConfigError> {
        let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|dir| PathBuf::from(dir).join("mcp-token"))
            .filter(|p| p.exists());
        if let Some(path) = self.mcp_token_file.clone() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| bad("mcp_token_file", format!("cannot read {}: {e}", path.display())))?;
            self.set("mcp_token", Raw::Text(text.trim_end_matches(['\n', '\r'])))
                .map_err(|e| bad("mcp_token_file", format!("{}: {}", path.display(), e.0)))?;
        } else if let Some(t) = std::env::var("GHCACHE_MCP_TOKEN").ok().filter(|t| !t.is_empty()) {
            self.set("mcp_token", Raw::Text(&t))?;
        } else if let (None, Some(path)) = (&self.mcp_token.0, credential) {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                bad(
                    "mcp_token",
                    format!("cannot read the credential {}: {e}", path.display()),
                )
            })?;
            self.set("mcp_token", Raw::Text(text.trim_end_matches(['\n', '\r'])))?;
        }
        Ok(())
    }

    /// Refuses settings that would expose the daemon's GitHub token: an
    /// HTTP listener beyond loopback with no `mcp_token` is an open proxy
    /// to GitHub for anyone who reaches it, unless `allow_no_token` says the
    /// operator protects it otherwise (a firewall, a trusted network).
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() && self.mcp_token.0.is_none() && !self.allow_no_token {
            return Err(ConfigError(format!(
                "refusing to listen on {} (beyond loopback) without a token: anyone who can reach it could read GitHub \
                 with this daemon's GitHub token. Set --mcp-token-file FILE (or GHCACHE_MCP_TOKEN), or pass \
                 --allow-no-token if something else guards this address",
                self.listen
            )));
        }
        Ok(())
    }

    /// The path of the store file.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("cache.redb")
    }
}

/// `host` or `host:port` with a DNS name, IPv4 or bracketed IPv6 host and
/// nothing else (no user information, path or spaces).
pub fn valid_authority(text: &str) -> bool {
    !text.is_empty()
        && !text.contains('@')
        && text
            .parse::<axum::http::uri::Authority>()
            .is_ok_and(|a| a.as_str() == text && !a.host().is_empty())
}

fn env_token(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
}

fn gh_cli_token() -> Option<String> {
    let out = std::process::Command::new("gh")
        .args(["auth", "token"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let t = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic())).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults_and_flags() {
        let c = Config::from_args(args("")).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.github_api_url, "https://api.github.com");
        assert!(c.p2p);
        let c = Config::from_args(args(
            "--listen 127.0.0.1:0 --data-dir /tmp/x --github-api-url http://127.0.0.1:5/ --mcp-token s3cret --no-p2p --log-json",
        ))
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.github_api_url, "http://127.0.0.1:5");
        assert_eq!(c.mcp_token.0.as_deref(), Some("s3cret"));
        assert!(!c.p2p && c.log_json);
        assert_eq!(format!("{:?}", c.mcp_token), "Secret(***)");
    }

    #[test]
    fn p2p_flags() {
        let c = Config::from_args(args("--p2p-listen /ip4/127.0.0.1/tcp/0 --bootstrap /ip4/127.0.0.1/tcp/1 --bootstrap /ip4/127.0.0.1/tcp/2 --mdns true --swarm-key-file /k")).unwrap();
        assert_eq!(c.p2p_listen.to_string(), "/ip4/127.0.0.1/tcp/0");
        assert_eq!(c.bootstrap.len(), 2);
        assert!(c.mdns);
        assert_eq!(c.max_peer_connections, 32);
        let few = Config::from_args(args("--max-peer-connections 8")).unwrap();
        assert_eq!(few.max_peer_connections, 8);
        assert!(Config::from_args(args("--max-peer-connections 1"))
            .unwrap_err()
            .0
            .contains("max_peer_connections"));
        assert_eq!(c.swarm_key_file, Some(PathBuf::from("/k")));
        assert_eq!(Config::default().p2p_listen.to_string(), "/ip4/0.0.0.0/tcp/9100");
        let e = Config::from_args(args("--bootstrap nope")).unwrap_err();
        assert!(e.0.contains("`bootstrap`"), "{e}");
        let mut c = Config::default();
        c.apply_toml("bootstrap = [\"/ip4/10.0.0.2/tcp/9100\"]\nmdns = true\n")
            .unwrap();
        assert_eq!(c.bootstrap.len(), 1);
    }

    #[test]
    fn discovery_flags() {
        let c = Config::from_args(args(
            "--bootstrap-dns fleet.example.com --bootstrap-dns a.test:9200,b.test --discovery-github o/fleet",
        ))
        .unwrap();
        let seeds: Vec<String> = c.bootstrap_dns.iter().map(|s| s.to_string()).collect();
        assert_eq!(seeds, ["fleet.example.com", "a.test:9200", "b.test"]);
        assert_eq!(c.discovery_github.as_deref(), Some("o/fleet"));
        for bad in ["--bootstrap-dns a.test:0", "--bootstrap-dns /ip4/1.2.3.4/tcp/1"] {
            let e = Config::from_args(args(bad)).unwrap_err();
            assert!(e.0.contains("`bootstrap_dns`"), "{e}");
        }
        let e = Config::from_args(args("--discovery-github fleet")).unwrap_err();
        assert!(e.0.contains("`discovery_github`") && e.0.contains("owner/name"), "{e}");
        let mut c = Config::default();
        c.apply_toml("bootstrap_dns = [\"ghcache.ns.svc.cluster.local\"]\ndiscovery_github = \"o/r\"\n")
            .unwrap();
        assert_eq!(c.bootstrap_dns.len(), 1);
        assert_eq!(c.discovery_github.as_deref(), Some("o/r"));
        assert!(Config::default().bootstrap_dns.is_empty() && Config::default().discovery_github.is_none());
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::from_args(args("--listen nowhere")).unwrap_err();
        assert!(e.0.contains("`listen`"), "{e}");
        let e = Config::from_args(args("--frobnicate 1")).unwrap_err();
        assert!(e.0.contains("`frobnicate`") && e.0.contains("unknown key"), "{e}");
        let e = Config::from_args(args("--max-concurrent-upstream 0")).unwrap_err();
        assert!(e.0.contains("`max_concurrent_upstream`"), "{e}");
        let e = Config::from_args(args("--listen")).unwrap_err();
        assert!(e.0.contains("missing value"), "{e}");
    }

    #[test]
    fn toml_same_keys() {
        let mut c = Config::default();
        c.apply_toml(
            "listen = \"127.0.0.1:9100\"\np2p = false\nmax_entries = 50\nallowed_origins = [\"https://a.example\"]\n[ttl_secs]\nrunners = 7\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert!(!c.p2p);
        assert_eq!(c.cache.max_entries, 50);
        assert_eq!(c.cache.ttl.ttl(Operation::Runners), Duration::from_secs(7));
        assert_eq!(c.allowed_origins, vec!["https://a.example".to_string()]);
        let e = Config::default().apply_toml("listen = 5").unwrap_err();
        assert!(e.0.contains("`listen`") && e.0.contains("string"), "{e}");
        let e = Config::default().apply_toml("[ttl_secs]\nnope = 3").unwrap_err();
        assert!(e.0.contains("`ttl_secs.nope`"), "{e}");
        let e = Config::default().apply_toml("listen = ").unwrap_err();
        assert!(!e.0.contains('\n'), "{e}");
    }

    #[test]
    fn dashboard_repos() {
        let c = Config::from_args(args("--dashboard-repos octo/hello,o/r")).unwrap();
        assert_eq!(c.dashboard_repos, ["octo/hello", "o/r"]);
        let mut c = Config::default();
        c.apply_toml("dashboard_repos = [\"o/r\"]").unwrap();
        assert_eq!(c.dashboard_repos, ["o/r"]);
        for bad_list in ["--dashboard-repos o/../x", "--dashboard-repos nope"] {
            let e = Config::from_args(args(bad_list)).unwrap_err();
            assert!(e.0.contains("`dashboard_repos`") && e.0.contains("owner/name"), "{e}");
        }
    }

    #[test]
    fn one_line_errors() {
        for bad_toml in ["x = [", "listen = 5", "max_bytes = -1", "store = \"maybe\""] {
            let e = Config::default().apply_toml(bad_toml).unwrap_err();
            assert!(!e.0.contains('\n'), "{bad_toml}: {e}");
        }
    }
}
