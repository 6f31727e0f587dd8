//! Which protocol a client speaks: the revisions it knows, the `--protocol` choice, and the
//! choice between them when a server's `server/discover` answer (or its absence) decides.

use std::str::FromStr;

use http::StatusCode;
use serde_json::Value;

use super::decode::Body;
use super::error::McpError;

/// The modern (stateless, per-request `_meta`) protocol revision.
pub const MODERN_VERSION: &str = "2026-07-28";
/// Legacy (`initialize` handshake) revisions this client speaks, newest first.
pub const LEGACY_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

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

/// The JSON-RPC code of "unsupported protocol version" (2026-07-28); `data.supported` lists
/// the server's versions.
pub(super) const UNSUPPORTED_VERSION: i64 = -32022;

/// Whether an unsupported-version error's `data` lists `version` among the server's.
pub(super) fn lists(data: Option<&Value>, version: &str) -> bool {
    string_list(data.and_then(|d| d.get("supported")))
        .iter()
        .any(|v| v == version)
}

/// What a `server/discover` exchange settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Discovered {
    /// Speak 2026-07-28, stateless.
    Modern,
    /// Use the 2025 handshake with this revision.
    Initialize(String),
}

/// Read a `server/discover` reply. Only a result naming a version both sides speak, or the
/// modern era's own errors, settle the era; anything else (a 2025-only server answering an
/// unknown method with `{}`, a 400, a version list this agent does not know) leads to the
/// 2025 handshake, whose own negotiation decides.
pub(super) fn discovered(status: StatusCode, body: &Body) -> Discovered {
    let fallback = || Discovered::Initialize(LEGACY_VERSIONS[0].to_owned());
    let settle = |versions: Vec<String>| match pick(&versions, "server/discover") {
        Ok(v) if v == MODERN_VERSION => Discovered::Modern,
        Ok(v) => Discovered::Initialize(v),
        Err(_) => fallback(),
    };
    let Body::Response(msg) = body else {
        return fallback();
    };
    if let Some(result) = msg.get("result").filter(|_| status.is_success()) {
        return settle(string_list(result.get("supportedVersions")));
    }
    let error = msg.get("error");
    match error.and_then(|e| e.get("code")).and_then(Value::as_i64) {
        Some(UNSUPPORTED_VERSION) => settle(string_list(
            error
                .and_then(|e| e.get("data"))
                .and_then(|d| d.get("supported")),
        )),
        Some(-32020 | -32021) => Discovered::Modern,
        Some(-32601) if status == StatusCode::NOT_FOUND => Discovered::Modern,
        _ => fallback(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn discover_answers() {
        let ok = |v: Value| Body::Response(json!({"jsonrpc": "2.0", "id": 1, "result": v}));
        let modern = ok(json!({"supportedVersions": ["2026-07-28", "2025-11-25"]}));
        assert_eq!(discovered(StatusCode::OK, &modern), Discovered::Modern);
        let old = ok(json!({"supportedVersions": ["2025-06-18"]}));
        assert_eq!(
            discovered(StatusCode::OK, &old),
            Discovered::Initialize("2025-06-18".into())
        );
        let latest = Discovered::Initialize(LEGACY_VERSIONS[0].into());
        // A 2025 server answering an unknown method with `{}`, unknown versions, a 400.
        assert_eq!(discovered(StatusCode::OK, &ok(json!({}))), latest);
        let unknown = ok(json!({"supportedVersions": ["2031-01-01"]}));
        assert_eq!(discovered(StatusCode::OK, &unknown), latest);
        assert_eq!(discovered(StatusCode::BAD_REQUEST, &Body::Empty), latest);
        let unsupported = Body::Response(json!({"jsonrpc": "2.0", "id": 1, "error":
            {"code": -32022, "message": "x", "data": {"supported": ["2026-07-28"]}}}));
        assert_eq!(
            discovered(StatusCode::BAD_REQUEST, &unsupported),
            Discovered::Modern
        );
    }
}
