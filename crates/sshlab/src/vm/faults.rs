//! Faults during a run, executed by the host: it alone controls the VMs' processes, links and
//! netem on every backend. What a fault is, how it is written and judged is sshlab-core's
//! ([`sshlab_core::faults`]); this module checks a run's faults against the running lab
//! ([`plan`], before anything starts) and executes them on time ([`Injector`]), one seam per
//! backend for each kind (`begin` and `end` dispatch on backend and kind).
//!
//! Every fault reverts itself: at its end, on Ctrl-C (the run's loop calls
//! [`Injector::revert_all`]) and when the injector is dropped on any error path. Reverting is
//! idempotent, so a fault is never undone twice.
//!
//! What each kind does, on the netns backend. On qemu and microvm the guests do the same on the
//! host's command ([`super::control`], their control ports): sshd-kill, mcp-restart, and netem
//! when it is shaped in the qemu target guest (microvm's is on the host's TAP, as netns' is).
//! - `sshd-kill:PORT`: makes the target's down flag for that sshd (its supervisor loop then
//!   does not restart it), SIGKILLs the listener and every process under it (the sessions it
//!   serves), as a crash would; at the end removes the flag and waits until the port accepts
//!   connections again (the end recorded is that moment).
//! - `partition:VM`: sets the VM's host-side link (its TAP, or the veth end named like it)
//!   down, and up again at the end. Every backend.
//! - `mcp-pause`: SIGSTOPs the MCP VM's processes (mcp-ssh-server on netns, the guest's qemu
//!   process on qemu/microvm, which freezes the whole guest), SIGCONT at the end. Every backend.
//! - `mcp-restart`: SIGKILLs mcp-ssh-server; at the end starts it again with the command `vm
//!   up` used, records the new process in the lab's state (so `vm status` and `vm down` know
//!   it), and waits for `/health` (the end recorded). In a qemu guest the guest's init restarts
//!   it (the guest's qemu, which the state records, does not change).
//! - `netem:PORT:...`: installs the lab's profiles with that port's replaced (or added) on the
//!   target's link (and, for a port shaped both ways, on the way back), and the lab's own
//!   profiles again at the end (on qemu with netem in the guests, in the target guest on its
//!   own NIC, and in the MCP guest for the profiles shaped both ways). Needs the lab's netem
//!   applied.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sshlab_core::faults::{FaultKind, FaultRecord, FaultSpec, Resolved, check_overlaps};
use sshlab_core::{NetemProfiles, Topology};

use super::{
    Backend, Endpoints, State, VmConfig, control, healthy, net, ports_open, process, roles, target,
};

/// How long an end waits for the service it restores (the sshd's port, `/health`).
const RESTORE_WAIT: Duration = Duration::from_secs(20);

/// A fault checked against the lab.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Its position in the run's list.
    pub index: usize,
    /// As written.
    pub spec: FaultSpec,
    /// What it acts on.
    pub resolved: Resolved,
}

/// Checks a run's faults against the running lab before anything starts: targets that exist,
/// kinds the backend can execute, no two faults on one target at once, every fault over
/// within `run_s`. `runtime` is the lab's runtime directory (where the guests' control
/// sockets are).
pub fn plan(
    specs: &[FaultSpec],
    topology: &Topology,
    state: &State,
    runtime: &Path,
    run_s: f64,
) -> anyhow::Result<Vec<Planned>> {
    check_overlaps(specs, topology)?;
    let mut out = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let resolved = spec.resolve(topology, run_s)?;
        // The netns backend's processes and links are the host's; the qemu and microvm
        // backends' guests take commands on their control ports, which a microvm runner built
        // without one (vms/control.nix) lacks.
        let inside = match spec.kind {
            FaultKind::SshdKill => Some("target"),
            FaultKind::McpRestart => Some("mcp"),
            _ => None,
        };
        if let Some(vm) = inside
            && state.backend == Backend::Microvm
            && let Some(socket) = control::host_socket(runtime, state.backend, vm)
        {
            match std::fs::symlink_metadata(&socket) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                    "fault `{spec}`: VM {vm}'s microvm runner offers no control port ({} is \
                     missing): the host cannot reach inside it. Runners built from this flake \
                     (vms/control.nix) and by `sshlab vm runners` have one; rebuild older ones \
                     (partition and mcp-pause work without it)",
                    socket.display()
                ),
                // The runner's working directory is its user's alone.
                Err(e) => bail!(
                    "fault `{spec}`: cannot reach VM {vm}'s control port {} ({e}): run as the \
                     user the runners run as (who ran `sudo sshlab vm up`), or as root",
                    socket.display()
                ),
            }
        }
        match spec.kind {
            FaultKind::Netem if !state.netem.applied => bail!(
                "fault `{spec}`: the lab's netem is not applied ({}), so there is no profile to \
                 change",
                state.netem.why()
            ),
            _ => {}
        }
        out.push(Planned {
            index,
            spec: spec.clone(),
            resolved,
        });
    }
    Ok(out)
}

/// Unix seconds now.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Where a fault is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Active,
    Done,
}

/// Executes a run's faults on time and reverts them, whatever happens.
#[derive(Debug)]
pub struct Injector {
    cfg: VmConfig,
    topology: Topology,
    faults: Vec<(Planned, Phase, FaultRecord)>,
}

impl Injector {
    /// For `planned` faults of the lab `cfg` (its state file is read at each step, so a restart
    /// is recorded where `vm status` and `vm down` look).
    pub fn new(cfg: &VmConfig, topology: &Topology, planned: Vec<Planned>) -> Self {
        let faults = planned
            .into_iter()
            .map(|p| {
                let rec = FaultRecord::planned(p.index, p.spec.clone());
                (p, Phase::Pending, rec)
            })
            .collect();
        Self {
            cfg: cfg.clone(),
            topology: topology.clone(),
            faults,
        }
    }

    /// Whether it has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// Whether any fault is still to start or to end.
    pub fn pending(&self) -> bool {
        self.faults.iter().any(|(_, ph, _)| *ph != Phase::Done)
    }

    /// Starts and ends what is due `elapsed` seconds into the run; returns the records that
    /// changed (to hand to the agent).
    pub fn tick(&mut self, elapsed: f64) -> Vec<FaultRecord> {
        let mut changed = Vec::new();
        // Ends first: a fault that ends as another begins on the same target frees it.
        for i in 0..self.faults.len() {
            let (p, phase, _) = &self.faults[i];
            if *phase == Phase::Active && elapsed >= p.spec.end_s() {
                changed.push(self.finish(i));
            }
        }
        for i in 0..self.faults.len() {
            let (p, phase, _) = &self.faults[i];
            if *phase == Phase::Pending && elapsed >= p.spec.start_s {
                changed.push(self.start(i));
            }
        }
        changed
    }

    /// Reverts every fault still in effect, and abandons those not started; returns the records
    /// that changed. The ones reverted at once go first (a link up, a resume, the profiles),
    /// then those whose end waits for a service to answer (sshd-kill, mcp-restart: up to
    /// `RESTORE_WAIT` each): a second Ctrl-C, which kills `sshlab`, is likeliest during those
    /// waits, and must not leave a server frozen or a VM off the bridge.
    pub fn revert_all(&mut self) -> Vec<FaultRecord> {
        let mut changed = Vec::new();
        let waits = |k: FaultKind| matches!(k, FaultKind::SshdKill | FaultKind::McpRestart);
        let mut order: Vec<usize> = (0..self.faults.len()).collect();
        order.sort_by_key(|&i| waits(self.faults[i].0.spec.kind));
        for i in order {
            match self.faults[i].1 {
                Phase::Active => changed.push(self.finish(i)),
                Phase::Pending => self.faults[i].1 = Phase::Done,
                Phase::Done => {}
            }
        }
        changed
    }

    fn start(&mut self, i: usize) -> FaultRecord {
        let planned = self.faults[i].0.clone();
        // Its start is when the host acts (the first call can fail a moment later).
        let at = now();
        let result = begin(&self.cfg, &self.topology, &planned).map_err(|e| {
            // It may have half happened (a guest that acted after the host stopped waiting):
            // reverting is idempotent, so revert.
            let undo = end(&self.cfg, &self.topology, &planned).map_or_else(
                |u| format!("; reverting it failed too: {u:#}"),
                |()| String::new(),
            );
            format!("{e:#}{undo}")
        });
        let (_, phase, rec) = &mut self.faults[i];
        match result {
            Ok(()) => {
                rec.started_at = Some(at);
                *phase = Phase::Active;
                println!("run: fault {}: started", planned.spec);
            }
            Err(e) => {
                rec.error = Some(format!("could not start: {e}"));
                *phase = Phase::Done;
                eprintln!("run: fault {}: could not start: {e}", planned.spec);
            }
        }
        rec.clone()
    }

    fn finish(&mut self, i: usize) -> FaultRecord {
        let planned = self.faults[i].0.clone();
        let result = end(&self.cfg, &self.topology, &planned);
        let (_, phase, rec) = &mut self.faults[i];
        *phase = Phase::Done;
        match result {
            Ok(()) => {
                rec.ended_at = Some(now());
                println!("run: fault {}: reverted", planned.spec);
            }
            Err(e) => {
                rec.error = Some(format!("could not revert: {e:#}"));
                eprintln!(
                    "run: fault {}: could not revert: {e:#}; the lab may be left degraded \
                     (`sshlab vm down` stops it)",
                    planned.spec
                );
            }
        }
        rec.clone()
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        // Every error path of a run: nothing stays broken.
        let _ = self.revert_all();
    }
}

/// Executes `p`'s fault.
fn begin(cfg: &VmConfig, topology: &Topology, p: &Planned) -> anyhow::Result<()> {
    let state = State::load(cfg)?.context("the lab is not up")?;
    if state.backend != Backend::Netns {
        let commands = guest_commands(cfg, topology, &state, p, true)?;
        if !commands.is_empty() {
            return in_guests(cfg, topology, state.backend, &commands);
        }
    }
    match (&p.resolved, p.spec.kind) {
        (Resolved::Sshd { base, .. }, FaultKind::SshdKill) => sshd_kill(cfg, &state, *base),
        (Resolved::Vm(vm), FaultKind::Partition) => set_link(topology, vm, false),
        (Resolved::Vm(_), FaultKind::McpPause) => signal_vm(&state, "mcp", Signal::SIGSTOP),
        (Resolved::Vm(_), FaultKind::McpRestart) => mcp_kill(&state),
        (Resolved::Sshd { port, .. }, FaultKind::Netem) => {
            let change = p.spec.netem.clone().unwrap_or_default();
            netem_set(cfg, topology, *port, Some(&change))
        }
        (r, k) => bail!("fault {k} cannot act on {r:?}"),
    }
}

/// Reverts `p`'s fault; idempotent.
fn end(cfg: &VmConfig, topology: &Topology, p: &Planned) -> anyhow::Result<()> {
    let state = State::load(cfg)?.context("the lab is not up")?;
    if state.backend != Backend::Netns {
        let commands = guest_commands(cfg, topology, &state, p, false)?;
        if !commands.is_empty() {
            return in_guests(cfg, topology, state.backend, &commands);
        }
    }
    match (&p.resolved, p.spec.kind) {
        (Resolved::Sshd { base, .. }, FaultKind::SshdKill) => sshd_back(cfg, topology, *base),
        (Resolved::Vm(vm), FaultKind::Partition) => set_link(topology, vm, true),
        (Resolved::Vm(_), FaultKind::McpPause) => signal_vm(&state, "mcp", Signal::SIGCONT),
        (Resolved::Vm(_), FaultKind::McpRestart) => mcp_start(cfg, topology, state),
        (Resolved::Sshd { port, .. }, FaultKind::Netem) => netem_set(cfg, topology, *port, None),
        (r, k) => bail!("fault {k} cannot act on {r:?}"),
    }
}

/// What the guests must do to start (`begin`) or end `p`'s fault, and which guests: the
/// faults whose processes or qdiscs are inside them. Empty: the host does it itself
/// (partition, mcp-pause, and netem when it is on the host's links).
fn guest_commands(
    cfg: &VmConfig,
    topology: &Topology,
    state: &State,
    p: &Planned,
    begin: bool,
) -> anyhow::Result<Vec<(&'static str, control::Command)>> {
    use control::Command as C;
    Ok(match (&p.resolved, p.spec.kind) {
        (Resolved::Sshd { base, .. }, FaultKind::SshdKill) => vec![(
            "target",
            match begin {
                true => C::SshdKill { base: *base },
                false => C::SshdBack { base: *base },
            },
        )],
        (Resolved::Vm(_), FaultKind::McpRestart) => vec![(
            "mcp",
            match begin {
                true => C::McpKill,
                false => C::McpStart,
            },
        )],
        (Resolved::Sshd { port, .. }, FaultKind::Netem) if state.netem.in_guest => {
            let own = cfg
                .netem
                .clone()
                .context("the lab runs without netem profiles (--no-netem)")?;
            let profiles = match begin {
                true => with_change(
                    &own,
                    topology,
                    *port,
                    &p.spec.netem.clone().unwrap_or_default(),
                ),
                false => own,
            };
            // The MCP guest shapes the other way of the profiles shaped both ways.
            let mut commands = vec![(
                "target",
                C::Netem {
                    profiles: profiles.clone(),
                },
            )];
            if !state.netem.back_ports.is_empty() {
                commands.push(("mcp", C::Netem { profiles }));
            }
            commands
        }
        _ => Vec::new(),
    })
}

/// Sends each command to its guest, in order, every one of them whatever an earlier one did (a
/// revert that failed in one guest must not leave the other faulted); the errors are said
/// together.
fn in_guests(
    cfg: &VmConfig,
    topology: &Topology,
    backend: Backend,
    commands: &[(&str, control::Command)],
) -> anyhow::Result<()> {
    let errors: Vec<String> = commands
        .iter()
        .filter_map(|(vm, cmd)| {
            in_guest(cfg, topology, backend, vm, cmd)
                .err()
                .map(|e| format!("VM {vm}: {e:#}"))
        })
        .collect();
    match errors.is_empty() {
        true => Ok(()),
        false => bail!("{}", errors.join("; ")),
    }
}

/// Sends `cmd` to the guest `vm`, then waits for what it restores: the sshd's ports, or the
/// MCP server's `/health`.
fn in_guest(
    cfg: &VmConfig,
    topology: &Topology,
    backend: Backend,
    vm: &str,
    cmd: &control::Command,
) -> anyhow::Result<()> {
    let socket = control::host_socket(&cfg.runtime, backend, vm)
        .with_context(|| format!("the {} backend has no control ports", backend.as_str()))?;
    control::send(&socket, cmd, RESTORE_WAIT)?;
    match cmd {
        control::Command::SshdBack { base } => sshd_listening(topology, *base),
        control::Command::McpStart => mcp_healthy(topology),
        _ => Ok(()),
    }
}

/// The processes under `pid` (its children, theirs, ...), from `/proc/*/stat`'s parent field.
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| {
                    let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
                    let ppid = stat
                        .rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()?;
                    Some((p, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out.remove(0);
    out
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(p) = i32::try_from(pid)
        && p > 1
    {
        let _ = kill(Pid::from_raw(p), sig);
    }
}

/// `sig` to a VM's processes and everything under them (the guest's qemu under vng).
fn signal_vm(state: &State, vm: &str, sig: Signal) -> anyhow::Result<()> {
    let procs: Vec<&process::Proc> = state.procs.iter().filter(|p| p.vm == vm).collect();
    if procs.is_empty() || !procs.iter().any(|p| p.alive()) {
        bail!("VM {vm} has no running process to {sig}");
    }
    for p in procs.iter().filter(|p| p.alive()) {
        signal(p.pid, sig);
        for d in descendants(p.pid) {
            signal(d, sig);
        }
    }
    Ok(())
}

/// The target's sshd of `base` and every session it serves, killed; its supervisor keeps it
/// down until [`sshd_back`].
fn sshd_kill(cfg: &VmConfig, state: &State, base: u16) -> anyhow::Result<()> {
    let root = state
        .procs
        .iter()
        .find(|p| p.vm == "target" && p.alive())
        .context("the target's sshd processes are not running")?;
    kill_sshd(&cfg.runtime.join("target"), root.pid, base)
}

/// Makes the down flag of the sshd of `base` in the target's files `dir` (its supervisor then
/// does not restart it) and kills it and every session it serves, found under `root` (the
/// target role's process): on the host for the netns backend, in the guest for qemu.
pub(super) fn kill_sshd(dir: &std::path::Path, root: u32, base: u16) -> anyhow::Result<()> {
    let flag = target::down_flag(dir, base);
    std::fs::write(&flag, b"sshd-kill fault\n")
        .with_context(|| format!("cannot write {}", flag.display()))?;
    let conf = target::config_path(dir, base);
    let conf = conf.to_string_lossy();
    let listeners = || -> Vec<u32> {
        descendants(root)
            .into_iter()
            .filter(|p| {
                // sshd rewrites its title ("sshd: /usr/sbin/sshd -D -e -f CONF [listener] ..."),
                // so the path is looked for in the whole command line, ending at a space or NUL.
                std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                    let needle = conf.as_bytes();
                    c.windows(needle.len() + 1)
                        .any(|w| w.starts_with(needle) && matches!(w[needle.len()], 0 | b' '))
                        || c.ends_with(needle)
                })
            })
            .collect()
    };
    let found = listeners();
    if found.is_empty() {
        bail!("no sshd serves port {base} (its configuration {conf} is in no process)");
    }
    // Until none is left: the listener first (no new sessions), then everything under it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let l = listeners();
        if l.is_empty() {
            return Ok(());
        }
        for pid in l {
            let tree = descendants(pid);
            signal(pid, Signal::SIGKILL);
            for d in tree {
                signal(d, Signal::SIGKILL);
            }
        }
        if Instant::now() >= deadline {
            bail!("the sshd of port {base} survived SIGKILL for 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sshd of `base` allowed up again; returns once its ports accept connections.
fn sshd_back(cfg: &VmConfig, topology: &Topology, base: u16) -> anyhow::Result<()> {
    allow_sshd(&cfg.runtime.join("target"), base)?;
    sshd_listening(topology, base)
}

/// Removes the down flag of the sshd of `base` (its supervisor starts it again).
pub(super) fn allow_sshd(dir: &std::path::Path, base: u16) -> anyhow::Result<()> {
    let flag = target::down_flag(dir, base);
    match std::fs::remove_file(&flag) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", flag.display())),
    }
}

/// Returns once the ports of the sshd of `base` accept connections.
/// The base port only: the same sshd listens on its netem twin, whose connect may take longer
/// than the check allows (2326's profile delays it by a second).
fn sshd_listening(topology: &Topology, base: u16) -> anyhow::Result<()> {
    let ep = Endpoints::new(topology)?;
    let deadline = Instant::now() + RESTORE_WAIT;
    while !ports_open(ep.target, &[base], Duration::from_millis(200)) {
        if Instant::now() >= deadline {
            bail!("the sshd of port {base} did not come back within {RESTORE_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A VM's host-side link (its TAP, or the veth end named like it) up or down.
fn set_link(topology: &Topology, vm: &str, up: bool) -> anyhow::Result<()> {
    let tap = topology
        .vm(vm)
        .map(|v| v.tap.clone())
        .with_context(|| format!("no VM {vm}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(net::set_link_state(&tap, up))
}

/// mcp-ssh-server killed (SIGKILL: no goodbye to its clients or its SSH connections).
fn mcp_kill(state: &State) -> anyhow::Result<()> {
    let p = state
        .procs
        .iter()
        .find(|p| p.vm == "mcp" && p.alive())
        .context("mcp-ssh-server is not running")?;
    signal(p.pid, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.alive() {
        if Instant::now() >= deadline {
            bail!("mcp-ssh-server (pid {}) survived SIGKILL for 5 s", p.pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// mcp-ssh-server started again the way `vm up` started it, recorded in the lab's state in
/// place of the one killed; returns once `/health` answers.
fn mcp_start(cfg: &VmConfig, topology: &Topology, mut state: State) -> anyhow::Result<()> {
    if state.procs.iter().any(|p| p.vm == "mcp" && p.alive()) {
        return Ok(());
    }
    let ns = state
        .namespaces
        .iter()
        .find(|(v, _)| v == "mcp")
        .map(|(_, n)| n.clone())
        .context("no namespace for VM mcp")?;
    let bins = roles::Bins::find(cfg.bin_dir.as_deref())?;
    let log = PathBuf::from(state.procs.iter().find(|p| p.vm == "mcp").map_or_else(
        || cfg.runtime.join("mcp.log").display().to_string(),
        |p| p.log.clone(),
    ));
    let cmd = roles::mcp_command(&bins, topology)?;
    let p = process::spawn_in("mcp", "mcp-ssh-server", cmd, &net::open_netns(&ns)?, &log)?;
    state.procs.retain(|q| q.vm != "mcp");
    state.procs.push(p);
    state.save(cfg)?;
    mcp_healthy(topology)
}

/// Returns once mcp-ssh-server answers `/health`.
fn mcp_healthy(topology: &Topology) -> anyhow::Result<()> {
    let ep = Endpoints::new(topology)?;
    let deadline = Instant::now() + RESTORE_WAIT;
    while !healthy(ep.mcp) {
        if Instant::now() >= deadline {
            bail!("mcp-ssh-server did not answer /health within {RESTORE_WAIT:?} of its restart");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The lab's netem profiles on the target's link, with `port`'s set to `change` (added when
/// the port has none); `None`: the lab's own profiles again.
fn netem_set(
    cfg: &VmConfig,
    topology: &Topology,
    port: u16,
    change: Option<&sshlab_core::faults::NetemChange>,
) -> anyhow::Result<()> {
    let own = cfg
        .netem
        .clone()
        .context("the lab runs without netem profiles (--no-netem)")?;
    let profiles = match change {
        None => own,
        Some(c) => with_change(&own, topology, port, c),
    };
    let applied = super::shaping::apply(topology, Some(&profiles))?;
    if !applied.applied {
        bail!("netem: {}", applied.why());
    }
    Ok(())
}

/// `own` with `port`'s profile replaced by `change` (or added for a port without one).
fn with_change(
    own: &NetemProfiles,
    topology: &Topology,
    port: u16,
    c: &sshlab_core::faults::NetemChange,
) -> NetemProfiles {
    let mut profiles = own.clone();
    let base = topology
        .target_ports()
        .into_iter()
        .find(|t| t.base == port || t.netem == port)
        .map_or(port, |t| t.base);
    let mut fault = c.to_profile(base, port);
    match profiles.profiles.iter_mut().find(|p| p.port == port) {
        // A port the lab shapes both ways gets the fault's conditions both ways.
        Some(p) => {
            fault.both_ways = p.both_ways;
            *p = fault;
        }
        None => profiles.profiles.push(fault),
    }
    profiles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> sshlab_core::Lab {
        sshlab_core::Lab::builtin().expect("built-in lab")
    }

    fn state(backend: Backend, netem: bool) -> State {
        State {
            backend,
            netem: if netem {
                super::super::LabNetem::on("sshtap2", vec![2322])
            } else {
                super::super::LabNetem::off(
                    "sshtap2",
                    vec![2322],
                    "kernel module sch_netem missing",
                )
            },
            ..State::default()
        }
    }

    fn specs(s: &[&str]) -> Vec<FaultSpec> {
        s.iter().map(|s| s.parse().expect("spec")).collect()
    }

    #[test]
    fn what_a_backend_cannot_do_is_refused_before_anything_starts() {
        let t = lab().topology;
        let runtime = tempfile::tempdir().expect("tempdir");
        let rt = runtime.path();
        let netns = state(Backend::Netns, false);
        let ok = plan(
            &specs(&["sshd-kill:2222@2s+3s", "mcp-pause@6s+1s"]),
            &t,
            &netns,
            rt,
            30.0,
        )
        .expect("netns runs them");
        assert_eq!(ok.len(), 2);
        let e = plan(
            &specs(&["netem:2322:delay=50ms@1s+1s"]),
            &t,
            &netns,
            rt,
            30.0,
        )
        .expect_err("no netem here");
        assert!(e.to_string().contains("sch_netem missing"), "{e}");
        // qemu: every kind (the guests take the in-guest ones on their control ports).
        let every = [
            "partition:target@1s+1s",
            "mcp-pause@3s+1s",
            "sshd-kill:2222@5s+1s",
            "mcp-restart@7s+1s",
            "netem:2322:delay=50ms@9s+1s",
        ];
        let qemu = state(Backend::Qemu, true);
        assert_eq!(
            plan(&specs(&every), &t, &qemu, rt, 30.0)
                .expect("qemu")
                .len(),
            5
        );
        // microvm: the in-guest kinds need the VM's control socket (netem is the host's).
        let microvm = state(Backend::Microvm, true);
        for (spec, vm) in [(every[2], "target"), (every[3], "mcp")] {
            let e = plan(&specs(&[spec]), &t, &microvm, rt, 30.0).expect_err("no socket");
            assert!(
                e.to_string().contains("offers no control port"),
                "{spec}: {e}"
            );
            assert!(
                e.to_string().contains(&format!("microvm/{vm}/")),
                "{spec}: {e}"
            );
        }
        for vm in ["target", "mcp"] {
            let socket = control::host_socket(rt, Backend::Microvm, vm).expect("a path");
            std::fs::create_dir_all(socket.parent().expect("dir")).expect("mkdir");
            std::fs::write(&socket, "").expect("socket stand-in");
        }
        assert_eq!(
            plan(&specs(&every), &t, &microvm, rt, 30.0)
                .expect("microvm")
                .len(),
            5
        );
        let e = plan(&specs(&["sshd-kill:9999@1s+1s"]), &t, &netns, rt, 30.0).expect_err("port");
        assert!(e.to_string().contains("no sshd on port 9999"), "{e}");
        let e = plan(&specs(&["mcp-pause@25s+10s"]), &t, &netns, rt, 30.0).expect_err("too late");
        assert!(e.to_string().contains("after the run's 30.0 s"), "{e}");
    }

    #[test]
    fn a_netem_fault_overrides_one_port_of_the_lab_profiles() {
        let lab = lab();
        let c = sshlab_core::faults::NetemChange {
            delay_ms: 300,
            jitter_ms: 30,
            loss_percent: 2.0,
            corrupt_percent: Some(1.0),
            distribution: Some(sshlab_core::netem::Distribution::Normal),
            ..Default::default()
        };
        let p = with_change(&lab.netem, &lab.topology, 2322, &c);
        assert_eq!(p.profiles.len(), lab.netem.profiles.len());
        let changed = p.profiles.iter().find(|p| p.port == 2322).expect("2322");
        assert_eq!((changed.delay_ms, changed.jitter_ms), (300, 30));
        assert_eq!(changed.corrupt_percent, Some(1.0));
        assert_eq!(
            changed.distribution,
            Some(sshlab_core::netem::Distribution::Normal)
        );
        p.validate("fault").expect("a valid profile");
        let added = with_change(&lab.netem, &lab.topology, 2222, &c);
        assert_eq!(added.profiles.len(), lab.netem.profiles.len() + 1);
        assert_eq!(
            added.profiles.last().map(|p| (p.base, p.port)),
            Some((2222, 2222))
        );
    }

    #[test]
    fn descendants_walk_the_whole_tree() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .expect("sh");
        std::thread::sleep(Duration::from_millis(200));
        let d = descendants(child.id());
        assert_eq!(d.len(), 2, "{d:?}");
        for p in d {
            signal(p, Signal::SIGKILL);
        }
        let _ = child.wait();
    }
}
