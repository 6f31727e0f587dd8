//! A spec-driven MCP Streamable-HTTP client, speaking both protocol eras.
//!
//! The agent measures MCP servers, so its client must not share blind spots with any one
//! server: it follows the published specification (2026-07-28 per-request `_meta` and headers;
//! the 2025 `initialize` handshake with `Mcp-Session-Id`) rather than the quirks of
//! `mcp-ssh-server`, so it works against any compliant server and reports protocol violations
//! (wrong ids, garbage bodies, missing responses) as typed errors instead of hiding them.
//! Responses may be `application/json` or `text/event-stream`; SSE bodies are read
//! incrementally, so a server that keeps the stream open after the response still works.
//!
//! One seam per concern: `negotiate` (which protocol), `encode` (requests on the wire),
//! `decode` (responses off it), `input` (answering a server's input requests), `error` (what
//! went wrong), `transport` (the connection); this file is the client that uses them.

mod decode;
mod encode;
mod error;
mod input;
mod negotiate;
mod sse;
mod transport;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde_json::{Value, json};

pub use decode::ToolResult;
use decode::{Exchange, Reply, exchange, http_error, result_of, tool_result};
pub use encode::encode_header_value;
use encode::{SESSION_HEADER, Speaker};
pub use error::McpError;
pub use input::InputResponses;
use negotiate::Discovered;
pub use negotiate::{Era, LEGACY_VERSIONS, MODERN_VERSION, Protocol};
use transport::Transport;
pub use transport::TransportError;

const MAX_PAGES: usize = 10_000;
/// SSE resumptions of one request before it fails.
const MAX_RESUMPTIONS: usize = 5;
/// Input rounds (SEP-2322) of one request before it fails.
pub const MAX_INPUT_ROUNDS: usize = 8;

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
    /// Answers to a server's input requests (SEP-2322), by method.
    pub inputs: InputResponses,
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("url", &self.url)
            .field("protocol", &self.protocol)
            .field("request_timeout", &self.request_timeout)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("client_name", &self.client_name)
            .field("inputs", &self.inputs)
            .finish()
    }
}

/// One logical MCP client (one worker), with its own HTTP connection (see its `transport` module).
pub struct McpClient {
    http: Transport,
    opts: ClientOptions,
    era: Era,
    version: String,
    session: Option<String>,
    client_info: Value,
    capabilities: Value,
    authorization: Option<HeaderValue>,
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
        let client_info = json!({ "name": opts.client_name, "version": env!("CARGO_PKG_VERSION") });
        let capabilities = opts.inputs.capabilities();
        let authorization = opts
            .bearer
            .as_deref()
            .map(encode::authorization)
            .transpose()?;
        let mut c = Self {
            authorization,
            http,
            client_info,
            capabilities,
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
    ///
    /// A 2026-07-28 `input_required` result (SEP-2322) is answered from the scripted
    /// [`InputResponses`] and the request sent again, as a new request with a new id, carrying
    /// `inputResponses` and the server's `requestState` verbatim, until the server completes
    /// it (at most [`MAX_INPUT_ROUNDS`] rounds). The rounds together are one call, timed as
    /// one. A request the script cannot answer fails with [`McpError::InputRequired`].
    ///
    /// A 2026-07-28 request refused as an unsupported version (-32022) although the server's
    /// own list names the version sent is sent once more (as the spec's clients do); any
    /// other -32022 is the error.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, McpError> {
        let mut params = params;
        let mut rounds = 0;
        let mut resent = false;
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let reply = self.post(Some(id), method, &params).await?;
            let result = match result_of(reply, self.era == Era::Legacy && self.session.is_some()) {
                Err(McpError::JsonRpc {
                    code: negotiate::UNSUPPORTED_VERSION,
                    data,
                    ..
                }) if !resent
                    && self.era == Era::Modern
                    && negotiate::lists(data.as_ref(), &self.version) =>
                {
                    resent = true;
                    continue;
                }
                r => r?,
            };
            if !input::is_input_required(&result) {
                return Ok(result);
            }
            rounds += 1;
            if rounds > MAX_INPUT_ROUNDS {
                return Err(McpError::InvalidResponse(format!(
                    "{method}: the server still asked for input after {MAX_INPUT_ROUNDS} rounds"
                )));
            }
            params = self.opts.inputs.next_round(params, &result)?;
        }
    }

    /// End the client. Legacy with a session: `DELETE` it (405 and 404 are fine).
    pub async fn close(self) -> Result<(), McpError> {
        let Some(session) = &self.session else {
            return Ok(());
        };
        let headers = encode::end_session(&self.speaker(), session)?;
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
        let reply = match self.post(Some(id), "server/discover", &json!({})).await {
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
        // A 429 is the server's answer to this client, not to the method: final, like a
        // transport error (falling back would speak another era than the other workers).
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            return Err(http_error(&reply));
        }
        Ok(match negotiate::discovered(reply.status, &reply.body) {
            Discovered::Modern => None,
            Discovered::Initialize(v) => Some(v),
        })
    }

    async fn initialize(&mut self, version: &str) -> Result<(), McpError> {
        self.era = Era::Legacy;
        self.version = version.to_owned();
        self.session = None;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let params = json!({
            "protocolVersion": version,
            "capabilities": self.capabilities,
            "clientInfo": self.client_info,
        });
        let reply = self.post(Some(id), "initialize", &params).await?;
        let session = reply
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let result = result_of(reply, false)?;
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
            .post(None, "notifications/initialized", &json!({}))
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(http_error(&reply))
        }
    }

    /// Who this client is, for `encode`.
    fn speaker(&self) -> Speaker<'_> {
        Speaker {
            era: self.era,
            version: &self.version,
            session: self.session.as_deref(),
            client_info: &self.client_info,
            capabilities: &self.capabilities,
            authorization: self.authorization.as_ref(),
        }
    }

    /// One POST exchange. `id: None` sends a notification. An SSE stream the server closes
    /// before our response is resumed with GET and `Last-Event-ID` after the server's `retry`
    /// delay (2025-11-25, SEP-1699), a few times at most; the request timeout covers it all.
    async fn post(&self, id: Option<u64>, method: &str, params: &Value) -> Result<Reply, McpError> {
        let (headers, body) = encode::request(&self.speaker(), id, method, params)?;
        // One deadline for the whole exchange: connect, send, resumptions, the body to its end.
        let exchange = async {
            let resp = self.http.send(Method::POST, headers, body).await?;
            let mut outcome = exchange(resp, id, None).await?;
            let mut resumed = 0;
            loop {
                let from = match outcome {
                    Exchange::Done(reply) => return Ok(reply),
                    Exchange::Resume(from) => from,
                };
                if resumed == MAX_RESUMPTIONS {
                    return Err(McpError::InvalidResponse(format!(
                        "SSE stream ended without the response, {MAX_RESUMPTIONS} times resumed"
                    )));
                }
                resumed += 1;
                tokio::time::sleep(from.wait()).await;
                let headers = encode::resume(&self.speaker(), &from.last_event_id)?;
                let resp = self.http.send(Method::GET, headers, Bytes::new()).await?;
                outcome = exchange(resp, id, Some(from)).await?;
            }
        };
        match tokio::time::timeout(self.opts.request_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(McpError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_bearer() {
        let o = ClientOptions {
            url: "http://x/mcp".into(),
            protocol: Protocol::Auto,
            request_timeout: Duration::from_secs(1),
            bearer: Some("s3cret".into()),
            client_name: "t".into(),
            inputs: InputResponses::default(),
        };
        assert!(!format!("{o:?}").contains("s3cret"));
    }
}
