//! 2026-07-28 request checks: the per-request `_meta` and the HTTP headers that must mirror
//! the body (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`).
//!
//! Order, as the spec's error table suggests: missing `_meta` fields (-32602), then missing or
//! mismatched headers (-32020, HeaderMismatch), then an unsupported version (-32022); all 400.

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use serde_json::{Map, Value, json};

use super::jsonrpc::{RpcError, code};
use super::version;

/// `_meta` key of the protocol version.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key of the client capabilities.
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key of the server identity on results.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// Whether a message's params carry the modern per-request protocol version.
pub fn has_modern_meta(params: &Map<String, Value>) -> bool {
    params
        .get("_meta")
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key(META_VERSION))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Decode the spec's `=?base64?...?=` sentinel used for non-ASCII header values.
fn decode_header_value(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(v.to_owned()),
    }
}

fn mismatch(message: String) -> RpcError {
    RpcError::new(StatusCode::BAD_REQUEST, code::HEADER_MISMATCH, message)
}

/// Check a modern request; `Ok` carries nothing because nothing is negotiated.
pub fn check(
    headers: &HeaderMap,
    method: &str,
    params: &Map<String, Value>,
) -> Result<(), RpcError> {
    let meta = params.get("_meta").and_then(Value::as_object);
    let version = meta
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str);
    let caps = meta.and_then(|m| m.get(META_CAPABILITIES));
    let Some(version) = version else {
        return Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            code::INVALID_PARAMS,
            format!("Invalid params: _meta[\"{META_VERSION}\"] must be a string"),
        ));
    };
    if !caps.is_some_and(Value::is_object) {
        return Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            code::INVALID_PARAMS,
            format!("Invalid params: _meta[\"{META_CAPABILITIES}\"] is required (an object)"),
        ));
    }
    match header(headers, "mcp-protocol-version") {
        None => {
            return Err(mismatch(
                "Header mismatch: MCP-Protocol-Version header is required".into(),
            ));
        }
        Some(h) if h != version => {
            return Err(mismatch(format!(
                "Header mismatch: MCP-Protocol-Version header value '{h}' does not match body value '{version}'"
            )));
        }
        Some(_) => {}
    }
    match header(headers, "mcp-method") {
        None => {
            return Err(mismatch(
                "Header mismatch: Mcp-Method header is required".into(),
            ));
        }
        Some(h) if h != method => {
            return Err(mismatch(format!(
                "Header mismatch: Mcp-Method header value '{h}' does not match body value '{method}'"
            )));
        }
        Some(_) => {}
    }
    let name_key = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(key) = name_key {
        let body = params.get(key).and_then(Value::as_str).unwrap_or_default();
        match header(headers, "mcp-name").map(decode_header_value) {
            None => {
                return Err(mismatch(
                    "Header mismatch: Mcp-Name header is required".into(),
                ));
            }
            Some(None) => {
                return Err(mismatch(
                    "Header mismatch: Mcp-Name header has an invalid base64 value".into(),
                ));
            }
            Some(Some(h)) if h != body => {
                return Err(mismatch(format!(
                    "Header mismatch: Mcp-Name header value '{h}' does not match body value '{body}'"
                )));
            }
            Some(Some(_)) => {}
        }
    }
    if !version::MODERN.contains(&version) {
        return Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            code::UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
        )
        .with_data(json!({"supported": version::all(), "requested": version})));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(version: &str, name: Option<&str>) -> Map<String, Value> {
        let mut v = json!({"_meta": {META_VERSION: version, META_CAPABILITIES: {}}});
        if let Some(n) = name {
            v["name"] = json!(n);
        }
        v.as_object().cloned().expect("object")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn a_complete_request_passes() {
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "ssh_connect"),
        ]);
        assert_eq!(
            check(&h, "tools/call", &params("2026-07-28", Some("ssh_connect"))),
            Ok(())
        );
    }

    #[test]
    fn each_rule_has_its_error() {
        let ok = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "ssh_connect"),
        ];
        let p = params("2026-07-28", Some("ssh_connect"));
        // Missing _meta capabilities → -32602.
        let mut no_caps = p.clone();
        no_caps.insert("_meta".into(), json!({META_VERSION: "2026-07-28"}));
        assert_eq!(
            check(&headers(&ok), "tools/call", &no_caps)
                .expect_err("")
                .code,
            -32602
        );
        // Each header missing → -32020.
        for skip in 0..3 {
            let h: Vec<_> = ok
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            let e = check(&headers(&h), "tools/call", &p).expect_err("missing header");
            assert_eq!(e.code, code::HEADER_MISMATCH, "{}", e.message);
        }
        // Mismatched name → -32020.
        let e = check(
            &headers(&[ok[0], ok[1], ("mcp-name", "ssh_disconnect")]),
            "tools/call",
            &p,
        )
        .expect_err("mismatch");
        assert!(e.message.contains("ssh_disconnect") && e.code == code::HEADER_MISMATCH);
        // Unsupported version → -32022 with supported and requested.
        let old = params("1900-01-01", Some("ssh_connect"));
        let e = check(
            &headers(&[("mcp-protocol-version", "1900-01-01"), ok[1], ok[2]]),
            "tools/call",
            &old,
        )
        .expect_err("unsupported");
        assert_eq!(e.code, code::UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let data = e.data.expect("data");
        assert_eq!(data["requested"], "1900-01-01");
        assert!(
            data["supported"]
                .as_array()
                .expect("list")
                .contains(&json!("2025-11-25"))
        );
    }

    #[test]
    fn base64_sentinel_names_are_decoded() {
        let name = "ssh_connect";
        let b64 = base64::engine::general_purpose::STANDARD.encode(name);
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", &format!("=?base64?{b64}?=")),
        ]);
        assert_eq!(
            check(&h, "tools/call", &params("2026-07-28", Some(name))),
            Ok(())
        );
    }
}
