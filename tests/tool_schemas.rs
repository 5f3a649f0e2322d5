//! The tools' published input schemas agree with the server: every input
//! a schema accepts, `ToolCall::parse` accepts, and every input a schema
//! rejects, the server rejects (-32602, a tool error the caller reads).
//!
//! Inputs are objects over each tool's property names (plus an unknown
//! one), with values drawn from the edge cases of every argument type
//! (names with dots, paths with escapes and queries, whole floats, huge
//! and negative numbers, control characters, nulls, wrong types). The
//! schemas are checked by the `jsonschema` crate (draft 2020-12, ECMA-262
//! patterns). To show the check can fail, loosened copies of the schemas
//! (a pattern or bound dropped, a cross-field rule removed) must each be
//! caught disagreeing.
#![cfg(feature = "daemon")]

use ghcache::daemon::tools::{definitions, ToolCall};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

/// Edge values for an argument called `name` (any name also gets the
/// generic ones).
fn interesting(name: &str) -> Vec<Value> {
    let s = |v: &str| Value::String(v.to_string());
    let long = |c: &str, n: usize| Value::String(c.repeat(n));
    let mut v = match name {
        "repo" => vec![
            s("o/r"),
            s("octo-org/hello.world_2"),
            s("./r"),
            s("../r"),
            s("o/."),
            s("o/.."),
            s(".../..."),
            s("o"),
            s("o/r/x"),
            s("/r"),
            s("o/"),
            s("ö/r"),
            s("o/r\n"),
            Value::String(format!("{}/r", "a".repeat(100))),
            Value::String(format!("{}/r", "a".repeat(101))),
        ],
        "owner" | "org" => vec![
            s("octocat"),
            s("a.b-c_d"),
            s("."),
            s(".."),
            s("..."),
            s("a/b"),
            s("é"),
            long("a", 100),
            long("a", 101),
        ],
        "path" => vec![
            s("/repos/o/r"),
            s("repos/o/r/branches"),
            s("/"),
            s(""),
            s("/x?per_page=5"),
            s("/a//b"),
            s("/a/./b"),
            s("/a/../b"),
            s("/a/..."),
            s("/a/b/"),
            s("/a/%2e%2e/b"),
            s("/a/%2F"),
            s("/a/%5c"),
            s("/a/%25"),
            s("/a/%41"),
            s("/a/%20b"),
            s("/a/%7e"),
            s("/a/%7f"),
            s("/a/%0a"),
            s("/a/%c3%a9"),
            s("/a/%4"),
            s("/a/%zz"),
            s("/a/b#c"),
            s("/a b"),
            s("/a\\b"),
            s("/é"),
            s("/a:b@c!$&'()*+,;=~[]{}|^`\"<>"),
            Value::String(format!("/{}", "a".repeat(1023))),
            Value::String(format!("/{}", "a".repeat(1024))),
            long("a", 1024),
        ],
        "limit" => vec![
            json!(1),
            json!(30),
            json!(1000),
            json!(1001),
            json!(0),
            json!(-3),
            json!(5.0),
            json!(5.5),
            json!(1e3),
            json!(1e300),
            s("10"),
        ],
        "run_id" => vec![
            json!(1),
            json!(0),
            json!(-3),
            json!(42.0),
            json!(42.5),
            json!(999_999_999_999_999_999u64),
            json!(1_000_000_000_000_000_000u64),
            json!(u64::MAX),
            s("abc"),
            s("12"),
            s("0"),
            s("007"),
            s(""),
            s("1e3"),
            s("999999999999999999"),
            s("1000000000000000000"),
            s("000000000000000001"),
            s("0000000000000000001"),
        ],
        "status" | "branch" => vec![
            s("completed"),
            s("main"),
            s(""),
            s("a\u{0}"),
            s("a\u{85}"),
            s("a\u{a0}"),
            long("x", 256),
            long("x", 257),
            long("é", 256),
            long("é", 257),
        ],
        "state" => vec![s("open"), s("closed"), s("all"), s("OPEN"), s("merged")],
        "query" => vec![
            json!({}),
            json!({"per_page": 5, "state": "all", "draft": false}),
            json!({"x": null}),
            json!({"x": [1]}),
            json!({"x": {"y": 1}}),
            s("per_page=5"),
            json!([]),
        ],
        "pattern" => vec![s("runners"), s("*"), s(""), s("repo:repo=o/r"), s("api:*")],
        _ => vec![],
    };
    v.extend([Value::Null, json!(true), json!(7), s("x"), json!([]), json!({})]);
    v
}

/// Objects over `names` (each present or not) plus, sometimes, an unknown
/// property.
fn inputs(names: Vec<String>) -> impl Strategy<Value = Value> {
    let fields: Vec<_> = names
        .into_iter()
        .map(|name| {
            let values = interesting(&name);
            (
                Just(name),
                proptest::option::weighted(0.7, proptest::sample::select(values)),
            )
        })
        .collect();
    (fields, proptest::bool::weighted(0.1)).prop_map(|(fields, unknown)| {
        let mut map = Map::new();
        for (name, value) in fields {
            if let Some(value) = value {
                map.insert(name, value);
            }
        }
        if unknown {
            map.insert("unexpected".into(), json!(1));
        }
        Value::Object(map)
    })
}

/// The server's verdict: accepted, or refused as invalid arguments.
fn server_accepts(tool: &str, input: &Value) -> bool {
    match ToolCall::parse(tool, Some(input)) {
        Ok(_) => true,
        Err(e) => {
            assert_eq!(e.code, -32602, "{tool} {input}: refused with {e:?}");
            false
        }
    }
}

/// Runs `cases` inputs of `tool` against `schema`; the first disagreement
/// (shrunk), or how many inputs were accepted.
fn check(tool: &str, schema: &Value, cases: u32) -> Result<u32, String> {
    let validator = jsonschema::draft202012::new(schema).map_err(|e| format!("{tool}: bad schema: {e}"))?;
    let names: Vec<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let accepted = std::cell::Cell::new(0);
    runner
        .run(&inputs(names), |input| {
            let by_schema = validator.is_valid(&input);
            if by_schema != server_accepts(tool, &input) {
                return Err(TestCaseError::fail(format!(
                    "{tool}: the schema {} {input} but the server does not",
                    if by_schema { "accepts" } else { "rejects" }
                )));
            }
            accepted.set(accepted.get() + u32::from(by_schema));
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(accepted.get())
}

#[test]
fn every_schema_agrees_with_the_server() {
    for (tool, _, schema) in definitions() {
        let accepted = check(tool, &schema, 3000).unwrap_or_else(|e| panic!("{e}"));
        // Not vacuous: both verdicts were exercised.
        assert!(accepted >= 30, "{tool}: only {accepted} of 3000 inputs accepted");
        if schema["properties"].as_object().is_some_and(|p| !p.is_empty()) {
            assert!(accepted <= 2970, "{tool}: {accepted} of 3000 inputs accepted");
        }
    }
}

#[test]
fn the_disagreements_once_found_are_gone() {
    let schema = |tool: &str| definitions().into_iter().find(|d| d.0 == tool).unwrap().2;
    let both_refuse = |tool: &str, input: Value| {
        let validator = jsonschema::draft202012::new(&schema(tool)).unwrap();
        assert!(!validator.is_valid(&input), "{tool}: the schema accepts {input}");
        assert!(!server_accepts(tool, &input), "{tool}: the server accepts {input}");
    };
    both_refuse("gh_list_runners", json!({}));
    both_refuse("gh_get_workflow_run", json!({"repo": "o/r", "run_id": -3}));
    both_refuse("gh_get_workflow_run", json!({"repo": "o/r", "run_id": "abc"}));
    both_refuse("gh_api", json!({"path": "/x?per_page=5"}));
    both_refuse("gh_api", json!({"path": "/x", "query": "per_page=5"}));
}

/// Removes `pointer`'s last member from a copy of `tool`'s schema.
fn loosened(tool: &str, pointer: &str) -> Value {
    let mut schema = definitions().into_iter().find(|d| d.0 == tool).unwrap().2;
    let (parent, member) = pointer.rsplit_once('/').unwrap();
    let removed = schema
        .pointer_mut(parent)
        .and_then(|p| p.as_object_mut())
        .and_then(|p| p.remove(member));
    assert!(removed.is_some(), "{tool}: no {pointer} in the schema");
    schema
}

#[test]
fn a_loosened_schema_is_caught() {
    for (tool, pointer) in [
        ("gh_api", "/properties/path/pattern"),
        ("gh_api", "/properties/path/maxLength"),
        ("gh_get_repo", "/properties/repo/pattern"),
        ("gh_list_repos", "/properties/limit/maximum"),
        ("gh_list_runners", "/oneOf"),
        ("gh_invalidate_cache", "/not"),
        ("gh_list_workflow_runs", "/properties/status/maxLength"),
        ("gh_get_cache_stats", "/additionalProperties"),
    ] {
        let found = check(tool, &loosened(tool, pointer), 3000);
        assert!(found.is_err(), "{tool} without {pointer}: no disagreement found");
    }
}
