//! `ssh_run_command`: run one allowlisted command on a session, on its own exec channel.
//!
//! [`exec_checked`] is the one path every command-running tool takes: allowlist, then exec
//! with a timeout and an output cap, then metrics. A connection that drops mid-command is
//! marked broken so it never returns to the pool.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CallCtx, ToolError, ToolOutput, ToolSpec, schema_of};
use crate::security;
use crate::sessions::SshSession;
use crate::ssh::{ExecLimits, ExecOutput, SshError};

pub(super) const SPEC: ToolSpec = ToolSpec {
    name: "ssh_run_command",
    title: "Run a command",
    description: "Run one allowlisted, read-only command on an SSH session (no shell: pipes, \
                  redirections, variables and quoting are refused). Returns stdout, stderr and \
                  the exit status.",
    read_only: true,
    input: schema_of::<Args>,
    output: schema_of::<Output>,
};

/// Default per-command timeout.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest timeout a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Default cap on captured output (stdout and stderr each).
pub(super) const DEFAULT_MAX_OUTPUT: usize = 1024 * 1024;

/// Arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// Session handle from ssh_connect.
    session_id: String,
    /// The command line, e.g. `cat /etc/hostname`.
    command: String,
    /// Timeout in milliseconds (default 30000, at most 300000).
    #[serde(default)]
    #[schemars(range(min = 1, max = 300000))]
    timeout_ms: Option<u64>,
}

/// Result.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct Output {
    pub(super) stdout: String,
    pub(super) stderr: String,
    /// Exit status; absent when the command was killed by a signal.
    pub(super) exit_status: Option<u32>,
    pub(super) exit_signal: Option<String>,
    pub(super) duration_ms: f64,
    /// Whether output beyond the cap was dropped.
    pub(super) truncated: bool,
}

impl From<&ExecOutput> for Output {
    fn from(o: &ExecOutput) -> Self {
        Self {
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            exit_status: o.exit_status,
            exit_signal: o.exit_signal.clone(),
            duration_ms: o.duration.as_secs_f64() * 1000.0,
            truncated: o.truncated,
        }
    }
}

/// Check `command` against the allowlist, run it, and count it.
pub(super) async fn exec_checked(
    ctx: &CallCtx<'_>,
    session: &SshSession,
    command: &str,
    timeout: Option<Duration>,
    max_output: Option<usize>,
) -> Result<ExecOutput, ToolError> {
    let argv = allowed(ctx, command)?;
    exec_remote(
        ctx,
        session,
        &security::to_remote_command(&argv),
        timeout,
        max_output,
        None,
    )
    .await
}

/// `command`'s argv when the allowlist accepts it (a refusal is counted).
pub(super) fn allowed(ctx: &CallCtx<'_>, command: &str) -> Result<Vec<String>, ToolError> {
    security::validate_command(command).map_err(|b| {
        ctx.app.metrics.ssh_commands_blocked.inc();
        ToolError::Blocked(b.reason)
    })
}

/// A command's go-ahead gate ([`crate::ssh::Connection::exec_gated`]).
pub(super) type Gate = crate::ssh::Gate<fn(&[u8]) -> bool>;

/// Run an already checked and rendered remote command (behind `gate`, if any), and count it.
pub(super) async fn exec_remote(
    ctx: &CallCtx<'_>,
    session: &SshSession,
    remote: &str,
    timeout: Option<Duration>,
    max_output: Option<usize>,
    gate: Option<Gate>,
) -> Result<ExecOutput, ToolError> {
    let metrics = &ctx.app.metrics;
    let limits = ExecLimits {
        timeout: timeout.unwrap_or(DEFAULT_TIMEOUT).min(MAX_TIMEOUT),
        max_output: max_output.unwrap_or(DEFAULT_MAX_OUTPUT),
    };
    let conn = session.lease().conn();
    let stop = ctx.app.stopping.cancelled();
    let result = match gate {
        Some(gate) => conn.exec_gated(remote, &limits, stop, gate).await,
        None => conn.exec_until(remote, &limits, stop).await,
    };
    let status = match &result {
        Ok(o) if o.exit_status == Some(0) => "success",
        Ok(_) => "nonzero",
        Err(SshError::Timeout { .. }) => "timeout",
        Err(_) => "error",
    };
    metrics.ssh_commands.with_label_values(&[status]).inc();
    match result {
        Ok(o) => {
            metrics
                .ssh_command_duration
                .observe(o.duration.as_secs_f64());
            Ok(o)
        }
        Err(e) => {
            // Gone, or it could not give us a channel (sshd's MaxSessions, or it refused the
            // command): not handed to the next client.
            if session.lease().conn().is_closed()
                || matches!(e, SshError::Disconnected { .. } | SshError::Channel(_))
            {
                session.lease().mark_broken();
            }
            // The connection is gone: so is the session, and its slot comes back now. The
            // owner's next call with the handle is told why.
            if session.lease().conn().is_closed() {
                ctx.app.sessions.end(&session.id, &e.to_string());
            }
            Err(ToolError::Ssh(e))
        }
    }
}

/// The text content of a command result: stdout, then stderr and the status when notable.
pub(super) fn describe(o: &Output) -> String {
    let mut text = o.stdout.clone();
    if !o.stderr.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("[stderr]\n");
        text.push_str(&o.stderr);
    }
    match (o.exit_status, &o.exit_signal) {
        (Some(0), _) => {}
        (Some(code), _) => text.push_str(&format!("\n[exit status {code}]")),
        (None, Some(sig)) => text.push_str(&format!("\n[killed by signal {sig}]")),
        (None, None) => text.push_str("\n[no exit status]"),
    }
    if o.truncated {
        text.push_str("\n[output truncated]");
    }
    text
}

pub(super) async fn call(ctx: &CallCtx<'_>, args: Args) -> Result<ToolOutput, ToolError> {
    let session = ctx.session(&args.session_id)?;
    let timeout = args.timeout_ms.map(Duration::from_millis);
    if timeout.is_some_and(|t| t.is_zero()) {
        return Err(ToolError::InvalidArguments(
            "timeout_ms must be at least 1".into(),
        ));
    }
    let out = exec_checked(ctx, &session, &args.command, timeout, None).await?;
    let out = Output::from(&out);
    Ok(ToolOutput::new(describe(&out), &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_mentions_stderr_status_and_truncation() {
        let o = Output {
            stdout: "a".into(),
            stderr: "b".into(),
            exit_status: Some(2),
            exit_signal: None,
            duration_ms: 1.0,
            truncated: true,
        };
        let t = describe(&o);
        assert!(t.starts_with("a\n[stderr]\nb"), "{t}");
        assert!(
            t.contains("[exit status 2]") && t.contains("[output truncated]"),
            "{t}"
        );
    }
}
