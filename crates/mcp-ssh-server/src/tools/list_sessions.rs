//! `ssh_list_sessions`: the caller's own SSH sessions (never anyone else's).

use std::time::UNIX_EPOCH;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CallCtx, ToolError, ToolOutput, ToolSpec, schema_of};

pub(super) const SPEC: ToolSpec = ToolSpec {
    name: "ssh_list_sessions",
    title: "List my SSH sessions",
    description: "List the SSH sessions opened by this client.",
    read_only: true,
    input: schema_of::<Args>,
    output: schema_of::<Output>,
};

/// Arguments (none).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {}

/// One session.
#[derive(Debug, Serialize, JsonSchema)]
struct SessionInfo {
    session_id: String,
    /// `user@host:port`.
    target: String,
    /// Unix time, milliseconds.
    created_at_ms: u64,
}

/// Result.
#[derive(Debug, Serialize, JsonSchema)]
struct Output {
    sessions: Vec<SessionInfo>,
    count: usize,
}

pub(super) async fn call(ctx: &CallCtx<'_>, _args: Args) -> Result<ToolOutput, ToolError> {
    let sessions: Vec<SessionInfo> = ctx
        .app
        .sessions
        .list(ctx.owner)
        .iter()
        .map(|s| SessionInfo {
            session_id: s.id.clone(),
            target: s.lease().key().to_string(),
            created_at_ms: s
                .created_at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        })
        .collect();
    let mut text = format!("Active sessions: {}", sessions.len());
    for s in &sessions {
        text.push_str(&format!("\n- {}: {}", s.session_id, s.target));
    }
    let out = Output {
        count: sessions.len(),
        sessions,
    };
    Ok(ToolOutput::new(text, &out))
}
