//! A spec-driven MCP Streamable-HTTP client, speaking both protocol eras.
//!
//! The agent measures MCP servers, so its client must not share blind spots with any one
//! server: it follows the published specification (2026-07-28 per-request `_meta` and headers;
//! the 2025 `initialize` handshake with `Mcp-Session-Id`) rather than the quirks of
//! `mcp-ssh-server`, so it works against any compliant server and reports protocol violations
//! (wrong ids, garbage bodies, missing responses) as typed errors instead of hiding them.
//! Responses may be `application/json` or `text/event-stream`; SSE bodies are read
//! incrementally, so a server that keeps the stream open after the response still works.

mod sse;
mod transport;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use sse::SseParser;
use transport::Transport;
pub use transport::TransportError;

/// The modern (stateless, per-request `_meta`) protocol revision.
pub const MODERN_VERSION: &str = "2026-07-28";
/// Legacy (`initialize` handshake) revisions this client speaks, newest first.
pub const LEGACY_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPS: &str = "io.modelcontextprotocol/clientCapabilities";
const META_INFO: &str = "io.modelcontextprotocol/clientInfo";
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const ACCEPT: &str = "application/json, text/event-stream";
const EXCERPT: usize = 512;
const MAX_PAGES: usize = 10_000;

/// Which protocol to speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// Try `server/discover` (modern); fall back to `initialize` (legacy).
    Auto,
    /// 2026-07-28, stateless.
    Modern,
    /// A 2025-era revision with the `initialize` handshake.
    Legacy(String),
}

impl FromStr for Protocol {
    type Err = McpError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            MODERN_VERSION => Ok(Self::Modern),
            v if LEGACY_VERSIONS.contains(&v) => Ok(Self::Legacy(v.to_owned())),
            other => Err(McpError::UnsupportedVersion {
                requested: other.to_owned(),
                supported: supported_versions(),
            }),
        }
    }
}

fn supported_versions() -> Vec<String> {
    std::iter::once(MODERN_VERSION)
        .chain(LEGACY_VERSIONS.iter().copied())
        .map(str::to_owned)
        .collect()
}

/// The protocol era a connected client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2026-07-28+: version and capabilities in every request.
    Modern,
    /// 2025-era: `initialize`, optional `Mcp-Session-Id`.
    Legacy,
}

/// How to reach and talk to one server.
#[derive(Clone)]
pub struct ClientOptions {
    /// The MCP endpoint, e.g. `http://127.0.0.1:8080/mcp`.
    pub url: String,
    /// Which protocol to speak.
    pub protocol: Protocol,
    /// Limit for each HTTP exchange (request and response body).
    pub request_timeout: Duration,
    /// Bearer token sent as `Authorization: Bearer …` on every request.
    pub bearer: Option<String>,
    /// `clientInfo.name`.
    pub client_name: String,
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("url", &self.url)
            .field("protocol", &self.protocol)
            .field("request_timeout", &self.request_timeout)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("client_name", &self.client_name)
            .finish()
    }
}

/// Errors of the MCP client. [`McpError::kind`] gives a short stable label for reports.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The endpoint is not a valid URL.
    #[error("invalid MCP URL {url}: {reason}")]
    BadUrl {
        /// As given.
        url: String,
        /// Why.
        reason: String,
    },
    /// A non-success HTTP status without a JSON-RPC error body.
    #[error("HTTP {status}: {body_excerpt}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body_excerpt: String,
    },
    /// The server could not be reached (refused, unreachable, reset…).
    #[error("transport error: {0}")]
    Transport(#[from] TransportError),
    /// The exchange exceeded the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The response carried another id than the request.
    #[error("response id {got} does not match request id {sent}")]
    IdMismatch {
        /// The request id.
        sent: u64,
        /// The id in the response.
        got: Value,
    },
    /// A JSON-RPC error response.
    #[error("JSON-RPC error {code}: {message}")]
    JsonRpc {
        /// The error code.
        code: i64,
        /// The error message.
        message: String,
        /// Optional error data.
        data: Option<Value>,
    },
    /// HTTP 429.
    #[error("rate limited (retry after {retry_after:?})")]
    RateLimited {
        /// The `Retry-After` delay, when given in seconds.
        retry_after: Option<Duration>,
    },
    /// HTTP 404 on a legacy session: the session is gone; initialize again.
    #[error("MCP session expired")]
    SessionExpired,
    /// Not JSON, not a JSON-RPC response, or an SSE stream without the response.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// A 2026 `input_required` result (multi round-trip requests): the server asks the client
    /// for input (elicitation, sampling, roots) before it completes. A load agent has no user
    /// or model to answer with, so the call did not complete: counted as a failure of its own
    /// kind, never as a success with an empty result.
    #[error("the server asked for input the agent cannot give: {asks}")]
    InputRequired {
        /// What was asked (the input requests' methods), comma-separated.
        asks: String,
    },
    /// No protocol version both sides speak.
    #[error("unsupported protocol version {requested} (supported: {supported:?})")]
    UnsupportedVersion {
        /// The version asked for or answered.
        requested: String,
        /// The versions on offer.
        supported: Vec<String>,
    },
}

impl McpError {
    /// A short stable label: `bad_url`, `http`, `transport`, `timeout`, `id_mismatch`, `jsonrpc`,
    /// `rate_limited`, `session_expired`, `invalid_response`, `input_required`,
    /// `unsupported_version`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadUrl { .. } => "bad_url",
            Self::Http { .. } => "http",
            Self::Transport(_) => "transport",
            Self::Timeout => "timeout",
            Self::IdMismatch { .. } => "id_mismatch",
            Self::JsonRpc { .. } => "jsonrpc",
            Self::RateLimited { .. } => "rate_limited",
            Self::SessionExpired => "session_expired",
            Self::InvalidResponse(_) => "invalid_response",
            Self::InputRequired { .. } => "input_required",
            Self::UnsupportedVersion { .. } => "unsupported_version",
        }
    }
}

/// The outcome of `tools/call` (a tool failure is `is_error: true`, not an `Err`).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    /// `isError`.
    pub is_error: bool,
    /// The text content items, joined with `\n`.
    pub text: String,
    /// `structuredContent`.
    pub structured: Option<Value>,
    /// The whole result.
    pub raw: Value,
}

/// What one HTTP exchange produced.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// The JSON-RPC response to our request (id checked, or null on an error).
    Response(Value),
    /// No body.
    Empty,
    /// Something else; the excerpt says what.
    Other(String),
}

/// One logical MCP client (one worker), with its own HTTP connection (see its `transport` module).
pub struct McpClient {
    http: Transport,
    opts: ClientOptions,
    era: Era,
    version: String,
    session: Option<String>,
    next_id: AtomicU64,
}

impl fmt::Debug for McpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpClient")
            .field("opts", &self.opts)
            .field("era", &self.era)
            .field("version", &self.version)
            .field("session", &self.session.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl McpClient {
    /// Connect: discover (Auto/Modern) or initialize (Legacy, or Auto fallback).
    pub async fn connect(opts: ClientOptions) -> Result<Self, McpError> {
        let protocol = opts.protocol.clone();
        let http = Transport::new(&opts.url).map_err(|e| McpError::BadUrl {
            url: opts.url.clone(),
            reason: e.to_string(),
        })?;
        let mut c = Self {
            http,
            opts,
            era: Era::Modern,
            version: MODERN_VERSION.to_owned(),
            session: None,
            next_id: AtomicU64::new(1),
        };
        match protocol {
            Protocol::Modern => {
                // Stateless: nothing to say yet, but connect now, so that an unreachable
                // server fails here and the TCP handshake is not timed with the first call.
                match tokio::time::timeout(c.opts.request_timeout, c.http.open()).await {
                    Ok(r) => r?,
                    Err(_) => return Err(McpError::Timeout),
                }
                Ok(c)
            }
            Protocol::Legacy(v) => {
                c.initialize(&v).await?;
                Ok(c)
            }
            Protocol::Auto => {
                let legacy = c.discover().await?;
                if let Some(v) = legacy {
                    c.initialize(&v).await?;
                }
                Ok(c)
            }
        }
    }

    /// The era in use.
    pub fn era(&self) -> Era {
        self.era
    }

    /// The protocol version in use (the negotiated one in the legacy era).
    pub fn protocol_version(&self) -> &str {
        &self.version
    }

    /// The legacy session id, if the server issued one.
    pub fn session_id(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// `tools/list`, following `nextCursor` to the end.
    pub async fn list_tools(&self) -> Result<Vec<Value>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let result = self.request("tools/list", params).await?;
            let page = result
                .get("tools")
                .and_then(Value::as_array)
                .ok_or_else(|| McpError::InvalidResponse("tools/list without tools".into()))?;
            tools.extend(page.iter().cloned());
            match result.get("nextCursor").and_then(Value::as_str) {
                Some(next) if cursor.as_deref() == Some(next) => {
                    return Err(McpError::InvalidResponse(
                        "tools/list cursor repeats".into(),
                    ));
                }
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(tools),
            }
        }
        Err(McpError::InvalidResponse("tools/list never ends".into()))
    }

    /// `tools/call`. A tool failure is `Ok` with `is_error: true`.
    pub async fn call_tool(&self, name: &str, arguments: Value) -> Result<ToolResult, McpError> {
        let raw = self
            .request(
                "tools/call",
                json!({ "name": name, "arguments": arguments }),
            )
            .await?;
        Ok(tool_result(raw))
    }

    /// Any request; returns its `result`.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, McpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let reply = self.post(Some(id), method, params).await?;
        self.reply_result(reply)
    }

    /// End the client. Legacy with a session: `DELETE` it (405 and 404 are fine).
    pub async fn close(self) -> Result<(), McpError> {
        let Some(session) = &self.session else {
            return Ok(());
        };
        let mut headers = HeaderMap::new();
        headers.insert(SESSION_HEADER, header_value(session)?);
        headers.insert(VERSION_HEADER, header_value(&self.version)?);
        self.authorize(&mut headers)?;
        let send = self.http.send(Method::DELETE, headers, Bytes::new());
        let resp = match tokio::time::timeout(self.opts.request_timeout, send).await {
            Ok(r) => r?,
            Err(_) => return Err(McpError::Timeout),
        };
        let status = resp.status();
        if status.is_success()
            || status == StatusCode::METHOD_NOT_ALLOWED
            || status == StatusCode::NOT_FOUND
        {
            Ok(())
        } else {
            Err(McpError::Http {
                status: status.as_u16(),
                body_excerpt: String::new(),
            })
        }
    }

    /// `server/discover`. `Ok(None)`: modern. `Ok(Some(v))`: initialize with legacy `v`.
    async fn discover(&mut self) -> Result<Option<String>, McpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let reply = match self.post(Some(id), "server/discover", json!({})).await {
            Ok(r) => r,
            // A server that does not speak the modern era may answer anything; only failures to
            // talk at all (and rate limits) are final.
            Err(
                e @ (McpError::Transport(_) | McpError::Timeout | McpError::RateLimited { .. }),
            ) => {
                return Err(e);
            }
            Err(e) => {
                tracing::debug!(error = %e, "server/discover failed; falling back to initialize");
                return Ok(Some(LEGACY_VERSIONS[0].to_owned()));
            }
        };
        let Body::Response(msg) = &reply.body else {
            return Ok(Some(LEGACY_VERSIONS[0].to_owned()));
        };
        if let Some(result) = msg.get("result").filter(|_| reply.status.is_success()) {
            // Only a discover result naming a version both sides speak settles the era. Anything
            // else (a 2025 server answering unknown methods with `{}`, a list of versions this
            // agent does not know) leads to the 2025 handshake, whose own negotiation decides.
            let versions = string_list(result.get("supportedVersions"));
            return Ok(match pick(&versions, "server/discover") {
                Ok(v) => (v != MODERN_VERSION).then_some(v),
                Err(_) => {
                    tracing::debug!(%result, "not a usable server/discover result; initialize");
                    Some(LEGACY_VERSIONS[0].to_owned())
                }
            });
        }
        let code = msg
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64);
        match code {
            Some(-32022) => {
                let data = msg.get("error").and_then(|e| e.get("data"));
                let versions = string_list(data.and_then(|d| d.get("supported")));
                pick(&versions, "server/discover").map(|v| (v != MODERN_VERSION).then_some(v))
            }
            Some(-32020 | -32021) => Ok(None),
            Some(-32601) if reply.status == StatusCode::NOT_FOUND => Ok(None),
            _ => Ok(Some(LEGACY_VERSIONS[0].to_owned())),
        }
    }

    async fn initialize(&mut self, version: &str) -> Result<(), McpError> {
        self.era = Era::Legacy;
        self.version = version.to_owned();
        self.session = None;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let params = json!({
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": self.client_info(),
        });
        let reply = self.post(Some(id), "initialize", params).await?;
        let session = reply
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let result = self.reply_result(reply)?;
        let answered = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                McpError::InvalidResponse("initialize without protocolVersion".into())
            })?;
        if !LEGACY_VERSIONS.contains(&answered) {
            return Err(McpError::UnsupportedVersion {
                requested: answered.to_owned(),
                supported: LEGACY_VERSIONS.iter().map(|s| (*s).to_owned()).collect(),
            });
        }
        self.version = answered.to_owned();
        self.session = session;
        let reply = self
            .post(None, "notifications/initialized", json!({}))
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(http_error(&reply))
        }
    }

    fn client_info(&self) -> Value {
        json!({ "name": self.opts.client_name, "version": env!("CARGO_PKG_VERSION") })
    }

    /// One POST exchange. `id: None` sends a notification.
    async fn post(&self, id: Option<u64>, method: &str, params: Value) -> Result<Reply, McpError> {
        let mut params = match params {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                return Err(McpError::InvalidResponse(format!(
                    "params must be an object, not {other}"
                )));
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("accept", HeaderValue::from_static(ACCEPT));
        match self.era {
            Era::Modern => {
                let mut meta = match params.remove("_meta") {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                meta.insert(META_VERSION.into(), json!(self.version));
                meta.insert(META_CAPS.into(), json!({}));
                meta.insert(META_INFO.into(), self.client_info());
                params.insert("_meta".into(), Value::Object(meta));
                headers.insert(VERSION_HEADER, header_value(&self.version)?);
                headers.insert("mcp-method", header_value(&encode_header_value(method))?);
                let name_key = match method {
                    "tools/call" | "prompts/get" => Some("name"),
                    "resources/read" => Some("uri"),
                    _ => None,
                };
                if let Some(name) = name_key.and_then(|k| params.get(k)).and_then(Value::as_str) {
                    headers.insert("mcp-name", header_value(&encode_header_value(name))?);
                }
            }
            Era::Legacy => {
                if method != "initialize" {
                    if let Some(s) = &self.session {
                        headers.insert(SESSION_HEADER, header_value(s)?);
                    }
                    headers.insert(VERSION_HEADER, header_value(&self.version)?);
                }
            }
        }
        self.authorize(&mut headers)?;
        // Serialised in a block of its own so the `Value` tree is freed before the exchange:
        // with 1,000 requests in flight, keeping it alive cost ~4 MB.
        let body = {
            let mut body = json!({ "jsonrpc": "2.0", "method": method, "params": params });
            if let Some(id) = id {
                body["id"] = json!(id);
            }
            Bytes::from(body.to_string())
        };
        // One deadline for the whole exchange: connect, send, and the body to its end.
        let exchange = async {
            let resp = self.http.send(Method::POST, headers, body).await?;
            exchange(resp, id).await
        };
        match tokio::time::timeout(self.opts.request_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(McpError::Timeout),
        }
    }

    /// `Authorization: Bearer …` when a token is set.
    fn authorize(&self, headers: &mut HeaderMap) -> Result<(), McpError> {
        if let Some(t) = &self.opts.bearer {
            let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                McpError::InvalidResponse("the bearer token is not a valid header value".into())
            })?;
            v.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, v);
        }
        Ok(())
    }

    /// Turn a reply into a `result` or a typed error.
    fn reply_result(&self, reply: Reply) -> Result<Value, McpError> {
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            return Err(McpError::RateLimited {
                retry_after: retry_after(&reply.headers),
            });
        }
        if reply.status == StatusCode::NOT_FOUND
            && self.era == Era::Legacy
            && self.session.is_some()
        {
            return Err(McpError::SessionExpired);
        }
        match reply.body {
            Body::Response(mut msg) => {
                if let Some(err) = msg.get("error") {
                    return Err(McpError::JsonRpc {
                        code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                        message: err
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        data: err.get("data").cloned(),
                    });
                }
                if !reply.status.is_success() {
                    return Err(McpError::Http {
                        status: reply.status.as_u16(),
                        body_excerpt: excerpt(&msg.to_string()),
                    });
                }
                // Taken, not cloned: the result can be large (a file's contents).
                let result = msg
                    .get_mut("result")
                    .map(Value::take)
                    .ok_or_else(|| McpError::InvalidResponse("response without result".into()))?;
                if result.get("resultType").and_then(Value::as_str) == Some("input_required") {
                    return Err(McpError::InputRequired {
                        asks: input_asks(&result),
                    });
                }
                Ok(result)
            }
            Body::Empty | Body::Other(_) if !reply.status.is_success() => Err(McpError::Http {
                status: reply.status.as_u16(),
                body_excerpt: match reply.body {
                    Body::Other(s) => s,
                    _ => String::new(),
                },
            }),
            Body::Empty => Err(McpError::InvalidResponse(format!(
                "HTTP {} with an empty body",
                reply.status.as_u16()
            ))),
            Body::Other(s) => Err(McpError::InvalidResponse(s)),
        }
    }
}

fn pick(versions: &[String], what: &str) -> Result<String, McpError> {
    if versions.iter().any(|v| v == MODERN_VERSION) {
        return Ok(MODERN_VERSION.to_owned());
    }
    LEGACY_VERSIONS
        .iter()
        .find(|l| versions.iter().any(|v| v == *l))
        .map(|v| (*v).to_owned())
        .ok_or_else(|| McpError::UnsupportedVersion {
            requested: format!("{MODERN_VERSION} ({what})"),
            supported: versions.to_vec(),
        })
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn header_value(s: &str) -> Result<HeaderValue, McpError> {
    HeaderValue::from_str(s)
        .map_err(|_| McpError::InvalidResponse(format!("cannot send header value {s:?}")))
}

fn http_error(reply: &Reply) -> McpError {
    if reply.status == StatusCode::TOO_MANY_REQUESTS {
        return McpError::RateLimited {
            retry_after: retry_after(&reply.headers),
        };
    }
    McpError::Http {
        status: reply.status.as_u16(),
        body_excerpt: match &reply.body {
            Body::Response(v) => excerpt(&v.to_string()),
            Body::Other(s) => s.clone(),
            Body::Empty => String::new(),
        },
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn excerpt(s: &str) -> String {
    let mut end = s.len().min(EXCERPT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Encode a header value per the 2026-07-28 rules: plain printable ASCII as is, anything else
/// (non-ASCII, control characters, leading/trailing whitespace, or a value that already looks
/// like the sentinel) as `=?base64?{base64(utf8)}?=`.
pub fn encode_header_value(value: &str) -> String {
    let plain = value.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && value.trim() == value
        && !(value.starts_with("=?base64?") && value.ends_with("?="));
    if plain {
        value.to_owned()
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
        format!("=?base64?{b64}?=")
    }
}

/// The methods an `input_required` result asks for (`inputRequests` is a map of requests
/// keyed by the server's names; an array is read too), sorted, or "unspecified input".
fn input_asks(result: &Value) -> String {
    let requests: Vec<&Value> = match result.get("inputRequests") {
        Some(Value::Object(m)) => m.values().collect(),
        Some(Value::Array(a)) => a.iter().collect(),
        _ => Vec::new(),
    };
    let mut asks: Vec<&str> = requests
        .iter()
        .map(|r| r.get("method").and_then(Value::as_str).unwrap_or("unknown"))
        .collect();
    asks.sort_unstable();
    asks.dedup();
    if asks.is_empty() {
        "unspecified input".into()
    } else {
        asks.join(", ")
    }
}

fn tool_result(raw: Value) -> ToolResult {
    let text = raw
        .get("content")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter(|i| i.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|i| i.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    ToolResult {
        is_error: raw.get("isError").and_then(Value::as_bool).unwrap_or(false),
        text,
        structured: raw
            .get("structuredContent")
            .filter(|v| !v.is_null())
            .cloned(),
        raw,
    }
}

/// Is this JSON-RPC message the response to request `id`? `Ok(None)`: not a response at all
/// (a notification or a server request: skip it).
fn match_response(msg: &Value, id: u64) -> Result<Option<()>, McpError> {
    let Some(obj) = msg.as_object() else {
        return Err(McpError::InvalidResponse(format!(
            "not a JSON-RPC message: {}",
            excerpt(&msg.to_string())
        )));
    };
    if obj.contains_key("method") {
        return Ok(None);
    }
    let is_error = obj.contains_key("error");
    if !is_error && !obj.contains_key("result") {
        return Err(McpError::InvalidResponse(format!(
            "not a JSON-RPC response: {}",
            excerpt(&msg.to_string())
        )));
    }
    let got = obj.get("id").cloned().unwrap_or(Value::Null);
    let same = got.as_u64() == Some(id) || got.as_f64() == Some(id as f64);
    if same || (is_error && got.is_null()) {
        Ok(Some(()))
    } else {
        Err(McpError::IdMismatch { sent: id, got })
    }
}

/// Send and read the answer, streaming SSE bodies until our response arrives.
async fn exchange(resp: http::Response<Incoming>, id: Option<u64>) -> Result<Reply, McpError> {
    let (parts, mut resp) = resp.into_parts();
    let status = parts.status;
    let headers = parts.headers;
    let is_sse = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
    let reply = |body| Reply {
        status,
        headers: headers.clone(),
        body,
    };
    if is_sse {
        let Some(id) = id else {
            return Ok(reply(Body::Empty));
        };
        let mut parser = SseParser::default();
        loop {
            let chunk = next_chunk(&mut resp).await?;
            let events = match &chunk {
                Some(c) => parser.feed(c),
                None => parser.finish(),
            };
            for data in events {
                if data.trim().is_empty() {
                    continue; // priming event
                }
                let msg: Value = serde_json::from_str(&data).map_err(|e| {
                    McpError::InvalidResponse(format!(
                        "SSE event is not JSON ({e}): {}",
                        excerpt(&data)
                    ))
                })?;
                if match_response(&msg, id)?.is_some() {
                    return Ok(reply(Body::Response(msg)));
                }
            }
            if chunk.is_none() {
                return Err(McpError::InvalidResponse(
                    "SSE stream ended without the response".into(),
                ));
            }
        }
    }
    let mut bytes = Vec::new();
    while let Some(c) = next_chunk(&mut resp).await? {
        bytes.extend_from_slice(&c);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(reply(Body::Empty));
    }
    let text = String::from_utf8_lossy(&bytes);
    let Ok(msg) = serde_json::from_str::<Value>(&text) else {
        return Ok(reply(Body::Other(format!("not JSON: {}", excerpt(&text)))));
    };
    let Some(id) = id else {
        return Ok(reply(Body::Other(excerpt(&text))));
    };
    match match_response(&msg, id) {
        Ok(Some(())) => Ok(reply(Body::Response(msg))),
        Ok(None) => Ok(reply(Body::Other(format!(
            "a request or notification instead of the response: {}",
            excerpt(&text)
        )))),
        Err(e @ McpError::IdMismatch { .. }) => Err(e),
        Err(_) => Ok(reply(Body::Other(excerpt(&text)))),
    }
}

/// The next chunk of data of a response body (trailers are skipped); `None` at its end.
async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, McpError> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| TransportError::Body { source })?;
        if let Ok(data) = frame.into_data() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_encoding() {
        assert_eq!(encode_header_value("ssh_exec"), "ssh_exec");
        assert_eq!(encode_header_value("a b"), "a b");
        assert_eq!(encode_header_value(" x"), "=?base64?IHg=?=");
        assert_eq!(encode_header_value("x\t"), "=?base64?eAk=?=");
        assert_eq!(encode_header_value("héllo"), "=?base64?aMOpbGxv?=");
        assert_eq!(encode_header_value("a\nb"), "=?base64?YQpi?=");
        assert_eq!(
            encode_header_value("=?base64?YQ==?="),
            "=?base64?PT9iYXNlNjQ/WVE9PT89?="
        );
    }

    #[test]
    fn id_matching() {
        let ok = json!({"jsonrpc":"2.0","id":3,"result":{}});
        assert!(matches!(match_response(&ok, 3), Ok(Some(()))));
        let float = json!({"jsonrpc":"2.0","id":3.0,"result":{}});
        assert!(matches!(match_response(&float, 3), Ok(Some(()))));
        let wrong = json!({"jsonrpc":"2.0","id":4,"result":{}});
        match match_response(&wrong, 3) {
            Err(McpError::IdMismatch { sent: 3, got }) => assert_eq!(got, json!(4)),
            other => panic!("expected IdMismatch, got {other:?}"),
        }
        let string_id = json!({"jsonrpc":"2.0","id":"3","result":{}});
        assert!(matches!(
            match_response(&string_id, 3),
            Err(McpError::IdMismatch { .. })
        ));
        let null_err = json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}});
        assert!(matches!(match_response(&null_err, 3), Ok(Some(()))));
        let note = json!({"jsonrpc":"2.0","method":"notifications/progress","params":{}});
        assert!(matches!(match_response(&note, 3), Ok(None)));
        assert!(matches!(
            match_response(&json!([1]), 3),
            Err(McpError::InvalidResponse(_))
        ));
    }

    #[test]
    fn protocol_parsing_and_kinds() {
        assert_eq!("auto".parse::<Protocol>().ok(), Some(Protocol::Auto));
        assert_eq!(
            "2026-07-28".parse::<Protocol>().ok(),
            Some(Protocol::Modern)
        );
        assert_eq!(
            "2025-06-18".parse::<Protocol>().ok(),
            Some(Protocol::Legacy("2025-06-18".into()))
        );
        let e = "1900-01-01".parse::<Protocol>().err();
        assert_eq!(e.map(|e| e.kind()), Some("unsupported_version"));
        assert_eq!(McpError::Timeout.kind(), "timeout");
    }

    #[test]
    fn tool_result_joins_text() {
        let r = tool_result(
            json!({"content":[{"type":"text","text":"a"},{"type":"image"},
            {"type":"text","text":"b"}],"isError":true,"structuredContent":{"k":1}}),
        );
        assert!(r.is_error);
        assert_eq!(r.text, "a\nb");
        assert_eq!(r.structured, Some(json!({"k":1})));
    }

    #[test]
    fn input_required_names_what_is_asked() {
        let r = json!({"resultType": "input_required", "inputRequests": {
            "a": {"method": "elicitation/create", "params": {}},
            "b": {"method": "sampling/createMessage", "params": {}},
            "c": {"method": "elicitation/create", "params": {}}}});
        assert_eq!(input_asks(&r), "elicitation/create, sampling/createMessage");
        assert_eq!(
            input_asks(&json!({"resultType": "input_required", "requestState": "x"})),
            "unspecified input"
        );
    }

    #[test]
    fn debug_hides_the_bearer() {
        let o = ClientOptions {
            url: "http://x/mcp".into(),
            protocol: Protocol::Auto,
            request_timeout: Duration::from_secs(1),
            bearer: Some("s3cret".into()),
            client_name: "t".into(),
        };
        assert!(!format!("{o:?}").contains("s3cret"));
    }
}
