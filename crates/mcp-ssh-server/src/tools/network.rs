//! Read-only network inspection tools: interfaces, routes, qdiscs, firewall, connectivity.
//!
//! Each builds its argv itself from validated arguments and then sends it through the same
//! allowlist as user commands ([`run_command::exec_checked`]), so a tool can never run
//! something a user couldn't. JSON output (`ip -j`, `tc -j`, `nft -j`) is parsed into the
//! structured result when it parses.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CallCtx, ToolError, ToolOutput, ToolSpec, run_command, schema_of};
use crate::sessions::SshSession;

pub(super) const INTERFACES: ToolSpec = ToolSpec {
    name: "ssh_network_interfaces",
    title: "Network interfaces",
    description: "Interfaces and addresses (`ip -j addr show`), or link statistics with \
                  include_stats (`ip -j -s link show`).",
    read_only: true,
    input: schema_of::<InterfacesArgs>,
    output: schema_of::<JsonOutput>,
};
pub(super) const ROUTES: ToolSpec = ToolSpec {
    name: "ssh_network_routes",
    title: "Routing table",
    description: "Routes of a table (`ip -4/-6 -j route show table T`).",
    read_only: true,
    input: schema_of::<RoutesArgs>,
    output: schema_of::<RoutesOutput>,
};
pub(super) const QDISC: ToolSpec = ToolSpec {
    name: "ssh_network_qdisc",
    title: "Queueing disciplines",
    description: "Traffic-control qdiscs, e.g. netem (`tc -j [-s] qdisc show`).",
    read_only: true,
    input: schema_of::<InterfacesArgs>,
    output: schema_of::<JsonOutput>,
};
pub(super) const FIREWALL: ToolSpec = ToolSpec {
    name: "ssh_network_firewall",
    title: "Firewall rules",
    description: "Firewall rules: nftables (`nft -j list ruleset`) or iptables \
                  (`iptables -t T -L -n -v`); auto tries nft first.",
    read_only: true,
    input: schema_of::<FirewallArgs>,
    output: schema_of::<FirewallOutput>,
};
pub(super) const CONNECTIVITY: ToolSpec = ToolSpec {
    name: "ssh_network_connectivity",
    title: "Connectivity test",
    description: "From the remote host, resolve a target (dig) and/or ping it (1-5 probes).",
    read_only: true,
    input: schema_of::<ConnectivityArgs>,
    output: schema_of::<ConnectivityOutput>,
};

/// Arguments of ssh_network_interfaces and ssh_network_qdisc.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InterfacesArgs {
    /// Session handle from ssh_connect.
    session_id: String,
    /// Only this interface.
    #[serde(default)]
    interface: Option<String>,
    /// Include statistics.
    #[serde(default)]
    include_stats: bool,
}

/// A command's JSON output.
#[derive(Debug, Serialize, JsonSchema)]
struct JsonOutput {
    /// The command that ran.
    command: String,
    /// Parsed JSON output, or null when it did not parse.
    data: Value,
    /// Raw output.
    raw: String,
}

/// Address family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum Family {
    /// IPv4.
    Inet,
    /// IPv6.
    Inet6,
    /// Both.
    #[default]
    All,
}

/// Arguments of ssh_network_routes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RoutesArgs {
    /// Session handle from ssh_connect.
    session_id: String,
    /// Routing table name or number (default main).
    #[serde(default)]
    table: Option<String>,
    /// inet, inet6 or all.
    #[serde(default)]
    family: Family,
}

/// Result of ssh_network_routes.
#[derive(Debug, Serialize, JsonSchema)]
struct RoutesOutput {
    table: String,
    ipv4: Option<Value>,
    ipv6: Option<Value>,
}

/// Firewall flavour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum FirewallFormat {
    /// nft if it answers, else iptables.
    #[default]
    Auto,
    /// nftables.
    Nft,
    /// iptables.
    Iptables,
}

/// Arguments of ssh_network_firewall.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FirewallArgs {
    /// Session handle from ssh_connect.
    session_id: String,
    /// auto, nft or iptables.
    #[serde(default)]
    format: FirewallFormat,
    /// iptables table (filter, nat, mangle, raw, security; default filter).
    #[serde(default)]
    table: Option<String>,
}

/// Result of ssh_network_firewall.
#[derive(Debug, Serialize, JsonSchema)]
struct FirewallOutput {
    /// The flavour that answered.
    format: FirewallFormat,
    command: String,
    /// Parsed nft JSON, when nft answered.
    data: Value,
    raw: String,
}

/// A connectivity test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum Probe {
    /// `ping -c N`.
    Ping,
    /// `dig +short`.
    Dns,
}

fn default_probes() -> Vec<Probe> {
    vec![Probe::Ping, Probe::Dns]
}

fn default_ping_count() -> u8 {
    3
}

/// Arguments of ssh_network_connectivity.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectivityArgs {
    /// Session handle from ssh_connect.
    session_id: String,
    /// Host name or IP address to test.
    target: String,
    /// Tests to run (default ping and dns).
    #[serde(default = "default_probes")]
    tests: Vec<Probe>,
    /// Ping probes, 1-5.
    #[serde(default = "default_ping_count")]
    #[schemars(range(min = 1, max = 5))]
    ping_count: u8,
}

/// One test's outcome.
#[derive(Debug, Serialize, JsonSchema)]
struct ProbeResult {
    test: Probe,
    command: String,
    success: bool,
    output: String,
}

/// Result of ssh_network_connectivity.
#[derive(Debug, Serialize, JsonSchema)]
struct ConnectivityOutput {
    target: String,
    results: Vec<ProbeResult>,
}

async fn run(
    ctx: &CallCtx<'_>,
    s: &SshSession,
    argv: &[&str],
) -> Result<(String, run_command::Output), ToolError> {
    let command = argv.join(" ");
    let out = run_command::exec_checked(ctx, s, &command, None, None).await?;
    Ok((command, run_command::Output::from(&out)))
}

/// A command that exited non-zero is the tool's failure, with what it printed.
fn require_success(command: &str, out: &run_command::Output) -> Result<(), ToolError> {
    if out.exit_status == Some(0) {
        return Ok(());
    }
    Err(ToolError::Failed(format!(
        "`{command}` failed: {}",
        run_command::describe(out).trim()
    )))
}

fn json_result(command: String, out: run_command::Output) -> Result<ToolOutput, ToolError> {
    require_success(&command, &out)?;
    let data = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    let result = JsonOutput {
        command,
        data,
        raw: out.stdout,
    };
    Ok(ToolOutput::new(result.raw.clone(), &result))
}

pub(super) async fn interfaces(
    ctx: &CallCtx<'_>,
    a: InterfacesArgs,
) -> Result<ToolOutput, ToolError> {
    let s = ctx.session(&a.session_id)?;
    let mut argv = if a.include_stats {
        vec!["ip", "-j", "-s", "link", "show"]
    } else {
        vec!["ip", "-j", "addr", "show"]
    };
    if let Some(dev) = &a.interface {
        argv.extend(["dev", dev]);
    }
    let (command, out) = run(ctx, &s, &argv).await?;
    json_result(command, out)
}

pub(super) async fn qdisc(ctx: &CallCtx<'_>, a: InterfacesArgs) -> Result<ToolOutput, ToolError> {
    let s = ctx.session(&a.session_id)?;
    let mut argv = vec!["tc", "-j"];
    if a.include_stats {
        argv.push("-s");
    }
    argv.extend(["qdisc", "show"]);
    if let Some(dev) = &a.interface {
        argv.extend(["dev", dev]);
    }
    let (command, out) = run(ctx, &s, &argv).await?;
    json_result(command, out)
}

pub(super) async fn routes(ctx: &CallCtx<'_>, a: RoutesArgs) -> Result<ToolOutput, ToolError> {
    let s = ctx.session(&a.session_id)?;
    let table = a.table.unwrap_or_else(|| "main".into());
    let mut result = RoutesOutput {
        table: table.clone(),
        ipv4: None,
        ipv6: None,
    };
    let mut text = String::new();
    for (flag, want) in [
        ("-4", a.family != Family::Inet6),
        ("-6", a.family != Family::Inet),
    ] {
        if !want {
            continue;
        }
        let (command, out) = run(
            ctx,
            &s,
            &["ip", flag, "-j", "route", "show", "table", &table],
        )
        .await?;
        require_success(&command, &out)?;
        let parsed = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        text.push_str(&format!("$ {command}\n{}\n", out.stdout.trim_end()));
        if flag == "-4" {
            result.ipv4 = Some(parsed);
        } else {
            result.ipv6 = Some(parsed);
        }
    }
    Ok(ToolOutput::new(text, &result))
}

pub(super) async fn firewall(ctx: &CallCtx<'_>, a: FirewallArgs) -> Result<ToolOutput, ToolError> {
    let s = ctx.session(&a.session_id)?;
    if matches!(a.format, FirewallFormat::Auto | FirewallFormat::Nft) {
        let (command, out) = run(ctx, &s, &["nft", "-j", "list", "ruleset"]).await?;
        if out.exit_status == Some(0) || a.format == FirewallFormat::Nft {
            require_success(&command, &out)?;
            let result = FirewallOutput {
                format: FirewallFormat::Nft,
                command,
                data: serde_json::from_str(&out.stdout).unwrap_or(Value::Null),
                raw: out.stdout,
            };
            return Ok(ToolOutput::new(result.raw.clone(), &result));
        }
    }
    let table = a.table.unwrap_or_else(|| "filter".into());
    let (command, out) = run(ctx, &s, &["iptables", "-t", &table, "-L", "-n", "-v"]).await?;
    require_success(&command, &out)?;
    let result = FirewallOutput {
        format: FirewallFormat::Iptables,
        command,
        data: Value::Null,
        raw: out.stdout,
    };
    Ok(ToolOutput::new(result.raw.clone(), &result))
}

pub(super) async fn connectivity(
    ctx: &CallCtx<'_>,
    a: ConnectivityArgs,
) -> Result<ToolOutput, ToolError> {
    if !(1..=5).contains(&a.ping_count) {
        return Err(ToolError::InvalidArguments("ping_count must be 1-5".into()));
    }
    if a.tests.is_empty() {
        return Err(ToolError::InvalidArguments(
            "tests must name at least one test".into(),
        ));
    }
    let s = ctx.session(&a.session_id)?;
    let count = a.ping_count.to_string();
    let mut results = Vec::new();
    let mut text = format!("Connectivity test to {}:", a.target);
    for probe in &a.tests {
        let argv: Vec<&str> = match probe {
            Probe::Ping => vec!["ping", "-c", &count, &a.target],
            Probe::Dns => vec!["dig", "+short", &a.target],
        };
        let (command, out) = run(ctx, &s, &argv).await?;
        text.push_str(&format!(
            "\n=== {command} ===\n{}",
            run_command::describe(&out)
        ));
        results.push(ProbeResult {
            test: *probe,
            command,
            success: out.exit_status == Some(0),
            output: out.stdout,
        });
    }
    let out = ConnectivityOutput {
        target: a.target,
        results,
    };
    Ok(ToolOutput::new(text, &out))
}
