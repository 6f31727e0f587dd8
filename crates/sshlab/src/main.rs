//! `sshlab`, the host tool. Skeleton: the net, netem, vm and run commands are not built yet
//! (see the open issues); it says so instead of pretending.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("sshlab: not built yet: net, netem, vm and run are tracked in the open issues")
}
