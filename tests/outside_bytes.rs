//! Property tests on the two decoders of outside bytes (what the fuzz
//! targets will call): the JSON-RPC handler and the store record decoder.
//! Both must never panic and must always answer something well-formed.
#![cfg(feature = "daemon")]

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{json, Value};

use ghcache::core::{Cache, ETag};
use ghcache::daemon::config::Config;
use ghcache::daemon::jsonrpc::{decode, handle_jsonrpc_bytes};
use ghcache::daemon::store::{decode_record, encode_record, StoredEntry};
use ghcache::daemon::{App, DaemonClock};

fn app() -> App {
    // GitHub is a closed local port with a short timeout: a tool call that
    // gets through validation fails fast, and never leaves the machine.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = Config {
        github_api_url: format!("http://{closed}"),
        store: false,
        upstream_retries: 0,
        upstream_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let clock = std::sync::Arc::new(DaemonClock::new());
    let cache = Cache::new(config.cache.clone(), clock.clone());
    App::new(config, cache, clock).unwrap()
}

fn check_response(v: &Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("response is not an object")?;
    if obj.get("jsonrpc") != Some(&json!("2.0")) {
        return Err(format!("no jsonrpc 2.0 in {v}"));
    }
    let id = obj.get("id").ok_or("no id")?;
    if !(id.is_null() || id.is_string() || id.is_number()) {
        return Err(format!("bad id in {v}"));
    }
    match (obj.get("result"), obj.get("error")) {
        (Some(_), None) => Ok(()),
        (None, Some(e)) => {
            let code = e["code"].as_i64().ok_or("error without integer code")?;
            if !e["message"].is_string() {
                return Err(format!("error without message: {v}"));
            }
            if !matches!(code, -32700 | -32600 | -32601 | -32602 | -32603 | -32000) {
                return Err(format!("unexpected code {code}"));
            }
            Ok(())
        }
        _ => Err(format!("need exactly one of result and error: {v}")),
    }
}

fn check_answer(answer: &Option<Value>) -> Result<(), String> {
    match answer {
        None => Ok(()),
        Some(Value::Array(items)) if !items.is_empty() => items.iter().try_for_each(check_response),
        Some(v) => check_response(v),
    }
}

/// JSON-RPC-shaped documents: right often enough to reach the tools.
fn rpc_like() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        6 => Just("tools/call".to_string()),
        1 => Just("tools/list".to_string()),
        1 => Just("ping".to_string()),
        1 => Just("initialize".to_string()),
        1 => Just("notifications/initialized".to_string()),
        1 => "[a-z/]{0,12}",
    ];
    let tool = prop_oneof![
        Just("gh_get_cache_stats"),
        Just("gh_invalidate_cache"),
        Just("gh_get_repo"),
        Just("gh_api"),
        Just("gh_list_runners"),
        Just("gh_get_workflow_run"),
        Just("gh_list_issues"),
        Just("nope"),
    ];
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        Just(json!("o/r")),
        Just(json!("/a/../b")),
    ];
    let key = prop_oneof![
        Just("repo"),
        Just("path"),
        Just("org"),
        Just("limit"),
        Just("run_id"),
        Just("pattern"),
        Just("query"),
        Just("x")
    ];
    let random_args = proptest::collection::btree_map(key, scalar.clone(), 0..3).prop_map(|m| json!(m));
    // Half the time, arguments that pass validation for the tool.
    let tool_and_args = (tool, random_args, any::<bool>()).prop_map(|(tool, random, good)| {
        let valid = match tool {
            "gh_get_repo" | "gh_list_runners" | "gh_list_issues" => json!({"repo": "o/r"}),
            "gh_api" => json!({"path": "/x", "query": {"a": 1}}),
            "gh_get_workflow_run" => json!({"repo": "o/r", "run_id": 7}),
            _ => json!({}),
        };
        (tool, if good { valid } else { random })
    });
    let id = prop_oneof![1 => Just(None), 4 => scalar.clone().prop_map(Some), 1 => Just(Some(json!([1])))];
    let version = prop_oneof![6 => Just(json!("2.0")), 1 => Just(json!("1.0")), 1 => Just(Value::Null)];
    (method, tool_and_args, id, version, any::<bool>()).prop_map(|(method, (tool, args), id, version, batch)| {
        let mut req = json!({"jsonrpc": version, "method": method, "params": {"name": tool, "arguments": args}});
        if let Some(id) = id {
            req["id"] = id;
        }
        let doc = if batch {
            json!([req, {"jsonrpc": "2.0", "method": "ping", "id": 9}])
        } else {
            req
        };
        serde_json::to_vec(&doc).unwrap()
    })
}

/// One runtime and one app for every case (the HTTP client belongs to the
/// runtime it first ran on).
fn shared() -> &'static (tokio::runtime::Runtime, App) {
    static SHARED: std::sync::OnceLock<(tokio::runtime::Runtime, App)> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        (rt, app())
    })
}

fn answer(bytes: &[u8]) -> Option<Value> {
    let (rt, app) = shared();
    rt.block_on(handle_jsonrpc_bytes(app, bytes))
}

#[test]
fn rpc_like_input_reaches_the_tools() {
    // Same generator, fixed seed: some cases must get through validation.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let mut reached = 0;
    for _ in 0..300 {
        let bytes = rpc_like().new_tree(&mut runner).unwrap().current();
        if let Some(a) = answer(&bytes) {
            let results: Vec<&Value> = match &a {
                Value::Array(items) => items.iter().collect(),
                v => vec![v],
            };
            // A tool ran: a stats or invalidation result, or a read that failed
            // at the (closed) GitHub port after passing validation.
            reached += results
                .iter()
                .filter(|r| {
                    r.get("result")
                        .is_some_and(|r| r.get("lookups").is_some() || r.get("invalidated").is_some())
                        || r["error"]["code"] == -32000
                })
                .count();
        }
    }
    assert!(reached >= 5, "only {reached} of 300 generated calls reached a tool");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn jsonrpc_decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn jsonrpc_handler_answers_well_formed_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let answer = answer(&bytes);
        prop_assert!(check_answer(&answer).is_ok(), "{:?}", check_answer(&answer));
    }

    #[test]
    fn jsonrpc_handler_answers_well_formed_on_rpc_like_input(bytes in rpc_like()) {
        let answer = answer(&bytes);
        prop_assert!(check_answer(&answer).is_ok(), "{:?} for {}", check_answer(&answer), String::from_utf8_lossy(&bytes));

    }

    #[test]
    fn store_decoder_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(entry) = decode_record(&bytes) {
            // Whatever decodes is canonical.
            prop_assert_eq!(encode_record(&entry), bytes);
        }
    }

    #[test]
    fn store_records_round_trip_and_damage_is_caught(
        status in 100u16..600,
        fetched in any::<u64>(),
        ttl in 0u64..u64::MAX / 2,
        tag in proptest::option::of("[!-~]{1,40}"),
        body in proptest::collection::vec(any::<u8>(), 0..200),
        flip in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let entry = StoredEntry {
            status,
            fetched_unix_ms: fetched,
            ttl: Duration::from_millis(ttl),
            etag: tag.as_deref().and_then(ETag::new),
            body: Bytes::from(body),
        };
        let bytes = encode_record(&entry);
        prop_assert_eq!(decode_record(&bytes), Ok(entry));
        let mut damaged = bytes.clone();
        let i = flip.index(damaged.len());
        damaged[i] ^= 0x01;
        prop_assert!(decode_record(&damaged).is_err());
        let n = cut.index(bytes.len());
        prop_assert!(decode_record(&bytes[..n]).is_err());
    }
}
