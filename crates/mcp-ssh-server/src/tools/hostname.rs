//! `ssh_hostname`: the remote host's name (runs `hostname`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CallCtx, ToolError, ToolOutput, ToolSpec, run_command, schema_of};

pub(super) const SPEC: ToolSpec = ToolSpec {
    name: "ssh_hostname",
    title: "Remote host name",
    description: "Return the remote host's name.",
    read_only: true,
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
    hostname: String,
}

pub(super) async fn call(ctx: &CallCtx<'_>, args: Args) -> Result<ToolOutput, ToolError> {
    let session = ctx.session(&args.session_id)?;
    let out = run_command::exec_checked(ctx, &session, "hostname", None, None).await?;
    if out.exit_status != Some(0) {
        return Err(ToolError::Failed(format!(
            "hostname exited with {:?}: {}",
            out.exit_status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let hostname = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(ToolOutput::new(hostname.clone(), &Output { hostname }))
}
