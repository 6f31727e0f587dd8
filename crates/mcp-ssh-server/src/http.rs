//! The HTTP surface: routes, request checks that belong to HTTP (Origin, Accept,
//! Content-Type, body size), client identity, JSON or SSE encoding of replies, and the
//! request metrics. The MCP logic itself is in [`crate::mcp`].

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::{Value, json};

use crate::app::App;
use crate::listener::HttpLimits;
use crate::mcp::{self, Reply, jsonrpc};
use crate::send_deadline::{Armed, SendDeadline};

/// Largest accepted request body.
pub const MAX_BODY: usize = 1024 * 1024;

/// The router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/mcp", post(mcp_post).get(mcp_get).delete(mcp_delete))
        .route("/", post(mcp_post).get(mcp_get).delete(mcp_delete))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .with_state(app)
}

async fn count_requests(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = match req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
    {
        Some("/mcp") | Some("/") => "mcp",
        Some("/health") => "health",
        Some("/metrics") => "metrics",
        _ => "other",
    };
    let resp = next.run(req).await;
    let m = &app.metrics;
    m.http_requests
        .with_label_values(&[method, resp.status().as_str()])
        .inc();
    m.http_request_duration
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The metric label of an HTTP method: the standard ones by name, anything else `other`. A
/// client can send any token as a method; as a label each would be a new series, kept forever.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

fn json_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = jsonrpc::RpcError::new(status, code, message).to_response(&Value::Null);
    (status, axum::Json(body)).into_response()
}

/// Browsers send `Origin`; a page from another site must not drive this server (DNS
/// rebinding). Absent Origin (non-browser clients) is fine; localhost origins are allowed.
fn origin_allowed(app: &App, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if app.config.allowed_origins.iter().any(|o| o == origin) {
        return true;
    }
    let host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Sse,
}

/// JSON unless the client accepts only an event stream; `None` when it accepts neither.
fn response_encoding(headers: &HeaderMap) -> Option<Encoding> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Some(Encoding::Json);
    };
    let types: Vec<&str> = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .collect();
    if types
        .iter()
        .any(|t| matches!(*t, "application/json" | "application/*" | "*/*"))
    {
        Some(Encoding::Json)
    } else if types.contains(&"text/event-stream") {
        Some(Encoding::Sse)
    } else {
        None
    }
}

/// The stateless era's client identity: the bearer token (hashed, never stored), else the
/// remote address.
fn client_identity(headers: &HeaderMap, peer: SocketAddr) -> String {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match bearer {
        Some(token) => format!(
            "bearer:{:016x}",
            KEY.get_or_init(RandomState::new).hash_one(token)
        ),
        None => format!("addr:{}", peer.ip()),
    }
}

async fn mcp_post(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    deadline: Option<Extension<SendDeadline>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !origin_allowed(&app, &headers) {
        return json_error(
            StatusCode::FORBIDDEN,
            jsonrpc::code::SERVER_ERROR,
            "Forbidden: Origin not allowed",
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            jsonrpc::code::SERVER_ERROR,
            "Unsupported Media Type: Content-Type must be application/json",
        );
    }
    let Some(encoding) = response_encoding(&headers) else {
        return json_error(
            StatusCode::NOT_ACCEPTABLE,
            jsonrpc::code::SERVER_ERROR,
            "Not Acceptable: Accept must include application/json or text/event-stream",
        );
    };
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                jsonrpc::code::INVALID_REQUEST,
                "Payload Too Large: the body exceeds 1 MiB",
            );
        }
    };
    let client = client_identity(&headers, peer);
    let network = crate::ratelimit::network_of(peer.ip());
    let reply = mcp::handle_post(&app, &headers, &client, network, &bytes).await;
    encode(
        reply,
        encoding,
        &app.config.limits.http,
        deadline.as_ref().map(|d| &d.0),
    )
}

fn encode(
    reply: Reply,
    encoding: Encoding,
    limits: &HttpLimits,
    deadline: Option<&SendDeadline>,
) -> Response {
    let Reply {
        status,
        body,
        session_id,
        retry_after,
    } = reply;
    let mut resp = match body {
        None => status.into_response(),
        // SSE only for successful exchanges: an HTTP error status is better read as JSON.
        Some(body) if encoding == Encoding::Sse && status == StatusCode::OK => {
            let data = ChargedBody::encode(b"event: message\ndata: ", &body, b"\n\n");
            let mut r = (status, ChargedBody::wrap(data, limits, deadline)).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            r
        }
        Some(body) => {
            let data = ChargedBody::encode(b"", &body, b"");
            let mut r = (status, ChargedBody::wrap(data, limits, deadline)).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
    };
    let h = resp.headers_mut();
    if let Some(sid) = session_id.and_then(|s| HeaderValue::from_str(&s).ok()) {
        h.insert("mcp-session-id", sid);
    }
    if let Some(secs) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// GET on the MCP endpoint would open a server-to-client event stream; this server sends
/// no server-initiated messages, so it offers none (the spec's 405).
async fn mcp_get() -> Response {
    let mut r = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        jsonrpc::code::SERVER_ERROR,
        "Method Not Allowed: this server offers no SSE stream; POST JSON-RPC requests",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    r
}

async fn mcp_delete(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !origin_allowed(&app, &headers) {
        return json_error(
            StatusCode::FORBIDDEN,
            jsonrpc::code::SERVER_ERROR,
            "Forbidden: Origin not allowed",
        );
    }
    match mcp::handle_delete(&app, &headers) {
        StatusCode::NOT_FOUND => json_error(
            StatusCode::NOT_FOUND,
            jsonrpc::code::SESSION_NOT_FOUND,
            "Session not found",
        ),
        StatusCode::METHOD_NOT_ALLOWED => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            jsonrpc::code::SERVER_ERROR,
            "Method Not Allowed: DELETE needs an Mcp-Session-Id (2025 protocol era)",
        ),
        s => s.into_response(),
    }
}

async fn health(State(app): State<Arc<App>>) -> Response {
    axum::Json(json!({
        "status": "healthy",
        "ssh_sessions": app.sessions.len(),
        "mcp_sessions": app.mcp_sessions.len(),
        "uptime_s": app.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!("Not found: {method} {}\n", uri.path()),
    )
        .into_response()
}

/// Responses at least this large are charged to the output budget while they are sent.
const CHARGED_FROM: usize = 64 * 1024;
/// The piece of a response handed to hyper at a time, each its own allocation.
const CHUNK: usize = 64 * 1024;

/// A response body charged to the server's output budget ([`crate::budget`]) for as long as
/// its bytes exist. It is serialized straight into 64 KiB pieces, each its own allocation
/// carrying its own charge ([`Piece`]); hyper takes one at a time and drops it once written,
/// which frees the memory and gives its charge back, so the charge follows the memory still
/// held (before, the pieces were slices of one buffer: the charge went back piece by piece
/// while the whole 32 MiB buffer stayed resident until the last piece was sent). When the
/// connection is dropped (the client went away, or stopped reading and was cut off by the
/// write timeout or the send deadline), every piece left goes with it.
///
/// It also arms its connection's send deadline ([`crate::send_deadline`]) until it is done: a
/// client that reads steadily but slower than `--http-min-send-rate-kib` never trips the write
/// timeout, and would otherwise hold the charge as long as it liked.
struct ChargedBody {
    pieces: std::collections::VecDeque<Bytes>,
    left: usize,
    _deadline: Option<Armed>,
}

/// One piece of a response and its charge, given back when hyper drops the piece.
struct Piece {
    bytes: Vec<u8>,
    _charge: crate::budget::Charge,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Serializes into pieces of at most [`CHUNK`] bytes.
#[derive(Default)]
struct Pieces {
    done: std::collections::VecDeque<Vec<u8>>,
    current: Vec<u8>,
}

impl std::io::Write for Pieces {
    fn write(&mut self, mut buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            if self.current.capacity() == 0 {
                self.current = Vec::with_capacity(CHUNK);
            }
            let take = (CHUNK - self.current.len()).min(buf.len());
            let (now, rest) = buf.split_at(take);
            self.current.extend_from_slice(now);
            buf = rest;
            if self.current.len() == CHUNK {
                self.done.push_back(std::mem::take(&mut self.current));
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ChargedBody {
    /// `prefix`, `body` as JSON, `suffix`, in pieces.
    fn encode(prefix: &[u8], body: &Value, suffix: &[u8]) -> std::collections::VecDeque<Vec<u8>> {
        use std::io::Write;
        let mut out = Pieces::default();
        // Writing to `Pieces` cannot fail, nor can serializing a `Value`.
        let written = out
            .write_all(prefix)
            .and_then(|()| serde_json::to_writer(&mut out, body).map_err(std::io::Error::other))
            .and_then(|()| out.write_all(suffix));
        if let Err(e) = written {
            tracing::error!(error = %e, "encoding a response failed");
        }
        let mut done = out.done;
        if !out.current.is_empty() {
            done.push_back(out.current);
        }
        done
    }

    /// A body of `pieces`: charged and under the send deadline when large, plain otherwise.
    fn wrap(
        pieces: std::collections::VecDeque<Vec<u8>>,
        limits: &HttpLimits,
        deadline: Option<&SendDeadline>,
    ) -> Body {
        let len: usize = pieces.iter().map(Vec::len).sum();
        if len < CHARGED_FROM {
            return Body::from(pieces.into_iter().flatten().collect::<Vec<u8>>());
        }
        let armed = deadline
            .zip(limits.send_deadline(len))
            .map(|(d, after)| d.arm(tokio::time::Instant::now() + after));
        let pieces = pieces
            .into_iter()
            .map(|bytes| {
                let mut charge = crate::budget::SERVER.charge();
                charge.force(bytes.len());
                Bytes::from_owner(Piece {
                    bytes,
                    _charge: charge,
                })
            })
            .collect();
        Body::new(Self {
            pieces,
            left: len,
            _deadline: armed,
        })
    }
}

impl http_body::Body for ChargedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(piece) = this.pieces.pop_front() else {
            return std::task::Poll::Ready(None);
        };
        this.left -= piece.len();
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(k.clone(), v.parse().expect("value"));
        }
        m
    }

    #[test]
    fn accept_picks_json_or_sse() {
        assert_eq!(response_encoding(&h(&[])), Some(Encoding::Json));
        assert_eq!(
            response_encoding(&h(&[(
                header::ACCEPT,
                "application/json, text/event-stream"
            )])),
            Some(Encoding::Json)
        );
        assert_eq!(
            response_encoding(&h(&[(header::ACCEPT, "text/event-stream")])),
            Some(Encoding::Sse)
        );
        assert_eq!(
            response_encoding(&h(&[(header::ACCEPT, "text/html")])),
            None
        );
    }

    #[test]
    fn identity_prefers_the_bearer_token() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        assert_eq!(client_identity(&h(&[]), peer), "addr:127.0.0.1");
        let a = client_identity(&h(&[(header::AUTHORIZATION, "Bearer t1")]), peer);
        let b = client_identity(&h(&[(header::AUTHORIZATION, "Bearer t2")]), peer);
        assert!(a.starts_with("bearer:") && a != b && !a.contains("t1"));
    }
}
