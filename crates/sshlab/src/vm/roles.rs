//! The lab's roles as commands, written once for every backend that runs them itself: the
//! netns backend starts them in a VM's namespace, the qemu backend's guest init
//! ([`super::guest`]) inside the guest. The target's sshd instances are [`super::target`]'s.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use sshlab_core::Topology;

use super::Endpoints;

/// The two lab binaries besides `sshlab`.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `mcp-ssh-server`.
    pub mcp: PathBuf,
    /// `sshlab-agent`.
    pub agent: PathBuf,
}

impl Bins {
    /// Both, from `bin_dir`, else next to the running `sshlab`, else `$PATH`.
    pub fn find(bin_dir: Option<&Path>) -> anyhow::Result<Self> {
        Ok(Self {
            mcp: super::find_bin_in(bin_dir, "mcp-ssh-server")?,
            agent: super::find_bin_in(bin_dir, "sshlab-agent")?,
        })
    }
}

/// Every address of the VM, as the NixOS role modules bind (`vms/mcp.nix`, `vms/agent.nix`:
/// `0.0.0.0:<port>`; the NixOS VM test waits for the ports on localhost).
fn any_address(port: u16) -> String {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).to_string()
}

/// The MCP VM: `mcp-ssh-server --bind 0.0.0.0:<mcp port>` and the topology's
/// `[mcp_server] args` (the MCP VM's NixOS module passes the same).
pub fn mcp_command(bins: &Bins, topology: &Topology) -> anyhow::Result<Command> {
    let ep = Endpoints::new(topology)?;
    let mut cmd = Command::new(&bins.mcp);
    cmd.arg("--bind")
        .arg(any_address(ep.mcp.port()))
        .args(&topology.mcp_server.args);
    Ok(cmd)
}

/// The Agent VM: `sshlab-agent serve --listen 0.0.0.0:<control port> --results <results>`, and
/// `--dashboard <agent address>:<dashboard port> --dashboard-public` when the topology gives the
/// agent a `dashboard` service (the VM's own address is not loopback; only the lab reaches it,
/// and `sshlab run --dashboard` forwards it to the host). The agent VM's NixOS module passes
/// the same.
pub fn agent_command(bins: &Bins, topology: &Topology, results: &Path) -> anyhow::Result<Command> {
    let ep = Endpoints::new(topology).context("the agent's address")?;
    let mut cmd = Command::new(&bins.agent);
    cmd.args(["serve", "--listen"])
        .arg(any_address(ep.agent.port()))
        .arg("--results")
        .arg(results);
    if let Some(d) = ep.dashboard {
        cmd.arg("--dashboard")
            .arg(d.to_string())
            .arg(sshlab_core::dashboard::PUBLIC_FLAG);
    }
    Ok(cmd)
}
