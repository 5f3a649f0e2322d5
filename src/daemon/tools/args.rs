//! The argument types of the tools: each type is the one definition of
//! what an argument may be. Its `Deserialize` is the server's validation
//! and its `JsonSchema` is what `tools/list` publishes, written side by
//! side so they say the same thing; `tests/tool_schemas.rs` checks that
//! they do (every input the schema accepts, the server accepts, and the
//! reverse).
//!
//! Patterns are ECMA-262 regular expressions, as JSON Schema specifies
//! (lookahead included). A JSON Schema `maxLength` counts code points.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use crate::daemon::api_base::{ApiPath, MAX_PATH_BYTES};

/// Defines a string newtype whose schema is `$schema` and whose value is
/// checked by `$check` (`fn(&str) -> Result<(), String>`).
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr, $schema:tt) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name(pub String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                let check: fn(&str) -> Result<(), String> = $check;
                check(&text).map_err(de::Error::custom)?;
                Ok($name(text))
            }
        }

        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

/// A GitHub login or repository name: 1 to 100 of `A-Z a-z 0-9 _ . -`,
/// not `.` or `..`.
pub(crate) fn name_ok(s: &str) -> bool {
    (1..=100).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
        && s != ".."
}

/// Is `repo` an `owner/name` the tools accept (as [`RepoName`])?
pub fn is_repo_name(repo: &str) -> bool {
    repo.split_once('/').is_some_and(|(o, r)| name_ok(o) && name_ok(r))
}

checked_string!(
    /// `owner/name`.
    RepoName,
    |s| {
        if is_repo_name(s) {
            Ok(())
        } else {
            Err(format!("`repo` must look like owner/name, got {:?}", truncate(s)))
        }
    },
    {
        "type": "string",
        "description": "owner/name",
        "pattern": "^(?!\\.\\.?/)[A-Za-z0-9_.-]{1,100}/(?!\\.\\.?$)[A-Za-z0-9_.-]{1,100}$"
    }
);

checked_string!(
    /// A user or organisation login.
    Login,
    |s| {
        if name_ok(s) {
            Ok(())
        } else {
            Err(format!("not a valid GitHub login: {:?}", truncate(s)))
        }
    },
    {
        "type": "string",
        "description": "a user or organisation login",
        "pattern": "^(?!\\.\\.?$)[A-Za-z0-9_.-]{1,100}$"
    }
);

checked_string!(
    /// A free-text filter (`status`, `branch`): 1 to 256 characters, none
    /// of them a control character.
    Text,
    |s| {
        if (1..=256).contains(&s.chars().count()) && !s.chars().any(char::is_control) {
            Ok(())
        } else {
            Err("must be 1 to 256 characters, none of them a control character".to_string())
        }
    },
    {
        "type": "string",
        "minLength": 1,
        "maxLength": 256,
        "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    }
);

checked_string!(
    /// A GitHub API path (see [`ApiPath`]): no query, no dot or empty
    /// segments, no backslash, only escapes of harmless printable ASCII.
    PathArg,
    |s| {
        if s.len() > MAX_PATH_BYTES {
            return Err(format!("`path` is longer than {MAX_PATH_BYTES} bytes"));
        }
        ApiPath::parse(s).map(drop).map_err(|e| {
            format!("`path` must be a GitHub API path like /repos/o/r: {e}")
        })
    },
    {
        "type": "string",
        "description": "a GitHub REST path like /repos/o/r/branches (the query goes in `query`)",
        "maxLength": 1024,
        "pattern": "^/?(?:(?!\\.\\.?(?:/|$))(?:[!\"$&'()*+,\\-.0-9:;<=>@A-Z\\[\\]^_`a-z{|}~]|%(?:2[0-46-9A-Da-d]|[346][0-9A-Fa-f]|5[0-9ABD-Fabd-f]|7[0-9A-Ea-e]))+(?:/(?!\\.\\.?(?:/|$))(?:[!\"$&'()*+,\\-.0-9:;<=>@A-Z\\[\\]^_`a-z{|}~]|%(?:2[0-46-9A-Da-d]|[346][0-9A-Fa-f]|5[0-9ABD-Fabd-f]|7[0-9A-Ea-e]))+)*)?$"
    }
);

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(120);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A JSON number that is a whole number (`5` or `5.0`, as JSON Schema's
/// `integer`), if it is one within `u64`.
fn whole(n: &Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        let f = n.as_f64()?;
        (f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f)).then_some(f as u64)
    })
}

/// How many items a list tool returns: 1 to 1000 (default 30).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub usize);

impl Default for Limit {
    fn default() -> Limit {
        Limit(30)
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = Number::deserialize(d)?;
        match whole(&n) {
            Some(n @ 1..=1000) => Ok(Limit(n as usize)),
            _ => Err(de::Error::custom("`limit` must be an integer from 1 to 1000")),
        }
    }
}

impl JsonSchema for Limit {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Limit".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": 1, "maximum": 1000, "description": "most items (default 30)"})
    }
}

/// Largest run id taken (18 digits; GitHub's are 11 today).
const MAX_RUN_ID: u64 = 999_999_999_999_999_999;

/// A workflow run id: a positive integer, as a number or a string of digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunId(pub u64);

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let id = match Value::deserialize(d)? {
            Value::Number(n) => whole(&n),
            Value::String(s) if (1..=18).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
            _ => None,
        };
        match id {
            Some(id @ 1..=MAX_RUN_ID) => Ok(RunId(id)),
            _ => Err(de::Error::custom(
                "`run_id` must be a positive integer (a number or a string of digits)",
            )),
        }
    }
}

impl JsonSchema for RunId {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "RunId".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_RUN_ID},
                {"type": "string", "maxLength": 18, "pattern": "^0*[1-9][0-9]*$"}
            ]
        })
    }
}

/// `gh_api`'s query: an object of strings, numbers and booleans.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryArg(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for QueryArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = Map::<String, Value>::deserialize(d)
            .map_err(|_| de::Error::custom("`query` must be an object of strings, numbers and booleans"))?;
        map.into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                Value::Number(n) => Ok((k, n.to_string())),
                Value::Bool(b) => Ok((k, b.to_string())),
                _ => Err(de::Error::custom(format!(
                    "query value `{}` must be a string, number or boolean",
                    truncate(&k)
                ))),
            })
            .collect::<Result<_, _>>()
            .map(QueryArg)
    }
}

impl JsonSchema for QueryArg {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Query".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": "query parameters, e.g. {\"per_page\": 100, \"state\": \"all\"}",
            "additionalProperties": {"type": ["string", "number", "boolean"]}
        })
    }
}

/// The state filter of issues and pull requests: `open`, `closed`, `all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    // Each variant's schema is its name, so no doc comments here.
    #[allow(missing_docs)]
    Open,
    #[allow(missing_docs)]
    Closed,
    #[allow(missing_docs)]
    All,
}

impl State {
    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Closed => "closed",
            State::All => "all",
        }
    }
}
