//! `sshlab vm`, microvm backend: each VM is the microvm.nix runner Nix built for it
//! (`SSHLAB_RUNNER_<VM>`, or `--runner VM=PATH`). `up` starts, per VM in the order
//! target → mcp → agent, `<runner>/bin/virtiofsd-run` when it exists (the results share) and then
//! `<runner>/bin/microvm-run`, each in its own process group with its own log in the runtime dir
//! (`<vm>-virtiofsd.log`, `<vm>.log`), unprivileged when run under sudo (SUDO_UID/SUDO_GID), and
//! waits for the VM's readiness on the addresses of vms/topology.toml before the next one. The
//! network is `sshlab net up`'s bridge and TAPs, which must exist. State (pids, start times,
//! process groups) goes to the same state.json as the netns backend.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sshlab_core::Topology;

use super::error::Error;
use super::guest::{GUEST_ANNOUNCE, GuestReport};
use super::invoker::{Credentials, prepare_results};
use super::{Endpoints, Proc, State, VmConfig, VmStatus, healthy, ports_open, process, wait_ready};

/// How long a runner's VM may take to become ready unless `--ready-timeout` says otherwise.
const DEFAULT_READY: Duration = Duration::from_secs(30);

/// The order `up` starts the VMs in (`down` stops them in reverse).
pub const START_ORDER: [&str; 3] = ["target", "mcp", "agent"];

/// The environment variable naming VM `vm`'s runner: `SSHLAB_RUNNER_<VM>`.
pub fn runner_var(vm: &str) -> String {
    format!("SSHLAB_RUNNER_{}", vm.to_uppercase().replace('-', "_"))
}

/// VM `vm`'s runner directory: `--runner VM=PATH`, else `$SSHLAB_RUNNER_<VM>` (via `env`). It
/// must hold `bin/microvm-run`.
pub fn runner_dir(
    cfg: &VmConfig,
    vm: &str,
    env: impl Fn(&str) -> Option<OsString>,
) -> anyhow::Result<PathBuf> {
    let var = runner_var(vm);
    let (dir, from) = if let Some((_, p)) = cfg.runners.iter().find(|(v, _)| v == vm) {
        (p.clone(), format!("--runner {vm}=..."))
    } else {
        match env(&var) {
            Some(p) if !p.is_empty() => (PathBuf::from(p), var.clone()),
            _ => bail!(Error::Input(format!(
                "VM {vm}: no microvm runner: set {var} to its microvm.nix runner (the Nix apps \
                 export it) or pass --runner {vm}=PATH"
            ))),
        }
    };
    if !dir.join("bin/microvm-run").is_file() {
        bail!(Error::Input(format!(
            "VM {vm}: {}/bin/microvm-run not found (runner from {from})",
            dir.display()
        )));
    }
    Ok(dir)
}

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

/// Starts `program` detached (own session and process group) in `cwd`, logging to `log`, as
/// `cred` (user, primary group and every supplementary group) when given.
fn spawn(
    vm: &str,
    what: &str,
    program: &Path,
    cwd: &Path,
    log: &Path,
    cred: Option<&Credentials>,
) -> anyhow::Result<Proc> {
    spawn_command(vm, what, Command::new(program), cwd, log, cred)
}

/// [`spawn`] for a prepared command (the qemu backend's `vng ...`).
pub(crate) fn spawn_command(
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
    })
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
            ports_open(v.ip, &ports, Duration::from_millis(300))
        }),
    }
}

/// A `*.sock` in `dir` (virtiofsd's socket, relative to the runner's working directory).
fn has_socket(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "sock"))
    })
}

/// `up` for the microvm backend: fills `state` as it goes (so the caller can undo a failure).
pub fn build(cfg: &VmConfig, topology: &Topology, state: &mut State) -> anyhow::Result<()> {
    // Everything is checked before anything starts.
    let ep = Endpoints::new(topology)?;
    let mut runners = Vec::new();
    for vm in START_ORDER {
        topology
            .vm(vm)
            .with_context(|| format!("no VM {vm} in the topology"))?;
        runners.push((vm, runner_dir(cfg, vm, |k| std::env::var_os(k))?));
    }
    if cfg.check_taps {
        check_taps(topology)?;
    }
    // The Agent VM's runner shares the path Nix baked in from the same topology.
    if cfg.results != topology.results.host {
        bail!(Error::Input(format!(
            "the microvm runners share {} into the Agent VM (vms/topology.toml [results] host, \
             baked in by Nix); --results {} cannot move it",
            topology.results.host.display(),
            cfg.results.display()
        )));
    }
    let cred = cfg.invoker.runner_credentials();
    for line in prepare_results(&cfg.results, cred.as_ref())? {
        println!("vm up: {line}");
    }
    state.save(cfg)?;
    for (vm, runner) in runners {
        let work = cfg.runtime.join("microvm").join(vm);
        // A socket left by a crashed run would pass for virtiofsd's before it exists.
        if let Err(e) = std::fs::remove_dir_all(&work)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(e).with_context(|| format!("cannot clear {}", work.display()));
        }
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        if let Some(c) = &cred {
            std::os::unix::fs::chown(&work, Some(c.uid), Some(c.gid))
                .with_context(|| format!("cannot chown {}", work.display()))?;
        }
        let mut procs = Vec::new();
        let virtiofsd = runner.join("bin/virtiofsd-run");
        if virtiofsd.is_file() {
            let log = cfg.runtime.join(format!("{vm}-virtiofsd.log"));
            let p = spawn(vm, "virtiofsd-run", &virtiofsd, &work, &log, cred.as_ref())?;
            state.procs.push(p.clone());
            state.save(cfg)?;
            procs.push(p);
            // microvm-run connects to its socket: give it up to 5 s to appear.
            let t = cfg.ready_timeout(DEFAULT_READY).min(Duration::from_secs(5));
            let _ = wait_ready(vm, &procs, &log, t, || has_socket(&work));
            if let Some(p) = procs.iter().find(|p| !p.alive()) {
                bail!(Error::NotReady(format!(
                    "VM {vm}: virtiofsd-run exited at start; tail of {}:\n{}",
                    p.log,
                    process::log_tail(Path::new(&p.log), 20)
                )));
            }
        }
        let log = cfg.runtime.join(format!("{vm}.log"));
        let p = spawn(
            vm,
            "microvm-run",
            &runner.join("bin/microvm-run"),
            &work,
            &log,
            cred.as_ref(),
        )?;
        state.procs.push(p.clone());
        state.save(cfg)?;
        procs.push(p);
        let started = Instant::now();
        wait_ready(vm, &procs, &log, cfg.ready_timeout(DEFAULT_READY), || {
            ready(vm, topology, &ep)
        })?;
        println!(
            "vm up: {vm} ready after {:.1} s (runner {}, log {})",
            started.elapsed().as_secs_f64(),
            runner.display(),
            log.display()
        );
        // A guest whose init is `sshlab guest` (the runners of `sshlab vm runners`) reports its
        // kernel and CPUs on its console; a NixOS guest does not, and nothing waits for it.
        if let Some(r) = guest_report(&log) {
            println!("vm up: {vm} runs kernel {} on {} vCPUs", r.kernel, r.cpus);
            state.guests.push(r);
            state.save(cfg)?;
        }
    }
    Ok(())
}

/// The report of a guest that runs `sshlab guest`: its init announces itself before it starts
/// the role, so once that line is in the log, the report follows shortly (up to 10 s).
fn guest_report(log: &Path) -> Option<GuestReport> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = process::log_tail(log, 2000);
        if let Some(r) = GuestReport::from_log(&text) {
            return Some(r);
        }
        if !text.contains(GUEST_ANNOUNCE) || Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
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
