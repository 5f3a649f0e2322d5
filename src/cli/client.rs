//! The operator commands' side of `/jsonrpc`: where the daemon is, which
//! token to send, and one `tools/call` over HTTP.
//!
//! - Address: `--url`, else `GHCACHE_URL` (clap's env fallback), else the
//!   `listen` of the config file, else `http://127.0.0.1:9000`. A `listen`
//!   on an unspecified address (`0.0.0.0`, `::`) is reached on loopback.
//! - Config file: `--config FILE`, else the first that exists of
//!   `$XDG_CONFIG_HOME/ghcache/ghcache.toml` (or `~/.config/...`) and
//!   `/etc/ghcache/ghcache.toml` (where `deploy/` installs it). It is read
//!   with the daemon's own parser, so a bad file is a usage error naming
//!   the key.
//! - Token: `--mcp-token-file`, else `GHCACHE_MCP_TOKEN`, else whatever
//!   the config file names (`mcp_token_file`, `mcp_token`), resolved by
//!   `Config::resolve_mcp_token`, the daemon's own rule.
//! - Outcomes map to exit codes: no connection or a 401/403 is
//!   [`EXIT_UNREACHABLE`]; any other answer that is not a JSON-RPC result
//!   is [`EXIT_FAILED`]. Messages never contain the token.
//!
//! HTTP is reqwest (the daemon's client) on a current-thread tokio
//! runtime: one request, nothing to run concurrently.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::{ClientArgs, Failure, EXIT_FAILED, EXIT_UNREACHABLE};
use crate::daemon::config::Config;
use crate::daemon::p2p::error_chain;

/// Address used when neither a flag, the environment nor a config file
/// names one (the daemon's default `listen`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:9000";

/// How long one call may take in all (stats waits for the fleet's
/// answers, a few seconds at most).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A daemon to ask: its `/jsonrpc` URL and the bearer token, if any.
pub struct Target {
    /// `http(s)://host:port/jsonrpc`.
    pub endpoint: url::Url,
    token: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("endpoint", &self.endpoint.as_str())
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The config file to read: the one given, else the first default that
/// exists.
fn config_path(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_path_buf());
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let user = env("XDG_CONFIG_HOME").or_else(|| env("HOME").map(|h| h.join(".config")));
    user.map(|d| d.join("ghcache/ghcache.toml"))
        .into_iter()
        .chain([PathBuf::from("/etc/ghcache/ghcache.toml")])
        .find(|p| p.exists())
}

/// The `/jsonrpc` endpoint under a base URL given by the operator (a
/// trailing `/jsonrpc` is accepted).
fn endpoint(base: &str) -> Result<url::Url, Failure> {
    let bad = |why: String| Failure::usage(format!("invalid --url {base:?}: {why}"));
    let mut url = url::Url::parse(base.trim()).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad("expected http://HOST:PORT or https://HOST:PORT".into()));
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/jsonrpc").unwrap_or(path);
    url.set_path(&format!("{path}/jsonrpc"));
    url.set_query(None);
    Ok(url)
}

/// The URL of a daemon listening on `addr`, reached from this machine.
fn url_of_listen(addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
}

impl Target {
    /// Finds the daemon and the token as the module docs say.
    pub fn resolve(args: &ClientArgs) -> Result<Target, Failure> {
        let mut config = Config::default();
        let file = config_path(args.config.as_deref());
        if let Some(file) = &file {
            config.apply_file(file)?;
        }
        let base = match (&args.url, &file) {
            (Some(url), _) => url.clone(),
            (None, Some(_)) => url_of_listen(config.listen),
            (None, None) => DEFAULT_URL.to_string(),
        };
        if let Some(path) = &args.mcp_token_file {
            config.mcp_token_file = Some(path.clone());
        } else if std::env::var("GHCACHE_MCP_TOKEN").is_ok_and(|t| !t.is_empty()) {
            // The operator's environment is more specific than a system
            // file the operator may not be able to read.
            config.mcp_token_file = None;
        }
        config.resolve_mcp_token()?;
        Ok(Target {
            endpoint: endpoint(&base)?,
            token: config.mcp_token.0,
        })
    }

    /// A target at `base` with `token` (tests).
    pub fn new(base: &str, token: Option<String>) -> Result<Target, Failure> {
        Ok(Target {
            endpoint: endpoint(base)?,
            token,
        })
    }

    /// Calls tool `name` with `arguments`; returns its result.
    pub fn call_tool(&self, name: &str, arguments: Value) -> Result<Value, Failure> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed(format!("cannot start a runtime: {e}")))?;
        runtime.block_on(self.call_async(name, arguments))
    }

    async fn call_async(&self, name: &str, arguments: Value) -> Result<Value, Failure> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| failed(format!("cannot make an HTTP client: {e}")))?;
        let body = json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": name, "arguments": arguments}, "id": 1});
        let mut req = http
            .post(self.endpoint.clone())
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let at = self.endpoint.as_str();
        let unreachable = |e: reqwest::Error| Failure {
            code: EXIT_UNREACHABLE,
            message: format!("cannot reach the daemon at {at}: {}", error_chain(&e)),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(unreachable)?;
        let snippet: String = text.trim().chars().take(200).collect();
        match status {
            401 => {
                let why = if self.token.is_some() {
                    "the token was refused"
                } else {
                    "it wants a token (--mcp-token-file or GHCACHE_MCP_TOKEN)"
                };
                return Err(Failure {
                    code: EXIT_UNREACHABLE,
                    message: format!("the daemon at {at} answered 401: {why}"),
                });
            }
            403 => {
                return Err(Failure {
                    code: EXIT_UNREACHABLE,
                    message: format!("the daemon at {at} refused the request (403): {snippet}"),
                })
            }
            200 => {}
            _ => return Err(failed(format!("the daemon at {at} answered {status}: {snippet}"))),
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| failed(format!("the answer of {at} is not JSON ({e}): {snippet}")))?;
        if let Some(err) = v.get("error") {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or_default();
            let message = err.get("message").and_then(Value::as_str).unwrap_or("(no message)");
            return Err(failed(format!("{name} failed: {message} (JSON-RPC error {code})")));
        }
        v.get("result")
            .cloned()
            .ok_or_else(|| failed(format!("the answer of {at} has no result: {snippet}")))
    }
}

fn failed(message: String) -> Failure {
    Failure {
        code: EXIT_FAILED,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = |s: &str| endpoint(s).map(|u| u.to_string()).map_err(|f| f.code);
        assert_eq!(e("http://127.0.0.1:9000"), Ok("http://127.0.0.1:9000/jsonrpc".into()));
        assert_eq!(e("http://h:1/"), Ok("http://h:1/jsonrpc".into()));
        assert_eq!(e("http://h:1/jsonrpc"), Ok("http://h:1/jsonrpc".into()));
        assert_eq!(e("https://h/base/"), Ok("https://h/base/jsonrpc".into()));
        assert_eq!(e("127.0.0.1:9000"), Err(super::super::EXIT_USAGE));
        assert_eq!(e("ftp://h"), Err(super::super::EXIT_USAGE));
    }

    #[test]
    fn unspecified_listen_is_reached_on_loopback() {
        assert_eq!(url_of_listen("0.0.0.0:9000".parse().unwrap()), "http://127.0.0.1:9000");
        assert_eq!(url_of_listen("[::]:9000".parse().unwrap()), "http://[::1]:9000");
        assert_eq!(url_of_listen("10.0.0.2:1".parse().unwrap()), "http://10.0.0.2:1");
    }
}
