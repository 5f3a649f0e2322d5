//! `POST /jsonrpc`: plain JSON-RPC 2.0 in one POST, for scripts and clients that do not speak MCP.
//!
//! `tools/call` answers the tool's result object itself (not MCP content),
//! so `jq .result.peer_id` works on `gh_get_cache_stats`. Also accepted:
//! `initialize`, `ping`, `tools/list`, notifications (no answer) and
//! batches. Errors use the standard codes: -32700 parse error, -32600
//! invalid request, -32601 unknown method or tool, -32602 bad params; a
//! GitHub failure is -32000 with GitHub's status in `data`.
//!
//! [`decode`] is pure and total on arbitrary bytes (the fuzz target's entry
//! point); [`handle_jsonrpc_bytes`] runs what it decoded.

use serde_json::{json, Value};

use super::tools::{RpcError, ToolCall};
use super::App;

/// One decoded request: its id (absent for a notification) and either the
/// call to run or the error to answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// `None` for a notification (no answer is sent).
    pub id: Option<Value>,
    /// What to do.
    pub call: Result<Call, RpcError>,
}

/// A valid method.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// `initialize`.
    Initialize,
    /// `ping`.
    Ping,
    /// `tools/list`.
    ListTools,
    /// `tools/call`.
    Tool(Box<ToolCall>),
    /// A notification we accept and ignore (`notifications/*`).
    Ignore,
}

/// What a body decoded to.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// One request.
    Single(Decoded),
    /// A batch.
    Batch(Vec<Decoded>),
    /// Not JSON, or an empty batch: answer this error with id null.
    Invalid(RpcError),
}

fn invalid_request(message: &str) -> RpcError {
    RpcError {
        code: -32600,
        message: message.to_string(),
        data: None,
    }
}

/// Decodes a request body (pure, never panics).
pub fn decode(bytes: &[u8]) -> Body {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return Body::Invalid(RpcError {
                code: -32700,
                message: format!("parse error: {e}"),
                data: None,
            })
        }
    };
    match value {
        Value::Array(items) if items.is_empty() => Body::Invalid(invalid_request("empty batch")),
        Value::Array(items) => Body::Batch(items.iter().map(decode_one).collect()),
        other => Body::Single(decode_one(&other)),
    }
}

fn decode_one(v: &Value) -> Decoded {
    let Value::Object(obj) = v else {
        return Decoded {
            id: Some(Value::Null),
            call: Err(invalid_request("a request must be an object")),
        };
    };
    let id = match obj.get("id") {
        None => None,
        Some(id @ (Value::Null | Value::String(_) | Value::Number(_))) => Some(id.clone()),
        Some(_) => {
            return Decoded {
                id: Some(Value::Null),
                call: Err(invalid_request("`id` must be a string, a number or null")),
            }
        }
    };
    let fail = |e: RpcError| Decoded {
        id: Some(id.clone().unwrap_or(Value::Null)),
        call: Err(e),
    };
    if obj.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return fail(invalid_request("`jsonrpc` must be \"2.0\""));
    }
    let Some(Value::String(method)) = obj.get("method") else {
        return fail(invalid_request("`method` must be a string"));
    };
    let params = obj.get("params");
    if !matches!(params, None | Some(Value::Object(_)) | Some(Value::Array(_))) {
        return fail(invalid_request("`params` must be an object or an array"));
    }
    let call = match method.as_str() {
        "initialize" => Ok(Call::Initialize),
        "ping" => Ok(Call::Ping),
        "tools/list" => Ok(Call::ListTools),
        "tools/call" => match params {
            Some(Value::Object(p)) => match p.get("name") {
                Some(Value::String(name)) => {
                    ToolCall::parse(name, p.get("arguments")).map(|call| Call::Tool(Box::new(call)))
                }
                _ => Err(RpcError::invalid_params("`params.name` must be a string")),
            },
            _ => Err(RpcError::invalid_params("tools/call needs params {name, arguments}")),
        },
        m if m.starts_with("notifications/") => Ok(Call::Ignore),
        m => Err(RpcError::method_not_found(format!("unknown method {m:?}"))),
    };
    Decoded { id, call }
}

/// The error response object for `id`.
pub fn error_response(id: Value, e: &RpcError) -> Value {
    let mut error = json!({"code": e.code, "message": e.message});
    if let Some(data) = &e.data {
        error["data"] = data.clone();
    }
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

async fn run(app: &App, d: Decoded) -> Option<Value> {
    let result = match d.call {
        Ok(Call::Initialize) => Ok(json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "ghcache", "version": env!("CARGO_PKG_VERSION")},
        })),
        Ok(Call::Ping) | Ok(Call::Ignore) => Ok(json!({})),
        Ok(Call::ListTools) => Ok(super::tools::list()),
        Ok(Call::Tool(call)) => app.call(*call).await,
        Err(e) => Err(e),
    };
    let id = d.id?; // notifications get no answer
    Some(match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => error_response(id, &e),
    })
}

/// Answers a request body: `None` when nothing is to be sent back (only
/// notifications).
pub async fn handle_jsonrpc_bytes(app: &App, bytes: &[u8]) -> Option<Value> {
    match decode(bytes) {
        Body::Invalid(e) => Some(error_response(Value::Null, &e)),
        Body::Single(d) => run(app, d).await,
        Body::Batch(items) if items.len() > app.config.limits.max_batch => {
            app.metrics.refused(super::metrics::Refusal::BatchSize);
            let e = invalid_request(&format!(
                "a batch of {} calls; at most {} are allowed (max_batch)",
                items.len(),
                app.config.limits.max_batch
            ));
            Some(error_response(Value::Null, &e))
        }
        Body::Batch(items) => {
            let answers = futures_util::future::join_all(items.into_iter().map(|d| run(app, d))).await;
            let answers: Vec<Value> = answers.into_iter().flatten().collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors() {
        assert!(matches!(decode(b"{"), Body::Invalid(RpcError { code: -32700, .. })));
        assert!(matches!(decode(b"[]"), Body::Invalid(RpcError { code: -32600, .. })));
        let Body::Single(d) = decode(br#"{"jsonrpc":"1.0","method":"ping","id":1}"#) else {
            panic!()
        };
        assert_eq!(d.call.unwrap_err().code, -32600);
        let Body::Single(d) = decode(br#"{"jsonrpc":"2.0","method":"nope","id":1}"#) else {
            panic!()
        };
        assert_eq!(d.call.unwrap_err().code, -32601);
        let Body::Single(d) = decode(
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"gh_get_repo","arguments":{}},"id":"a"}"#,
        ) else {
            panic!()
        };
        assert_eq!(d.id, Some(json!("a")));
        assert_eq!(d.call.unwrap_err().code, -32602);
        let Body::Single(d) = decode(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#) else {
            panic!()
        };
        assert_eq!((d.id, d.call), (None, Ok(Call::Ignore)));
    }
}
