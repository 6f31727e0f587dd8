//! JSON-RPC 2.0 framing: parse one incoming message, build responses and errors.
//!
//! Parsing goes through `serde_json::Value` rather than typed structs so that every malformed
//! message gets the precise JSON-RPC error the spec names (-32700 for bytes that are not JSON,
//! -32600 for JSON that is not a request), and so that the request `id` is echoed exactly,
//! whatever its type.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

/// Standard JSON-RPC and MCP error codes.
pub mod code {
    /// Not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON, but not a valid request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Bad params (including a missing `_meta` in the 2026-07-28 era, and unknown tools).
    pub const INVALID_PARAMS: i64 = -32602;
    /// Server bug.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Implementation-defined server error: sessions and rate limits (2025 era range).
    pub const SERVER_ERROR: i64 = -32000;
    /// 2025 era: the Mcp-Session-Id is unknown or expired.
    pub const SESSION_NOT_FOUND: i64 = -32001;
    /// 2026-07-28: an MCP header is missing or disagrees with the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// 2026-07-28: the requested protocol version is not supported.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// A JSON-RPC error together with the HTTP status it is sent with.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// JSON-RPC code.
    pub code: i64,
    /// Message.
    pub message: String,
    /// Optional `data`.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error sent with `status`.
    pub fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Attach `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The error as a JSON-RPC response for `id` (null when unknown).
    pub fn to_response(&self, id: &Value) -> Value {
        let mut err = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.data {
            err["data"] = d.clone();
        }
        json!({"jsonrpc": "2.0", "id": id, "error": err})
    }
}

/// One parsed incoming message.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A request (it has an id).
    Request {
        /// The id, echoed back.
        id: Value,
        /// Method name.
        method: String,
        /// Params (an object; `{}` when absent).
        params: Map<String, Value>,
    },
    /// A notification (no id).
    Notification {
        /// Method name.
        method: String,
        /// Params.
        params: Map<String, Value>,
    },
    /// A response from the client (to a server request; this server sends none).
    Response,
}

impl Incoming {
    /// The method, when there is one.
    pub fn method(&self) -> Option<&str> {
        match self {
            Incoming::Request { method, .. } | Incoming::Notification { method, .. } => {
                Some(method)
            }
            Incoming::Response => None,
        }
    }

    /// The params, when there are some.
    pub fn params(&self) -> Option<&Map<String, Value>> {
        match self {
            Incoming::Request { params, .. } | Incoming::Notification { params, .. } => {
                Some(params)
            }
            Incoming::Response => None,
        }
    }
}

fn invalid(message: impl Into<String>) -> (Value, RpcError) {
    (
        Value::Null,
        RpcError::new(StatusCode::BAD_REQUEST, code::INVALID_REQUEST, message),
    )
}

/// Parse one message. On error, returns the id to answer with (null when unknown) and the error.
pub fn parse(body: &[u8]) -> Result<Incoming, (Value, RpcError)> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        (
            Value::Null,
            RpcError::new(
                StatusCode::BAD_REQUEST,
                code::PARSE_ERROR,
                format!("Parse error: {e}"),
            ),
        )
    })?;
    let mut obj = match value {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(invalid(
                "Invalid Request: batches are not supported (one JSON-RPC message per POST)",
            ));
        }
        _ => return Err(invalid("Invalid Request: expected a JSON object")),
    };
    let id = obj.remove("id");
    if let Some(id) = &id
        && !matches!(id, Value::String(_) | Value::Number(_))
    {
        return Err(invalid("Invalid Request: id must be a string or a number"));
    }
    let id_or_null = id.clone().unwrap_or(Value::Null);
    if obj.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err((
            id_or_null,
            RpcError::new(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                "Invalid Request: jsonrpc must be \"2.0\"",
            ),
        ));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => m,
        Some(_) => {
            return Err((
                id_or_null,
                RpcError::new(
                    StatusCode::BAD_REQUEST,
                    code::INVALID_REQUEST,
                    "Invalid Request: method must be a non-empty string",
                ),
            ));
        }
        None if id.is_some() && (obj.contains_key("result") || obj.contains_key("error")) => {
            return Ok(Incoming::Response);
        }
        None => {
            return Err((
                id_or_null,
                RpcError::new(
                    StatusCode::BAD_REQUEST,
                    code::INVALID_REQUEST,
                    "Invalid Request: method is missing",
                ),
            ));
        }
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err((
                id_or_null,
                RpcError::new(
                    StatusCode::BAD_REQUEST,
                    code::INVALID_PARAMS,
                    "Invalid params: params must be an object",
                ),
            ));
        }
    };
    Ok(match id {
        Some(id) => Incoming::Request { id, method, params },
        None => Incoming::Notification { method, params },
    })
}

/// A successful response.
pub fn success(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_notifications_and_responses() {
        let r = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#).expect("ok");
        assert_eq!(
            r,
            Incoming::Request {
                id: json!(7),
                method: "tools/list".into(),
                params: Map::new()
            }
        );
        let n = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).expect("ok");
        assert!(matches!(n, Incoming::Notification { .. }));
        let resp = parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).expect("ok");
        assert_eq!(resp, Incoming::Response);
    }

    #[test]
    fn malformed_messages_get_the_right_codes() {
        let cases: &[(&[u8], i64, Value)] = &[
            (b"{not json", code::PARSE_ERROR, Value::Null),
            (b"[]", code::INVALID_REQUEST, Value::Null),
            (b"42", code::INVALID_REQUEST, Value::Null),
            (
                br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
                code::INVALID_REQUEST,
                json!(1),
            ),
            (
                br#"{"jsonrpc":"2.0","id":1}"#,
                code::INVALID_REQUEST,
                json!(1),
            ),
            (
                br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
                code::INVALID_REQUEST,
                Value::Null,
            ),
            (
                br#"{"jsonrpc":"2.0","id":2,"method":7}"#,
                code::INVALID_REQUEST,
                json!(2),
            ),
            (
                br#"{"jsonrpc":"2.0","id":3,"method":"x","params":[1]}"#,
                code::INVALID_PARAMS,
                json!(3),
            ),
        ];
        for (body, want, want_id) in cases {
            let (id, err) = parse(body).expect_err("malformed");
            assert_eq!(err.code, *want, "{}", String::from_utf8_lossy(body));
            assert_eq!(&id, want_id, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn errors_render_with_data() {
        let e = RpcError::new(
            StatusCode::BAD_REQUEST,
            -32022,
            "Unsupported protocol version",
        )
        .with_data(json!({"supported": ["2026-07-28"], "requested": "1900-01-01"}));
        let v = e.to_response(&json!(1));
        assert_eq!(v["error"]["data"]["requested"], "1900-01-01");
        assert_eq!(v["id"], 1);
    }
}
