//! MCP over Streamable HTTP, both protocol eras on one endpoint.
//!
//! A POST is classified once, then handled by one era's rules:
//! - `initialize`, or a request naming an `Mcp-Session-Id`: the 2025 handshake era
//!   (2025-11-25, 2025-06-18, 2025-03-26). The session owns the SSH sessions it opens and has
//!   its own rate-limit bucket.
//! - a request whose params carry `_meta["io.modelcontextprotocol/protocolVersion"]`: the
//!   stateless 2026-07-28 era. Nothing is negotiated; headers must mirror the body; results
//!   carry `resultType`. SSH sessions and rate limits belong to the client identity (bearer
//!   token, else remote address).
//! - anything else: a 2025 client that skipped `initialize` (400), except `ping`.
//!
//! This module knows JSON-RPC and MCP; it knows nothing of sockets (the `http` module) or SSH
//! (the `tools` module).

pub mod jsonrpc;
pub mod legacy;
pub mod modern;
mod route;
pub mod version;

use std::net::IpAddr;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::ratelimit::LimitScope;
use crate::sessions::Owner;
use crate::tools;
use jsonrpc::{Incoming, RpcError, code};
use legacy::Full;
use route::Route;

/// Server name in `serverInfo`.
pub const SERVER_NAME: &str = "mcp-ssh-server";
const INSTRUCTIONS: &str = "Call ssh_connect to get a session_id, pass it to the other ssh_* \
    tools, and ssh_disconnect when done (sessions idle for the server's session timeout are \
    closed). Commands run without a shell and must be on the read-only allowlist.";

/// What to send back.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON-RPC message, or none (202).
    pub body: Option<Value>,
    /// `Mcp-Session-Id` to set (on `initialize`).
    pub session_id: Option<String>,
    /// `Retry-After` seconds (on 429).
    pub retry_after: Option<u64>,
}

impl Reply {
    fn ok(id: &Value, result: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body: Some(jsonrpc::success(id, result)),
            session_id: None,
            retry_after: None,
        }
    }
    fn error(id: &Value, e: RpcError) -> Self {
        Self {
            status: e.status,
            body: Some(e.to_response(id)),
            session_id: None,
            retry_after: None,
        }
    }
    fn accepted() -> Self {
        Self {
            status: StatusCode::ACCEPTED,
            body: None,
            session_id: None,
            retry_after: None,
        }
    }
}

/// Which era a request is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Era {
    Legacy,
    Modern,
}

fn server_info() -> Value {
    json!({"name": SERVER_NAME, "title": "MCP SSH automation server", "version": env!("CARGO_PKG_VERSION")})
}

fn capabilities() -> Value {
    // logging: setLevel is accepted (this server sends no log notifications to clients).
    // prompts and resources: their lists are answered, empty.
    json!({
        "tools": {"listChanged": false},
        "prompts": {"listChanged": false},
        "resources": {"listChanged": false},
        "logging": {},
    })
}

/// The RFC 5424 levels `logging/setLevel` takes.
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// `logging/setLevel`: a valid level is accepted; nothing else changes, since this server
/// sends no `notifications/message` (its logs go to its own stderr).
fn set_log_level(params: &Map<String, Value>) -> Result<Value, RpcError> {
    match params.get("level").and_then(Value::as_str) {
        Some(l) if LOG_LEVELS.contains(&l) => Ok(json!({})),
        other => Err(RpcError::new(
            StatusCode::OK,
            code::INVALID_PARAMS,
            format!(
                "Invalid params: level must be one of {}, got {}",
                LOG_LEVELS.join(", "),
                other.map_or("nothing".to_owned(), |l| format!("{l:?}"))
            ),
        )),
    }
}

/// `resources/read`: there are no resources, so every URI is not found (SEP-2164: -32602 with
/// the URI in `data`).
fn resource_not_found(params: &Map<String, Value>) -> RpcError {
    let uri = params.get("uri").cloned().unwrap_or(Value::Null);
    RpcError::new(
        StatusCode::OK,
        code::INVALID_PARAMS,
        format!(
            "Resource not found: {}",
            uri.as_str().unwrap_or("(no uri given)")
        ),
    )
    .with_data(json!({ "uri": uri }))
}

/// `prompts/list`, `resources/list`, `resources/templates/list`: this server offers none, and
/// says so with a list a client may cache like the tool list.
fn empty_list(era: Era, key: &str) -> Result<Value, RpcError> {
    Ok(cacheable(era, json!({ key: [] })))
}

/// A list result with the 2026-07-28 caching hints (an hour, shared by every client: the
/// lists never change while the server runs); 2025-era results carry none.
fn cacheable(era: Era, mut r: Value) -> Value {
    if era == Era::Modern {
        r["ttlMs"] = json!(3_600_000);
        r["cacheScope"] = json!("public");
    }
    r
}

/// Handle one POSTed message from `client` (its identity for the stateless era) at `address`
/// (its network, [`crate::ratelimit::network_of`]: what per-address limits count): parse it,
/// route it to an era and an owner (`route::classify`), charge its rate limits, then answer
/// it (`dispatch`).
pub async fn handle_post(
    app: &App,
    headers: &HeaderMap,
    client: &str,
    address: IpAddr,
    body: &[u8],
) -> Reply {
    let incoming = match jsonrpc::parse(body) {
        Ok(i) => i,
        Err((id, e)) => return Reply::error(&id, e),
    };
    let Some(method) = incoming.method() else {
        // A client's response to a server request: this server sends none; accept and drop.
        return Reply::accepted();
    };
    let id = match &incoming {
        Incoming::Request { id, .. } => Some(id),
        _ => None,
    };
    let id_ref = id.unwrap_or(&Value::Null);
    let empty = Map::new();
    let params = incoming.params().unwrap_or(&empty);
    let route = match route::classify(app, headers, method, id.is_some(), params, client) {
        Ok(r) => r,
        Err(e) => return Reply::error(id_ref, e),
    };
    if let Err(reply) = charge_rate_limits(app, &route.bucket, address, id_ref) {
        return reply;
    }
    let Some(id) = id else {
        // Notifications (notifications/initialized, cancelled, ...): accepted, nothing to say.
        return Reply::accepted();
    };
    if route.era == Era::Legacy && method == "initialize" {
        return initialize(app, id, params, address);
    }
    match dispatch(app, &route, address, method, params).await {
        Ok(mut r) => {
            if route.era == Era::Modern {
                r["resultType"] = json!("complete");
                r["_meta"] = json!({ modern::META_SERVER_INFO: server_info() });
            }
            Reply::ok(id, r)
        }
        Err(e) => Reply::error(id, e),
    }
}

/// Takes a token from each of the message's rate-limit buckets; `Err` is the 429 to answer
/// with when one is empty.
fn charge_rate_limits(app: &App, bucket: &str, address: IpAddr, id: &Value) -> Result<(), Reply> {
    let Err(limited) = app.rate_limits.check(bucket, address) else {
        return Ok(());
    };
    app.metrics.rate_limited.inc();
    let secs = limited.retry_after_secs();
    let scope = match limited.scope {
        LimitScope::Client => "client",
        LimitScope::Address => "address",
        LimitScope::Global => "server",
    };
    let mut reply = Reply::error(
        id,
        RpcError::new(
            StatusCode::TOO_MANY_REQUESTS,
            code::SERVER_ERROR,
            format!("Rate limit exceeded ({scope}); retry after {secs} s"),
        )
        .with_data(json!({"retryAfterSeconds": secs, "scope": scope})),
    );
    reply.retry_after = Some(secs);
    Err(reply)
}

/// The result of a request routed to `route` (anything but a 2025-era `initialize`).
async fn dispatch(
    app: &App,
    route: &Route,
    address: IpAddr,
    method: &str,
    params: &Map<String, Value>,
) -> Result<Value, RpcError> {
    let era = route.era;
    match (era, method) {
        (Era::Legacy, "ping") => Ok(json!({})),
        (Era::Modern, "server/discover") => Ok(cacheable(
            era,
            json!({
                "supportedVersions": version::all(),
                "capabilities": capabilities(),
                "instructions": INSTRUCTIONS,
            }),
        )),
        (_, "tools/list") => list_tools(era, params),
        // 2026-07-28 removed it (a request's own `_meta` carries its log level).
        (Era::Legacy, "logging/setLevel") => set_log_level(params),
        (_, "prompts/list") => empty_list(era, "prompts"),
        (_, "resources/list") => empty_list(era, "resources"),
        (_, "resources/templates/list") => empty_list(era, "resourceTemplates"),
        (_, "resources/read") => Err(resource_not_found(params)),
        (_, "tools/call") => match &route.owner {
            Some(owner) => {
                let ctx = tools::CallCtx {
                    app,
                    owner,
                    client: &route.bucket,
                    address,
                };
                call_tool(&ctx, params).await
            }
            None => Err(RpcError::new(
                StatusCode::BAD_REQUEST,
                code::SERVER_ERROR,
                "Bad Request: Mcp-Session-Id header is required",
            )),
        },
        (Era::Legacy, m) => Err(RpcError::new(
            StatusCode::OK,
            code::METHOD_NOT_FOUND,
            format!("Method not found: {m}"),
        )),
        (Era::Modern, m) => Err(RpcError::new(
            StatusCode::NOT_FOUND,
            code::METHOD_NOT_FOUND,
            format!("Method not found: {m}"),
        )),
    }
}

fn initialize(app: &App, id: &Value, params: &Map<String, Value>, address: IpAddr) -> Reply {
    let requested = params.get("protocolVersion").and_then(Value::as_str);
    let version = version::negotiate(requested);
    let sid = match app.mcp_sessions.create(version, address) {
        Ok(sid) => sid,
        Err(full) => {
            let (open, whose) = match full {
                Full::Server(n) => (n, "the server's cap (--max-mcp-sessions)"),
                Full::Address { holds, share } => (
                    holds,
                    if share < app.config.limits.max_mcp_sessions_per_address {
                        "this address's share, which shrinks as the server fills \
                         (--max-mcp-sessions-per-address at most)"
                    } else {
                        "the cap for one address (--max-mcp-sessions-per-address)"
                    },
                ),
            };
            return Reply::error(
                id,
                RpcError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code::SERVER_ERROR,
                    format!(
                        "Service Unavailable: {open} MCP sessions are open, {whose}; end one \
                         with DELETE or wait for idle ones to expire"
                    ),
                ),
            );
        }
    };
    app.metrics
        .mcp_sessions_active
        .set(app.mcp_sessions.len() as i64);
    let mut reply = Reply::ok(
        id,
        json!({
            "protocolVersion": version,
            "capabilities": capabilities(),
            "serverInfo": server_info(),
            "instructions": INSTRUCTIONS,
        }),
    );
    reply.session_id = Some(sid);
    reply
}

fn list_tools(era: Era, params: &Map<String, Value>) -> Result<Value, RpcError> {
    // One page holds every tool, so the only valid cursor is none; an invented one is an error.
    if params.get("cursor").is_some_and(|c| !c.is_null()) {
        return Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            code::INVALID_PARAMS,
            "Invalid cursor",
        ));
    }
    Ok(cacheable(era, json!({"tools": tools::definitions()})))
}

async fn call_tool(
    ctx: &tools::CallCtx<'_>,
    params: &Map<String, Value>,
) -> Result<Value, RpcError> {
    let invalid = |m: String| RpcError::new(StatusCode::OK, code::INVALID_PARAMS, m);
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("Invalid params: name (a string) is required".into()))?;
    let args = match params.get("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(a @ Value::Object(_)) => a.clone(),
        Some(_) => {
            return Err(invalid(
                "Invalid params: arguments must be an object".into(),
            ));
        }
    };
    if !tools::exists(name) {
        return Err(invalid(format!("Unknown tool: {name}")));
    }
    // Once the server stops, a call still running gets a moment to stop its own command
    // (which sends it SIGTERM) and answer for itself; anything else (a connect) is dropped,
    // which gives back what it held, and answered here.
    let stopped = async {
        ctx.app.stopping.cancelled().await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let outcome = tokio::select! {
        biased;
        out = tools::call(ctx, name, args) => out,
        () = stopped => Err(tools::ToolError::ShuttingDown),
    };
    Ok(tools::result_json(outcome))
}

/// DELETE: end a 2025-era session and release the SSH sessions it owns.
pub fn handle_delete(app: &App, headers: &HeaderMap) -> StatusCode {
    let Some(sid) = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) else {
        return StatusCode::METHOD_NOT_ALLOWED;
    };
    if !app.mcp_sessions.remove(sid) {
        return StatusCode::NOT_FOUND;
    }
    app.metrics
        .mcp_sessions_active
        .set(app.mcp_sessions.len() as i64);
    let released = app
        .sessions
        .remove_owned_by(&Owner::McpSession(sid.to_owned()));
    tracing::debug!(session = sid, released, "MCP session ended by DELETE");
    StatusCode::OK
}
