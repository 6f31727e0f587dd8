//! `ssh_disconnect`: end a session; its connection goes back to the pool when healthy.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CallCtx, ToolError, ToolOutput, ToolSpec, schema_of};

pub(super) const SPEC: ToolSpec = ToolSpec {
    name: "ssh_disconnect",
    title: "Disconnect an SSH session",
    description: "End an SSH session; a healthy connection is returned to the pool for reuse.",
    read_only: false,
    input: schema_of::<Args>,
    output: schema_of::<Output>,
};

/// Arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// Session handle from ssh_connect.
    session_id: String,
}

/// Result.
#[derive(Debug, Serialize, JsonSchema)]
struct Output {
    session_id: String,
    /// `user@host:port`.
    target: String,
    /// Whether the connection went back to the pool (false when it had failed, or was opened
    /// with reuse=false).
    pooled: bool,
}

pub(super) async fn call(ctx: &CallCtx<'_>, args: Args) -> Result<ToolOutput, ToolError> {
    let session = ctx.app.sessions.remove(&args.session_id, ctx.owner)?;
    let target = session.lease().key().to_string();
    let pooled = session.lease().will_pool();
    let out = Output {
        session_id: args.session_id,
        target,
        pooled,
    };
    Ok(ToolOutput::new(
        format!("Disconnected from {}", out.target),
        &out,
    ))
}
