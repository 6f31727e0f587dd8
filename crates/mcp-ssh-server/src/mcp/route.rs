//! Which era a POSTed message is served in, and for whom: the first step of
//! [`super::handle_post`]. A message is classified once, from its method, its params' `_meta`
//! and its headers; a message that fits no era is refused here with the error the spec asks
//! for.

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use super::jsonrpc::{RpcError, code};
use super::{Era, modern, version};
use crate::app::App;
use crate::sessions::Owner;

/// Where a message goes.
#[derive(Debug)]
pub(super) struct Route {
    /// The era whose rules apply.
    pub era: Era,
    /// Who owns what the message opens (`None`: it may open nothing).
    pub owner: Option<Owner>,
    /// Its rate-limit bucket, also what per-client limits count: `mcp:<session>` or
    /// `client:<identity>`.
    pub bucket: String,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Classifies a message of `method` (`is_request`: it has an id) from `client` (its
/// stateless identity); `Err` is the error to answer with instead.
pub(super) fn classify(
    app: &App,
    headers: &HeaderMap,
    method: &str,
    is_request: bool,
    params: &Map<String, Value>,
    client: &str,
) -> Result<Route, RpcError> {
    let stateless = |era, owner| Route {
        era,
        owner,
        bucket: format!("client:{client}"),
    };
    if method == "initialize" && !modern::has_modern_meta(params) {
        return Ok(stateless(Era::Legacy, None));
    }
    if let Some(sid) = header(headers, "mcp-session-id") {
        return in_session(app, headers, sid, method);
    }
    if modern::has_modern_meta(params) {
        modern::check(headers, method, params)?;
        return Ok(stateless(Era::Modern, Some(Owner::stateless(client))));
    }
    let header_version = header(headers, "mcp-protocol-version");
    if let Some(v) = header_version.filter(|v| version::MODERN.contains(v)) {
        // A 2026-07-28 request (by its header) without the `_meta` that every such request
        // carries, or whose `_meta` lacks the protocol version: its params are invalid.
        return Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            code::INVALID_PARAMS,
            format!(
                "Invalid params: a {v} request carries params._meta with \"{}\"",
                modern::META_VERSION
            ),
        ));
    }
    if method == "ping" || !is_request {
        // A 2025 client may ping before initialize; stray notifications are harmless.
        return Ok(stateless(Era::Legacy, None));
    }
    if let Some(v) = header_version.filter(|v| version::legacy(v).is_none()) {
        return Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            code::SERVER_ERROR,
            format!("Bad Request: unsupported MCP-Protocol-Version '{v}'"),
        )
        .with_data(json!({"supported": version::all(), "requested": v})));
    }
    Err(RpcError::new(
        StatusCode::BAD_REQUEST,
        code::SERVER_ERROR,
        "Bad Request: Mcp-Session-Id header is required (call initialize first), or send \
         protocol 2026-07-28 _meta with every request",
    ))
}

/// A message in the 2025-era session `sid`: the session must be open, and a protocol version
/// header must be the one it negotiated. Any message but `notifications/initialized` counts as
/// using the session (an unused one may be evicted near the cap).
fn in_session(app: &App, headers: &HeaderMap, sid: &str, method: &str) -> Result<Route, RpcError> {
    let used = method != "notifications/initialized";
    let Ok(session) = app.mcp_sessions.touch(sid, used) else {
        return Err(RpcError::new(
            StatusCode::NOT_FOUND,
            code::SESSION_NOT_FOUND,
            "Session not found: the Mcp-Session-Id is unknown or expired; initialize again",
        ));
    };
    if let Some(h) = header(headers, "mcp-protocol-version")
        && h != session.version
    {
        return Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            code::SERVER_ERROR,
            format!(
                "Bad Request: MCP-Protocol-Version '{h}' is not the version negotiated for this \
                 session ('{}')",
                session.version
            ),
        ));
    }
    Ok(Route {
        era: Era::Legacy,
        owner: Some(Owner::McpSession(sid.to_owned())),
        bucket: format!("mcp:{sid}"),
    })
}
