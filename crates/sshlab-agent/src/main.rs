//! `sshlab-agent`, the load agent. Skeleton: the MCP client exists in the library
//! ([`sshlab_agent::mcp`]), but scenarios, measurement and the serve mode are not built yet (see
//! the open issue); the CLI says so instead of pretending.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("sshlab-agent: the CLI is not built yet: tracked in the open agent issue")
}
