//! `sshlab-agent`, the load agent. Skeleton: scenarios, the MCP client and the serve mode are
//! not built yet (see the open issue); it says so instead of pretending.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("sshlab-agent: not built yet: tracked in the open agent issue")
}
