//! `ssh_batch_commands`: 1 to 5 allowlisted commands in sequence on one session. All are
//! checked before any runs, so a blocked command never leaves a batch half done.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CallCtx, ToolError, ToolOutput, ToolSpec, run_command, schema_of};
use crate::security;

pub(super) const SPEC: ToolSpec = ToolSpec {
    name: "ssh_batch_commands",
    title: "Run several commands",
    description: "Run 1 to 5 allowlisted commands in order on one session. Every command is \
                  checked before the first runs. With stop_on_error, stops at the first \
                  non-zero exit or failure.",
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
    /// The commands.
    #[schemars(length(min = 1, max = 5))]
    commands: Vec<String>,
    /// Stop at the first failure.
    #[serde(default)]
    stop_on_error: bool,
}

/// One command's outcome.
#[derive(Debug, Serialize, JsonSchema)]
struct Step {
    command: String,
    /// Exit status 0.
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<run_command::Output>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Result.
#[derive(Debug, Serialize, JsonSchema)]
struct Output {
    results: Vec<Step>,
    total: usize,
    executed: usize,
    all_success: bool,
}

pub(super) async fn call(ctx: &CallCtx<'_>, args: Args) -> Result<ToolOutput, ToolError> {
    if args.commands.is_empty() || args.commands.len() > 5 {
        return Err(ToolError::InvalidArguments(format!(
            "commands must hold 1 to 5 entries, not {}",
            args.commands.len()
        )));
    }
    for c in &args.commands {
        if let Err(b) = security::validate_command(c) {
            ctx.app.metrics.ssh_commands_blocked.inc();
            return Err(ToolError::Blocked(format!("{c}: {}", b.reason)));
        }
    }
    let session = ctx.session(&args.session_id)?;
    let mut results = Vec::with_capacity(args.commands.len());
    for c in &args.commands {
        let step = match run_command::exec_checked(ctx, &session, c, None, None).await {
            Ok(o) => Step {
                command: c.clone(),
                success: o.exit_status == Some(0),
                result: Some(run_command::Output::from(&o)),
                error: None,
            },
            Err(e) => Step {
                command: c.clone(),
                success: false,
                result: None,
                error: Some(e.to_string()),
            },
        };
        let failed = !step.success;
        results.push(step);
        if failed && args.stop_on_error {
            break;
        }
    }
    let executed = results.len();
    let all_success = executed == args.commands.len() && results.iter().all(|s| s.success);
    let mut text = String::new();
    for s in &results {
        text.push_str(&format!("$ {}\n", s.command));
        match (&s.result, &s.error) {
            (Some(r), _) => text.push_str(&run_command::describe(r)),
            (None, Some(e)) => text.push_str(&format!("[error] {e}")),
            (None, None) => {}
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    let out = Output {
        total: args.commands.len(),
        executed,
        all_success,
        results,
    };
    Ok(ToolOutput::new(text, &out))
}
