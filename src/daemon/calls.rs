//! Running a validated tool call ([`App::call`]), shared by `/mcp` and
//! `/jsonrpc`, and the stats and metrics the daemon reports.

use super::*;

impl App {
    /// The JSON answer of a read tool.
    fn read_result(&self, key: &CacheKey, served: &Served) -> Value {
        let body = if key.operation() == crate::core::Operation::Api {
            response::Response::decode(served.entry.status, &served.entry.body).body
        } else {
            served.entry.body.clone()
        };
        let data = serde_json::from_slice::<Value>(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        json!({
            "cache_mode": served.mode.as_str(),
            "status": served.entry.status,
            "age_secs": served.entry.age(self.cache.now()).as_secs(),
            "etag": served.entry.etag.as_ref().map(|t| t.as_str()),
            "origin": served.entry.origin,
            "data": data,
        })
    }

    /// Runs a validated tool call; errors carry JSON-RPC codes.
    pub async fn call(&self, call: ToolCall) -> Result<Value, RpcError> {
        match call {
            ToolCall::Stats => {
                let mut v = self.stats_json();
                v["aggregate"] = self.aggregate().await;
                Ok(v)
            }
            ToolCall::ListPeers => {
                let client = self.p2p.borrow().clone();
                match client {
                    None => Ok(json!({"running": false, "peer_id": null, "peers": []})),
                    Some(c) => {
                        let peers = c.peers().await;
                        let members: Vec<String> = c.members().iter().map(|p| p.to_string()).collect();
                        Ok(
                            json!({"running": true, "peer_id": c.local_peer_id().to_string(), "count": peers.len(),
                                  "peers": peers, "member_count": members.len() + 1, "members": members,
                                  "owner_count": c.owner_count()}),
                        )
                    }
                }
            }
            ToolCall::Invalidate(what) => {
                let (removed, fleet) = self.invalidate_fleet(&what).await;
                let mut v = match &what {
                    Invalidate::All => json!({"invalidated": removed, "pattern": "*"}),
                    Invalidate::Prefix(p) => json!({"invalidated": removed, "pattern": p}),
                    Invalidate::Repository(r) => json!({"invalidated": removed, "repo": r}),
                    Invalidate::Paths(scopes) => {
                        json!({"invalidated": removed, "paths": key_path::scopes_text(scopes)})
                    }
                };
                match fleet {
                    Some(Ok(r)) => {
                        v["members"] = json!(r.members);
                        v["applied"] = json!(r.applied);
                        v["missing"] = json!(r.missing.iter().map(|p| p.to_string()).collect::<Vec<_>>());
                        v["epoch"] = json!(r.epoch);
                    }
                    Some(Err(e)) => {
                        v["members"] = json!(1);
                        v["applied"] = json!(1);
                        v["missing"] = json!([]);
                        v["fleet_error"] = json!(e);
                    }
                    None => {
                        v["members"] = json!(1);
                        v["applied"] = json!(1);
                        v["missing"] = json!([]);
                    }
                }
                Ok(v)
            }
            ToolCall::AuthStatus => {
                let source = format!("{:?}", self.config.token_source);
                if !self.upstream.authenticated() {
                    return Ok(json!({"authenticated": false, "token_source": source, "cache_mode": null}));
                }
                let key = CacheKey::new(crate::core::Operation::AuthStatus, [("path", Some("/user"))]);
                let served = self
                    .read(&key, &Request::single("/user"))
                    .await
                    .map_err(|e| self.read_error(&e))?;
                let mut v = self.read_result(&key, &served);
                v["authenticated"] = json!(served.entry.status == 200);
                v["token_source"] = json!(source);
                v["login"] = v["data"]["login"].clone();
                Ok(v)
            }
            ToolCall::Read(key, req) => {
                let served = self.read(&key, &req).await.map_err(|e| self.read_error(&e))?;
                let mut v = self.read_result(&key, &served);
                if key.operation() == crate::core::Operation::RateLimit {
                    v["observed"] = json!(self.upstream.rate_limit());
                }
                if served.entry.status >= 400 {
                    return Err(RpcError {
                        code: -32000,
                        message: format!("GitHub answered {}", served.entry.status),
                        data: Some(v),
                    });
                }
                Ok(v)
            }
        }
    }

    fn read_error(&self, e: &FetchFailed) -> RpcError {
        let (status, body) = match upstream_error(e) {
            Some(u) => (Some(u.http_status()), serde_json::from_slice::<Value>(&u.body).ok()),
            None => (None, None),
        };
        RpcError {
            code: -32000,
            message: e.to_string(),
            data: Some(json!({"status": status, "github": body})),
        }
    }

    /// The `gh_get_cache_stats` result: the core's snapshot, plus top-level
    /// `peer_id` (null while P2P is off), upstream and store state.
    pub fn stats_json(&self) -> Value {
        let stats = self.cache.stats();
        let mut v = serde_json::to_value(&stats).unwrap_or_else(|_| json!({}));
        v["peer_id"] = json!(stats.p2p.peer_id);
        v["p2p_requested"] = json!(self.config.p2p);
        v["rate_limit"] = json!(self.upstream.rate_limit());
        v["store"] = match &self.store {
            Some(store) => {
                let mut s = json!(store.stats());
                s["path"] = json!(self.config.store_path().display().to_string());
                s["error"] = json!(store.last_error());
                s
            }
            None => Value::Null,
        };
        v["uptime_secs"] = json!(self.started.elapsed().as_secs());
        v["upstream_requests"] = json!(self.metrics.upstream_total());
        v
    }

    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        let stats = self.cache.stats();
        let store = self.store.as_ref().map(Store::stats);
        let mut out = metrics::Exposition::default();
        self.metrics
            .expose(&mut out, &stats, &self.upstream.rate_limit(), store.as_ref());
        self.p2p_metrics.expose(&mut out);
        out.encode()
    }
}
