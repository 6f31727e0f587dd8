//! What the two backends that start hypervisor processes (qemu, microvm) share: the order the
//! VMs start in, the TAP check, starting a process detached in its own process group (as the
//! runners' user when given), a VM's readiness by its role, `down` and `status`.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use sshlab_core::Topology;

use super::error::Error;
use super::invoker::Credentials;
use super::{Endpoints, Proc, State, VmConfig, VmStatus, healthy, process};

/// The order `up` starts the VMs in (`down` stops them in reverse).
pub const START_ORDER: [&str; 3] = ["target", "mcp", "agent"];

/// Every VM's TAP exists (made by `sshlab net up`).
pub fn check_taps(topology: &Topology) -> anyhow::Result<()> {
    for vm in &topology.vms {
        if !tap_exists(&vm.tap) {
            bail!(Error::Input(format!(
                "VM {}: TAP {} does not exist; run `sudo sshlab net up` first",
                vm.name, vm.tap
            )));
        }
    }
    Ok(())
}

fn tap_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// Starts `cmd` detached (own session and process group) in `cwd`, logging to `log`, as `cred`
/// (user, primary group and every supplementary group) when given.
pub(crate) fn spawn(
    vm: &str,
    what: &str,
    mut cmd: Command,
    cwd: &Path,
    log: &Path,
    cred: Option<&Credentials>,
) -> anyhow::Result<Proc> {
    let out =
        std::fs::File::create(log).with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    if let Some(c) = cred {
        // The log is opened by this (root) process; the runner may want to reopen it.
        std::os::unix::fs::chown(log, Some(c.uid), Some(c.gid))
            .with_context(|| format!("cannot chown {}", log.display()))?;
    }
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // Built before the fork: the child only makes system calls.
    let ids: Option<(Vec<libc::gid_t>, libc::gid_t, libc::uid_t)> =
        cred.map(|c| (c.groups.clone(), c.gid, c.uid));
    // SAFETY: the closure runs in the forked child before exec and only makes the system calls
    // setsid, setgroups, setgid and setuid (async-signal-safe) on data prepared before the
    // fork. std's `uid`/`gid` are not used: they would clear the supplementary groups
    // (`setgroups(0)`), and its `groups` is unstable.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some((groups, gid, uid)) = &ids
                && (libc::setgroups(groups.len(), groups.as_ptr()) < 0
                    || libc::setgid(*gid) < 0
                    || libc::setuid(*uid) < 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("VM {vm}: cannot start {what} ({:?})", cmd.get_program()))?;
    let pid = child.id();
    // Not waited for here: `Proc::alive`/`stop` reap it while this process is its parent.
    std::mem::forget(child);
    Ok(Proc {
        vm: vm.to_owned(),
        what: what.to_owned(),
        pid,
        start_time: process::start_time(pid).unwrap_or(0),
        log: log.display().to_string(),
        term_pid: None,
        pgid: Some(pid),
        members: Vec::new(),
    })
}

/// Records the descendants of VM `vm`'s processes in `state` once it is up (its hypervisor,
/// virtiofsd, whatever process group they are in), so `down` waits for each of them.
pub(crate) fn record_descendants(state: &mut State, vm: &str) {
    for p in state.procs.iter_mut().filter(|p| p.vm == vm) {
        p.record_descendants();
    }
}

/// Whether VM `vm` answers: the target's sshd base ports accept TCP, mcp's and the agent's
/// `GET /health` says healthy.
pub(crate) fn ready(vm: &str, topology: &Topology, ep: &Endpoints) -> bool {
    match vm {
        "mcp" => healthy(ep.mcp),
        "agent" => healthy(ep.agent),
        _ => topology.vm(vm).is_some_and(|v| {
            let ports: Vec<u16> = if vm == "target" {
                topology.target_ports().iter().map(|p| p.base).collect()
            } else {
                v.services.iter().map(|s| s.port).collect()
            };
            super::target::listening(v.ip, topology, &ports, Duration::from_millis(300))
        }),
    }
}

/// `down` for the microvm and qemu backends: stops the recorded processes (agent first, each VM's
/// microvm-run before its virtiofsd), removes the state file and work dirs; keeps the logs for
/// `vm logs`.
pub fn teardown(cfg: &VmConfig, state: &State) -> Vec<String> {
    let mut out: Vec<String> = state
        .procs
        .iter()
        .rev()
        .map(|p| p.stop(Duration::from_secs(10)))
        .collect();
    // The runners' working directories (this backend's and the qemu backend's).
    for dir in ["microvm", "qemu"] {
        let work = cfg.runtime.join(dir);
        if let Err(e) = std::fs::remove_dir_all(&work)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            out.push(format!("cannot remove {}: {e}", work.display()));
        }
    }
    if let Err(e) = std::fs::remove_file(cfg.state_path())
        && e.kind() != std::io::ErrorKind::NotFound
    {
        out.push(format!("cannot remove {}: {e}", cfg.state_path().display()));
    }
    out
}

/// `status` for the microvm backend: per VM, TAP present, processes running, readiness.
pub fn status(state: &State, topology: &Topology) -> anyhow::Result<Vec<VmStatus>> {
    let ep = Endpoints::new(topology)?;
    Ok(topology
        .vms
        .iter()
        .map(|vm| {
            let procs: Vec<&Proc> = state.procs.iter().filter(|p| p.vm == vm.name).collect();
            VmStatus {
                vm: vm.name.clone(),
                namespace: "-".into(),
                network: tap_exists(&vm.tap),
                running: !procs.is_empty() && procs.iter().all(|p| p.alive()),
                ready: ready(&vm.name, topology, &ep),
                log: procs
                    .iter()
                    .find(|p| p.what == "microvm-run" || p.what == "qemu")
                    .map(|p| p.log.clone()),
                netem: None,
                accel: None,
                kernel: None,
            }
        })
        .collect())
}
