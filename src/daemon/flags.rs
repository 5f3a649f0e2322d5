//! `ghcache daemon`'s flags, declared for clap.
//!
//! What holds here:
//! - **Every config key is a flag, and each flag's clap id is its key.**
//!   `--foo-bar VALUE` (or `--foo-bar=VALUE`) sets key `foo_bar`; the ids of
//!   [`DaemonArgs`]' fields are the keys of the TOML file. No value is
//!   interpreted here: [`Config::from_matches`] hands `(key, text)` pairs to
//!   the same `Config::set` that reads the file, so a bad flag and a bad key
//!   give the same one-line error naming the key.
//! - **Command-line order decides**: `--config FILE` is applied first, then
//!   every other flag in the order given (a later one wins), as the
//!   hand-written parser this replaced did.
//! - **Spellings**: `--foo_bar` is accepted for `--foo-bar` ([`normalize`]
//!   rewrites it before clap sees it), and `--ttl-secs.OPERATION SECS` sets
//!   `ttl_secs.OPERATION` for each operation of [`Operation::ALL`].
//! - **Switches**: `--no-p2p` and `--no-store` take no value;
//!   `--log-json`, `--allow-no-token` and `--metrics-require-token` take an
//!   optional `=true|false`.
//! - **Secrets are not clap env fallbacks.** `Config::apply_env` reads
//!   `GITHUB_TOKEN`, `GH_TOKEN`, `GHCACHE_MCP_TOKEN` and `GHCACHE_SWARM_KEY`
//!   after the flags, with its own precedence (documented there); clap never
//!   sees them.
//!
//! Adding a key: a field of `Config` with its default, an arm in
//! `Config::set`, and a field here whose name is the key (its doc comment is
//! the help line). The tests check that every flag here is a key `set`
//! accepts.

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser};

use super::config::{Config, ConfigError};
use crate::core::Operation;

const P2P: &str = "P2P (docs/p2p.md)";
const LIMITS: &str = "HTTP limits (docs/security.md)";
const UPSTREAM: &str = "GitHub requests";
const CACHE: &str = "Cache";

/// The flags of `ghcache daemon`. Defaults are written in the help rather
/// than given to clap: a clap default would count as a flag and override
/// the config file.
#[derive(Args, Clone, Debug, Default)]
pub struct DaemonArgs {
    /// TOML file with the same keys (see deploy/ghcache.example.toml); flags win over it
    #[arg(long, value_name = "FILE")]
    pub config: Option<String>,
    /// HTTP address [default: 127.0.0.1:9000]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Store directory [default: $STATE_DIRECTORY, $XDG_STATE_HOME/ghcache, ~/.local/state/ghcache]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// GitHub REST root (Enterprise: `https://HOST/api/v3`) [default: `https://api.github.com`]
    #[arg(long, value_name = "URL")]
    pub github_api_url: Option<String>,
    /// Require `Authorization: Bearer <the file's token>` on /mcp, /jsonrpc, /github (also GHCACHE_MCP_TOKEN, or the systemd credential `mcp-token`)
    #[arg(long, value_name = "FILE")]
    pub mcp_token_file: Option<String>,
    /// The same token on the command line (visible in ps; prefer the file)
    #[arg(long, value_name = "TOKEN")]
    pub mcp_token: Option<String>,
    /// Turn on `POST /webhook`: the GitHub webhook secret in this file (also GHCACHE_WEBHOOK_SECRET); docs/webhooks.md [default: off]
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<String>,
    /// Listen beyond loopback without a token (refused otherwise)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub allow_no_token: Option<String>,
    /// /metrics requires the token too
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub metrics_require_token: Option<String>,
    /// Extra accepted Host names (loopback listeners accept this machine's names)
    #[arg(long, value_name = "H[,H]")]
    pub allowed_hosts: Option<String>,
    /// Browser origins allowed besides localhost ones [default: none]
    #[arg(long, value_name = "O[,O]")]
    pub allowed_origins: Option<String>,
    /// Once listening, write the bound addresses here (JSON; port 0 shows the real port)
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<String>,
    /// Repositories (owner/name, at most 20) whose runners and workflow runs the dashboard at GET / shows
    #[arg(long, value_name = "R[,R]")]
    pub dashboard_repos: Option<String>,
    /// Keep the cache in memory only (same as --store false)
    #[arg(long)]
    pub no_store: bool,
    /// Persist entries under the data directory [default: true]
    #[arg(long, value_name = "BOOL", hide_short_help = true)]
    pub store: Option<String>,
    /// JSON log lines
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub log_json: Option<String>,

    /// Local-only: no P2P node (same as --p2p false)
    #[arg(long, help_heading = P2P)]
    pub no_p2p: bool,
    /// Run the P2P node [default: true]
    #[arg(long, value_name = "BOOL", help_heading = P2P, hide_short_help = true)]
    pub p2p: Option<String>,
    /// P2P address [default: /ip4/0.0.0.0/tcp/9100]
    #[arg(long, value_name = "MULTIADDR", help_heading = P2P)]
    pub p2p_listen: Option<String>,
    /// A peer to dial (repeatable, or comma-separated), e.g. /ip4/10.0.0.2/tcp/9100
    #[arg(long, value_name = "MULTIADDR", help_heading = P2P)]
    pub bootstrap: Vec<String>,
    /// A DNS name listing peers (repeatable, or comma-separated): A/AAAA records dialled at PORT (else this node's P2P port), TXT records holding multiaddrs
    #[arg(long, value_name = "NAME[:PORT]", help_heading = P2P)]
    pub bootstrap_dns: Vec<String>,
    /// Find peers through a GitHub repository's Actions variables (owner/name; the token needs Variables: write)
    #[arg(long, value_name = "OWNER/REPO", help_heading = P2P)]
    pub discovery_github: Option<String>,
    /// Find peers on the LAN [default: false]
    #[arg(long, value_name = "BOOL", help_heading = P2P)]
    pub mdns: Option<String>,
    /// Most established P2P connections; owners are dialled on demand and idle connections close [default: 32]
    #[arg(long, value_name = "N", help_heading = P2P)]
    pub max_peer_connections: Option<String>,
    /// Private swarm key (else GHCACHE_SWARM_KEY, else derived from the GitHub token); `ghcache swarm-key` makes one
    #[arg(long, value_name = "FILE", help_heading = P2P)]
    pub swarm_key_file: Option<String>,

    /// Open connections, all clients [default: 1024]
    #[arg(long, value_name = "N", help_heading = LIMITS, hide_short_help = true)]
    pub max_connections: Option<String>,
    /// Open connections from one IP address [default: 256]
    #[arg(long, value_name = "N", help_heading = LIMITS, hide_short_help = true)]
    pub max_connections_per_client: Option<String>,
    /// A connection with no request in progress is closed after this [default: 30000]
    #[arg(long, value_name = "MS", help_heading = LIMITS, hide_short_help = true)]
    pub http_idle_timeout_ms: Option<String>,
    /// Most time to receive a request body [default: 30000]
    #[arg(long, value_name = "MS", help_heading = LIMITS, hide_short_help = true)]
    pub http_body_timeout_ms: Option<String>,
    /// Open MCP sessions, all clients [default: 1000]
    #[arg(long, value_name = "N", help_heading = LIMITS, hide_short_help = true)]
    pub max_mcp_sessions: Option<String>,
    /// Open MCP sessions of one IP address [default: 100]
    #[arg(long, value_name = "N", help_heading = LIMITS, hide_short_help = true)]
    pub max_mcp_sessions_per_client: Option<String>,
    /// An MCP session unused this long is closed [default: 300]
    #[arg(long, value_name = "SECS", help_heading = LIMITS, hide_short_help = true)]
    pub mcp_session_idle_secs: Option<String>,
    /// A session with no request after `initialize` is closed after this [default: 30]
    #[arg(long, value_name = "SECS", help_heading = LIMITS, hide_short_help = true)]
    pub mcp_session_init_secs: Option<String>,
    /// Calls in one JSON-RPC batch [default: 100]
    #[arg(long, value_name = "N", help_heading = LIMITS, hide_short_help = true)]
    pub max_batch: Option<String>,
    /// Request body limit on /mcp and /jsonrpc [default: 1048576]
    #[arg(long, value_name = "BYTES", help_heading = LIMITS, hide_short_help = true)]
    pub max_body_bytes: Option<String>,
    /// GitHub requests one HTTP request may cause [default: 50]
    #[arg(long, value_name = "N", help_heading = LIMITS, hide_short_help = true)]
    pub max_upstream_per_request: Option<String>,
    /// GitHub requests one client address may cause per minute with the daemon's token [default: 1200]
    #[arg(long, value_name = "N", help_heading = LIMITS, hide_short_help = true)]
    pub client_upstream_per_minute: Option<String>,

    /// GitHub requests at once [default: 25]
    #[arg(long, value_name = "N", help_heading = UPSTREAM, hide_short_help = true)]
    pub max_concurrent_upstream: Option<String>,
    /// Per-request timeout [default: 10000]
    #[arg(long, value_name = "MS", help_heading = UPSTREAM, hide_short_help = true)]
    pub upstream_timeout_ms: Option<String>,
    /// Extra attempts after a 5xx or a timeout [default: 3]
    #[arg(long, value_name = "N", help_heading = UPSTREAM, hide_short_help = true)]
    pub upstream_retries: Option<String>,
    /// First retry backoff (doubles, jittered) [default: 250]
    #[arg(long, value_name = "MS", help_heading = UPSTREAM, hide_short_help = true)]
    pub retry_base_ms: Option<String>,
    /// Largest GitHub answer read; a larger one is an error [default: 33554432]
    #[arg(long, value_name = "BYTES", help_heading = UPSTREAM, hide_short_help = true)]
    pub max_upstream_body_bytes: Option<String>,

    /// Most entries (the store keeps at most this many) [default: 10000]
    #[arg(long, value_name = "N", help_heading = CACHE, hide_short_help = true)]
    pub max_entries: Option<String>,
    /// Most bytes [default: 268435456]
    #[arg(long, value_name = "BYTES", help_heading = CACHE, hide_short_help = true)]
    pub max_bytes: Option<String>,
    /// How long past its TTL an entry may be revalidated or served stale [default: 86400]
    #[arg(long, value_name = "SECS", help_heading = CACHE, hide_short_help = true)]
    pub stale_grace_secs: Option<String>,
    /// `--ttl-secs.OPERATION SECS`: how long an answer stays fresh, per operation.
    #[command(flatten)]
    pub ttl_secs: TtlFlags,
}

/// `--ttl-secs.OPERATION SECS` for every operation: ids `ttl_secs.runners`,
/// ..., the keys of the config file's `[ttl_secs]` table.
#[derive(Clone, Debug, Default)]
pub struct TtlFlags;

fn ttl_key(op: Operation) -> String {
    format!("ttl_secs.{}", op.name())
}

impl Args for TtlFlags {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for op in Operation::ALL {
            let ttl = op.default_ttl().as_secs();
            cmd = cmd.arg(
                clap::Arg::new(ttl_key(op))
                    .long(ttl_key(op).replace('_', "-"))
                    .value_name("SECS")
                    .help(format!("Freshness of `{}` answers [default: {ttl}]", op.name()))
                    .help_heading(CACHE)
                    .hide_short_help(true),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for TtlFlags {
    fn from_arg_matches(_: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(TtlFlags)
    }

    fn update_from_arg_matches(&mut self, _: &ArgMatches) -> Result<(), clap::Error> {
        Ok(())
    }
}

/// `ghcache daemon` alone, for [`Config::from_args`] and tests.
#[derive(Parser, Debug)]
#[command(name = "ghcache daemon", args_override_self = true)]
struct DaemonOnly {
    #[command(flatten)]
    args: DaemonArgs,
}

/// The daemon's command (`ghcache daemon`), as `ghcache --help` and the
/// shell completions describe it.
pub fn command() -> clap::Command {
    DaemonOnly::command()
}

/// Rewrites `--foo_bar[=v]` to `--foo-bar[=v]`: the spelling with
/// underscores, which is the key's own, is accepted for every flag.
pub fn normalize<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    args.into_iter()
        .map(|arg| match arg.strip_prefix("--") {
            Some(flag) if !flag.is_empty() => {
                let (name, value) = match flag.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (flag, None),
                };
                let name = name.replace('_', "-");
                match value {
                    Some(v) => format!("--{name}={v}"),
                    None => format!("--{name}"),
                }
            }
            _ => arg,
        })
        .collect()
}

/// A clap error on the daemon's flags as one line naming the key, like
/// every other config error.
pub fn config_error(e: &clap::Error) -> ConfigError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let key = arg
        .trim_start_matches('-')
        .split([' ', '=', '['])
        .next()
        .unwrap_or_default()
        .replace('-', "_");
    let why = match e.kind() {
        ErrorKind::UnknownArgument if !arg.starts_with("--") => {
            return ConfigError(format!("unexpected argument {arg:?} (flags start with --)"));
        }
        ErrorKind::UnknownArgument => "unknown key".to_string(),
        ErrorKind::InvalidValue | ErrorKind::NoEquals => "missing value".to_string(),
        ErrorKind::TooManyValues => "takes no value".to_string(),
        _ => {
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
            return ConfigError(format!("invalid flags: {line}"));
        }
    };
    ConfigError(format!("invalid config key `{key}`: {why}"))
}

impl Config {
    /// Builds the daemon's config from parsed `ghcache daemon` flags:
    /// defaults, then `--config FILE`, then every other flag in
    /// command-line order. Does not read the environment.
    pub fn from_matches(matches: &ArgMatches) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(file) = matches.get_one::<String>("config") {
            config.apply_file(std::path::Path::new(file))?;
        }
        let mut given: Vec<(usize, String, String)> = Vec::new();
        for id in matches.ids() {
            let id = id.as_str();
            if id == "config" || matches.value_source(id) != Some(ValueSource::CommandLine) {
                continue;
            }
            let key = match id {
                "no_p2p" => "p2p",
                "no_store" => "store",
                key => key,
            };
            let (Some(indices), Some(values)) = (matches.indices_of(id), matches.get_raw(id)) else {
                continue;
            };
            for (index, value) in indices.zip(values) {
                let value = match id {
                    "no_p2p" | "no_store" => "false".to_string(),
                    _ => value.to_string_lossy().into_owned(),
                };
                given.push((index, key.to_string(), value));
            }
        }
        given.sort_by_key(|(index, _, _)| *index);
        for (_, key, value) in &given {
            config.set_text(key, value)?;
        }
        Ok(config)
    }

    /// Parses `ghcache daemon` flags (without the command name): see
    /// [`Config::from_matches`].
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<Config, ConfigError> {
        let argv = std::iter::once("ghcache daemon".to_string()).chain(normalize(args));
        let matches = command().try_get_matches_from(argv).map_err(|e| config_error(&e))?;
        Config::from_matches(&matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag is a key that `Config::set` knows: a flag whose id is
    /// not a key would be rejected as `unknown key` when given.
    #[test]
    fn every_flag_is_a_key() {
        let cmd = command();
        let mut flags = 0;
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "config" | "no_p2p" | "no_store" | "help") {
                continue;
            }
            let e = Config::default()
                .set_text(id, "")
                .err()
                .map(|e| e.0)
                .unwrap_or_default();
            assert!(!e.contains("unknown key"), "--{id}: {e}");
            let long = arg.get_long().unwrap();
            assert_eq!(long.replace('-', "_"), id, "the flag of key {id}");
            flags += 1;
        }
        assert!(flags > 40, "{flags}");
    }

    #[test]
    fn normalize_rewrites_only_flag_names() {
        let out = normalize(["--data_dir".into(), "/a_b".into(), "--ttl_secs.workflow_runs=5".into()]);
        assert_eq!(out, ["--data-dir", "/a_b", "--ttl-secs.workflow-runs=5"]);
    }

    #[test]
    fn command_is_well_formed() {
        command().debug_assert();
    }
}
