//! The fleet side of [`App`]: asking a key's owner before GitHub, answering
//! other members' asks, the counters this node announces, the fleet
//! aggregate of the stats, and invalidations sent to every member. The
//! P2P node itself (membership, connections, the wire) is [`super::p2p`];
//! this file is what the daemon does with it.

use super::*;

impl App {
    /// Applies an invalidation here ([`App::invalidate`]), then, while P2P
    /// runs, publishes it to the fleet and waits (at most
    /// [`p2p::invalidation::ACK_WAIT`]) for every live member to apply it.
    /// Returns the entries dropped here and the fleet's report (`None`:
    /// P2P off, this node is the fleet).
    pub async fn invalidate_fleet(&self, what: &Invalidate) -> (usize, Option<Result<p2p::FleetReport, String>>) {
        let dropped = self.invalidate(what);
        let client = self.p2p.borrow().clone();
        let Some(client) = client else {
            return (dropped, None);
        };
        let report = client.invalidate(what, p2p::invalidation::ACK_WAIT).await;
        match &report {
            Ok(r) if !r.missing.is_empty() => {
                tracing::warn!(?what, missing = ?r.missing, applied = r.applied, members = r.members,
                    "fleet invalidation: some members did not acknowledge in time")
            }
            Ok(r) => tracing::debug!(?what, members = r.members, "fleet invalidation applied everywhere"),
            Err(e) => tracing::warn!(?what, error = %e, "fleet invalidation not published"),
        }
        (dropped, Some(report))
    }

    /// Asks the owner of `key` for it, when the P2P node runs and the owner
    /// is another peer. `None`: fetch it yourself.
    pub(super) async fn ask_owner(&self, key: &CacheKey, req: &Request) -> Option<Entry> {
        let client = self.p2p.borrow().clone()?;
        let wire_req = p2p::wire::Request::Entry {
            key: key.as_str().to_string(),
            path: req.path.clone(),
            query: req.query.clone(),
            shape: match req.shape {
                upstream::Shape::Single | upstream::Shape::Response => p2p::wire::WireShape::Single,
                upstream::Shape::Array => p2p::wire::WireShape::Array,
                upstream::Shape::Field("runners") => p2p::wire::WireShape::Runners,
                upstream::Shape::Field(_) => p2p::wire::WireShape::WorkflowRuns,
            },
            limit: req.limit.map(|l| l.min(u32::MAX as usize - 1) as u32),
        };
        let m = &client.metrics;
        // A node that has just joined waits (briefly) for its view, rather
        // than owning every key while it knows no one.
        client.settled().await;
        // An owner that cannot be reached leaves this node's view, and the
        // key's next owner (the one every member that saw the same failure
        // picks) is asked once; then GitHub.
        for _ in 0..2 {
            let owner = client.owner(key);
            if owner == client.local_peer_id() {
                return None;
            }
            m.asked.fetch_add(1, Ordering::Relaxed);
            let result = match client.ask_retrying(owner, wire_req.clone()).await {
                Ok(res) => self.entry_from_peer(key, res),
                Err(e @ p2p::AskError::Unreachable(_)) => {
                    m.fallbacks.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(key = %key.as_str(), %owner, error = %e, "owner unreachable; asking the next owner");
                    client.suspect(owner).await;
                    continue;
                }
                // Alive but busy past the retries, or this node stopping:
                // no reason to suspect it.
                Err(e) => Err(e.to_string()),
            };
            return match result {
                Ok(entry) => {
                    m.received.fetch_add(1, Ordering::Relaxed);
                    Some(entry)
                }
                Err(e) => {
                    m.fallbacks.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(key = %key.as_str(), %owner, error = %e, "owner did not answer; asking GitHub");
                    None
                }
            };
        }
        None
    }

    /// Checks a peer's answer: the key it names, the status, the body size
    /// and the ETag's form; the TTL is at most ours.
    pub fn entry_from_peer(&self, key: &CacheKey, res: p2p::wire::Response) -> Result<Entry, String> {
        let p2p::wire::Response::Entry {
            key: k,
            status,
            etag,
            age_ms,
            ttl_ms,
            body,
        } = res
        else {
            return Err(match res {
                p2p::wire::Response::Error(e) => format!("owner failed: {e}"),
                _ => "unexpected answer".into(),
            });
        };
        if k != key.as_str() {
            return Err("answer is for another key".into());
        }
        if !(100..=599).contains(&status) {
            return Err(format!("bad status {status}"));
        }
        if body.len() > self.config.cache.max_bytes {
            return Err("body too large".into());
        }
        let etag = match etag {
            None => None,
            Some(t) => Some(ETag::new(&t).ok_or("malformed ETag")?),
        };
        let ttl = Duration::from_millis(ttl_ms).min(self.cache.ttl(key.operation()));
        let now = self.cache.now();
        Ok(Entry {
            status,
            body: body.into(),
            etag,
            fetched_at: now.saturating_sub(Duration::from_millis(age_ms).min(ttl)),
            ttl,
            origin: Origin::Peer,
        })
    }

    /// Answers a peer's entry request: through the single flight with peers
    /// off, so concurrent demand from the whole fleet makes one upstream
    /// call and an owner never forwards.
    pub async fn serve_peer(&self, req: p2p::wire::Request) -> p2p::wire::Response {
        use p2p::wire::{Response, WireShape};
        let p2p::wire::Request::Entry {
            key,
            path,
            query,
            shape,
            limit,
        } = req
        else {
            return Response::Error("not an entry request".into());
        };
        let key = match CacheKey::parse(&key) {
            Ok(k) => k,
            Err(e) => return Response::Error(format!("bad key: {e}")),
        };
        let mut req = Request {
            path,
            query,
            shape: match shape {
                WireShape::Single => upstream::Shape::Single,
                WireShape::Array => upstream::Shape::Array,
                WireShape::WorkflowRuns => upstream::Shape::Field("workflow_runs"),
                WireShape::Runners => upstream::Shape::Field("runners"),
            },
            limit: limit.map(|l| l as usize),
            ..Request::default()
        };
        // The request must be the one its key names (a peer cannot file
        // one path under another's key); the shape follows the operation.
        match tools::key_of(key.operation(), &req) {
            Some((expected, shape)) if expected.as_str() == key.as_str() => req.shape = shape,
            _ => return Response::Error("the request does not match its key".into()),
        }
        match self.read_with(&key, &req, false).await {
            // A stale answer is not worth spreading: the asker has its own.
            Ok(served) if served.mode == CacheMode::Stale => Response::Error("only a stale entry".into()),
            Ok(served) => Response::Entry {
                key: key.as_str().to_string(),
                status: served.entry.status,
                etag: served.entry.etag.as_ref().map(|t| t.as_str().to_string()),
                age_ms: served.entry.age(self.cache.now()).as_millis() as u64,
                ttl_ms: served.entry.ttl.as_millis() as u64,
                body: served.entry.body.to_vec(),
            },
            Err(e) => Response::Error(e.to_string()),
        }
    }

    /// This node's counters, as peers get them.
    pub fn stats_reply(&self) -> p2p::wire::StatsReply {
        let s = self.cache.stats();
        p2p::wire::StatsReply {
            lookups: s.lookups,
            hits: s.hits,
            misses: s.misses,
            api_calls: s.api_calls,
            api_calls_saved: s.api_calls_saved,
            peer_hits: s.peer_hits,
            entries: s.entries,
            peers: {
                let client = self.p2p.borrow().clone();
                client.map_or(0, |c| c.connected().len() as u64)
            },
        }
    }

    /// The `aggregate` section of the stats, from the counters members
    /// last announced (no peer is asked): this node, then each live member
    /// with the age of its counters; members silent past the failure bound
    /// are listed under `silent` (and `unreachable`) and left out of the
    /// totals.
    pub async fn aggregate(&self) -> Value {
        let Some(client) = self.p2p.borrow().clone() else {
            return Value::Null;
        };
        let mine = self.stats_reply();
        let rows = client.member_rows().await;
        let row = |id: String, s: &p2p::gossip::Counters, age_ms: u64, epoch: u64| {
            json!({"peer_id": id, "api_calls": s.api_calls, "api_calls_saved": s.api_calls_saved, "hits": s.hits,
                   "misses": s.misses, "peer_hits": s.peer_hits, "lookups": s.lookups, "entries": s.entries, "peers": s.peers,
                   "age_ms": age_ms, "epoch": epoch})
        };
        let my_epoch = client.metrics.epoch.load(crate::sync::Ordering::Relaxed);
        let mut per_peer = vec![row(client.local_peer_id().to_string(), &mine, 0, my_epoch)];
        let mut total = mine.clone();
        let mut silent = Vec::new();
        for m in rows {
            if m.live {
                let s = &m.counters;
                total.api_calls += s.api_calls;
                total.api_calls_saved += s.api_calls_saved;
                total.hits += s.hits;
                total.misses += s.misses;
                total.peer_hits += s.peer_hits;
                total.lookups += s.lookups;
                total.entries += s.entries;
                per_peer.push(row(m.peer_id.to_string(), s, m.age_ms, m.epoch));
            } else {
                silent.push(json!({"peer_id": m.peer_id.to_string(), "age_ms": m.age_ms,
                                   "error": format!("silent for {} ms", m.age_ms)}));
            }
        }
        json!({
            "nodes": per_peer.len(),
            "members": per_peer.len(),
            "peers": client.connected().len(),
            "epoch": my_epoch,
            "silent_after_ms": p2p::membership::SILENT_AFTER.as_millis() as u64,
            "api_calls": total.api_calls,
            "api_calls_saved": total.api_calls_saved,
            "hits": total.hits,
            "misses": total.misses,
            "peer_hits": total.peer_hits,
            "lookups": total.lookups,
            "entries": total.entries,
            "per_peer": per_peer,
            "unreachable": silent.clone(),
            "silent": silent,
        })
    }
}
