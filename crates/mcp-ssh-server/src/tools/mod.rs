//! The MCP tools: one file per tool (argument parsing, the handler, its tests), and this
//! registry, which lists them in a fixed order and turns their outcomes into MCP results.
//!
//! Input and output schemas are generated from the argument and result types with `schemars`,
//! so a schema can never drift from what the handler really accepts and returns. Every failure
//! a tool meets (bad arguments, a blocked command, an SSH error) becomes an `isError` result
//! with a clear message, which is how MCP wants tool failures reported; only an unknown tool
//! name is a JSON-RPC error.

mod batch;
mod cat_file;
mod connect;
mod disconnect;
mod hostname;
mod list_sessions;
mod network;
mod pool_stats;
mod run_command;

use std::net::IpAddr;
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::app::App;
use crate::sessions::{Owner, SessionError, SshSession};
use crate::ssh::SshError;

/// A failed tool call, reported to the client as an `isError` result.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments don't match the tool's input schema.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The allowlist refused the command or path.
    #[error("Command not permitted: {0}")]
    Blocked(String),
    /// The SSH session handle is unknown or someone else's.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// SSH failed (connect, auth, transport, timeout).
    #[error("{0}")]
    Ssh(#[from] SshError),
    /// Anything else the tool reports (pool exhausted, ...).
    #[error("{0}")]
    Failed(String),
    /// The server stopped while the call was still running.
    #[error("the server is shutting down; the call was stopped")]
    ShuttingDown,
}

/// What a successful tool call returns: a human-readable text and the structured result.
#[derive(Debug)]
pub struct ToolOutput {
    /// Text content.
    pub text: String,
    /// `structuredContent`, matching the tool's output schema.
    pub structured: Value,
}

impl ToolOutput {
    fn new(text: impl Into<String>, structured: &impl Serialize) -> Self {
        Self {
            text: text.into(),
            structured: serde_json::to_value(structured).unwrap_or(Value::Null),
        }
    }
}

/// Who is calling, and with which application state.
#[derive(Debug)]
pub struct CallCtx<'a> {
    /// Server state.
    pub app: &'a App,
    /// The caller, for ownership of SSH sessions.
    pub owner: &'a Owner,
    /// The caller as per-client limits count it (its MCP session, or its client identity).
    pub client: &'a str,
    /// The caller's network ([`crate::ratelimit::network_of`]), as per-address limits count it.
    pub address: IpAddr,
}

impl CallCtx<'_> {
    fn session(&self, id: &str) -> Result<std::sync::Arc<SshSession>, ToolError> {
        Ok(self.app.sessions.get(id, self.owner)?)
    }
}

/// Parse `arguments` into a tool's argument type.
fn parse_args<T: DeserializeOwned>(args: Value) -> Result<T, ToolError> {
    let args = if args.is_null() { json!({}) } else { args };
    serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))
}

/// A tool's static description.
struct ToolSpec {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    read_only: bool,
    input: fn() -> Value,
    output: fn() -> Value,
}

fn schema_of<T: JsonSchema>() -> Value {
    let mut v = serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null);
    // The `$schema` and `title` keys are noise for MCP clients (2020-12 is MCP's default dialect).
    if let Some(obj) = v.as_object_mut() {
        obj.remove("$schema");
        obj.remove("title");
    }
    objects_for_boolean_properties(&mut v);
    v
}

/// schemars writes a property of any JSON value (`serde_json::Value`) as the boolean schema
/// `true`. JSON Schema allows that, but MCP's tool schema wants every property to be an
/// object (the TypeScript SDK's `listTools()` rejects the list, as the conformance suite's
/// tools-list check shows): `true` becomes `{}` and `false` `{"not": {}}`, which mean the same.
fn objects_for_boolean_properties(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "properties"
                    && let Value::Object(props) = child
                {
                    for p in props.values_mut() {
                        if let Value::Bool(b) = p {
                            *p = if *b { json!({}) } else { json!({"not": {}}) };
                        }
                    }
                }
                objects_for_boolean_properties(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(objects_for_boolean_properties),
        _ => {}
    }
}

/// Tools in the order tools/list reports them (deterministic, as the 2026-07-28 revision asks).
const TOOLS: &[ToolSpec] = &[
    connect::SPEC,
    disconnect::SPEC,
    run_command::SPEC,
    cat_file::SPEC,
    hostname::SPEC,
    list_sessions::SPEC,
    pool_stats::SPEC,
    batch::SPEC,
    network::INTERFACES,
    network::ROUTES,
    network::QDISC,
    network::FIREWALL,
    network::CONNECTIVITY,
];

/// The tools/list `tools` array, built once.
pub fn definitions() -> &'static Value {
    static DEFS: OnceLock<Value> = OnceLock::new();
    DEFS.get_or_init(|| {
        Value::Array(
            TOOLS
                .iter()
                .map(|t| {
                    json!({
                        "name": t.name,
                        "title": t.title,
                        "description": t.description,
                        "inputSchema": (t.input)(),
                        "outputSchema": (t.output)(),
                        "annotations": {
                            "title": t.title,
                            "readOnlyHint": t.read_only,
                            "destructiveHint": false,
                            "idempotentHint": t.read_only,
                            "openWorldHint": true,
                        },
                    })
                })
                .collect(),
        )
    })
}

/// Whether `name` is a tool of this server.
pub fn exists(name: &str) -> bool {
    TOOLS.iter().any(|t| t.name == name)
}

/// Run tool `name`. The caller has checked that it [`exists`].
pub async fn call(ctx: &CallCtx<'_>, name: &str, args: Value) -> Result<ToolOutput, ToolError> {
    match name {
        "ssh_connect" => connect::call(ctx, parse_args(args)?).await,
        "ssh_disconnect" => disconnect::call(ctx, parse_args(args)?).await,
        "ssh_run_command" => run_command::call(ctx, parse_args(args)?).await,
        "ssh_cat_file" => cat_file::call(ctx, parse_args(args)?).await,
        "ssh_hostname" => hostname::call(ctx, parse_args(args)?).await,
        "ssh_list_sessions" => list_sessions::call(ctx, parse_args(args)?).await,
        "ssh_pool_stats" => pool_stats::call(ctx, parse_args(args)?).await,
        "ssh_batch_commands" => batch::call(ctx, parse_args(args)?).await,
        "ssh_network_interfaces" => network::interfaces(ctx, parse_args(args)?).await,
        "ssh_network_routes" => network::routes(ctx, parse_args(args)?).await,
        "ssh_network_qdisc" => network::qdisc(ctx, parse_args(args)?).await,
        "ssh_network_firewall" => network::firewall(ctx, parse_args(args)?).await,
        "ssh_network_connectivity" => network::connectivity(ctx, parse_args(args)?).await,
        other => Err(ToolError::Failed(format!("unknown tool: {other}"))),
    }
}

/// Turn a call's outcome into an MCP `CallToolResult`.
pub fn result_json(outcome: Result<ToolOutput, ToolError>) -> Value {
    match outcome {
        Ok(out) => json!({
            "content": [{"type": "text", "text": out.text}],
            "structuredContent": out.structured,
            "isError": false,
        }),
        Err(e) => json!({
            "content": [{"type": "text", "text": e.to_string()}],
            "isError": true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every property schema of every tool is an object (MCP's TypeScript SDK rejects a tool
    /// list with a boolean one; ssh_network_routes had `true` for its JSON-valued fields).
    #[test]
    fn no_property_schema_is_a_boolean() {
        fn check(v: &Value, path: &str) {
            match v {
                Value::Object(map) => {
                    if let Some(Value::Object(props)) = map.get("properties") {
                        for (k, p) in props {
                            assert!(p.is_object(), "{path}/properties/{k} is {p}");
                        }
                    }
                    for (k, c) in map {
                        check(c, &format!("{path}/{k}"));
                    }
                }
                Value::Array(items) => items.iter().for_each(|c| check(c, path)),
                _ => {}
            }
        }
        check(&json!(definitions()), "tools");
        let mut t = json!({"properties": {"a": true, "b": false}});
        objects_for_boolean_properties(&mut t);
        assert_eq!(t, json!({"properties": {"a": {}, "b": {"not": {}}}}));
    }

    #[test]
    fn every_tool_has_object_schemas_and_a_unique_name() {
        let defs = definitions().as_array().expect("array");
        assert_eq!(defs.len(), TOOLS.len());
        let mut names: Vec<_> = defs
            .iter()
            .map(|d| d["name"].as_str().expect("name"))
            .collect();
        for d in defs {
            assert_eq!(d["inputSchema"]["type"], "object", "{}", d["name"]);
            assert_eq!(d["outputSchema"]["type"], "object", "{}", d["name"]);
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TOOLS.len());
    }

    #[test]
    fn connect_schema_requires_host_and_user() {
        let defs = definitions().as_array().expect("array");
        let connect = defs
            .iter()
            .find(|d| d["name"] == "ssh_connect")
            .expect("tool");
        let req = connect["inputSchema"]["required"]
            .as_array()
            .expect("required");
        assert!(
            req.contains(&json!("host")) && req.contains(&json!("user")),
            "{req:?}"
        );
        assert_eq!(connect["inputSchema"]["properties"]["port"]["default"], 22);
    }
}
