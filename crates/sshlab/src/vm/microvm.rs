//! `sshlab vm`, microvm backend: each VM is the microvm.nix runner Nix built for it
//! (`SSHLAB_RUNNER_<VM>`, or `--runner VM=PATH`). `up` starts, per VM in the order
//! target → mcp → agent, `<runner>/bin/virtiofsd-run` when it exists (the results share) and then
//! `<runner>/bin/microvm-run`, each in its own process group with its own log in the runtime dir
//! (`<vm>-virtiofsd.log`, `<vm>.log`), unprivileged when run under sudo (SUDO_UID/SUDO_GID), and
//! waits for the VM's readiness on the addresses of vms/topology.toml before the next one. The
//! network is `sshlab net up`'s bridge and TAPs, which must exist. State (pids, start times,
//! process groups) goes to the same state.json as the netns backend. Process handling, `down`
//! and `status` are shared with the qemu backend ([`super::hypervisor`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sshlab_core::Topology;

use super::dirs;
use super::error::Error;
use super::guest::GuestReport;
use super::invoker::prepare_results;
use super::{Endpoints, State, VmConfig, hypervisor, process, wait_ready};

/// How long a runner's VM may take to become ready unless `--ready-timeout` says otherwise.
const DEFAULT_READY: Duration = Duration::from_secs(30);

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

/// How long virtiofsd-run may take to make its socket (at most; `--ready-timeout` if shorter).
const SOCKET_WAIT: Duration = Duration::from_secs(30);

/// What happened when virtiofsd-run's socket did not appear within `waited`: it exited (a
/// runner without a supervisor), or it runs and its virtiofsd does not. microvm.nix 68c9f9c
/// (`nixos-modules/microvm/virtiofsd/default.nix`) runs each virtiofsd as a supervisord program
/// with `autorestart = true` and its output to syslog: supervisord stays up while virtiofsd
/// exits and is restarted (then given up on, FATAL), so the failure shows only as the socket
/// that never appears (and qemu, started anyway, failing to connect to it). supervisord's own
/// log (stdout, and `supervisord.log` in the working directory) names the program's exits.
fn no_socket(vm: &str, procs: &[process::Proc], work: &Path, waited: Duration) -> String {
    let Some(p) = procs.first() else {
        return format!("VM {vm}: no virtiofsd socket in {}", work.display());
    };
    let log = Path::new(&p.log);
    if !p.alive() {
        return format!(
            "VM {vm}: virtiofsd-run exited at start; tail of {}:\n{}",
            log.display(),
            process::log_tail(log, 20)
        );
    }
    let supervisord = work.join("supervisord.log");
    let supervisord = match process::log_tail(&supervisord, 20) {
        t if t.is_empty() => String::new(),
        t => format!("\ntail of {}:\n{t}", supervisord.display()),
    };
    format!(
        "VM {vm}: virtiofsd-run (pid {}) runs, but no virtiofsd socket appeared in {} within \
         {} s, so its results share cannot start (qemu would fail to connect to it). \
         microvm.nix runs virtiofsd under supervisord, which restarts a virtiofsd that exits and \
         keeps running itself: a virtiofsd that cannot start (e.g. a shared directory it may \
         not open) shows only as this missing socket. Tail of {}:\n{}{supervisord}",
        p.pid,
        work.display(),
        waited.as_secs(),
        log.display(),
        process::log_tail(log, 20)
    )
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
    for vm in hypervisor::START_ORDER {
        topology
            .vm(vm)
            .with_context(|| format!("no VM {vm} in the topology"))?;
        runners.push((vm, runner_dir(cfg, vm, |k| std::env::var_os(k))?));
    }
    if cfg.check_taps {
        hypervisor::check_taps(topology)?;
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
        // `<lab>/microvm` is root's (0755: the runners' user passes through); each runner's
        // working directory is the runners' user's alone (0700), whatever the umask.
        if let Some(parent) = work.parent() {
            dirs::create_dir_all(parent, 0o755)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        dirs::create_dir_all(&work, 0o700)
            .with_context(|| format!("cannot create {}", work.display()))?;
        if let Some(c) = &cred {
            std::os::unix::fs::chown(&work, Some(c.uid), Some(c.gid))
                .with_context(|| format!("cannot chown {}", work.display()))?;
        }
        let mut procs = Vec::new();
        let virtiofsd = runner.join("bin/virtiofsd-run");
        if virtiofsd.is_file() {
            let log = cfg.runtime.join(format!("{vm}-virtiofsd.log"));
            let p = hypervisor::spawn(
                vm,
                "virtiofsd-run",
                Command::new(&virtiofsd),
                &work,
                &log,
                cred.as_ref(),
            )?;
            state.procs.push(p.clone());
            state.save(cfg)?;
            procs.push(p);
            // microvm-run's qemu connects to the socket at start: it must be there first.
            let t = cfg.ready_timeout(DEFAULT_READY).min(SOCKET_WAIT);
            if let Err(e) = wait_ready(vm, &procs, &log, t, || has_socket(&work)) {
                if crate::interrupt::requested() {
                    return Err(e);
                }
                bail!(Error::NotReady(no_socket(vm, &procs, &work, t)));
            }
        }
        let log = cfg.runtime.join(format!("{vm}.log"));
        let p = hypervisor::spawn(
            vm,
            "microvm-run",
            Command::new(runner.join("bin/microvm-run")),
            &work,
            &log,
            cred.as_ref(),
        )?;
        state.procs.push(p.clone());
        state.save(cfg)?;
        procs.push(p);
        let started = Instant::now();
        wait_ready(vm, &procs, &log, cfg.ready_timeout(DEFAULT_READY), || {
            hypervisor::ready(vm, topology, &ep)
        })?;
        hypervisor::record_descendants(state, vm);
        state.save(cfg)?;
        println!(
            "vm up: {vm} ready after {:.1} s (runner {}, log {})",
            started.elapsed().as_secs_f64(),
            runner.display(),
            log.display()
        );
        // A guest whose init is `sshlab guest` (the runners of `sshlab vm runners`) reports its
        // kernel and CPUs on its console; a NixOS guest does not, and nothing waits for it.
        if let Some(r) = GuestReport::wait_in_log(&log, Duration::from_secs(10)) {
            println!("vm up: {vm} runs kernel {} on {} vCPUs", r.kernel, r.cpus);
            state.guests.push(r);
            state.save(cfg)?;
        }
    }
    Ok(())
}
