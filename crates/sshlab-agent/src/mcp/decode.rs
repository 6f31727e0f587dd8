//! Responses as they come off the wire: a JSON or SSE body read to our response (ids checked,
//! notifications and server requests skipped), then the `result` or a typed error.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::Value;

use super::error::McpError;
use super::sse::SseParser;
use super::transport::TransportError;

const EXCERPT: usize = 512;

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
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Body,
}

#[derive(Debug)]
pub(super) enum Body {
    /// The JSON-RPC response to our request (id checked, or null on an error).
    Response(Value),
    /// No body.
    Empty,
    /// Something else; the excerpt says what.
    Other(String),
}

/// Turn a reply into a `result` or a typed error. `session_gone`: a 404 means the 2025-era
/// session this client holds has ended.
pub(super) fn result_of(reply: Reply, session_gone: bool) -> Result<Value, McpError> {
    if reply.status == StatusCode::TOO_MANY_REQUESTS {
        return Err(rate_limited(&reply));
    }
    if reply.status == StatusCode::NOT_FOUND && session_gone {
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

pub(super) fn http_error(reply: &Reply) -> McpError {
    if reply.status == StatusCode::TOO_MANY_REQUESTS {
        return rate_limited(reply);
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

/// A 429, with the server's own words: its JSON-RPC error message (which names the limit
/// that was hit), else the start of the body.
fn rate_limited(reply: &Reply) -> McpError {
    let message = match &reply.body {
        Body::Response(v) => v
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(excerpt)
            .or_else(|| Some(excerpt(&v.to_string()))),
        Body::Other(s) if !s.is_empty() => Some(s.clone()),
        Body::Other(_) | Body::Empty => None,
    };
    McpError::RateLimited {
        retry_after: retry_after(&reply.headers),
        message,
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

pub(super) fn excerpt(s: &str) -> String {
    let mut end = s.len().min(EXCERPT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

pub(super) fn tool_result(raw: Value) -> ToolResult {
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

/// How an exchange ended.
#[derive(Debug)]
pub(super) enum Exchange {
    /// With an answer (our response, or whatever else the server sent).
    Done(Reply),
    /// An SSE stream ended before our response after an event with an id (in this stream or
    /// one it resumed): resume it with GET and `Last-Event-ID` after [`Resume::wait`].
    Resume(Resume),
}

/// Where to resume a stream from, carried from stream to stream like an `EventSource`'s last
/// event id and reconnection time.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Resume {
    /// The id of the last event seen.
    pub(super) last_event_id: String,
    /// The server's last `retry:`, if it sent one.
    pub(super) retry: Option<Duration>,
}

impl Resume {
    /// How long to wait before resuming: the server's `retry:`, else a second, at most ten.
    pub(super) fn wait(&self) -> Duration {
        self.retry.unwrap_or(DEFAULT_RETRY).min(MAX_RETRY)
    }
}

/// The wait before resuming a stream whose server sent no `retry:`.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// The longest `retry:` honoured (a server cannot park a request for hours).
const MAX_RETRY: Duration = Duration::from_secs(10);

/// Read the answer, streaming SSE bodies until our response arrives. `resumed`: this response
/// resumes an earlier stream, whose last event id and `retry:` hold until this one sends its own.
pub(super) async fn exchange(
    resp: http::Response<Incoming>,
    id: Option<u64>,
    resumed: Option<Resume>,
) -> Result<Exchange, McpError> {
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
    let reply = |body| {
        Exchange::Done(Reply {
            status,
            headers: headers.clone(),
            body,
        })
    };
    if is_sse {
        let Some(id) = id else {
            return Ok(reply(Body::Empty));
        };
        let mut parser = match resumed {
            Some(r) => SseParser::resuming(Some(r.last_event_id), r.retry),
            None => SseParser::default(),
        };
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
                return match parser.last_event_id() {
                    Some(last) if status.is_success() => Ok(Exchange::Resume(Resume {
                        last_event_id: last.to_owned(),
                        retry: parser.retry(),
                    })),
                    _ => Err(McpError::InvalidResponse(
                        "SSE stream ended without the response (and without an event id to \
                         resume from)"
                            .into(),
                    )),
                };
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
    use serde_json::json;

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
    fn tool_result_joins_text() {
        let r = tool_result(
            json!({"content":[{"type":"text","text":"a"},{"type":"image"},
            {"type":"text","text":"b"}],"isError":true,"structuredContent":{"k":1}}),
        );
        assert!(r.is_error);
        assert_eq!(r.text, "a\nb");
        assert_eq!(r.structured, Some(json!({"k":1})));
    }
}
