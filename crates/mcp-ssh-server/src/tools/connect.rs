//! `ssh_connect`: open (or reuse from the pool) an authenticated SSH connection and return a
//! session handle owned by the caller.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CallCtx, ToolError, ToolOutput, ToolSpec, schema_of};
use crate::pool::{PoolError, Reuse};
use crate::ssh::{Auth, ConnectOptions, HostKeyPolicy, Target};

pub(super) const SPEC: ToolSpec = ToolSpec {
    name: "ssh_connect",
    title: "Connect to an SSH server",
    description: "Open an SSH connection (or reuse an idle pooled one with the same credentials; \
                  reuse=false always opens a new one) and return a session_id for the other \
                  tools. Give either password or private_key.",
    read_only: false,
    input: schema_of::<Args>,
    output: schema_of::<Output>,
};

fn default_port() -> u16 {
    22
}

/// Arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// Host name or IP address.
    host: String,
    /// TCP port.
    #[serde(default = "default_port")]
    #[schemars(default = "default_port", range(min = 1, max = 65535))]
    port: u16,
    /// Login user.
    user: String,
    /// Password (password authentication).
    #[serde(default)]
    password: Option<String>,
    /// OpenSSH private key, PEM text (public-key authentication).
    #[serde(default)]
    private_key: Option<String>,
    /// Passphrase of the private key.
    #[serde(default)]
    passphrase: Option<String>,
    /// Accept any host key instead of checking known_hosts.
    #[serde(default)]
    insecure_host_key: bool,
    /// Connect and authentication timeout, ms (default 10000).
    #[serde(default)]
    #[schemars(range(min = 100, max = 120000))]
    timeout_ms: Option<u64>,
    /// Reuse an idle pooled connection with the same credentials (default true). `false`
    /// always opens a new SSH connection, and ssh_disconnect closes it instead of pooling it:
    /// for measuring connection setup itself.
    #[serde(default = "default_reuse")]
    #[schemars(default = "default_reuse")]
    reuse: bool,
}

fn default_reuse() -> bool {
    true
}

/// Result.
#[derive(Debug, Serialize, JsonSchema)]
struct Output {
    /// Handle for the other tools.
    session_id: String,
    host: String,
    port: u16,
    user: String,
    /// Whether an idle pooled connection was reused.
    reused: bool,
}

/// Host names: letters, digits, dots, dashes, colons (IPv6); never a leading dash.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
}

pub(super) async fn call(ctx: &CallCtx<'_>, args: Args) -> Result<ToolOutput, ToolError> {
    if !valid_host(&args.host) {
        return Err(ToolError::InvalidArguments(format!(
            "host `{}` is not a host name or IP address",
            args.host
        )));
    }
    if args.port == 0 {
        return Err(ToolError::InvalidArguments("port must be 1-65535".into()));
    }
    if args.user.is_empty() || args.user.starts_with('-') || args.user.contains(['@', ' ']) {
        return Err(ToolError::InvalidArguments(format!(
            "user `{}` is not a valid login name",
            args.user
        )));
    }
    let auth = match (args.password, args.private_key) {
        (Some(p), None) => Auth::Password(p),
        (None, Some(pem)) => Auth::PrivateKey {
            pem,
            passphrase: args.passphrase,
        },
        (Some(_), Some(_)) => {
            return Err(ToolError::InvalidArguments(
                "give either password or private_key, not both".into(),
            ));
        }
        (None, None) => {
            return Err(ToolError::InvalidArguments(
                "password or private_key is required".into(),
            ));
        }
    };
    let timeout = Duration::from_millis(args.timeout_ms.unwrap_or(10_000).clamp(100, 120_000));
    let opts = ConnectOptions {
        connect_timeout: timeout,
        auth_timeout: timeout,
        host_keys: if args.insecure_host_key {
            HostKeyPolicy::Insecure
        } else {
            HostKeyPolicy::KnownHosts(ctx.app.known_hosts.clone())
        },
        keepalive: Some(Duration::from_secs(30)),
    };
    let target = Target {
        host: args.host,
        port: args.port,
        user: args.user,
    };
    // The cheap checks are done: the attempt begins (bounded per client and per address),
    // and the key is decoded (in this address's turn) before a pool slot is reserved, so a
    // key that cannot be decoded never holds one.
    let _attempt = ctx
        .app
        .connect_attempts
        .begin(ctx.client, ctx.address)
        .map_err(|e| ToolError::Failed(e.to_string()))?;
    let credentials = auth.prepare(timeout, ctx.address).await?;
    let lease = ctx
        .app
        .pool
        .acquire_with(
            &target,
            &credentials,
            &opts,
            if args.reuse {
                Reuse::Pooled
            } else {
                Reuse::Dedicated
            },
        )
        .await
        .map_err(|e| match e {
            PoolError::Connect(e) => ToolError::Ssh(e),
            e @ PoolError::Exhausted { .. } => ToolError::Failed(e.to_string()),
        })?;
    let reused = lease.was_hit();
    let session = ctx.app.sessions.insert(ctx.owner.clone(), lease);
    let out = Output {
        session_id: session.id.clone(),
        host: target.host,
        port: target.port,
        user: target.user,
        reused,
    };
    Ok(ToolOutput::new(
        format!(
            "Connected to {}:{} as {} (session {}{})",
            out.host,
            out.port,
            out.user,
            out.session_id,
            if reused { ", pooled" } else { "" }
        ),
        &out,
    ))
}

#[cfg(test)]
mod tests {
    use super::valid_host;

    #[test]
    fn host_names_are_checked() {
        for ok in ["10.178.0.20", "target", "a.example.org", "::1", "fe80::1"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in ["", "-oProxyCommand=x", "a b", "a;b", "a/b"] {
            assert!(!valid_host(bad), "{bad}");
        }
    }
}
