//! `POST /mcp`: MCP Streamable HTTP through rmcp.
//!
//! [`McpHandler`] implements rmcp's `ServerHandler` by hand (no macros):
//! `tools/list` comes from [`tools::definitions`](super::tools::definitions)
//! and `tools/call` from [`ToolCall::parse`] + [`App::call`], the very
//! functions `/jsonrpc` uses. A tool's result is returned as MCP content
//! (its JSON as text) plus `structuredContent`; a GitHub failure and
//! arguments that fail validation are tool errors (`isError: true`) the
//! caller can read and correct, while an unknown tool is a protocol error
//! (-32601).

use std::borrow::Cow;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ErrorCode, ErrorData, Implementation, InitializeResult,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler};
use serde_json::Value;

use super::tools::{self, ToolCall};
use super::App;
use crate::sync::StdArc as Arc;

/// The rmcp handler: a handle to the shared [`App`].
#[derive(Clone)]
pub struct McpHandler {
    app: Arc<App>,
}

impl McpHandler {
    /// A handler for `app`.
    pub fn new(app: Arc<App>) -> McpHandler {
        McpHandler { app }
    }
}

/// The tool list in rmcp's types.
pub fn rmcp_tools() -> Vec<Tool> {
    tools::definitions()
        .into_iter()
        .map(|(name, description, schema)| {
            let schema = match schema {
                Value::Object(map) => map,
                _ => Default::default(),
            };
            Tool::new(Cow::Borrowed(name), Cow::Borrowed(description), Arc::new(schema))
        })
        .collect()
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> InitializeResult {
        let mut info = InitializeResult::new(ServerCapabilities::builder().enable_tools().build());
        let mut implementation = Implementation::default();
        implementation.name = "ghcache".into();
        implementation.version = env!("CARGO_PKG_VERSION").into();
        info.server_info = implementation;
        info.with_instructions(
            "GitHub API reads through a shared cache. Every result has cache_mode: hit, revalidated, miss, stale, coalesced or peer.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(rmcp_tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        rmcp_tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = request.arguments.map(Value::Object);
        let call = match ToolCall::parse(&request.name, arguments.as_ref()) {
            Ok(call) => call,
            // Bad arguments are a tool result the model can read and correct
            // (MCP 2025-11-25, SEP-1303); an unknown tool stays a protocol
            // error.
            Err(e) if e.code == -32602 => {
                return Ok(CallToolResult::structured_error(serde_json::json!({"error": e.message})).into());
            }
            Err(e) => return Err(ErrorData::new(ErrorCode(e.code as i32), e.message, e.data)),
        };
        // One tool call, one upstream budget (`max_upstream_per_request`).
        let max = self.app.config.limits.max_upstream_per_request;
        let client = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<super::http::serve::ClientAddr>())
            .map(|c| c.0.ip());
        let result = match super::budget::scope(max, client, self.app.call(call)).await {
            Ok(value) => CallToolResult::structured(value),
            Err(e) if e.code == -32000 => {
                let mut value = e.data.unwrap_or(Value::Null);
                if let Value::Object(map) = &mut value {
                    map.insert("error".into(), Value::String(e.message));
                } else {
                    value = serde_json::json!({"error": e.message});
                }
                CallToolResult::structured_error(value)
            }
            Err(e) => return Err(ErrorData::new(ErrorCode(e.code as i32), e.message, e.data)),
        };
        Ok(result.into())
    }
}
