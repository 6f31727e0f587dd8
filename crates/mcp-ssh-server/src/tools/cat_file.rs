//! `ssh_cat_file`: read a file on the remote host, as text or base64.

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::run_command::Gate;
use super::{CallCtx, ToolError, ToolOutput, ToolSpec, run_command, schema_of};
use crate::security;

pub(super) const SPEC: ToolSpec = ToolSpec {
    name: "ssh_cat_file",
    title: "Read a remote file",
    description: "Read a regular file under the allowed roots (/etc, /var/log, /home, /tmp, \
                  /opt, /usr/share, /proc, /sys, /srv), never secrets such as /etc/shadow or SSH \
                  keys, nor files only their owner may read. Binary content is returned as \
                  base64.",
    read_only: true,
    input: schema_of::<Args>,
    output: schema_of::<Output>,
};

/// Largest max_size a client may ask for.
const MAX_SIZE_LIMIT: usize = 16 * 1024 * 1024;

/// How the content is returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum Encoding {
    /// Text unless the content looks binary.
    #[default]
    Auto,
    /// UTF-8 text (invalid bytes replaced).
    Text,
    /// Base64.
    Base64,
}

/// Arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// Session handle from ssh_connect.
    session_id: String,
    /// Absolute path.
    path: String,
    /// Bytes to read at most (default 1 MiB, at most 16 MiB).
    #[serde(default)]
    #[schemars(range(min = 1, max = 16777216))]
    max_size: Option<usize>,
    /// auto, text or base64.
    #[serde(default)]
    encoding: Encoding,
}

/// Result.
#[derive(Debug, Serialize, JsonSchema)]
struct Output {
    /// The normalised path.
    path: String,
    /// text or base64.
    encoding: Encoding,
    /// Bytes read.
    bytes: usize,
    /// Whether the file was longer than max_size.
    truncated: bool,
    content: String,
}

/// Binary when the first KiB has a NUL or more than 10% control bytes.
fn looks_binary(data: &[u8]) -> bool {
    let head = &data[..data.len().min(1024)];
    if head.contains(&0) {
        return true;
    }
    let odd = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t'))
        .count();
    odd * 10 > head.len()
}

pub(super) async fn call(ctx: &CallCtx<'_>, args: Args) -> Result<ToolOutput, ToolError> {
    let session = ctx.session(&args.session_id)?;
    let path = security::validate_path(&args.path).map_err(|b| {
        ctx.app.metrics.ssh_commands_blocked.inc();
        ToolError::Blocked(b.reason)
    })?;
    // Commands travel as one line split on whitespace, so such a path cannot be passed intact.
    if path.chars().any(char::is_whitespace) {
        return Err(ToolError::InvalidArguments(format!(
            "path `{path}` contains whitespace, which is not supported"
        )));
    }
    let max = args.max_size.unwrap_or(run_command::DEFAULT_MAX_OUTPUT);
    if max == 0 || max > MAX_SIZE_LIMIT {
        return Err(ToolError::InvalidArguments(format!(
            "max_size must be 1..={MAX_SIZE_LIMIT}"
        )));
    }
    // The allowlist sees `cat PATH` as any client's command; the target then opens the path,
    // says what it opened, and reads that descriptor only once the server has checked it
    // (`security::opened`): nothing of a refused file is read.
    run_command::allowed(ctx, &format!("cat {path}"))?;
    let remote = security::open_then_read(&path);
    let gate = Gate {
        fields: security::HEADER_FIELDS,
        decide: security::may_read as fn(&[u8]) -> bool,
    };
    let mut out = run_command::exec_remote(
        ctx,
        &session,
        &remote,
        None,
        Some(max.saturating_add(security::HEADER_MAX)),
        Some(gate),
    )
    .await?;
    let cannot_read = |why: &str| {
        ToolError::Failed(format!(
            "cannot read {path}: {}",
            if why.is_empty() {
                "the target did not say what it opened"
            } else {
                why
            }
        ))
    };
    let Some((opened, header)) = security::parse_header(&out.stdout) else {
        return Err(cannot_read(String::from_utf8_lossy(&out.stderr).trim()));
    };
    security::check_opened(&opened).map_err(|b| {
        ctx.app.metrics.ssh_commands_blocked.inc();
        ToolError::Blocked(format!("{path}: {}", b.reason))
    })?;
    if out.exit_status != Some(0) {
        return Err(cannot_read(String::from_utf8_lossy(&out.stderr).trim()));
    }
    out.stdout.drain(..header);
    if out.stdout.len() > max {
        out.stdout.truncate(max);
        out.truncated = true;
    }
    let encoding = match args.encoding {
        Encoding::Auto if looks_binary(&out.stdout) => Encoding::Base64,
        Encoding::Auto => Encoding::Text,
        e => e,
    };
    let content = match encoding {
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(&out.stdout),
        _ => String::from_utf8_lossy(&out.stdout).into_owned(),
    };
    let result = Output {
        path,
        encoding,
        bytes: out.stdout.len(),
        truncated: out.truncated,
        content,
    };
    Ok(ToolOutput::new(result.content.clone(), &result))
}

#[cfg(test)]
mod tests {
    use super::looks_binary;

    #[test]
    fn binary_detection() {
        assert!(!looks_binary(b"hello\nworld\n"));
        assert!(looks_binary(b"ab\0cd"));
        assert!(looks_binary(&[1u8; 100]));
        assert!(!looks_binary(b""));
    }
}
