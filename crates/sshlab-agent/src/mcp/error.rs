//! The client's errors: one typed variant per way an exchange can fail, each with a short
//! stable [`McpError::kind`] for reports.

use std::time::Duration;

use serde_json::Value;

use super::transport::TransportError;

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
    #[error("rate limited (HTTP 429{}){}", retry_note(*.retry_after), message_note(.message))]
    RateLimited {
        /// The `Retry-After` delay, when given in seconds.
        retry_after: Option<Duration>,
        /// What the server said (its JSON-RPC error message, else the start of the body).
        message: Option<String>,
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

fn retry_note(after: Option<Duration>) -> String {
    after.map_or_else(String::new, |d| format!(", retry after {} s", d.as_secs()))
}

fn message_note(message: &Option<String>) -> String {
    message
        .as_deref()
        .filter(|m| !m.is_empty())
        .map_or_else(String::new, |m| format!(": {m}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What a record's `error` says of a 429: the delay in seconds and the server's words
    /// (before: "rate limited (retry after Some(1s))", the scope dropped).
    #[test]
    fn rate_limited_reads_as_a_sentence() {
        let e = McpError::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
            message: Some("Rate limit exceeded (address); retry after 1 s".into()),
        };
        assert_eq!(
            e.to_string(),
            "rate limited (HTTP 429, retry after 1 s): Rate limit exceeded (address); retry after 1 s"
        );
        let bare = McpError::RateLimited {
            retry_after: None,
            message: None,
        };
        assert_eq!(bare.to_string(), "rate limited (HTTP 429)");
    }
}
