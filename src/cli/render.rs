//! Text for people from the tools' JSON results: a few lines for stats,
//! an aligned table for peers, one line for an invalidation.
//!
//! Pure functions of the JSON (plus the wall clock for "resets in"), so
//! they are tested on fixed values. A field the daemon did not send shows
//! as `?` rather than failing: `--json` is the exact form, this is a view.

use serde_json::Value;

fn num(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn show(n: Option<u64>) -> String {
    n.map_or_else(|| "?".to_string(), |n| n.to_string())
}

/// `1536` → `1.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3720` → `1 h 2 min`.
pub fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// `1 peer`, `2 peers`.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".to_string()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `gh_get_cache_stats` in a few lines.
pub fn stats(v: &Value) -> String {
    stats_at(v, unix_now())
}

/// [`stats`] with the current Unix time given.
pub fn stats_at(v: &Value, now: u64) -> String {
    let mut lines: Vec<(&str, String)> = Vec::new();
    let bytes_of = |key: &str| num(v, key).map_or_else(|| "?".to_string(), bytes);
    lines.push((
        "cache",
        format!(
            "{} entries, {} (limits: {} entries, {})",
            show(num(v, "entries")),
            bytes_of("bytes"),
            show(num(v, "max_entries")),
            bytes_of("max_bytes"),
        ),
    ));
    let lookups = num(v, "lookups").unwrap_or(0);
    let hits = num(v, "hits").unwrap_or(0);
    lines.push((
        "lookups",
        format!(
            "{lookups}: {hits} hits ({}), {} stale, {} misses, {} coalesced, {} from peers",
            percent(hits, lookups),
            show(num(v, "stale_hits")),
            show(num(v, "misses")),
            show(num(v, "coalesced")),
            show(num(v, "peer_hits")),
        ),
    ));
    let mut github = format!(
        "{} requests made, {} saved",
        show(num(v, "upstream_requests").or(num(v, "api_calls"))),
        show(num(v, "api_calls_saved")),
    );
    let rate = &v["rate_limit"];
    if let (Some(left), Some(limit)) = (num(rate, "remaining"), num(rate, "limit")) {
        github.push_str(&format!("; quota {left} of {limit} left"));
        if let Some(reset) = num(rate, "reset") {
            github.push_str(&format!(", resets in {}", duration(reset.saturating_sub(now))));
        }
        if rate["exhausted"].as_bool() == Some(true) {
            github.push_str(" (spent: serving stale)");
        }
    }
    lines.push(("GitHub", github));
    let p2p = &v["p2p"];
    let phase = p2p["phase"].as_str().unwrap_or("?");
    let mut p2p_line = match v["peer_id"].as_str().or(p2p["peer_id"].as_str()) {
        Some(id) => format!("{phase} as {id}"),
        None => phase.to_string(),
    };
    if let Some(e) = p2p["last_error"].as_str() {
        p2p_line.push_str(&format!(" (last error: {e})"));
    }
    let fleet = &v["aggregate"];
    if fleet.is_object() {
        p2p_line.push_str(&format!(
            "; fleet of {}: {} requests made, {} saved",
            num(fleet, "nodes").map_or_else(|| "? nodes".to_string(), |n| count(n, "node", "nodes")),
            show(num(fleet, "api_calls")),
            show(num(fleet, "api_calls_saved")),
        ));
        let unreachable = fleet["unreachable"].as_array().map_or(0, Vec::len);
        if unreachable > 0 {
            p2p_line.push_str(&format!(", {unreachable} unreachable"));
        }
    }
    lines.push(("P2P", p2p_line));
    let store = &v["store"];
    let store_line = if store.is_object() {
        let path = store["path"].as_str().unwrap_or("?");
        let mut s = format!(
            "{path}: {} loaded at start, {} written",
            show(num(store, "loaded")),
            show(num(store, "written"))
        );
        if store["degraded"].as_bool() == Some(true) {
            s.push_str(&format!(
                "; DEGRADED, serving from memory: {}",
                store["error"].as_str().unwrap_or("?")
            ));
        }
        s
    } else {
        "off (memory only)".to_string()
    };
    lines.push(("store", store_line));
    lines.push((
        "uptime",
        num(v, "uptime_secs").map_or_else(|| "?".to_string(), duration),
    ));
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    lines.iter().map(|(k, text)| format!("{k:<width$}  {text}\n")).collect()
}

/// Rows as columns padded to their widest cell (the last column is not
/// padded).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `gh_list_peers` as a table.
pub fn peers(v: &Value) -> String {
    if v["running"].as_bool() == Some(false) {
        return "P2P is not running on this daemon: no peers\n".to_string();
    }
    let me = v["peer_id"].as_str().unwrap_or("?");
    let list = v["peers"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return format!("no peers connected (this node: {me})\n");
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            let addrs: Vec<&str> = p["addrs"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            vec![
                p["peer_id"].as_str().unwrap_or("?").to_string(),
                num(p, "rtt_ms").map_or_else(|| "-".to_string(), |ms| format!("{ms} ms")),
                p["agent"].as_str().unwrap_or("-").to_string(),
                if addrs.is_empty() {
                    "-".to_string()
                } else {
                    addrs.join(", ")
                },
            ]
        })
        .collect();
    format!(
        "{} of {me}\n{}",
        count(rows.len() as u64, "peer", "peers"),
        table(&["PEER ID", "PING", "AGENT", "ADDRESSES"], &rows)
    )
}

/// `gh_invalidate_cache` in one line.
pub fn invalidated(v: &Value) -> String {
    let n = num(v, "invalidated").map_or_else(|| "? entries".to_string(), |n| count(n, "entry", "entries"));
    let what = match (v["repo"].as_str(), v["pattern"].as_str()) {
        (Some(repo), _) => format!("of repository {repo}"),
        (None, Some("*") | None) => "(everything)".to_string(),
        (None, Some(p)) => format!("with keys starting {p:?}"),
    };
    format!("invalidated {n} {what}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(256 << 20), "256.0 MiB");
        assert_eq!(duration(59), "59 s");
        assert_eq!(duration(3720), "1 h 2 min");
        assert_eq!(duration(90_000), "1 d 1 h");
    }

    #[test]
    fn stats_lines() {
        let v = json!({"entries": 3, "bytes": 2048, "max_entries": 10, "max_bytes": 1048576,
            "lookups": 4, "hits": 1, "stale_hits": 0, "misses": 3, "coalesced": 0, "peer_hits": 0,
            "api_calls_saved": 1, "upstream_requests": 3,
            "rate_limit": {"limit": 5000, "remaining": 4997, "reset": 1000 + 600, "exhausted": false},
            "p2p": {"phase": "disabled", "peer_id": null}, "peer_id": null, "store": null, "uptime_secs": 61, "aggregate": null});
        let text = stats_at(&v, 1000);
        assert_eq!(
            text,
            "cache    3 entries, 2.0 KiB (limits: 10 entries, 1.0 MiB)\n\
             lookups  4: 1 hits (25.0 %), 0 stale, 3 misses, 0 coalesced, 0 from peers\n\
             GitHub   3 requests made, 1 saved; quota 4997 of 5000 left, resets in 10 min\n\
             P2P      disabled\n\
             store    off (memory only)\n\
             uptime   1 min\n"
        );
    }

    #[test]
    fn peers_table_is_aligned() {
        let v = json!({"running": true, "peer_id": "me", "count": 2, "peers": [
            {"peer_id": "12D3KooWA", "addrs": ["/ip4/127.0.0.1/tcp/1"], "agent": "ghcache/0.1.0", "rtt_ms": 3},
            {"peer_id": "12D3KooWLonger", "addrs": [], "agent": null, "rtt_ms": null}]});
        assert_eq!(
            peers(&v),
            "2 peers of me\n\
             PEER ID         PING  AGENT          ADDRESSES\n\
             12D3KooWA       3 ms  ghcache/0.1.0  /ip4/127.0.0.1/tcp/1\n\
             12D3KooWLonger  -     -              -\n"
        );
        assert!(peers(&json!({"running": false, "peer_id": null, "peers": []})).contains("not running"));
    }

    #[test]
    fn invalidation_line() {
        assert_eq!(
            invalidated(&json!({"invalidated": 2, "pattern": "*"})),
            "invalidated 2 entries (everything)\n"
        );
        assert_eq!(
            invalidated(&json!({"invalidated": 1, "repo": "o/r"})),
            "invalidated 1 entry of repository o/r\n"
        );
        assert_eq!(
            invalidated(&json!({"invalidated": 0, "pattern": "runners:"})),
            "invalidated 0 entries with keys starting \"runners:\"\n"
        );
    }
}
