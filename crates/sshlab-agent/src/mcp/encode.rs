//! Requests as they go on the wire: the JSON-RPC body, and the headers each protocol era
//! requires (2026-07-28: `_meta` in every request, mirrored in `Mcp-Protocol-Version`,
//! `Mcp-Method` and `Mcp-Name`; 2025: `Mcp-Session-Id` after `initialize`).

use std::borrow::Cow;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue};
use serde::Serialize;
use serde::ser::SerializeMap as _;
use serde_json::{Map, Value};

use super::error::McpError;
use super::negotiate::Era;

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPS: &str = "io.modelcontextprotocol/clientCapabilities";
const META_INFO: &str = "io.modelcontextprotocol/clientInfo";
// Header names as constants: a `&str` name is parsed again on every insert.
pub(super) const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
const METHOD_HEADER: HeaderName = HeaderName::from_static("mcp-method");
const NAME_HEADER: HeaderName = HeaderName::from_static("mcp-name");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
const JSON_OR_SSE: &str = "application/json, text/event-stream";

/// Who is asking, as a request's headers and `_meta` say it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Speaker<'a> {
    /// The era spoken.
    pub era: Era,
    /// The protocol version (the negotiated one in the 2025 era).
    pub version: &'a str,
    /// The 2025-era session, once `initialize` issued one.
    pub session: Option<&'a str>,
    /// `clientInfo`.
    pub client_info: &'a Value,
    /// The client's capabilities.
    pub capabilities: &'a Value,
    /// `Authorization: Bearer …`, built once by [`authorization`].
    pub authorization: Option<&'a HeaderValue>,
}

/// The `Authorization` value for a bearer token (marked sensitive: never logged).
pub(super) fn authorization(bearer: &str) -> Result<HeaderValue, McpError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {bearer}")).map_err(|_| {
        McpError::InvalidResponse("the bearer token is not a valid header value".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// A POST's headers and body: request `id` (a notification when `None`) of `method`.
/// `params` is borrowed, not consumed: a request sent again (the next round of an
/// `input_required` exchange) is built from the same value without a copy.
pub(super) fn request(
    who: &Speaker<'_>,
    id: Option<u64>,
    method: &str,
    params: &Value,
) -> Result<(HeaderMap, Bytes), McpError> {
    let none = Map::new();
    let params = match params {
        Value::Object(m) => m,
        Value::Null => &none,
        other => {
            return Err(McpError::InvalidResponse(format!(
                "params must be an object, not {other}"
            )));
        }
    };
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(ACCEPT, HeaderValue::from_static(JSON_OR_SSE));
    let mut meta = None;
    match who.era {
        Era::Modern => {
            meta = Some(Meta {
                given: match params.get("_meta") {
                    Some(Value::Object(m)) => Some(m),
                    _ => None,
                },
                version: who.version,
                capabilities: who.capabilities,
                client_info: who.client_info,
            });
            headers.insert(VERSION_HEADER, header_value(who.version)?);
            headers.insert(METHOD_HEADER, header_value(&encode_header_value(method))?);
            let name_key = match method {
                "tools/call" | "prompts/get" => Some("name"),
                "resources/read" => Some("uri"),
                _ => None,
            };
            if let Some(name) = name_key.and_then(|k| params.get(k)).and_then(Value::as_str) {
                headers.insert(NAME_HEADER, header_value(&encode_header_value(name))?);
            }
        }
        Era::Legacy if method != "initialize" => session_headers(who, &mut headers)?,
        Era::Legacy => {}
    }
    authorize(who, &mut headers)?;
    let wire = Wire {
        jsonrpc: "2.0",
        id,
        method,
        params: Params {
            given: params,
            meta,
        },
    };
    let body = serde_json::to_vec(&wire)
        .map_err(|e| McpError::InvalidResponse(format!("cannot encode the request: {e}")))?;
    Ok((headers, Bytes::from(body)))
}

/// A JSON-RPC request or notification as sent.
#[derive(Serialize)]
struct Wire<'a> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    method: &'a str,
    params: Params<'a>,
}

/// The caller's params with the era's `_meta` (when there is one) in place of theirs.
struct Params<'a> {
    given: &'a Map<String, Value>,
    meta: Option<Meta<'a>>,
}

/// A 2026-07-28 request's `_meta`: the caller's entries, then the protocol version, the
/// client's capabilities and info (ours win), serialised from borrows: nothing is copied.
struct Meta<'a> {
    given: Option<&'a Map<String, Value>>,
    version: &'a str,
    capabilities: &'a Value,
    client_info: &'a Value,
}

impl Serialize for Meta<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.given.into_iter().flatten() {
            if ![META_VERSION, META_CAPS, META_INFO].contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.serialize_entry(META_VERSION, self.version)?;
        map.serialize_entry(META_CAPS, self.capabilities)?;
        map.serialize_entry(META_INFO, self.client_info)?;
        map.end()
    }
}

impl Serialize for Params<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.given {
            if !(self.meta.is_some() && k == "_meta") {
                map.serialize_entry(k, v)?;
            }
        }
        if let Some(meta) = &self.meta {
            map.serialize_entry("_meta", meta)?;
        }
        map.end()
    }
}

/// The GET that resumes an SSE stream the server closed before our response, after the event
/// `last_event_id` (2025-11-25, SEP-1699).
pub(super) fn resume(who: &Speaker<'_>, last_event_id: &str) -> Result<HeaderMap, McpError> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    headers.insert(LAST_EVENT_ID, header_value(last_event_id)?);
    session_headers(who, &mut headers)?;
    authorize(who, &mut headers)?;
    Ok(headers)
}

/// The DELETE that ends a 2025-era session.
pub(super) fn end_session(who: &Speaker<'_>, session: &str) -> Result<HeaderMap, McpError> {
    let mut headers = HeaderMap::new();
    headers.insert(SESSION_HEADER, header_value(session)?);
    headers.insert(VERSION_HEADER, header_value(who.version)?);
    authorize(who, &mut headers)?;
    Ok(headers)
}

/// 2025 era, after `initialize`: the session (when one was issued) and the negotiated version.
fn session_headers(who: &Speaker<'_>, headers: &mut HeaderMap) -> Result<(), McpError> {
    if let Some(s) = who.session {
        headers.insert(SESSION_HEADER, header_value(s)?);
    }
    headers.insert(VERSION_HEADER, header_value(who.version)?);
    Ok(())
}

/// `Authorization` when a token is set.
fn authorize(who: &Speaker<'_>, headers: &mut HeaderMap) -> Result<(), McpError> {
    if let Some(v) = who.authorization {
        headers.insert(AUTHORIZATION, v.clone());
    }
    Ok(())
}

fn header_value(s: &str) -> Result<HeaderValue, McpError> {
    HeaderValue::from_str(s)
        .map_err(|_| McpError::InvalidResponse(format!("cannot send header value {s:?}")))
}

/// Encode a header value per the 2026-07-28 rules: plain printable ASCII as is, anything else
/// (non-ASCII, control characters, leading/trailing whitespace, or a value that already looks
/// like the sentinel) as `=?base64?{base64(utf8)}?=`.
pub fn encode_header_value(value: &str) -> Cow<'_, str> {
    let plain = value.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && value.trim() == value
        && !(value.starts_with("=?base64?") && value.ends_with("?="));
    if plain {
        Cow::Borrowed(value)
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
        Cow::Owned(format!("=?base64?{b64}?="))
    }
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
    fn modern_requests_carry_meta_and_headers_legacy_ones_the_session() {
        let info = serde_json::json!({"name": "t", "version": "1"});
        let mut who = Speaker {
            era: Era::Modern,
            version: "2026-07-28",
            session: None,
            client_info: &info,
            capabilities: &serde_json::json!({"elicitation": {}}),
            authorization: Some(&authorization("tok").expect("valid")),
        };
        let params = serde_json::json!({"name": "héllo", "arguments": {"a": 1},
            "_meta": {"progressToken": 7}});
        let (h, body) = request(&who, Some(9), "tools/call", &params).expect("encodes");
        let sent: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(sent["id"], 9);
        assert_eq!(sent["params"]["arguments"]["a"], 1);
        let meta = &sent["params"]["_meta"];
        assert_eq!(meta["progressToken"], 7, "the caller's _meta is kept");
        assert_eq!(meta[META_VERSION], "2026-07-28");
        assert_eq!(meta[META_INFO]["name"], "t");
        assert_eq!(meta[META_CAPS], serde_json::json!({"elicitation": {}}));
        assert_eq!(h["mcp-method"], "tools/call");
        assert_eq!(h["mcp-name"], "=?base64?aMOpbGxv?=");
        assert_eq!(h["authorization"], "Bearer tok");
        who.era = Era::Legacy;
        who.version = "2025-11-25";
        who.session = Some("s-1");
        let (h, body) =
            request(&who, None, "notifications/initialized", &Value::Null).expect("encodes");
        let sent: Value = serde_json::from_slice(&body).expect("json");
        assert!(sent.get("id").is_none() && sent["params"] == serde_json::json!({}));
        assert_eq!(h[SESSION_HEADER], "s-1");
        assert!(h.get("mcp-method").is_none());
    }
}
