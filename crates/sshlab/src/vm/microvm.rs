//! `sshlab vm`, microvm backend: each VM is the microvm.nix runner Nix built for it
//! (`SSHLAB_RUNNER_<VM>`, or `--runner VM=PATH`). `up` starts, per VM in the order
//! target → mcp → agent, `<runner>/bin/virtiofsd-run` when it exists (the results share) and then
//! `<runner>/bin/microvm-run`, each in its own process group with its own log in the runtime dir
//! (`<vm>-virtiofsd.log`, `<vm>.log`), unprivileged when run under sudo (SUDO_UID/SUDO_GID), and
//! waits for the VM's readiness on the addresses of vms/topology.toml before the next one. The
//! network is `sshlab net up`'s bridge and TAPs, which must exist. State (pids, start times,
//! process groups) goes to the same state.json as the netns backend.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sshlab_core::Topology;

use super::{Endpoints, Proc, State, VmConfig, VmStatus, healthy, process, wait_ready};

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
            _ => bail!(
                "VM {vm}: no microvm runner: set {var} to its microvm.nix runner (the Nix apps \
                 export it) or pass --runner {vm}=PATH"
            ),
        }
    };
    if !dir.join("bin/microvm-run").is_file() {
        bail!(
            "VM {vm}: {}/bin/microvm-run not found (runner from {from})",
            dir.display()
        );
    }
    Ok(dir)
}

/// Every VM's TAP exists (made by `sshlab net up`).
pub fn check_taps(topology: &Topology) -> anyhow::Result<()> {
    for vm in &topology.vms {
        if !tap_exists(&vm.tap) {
            bail!(
                "VM {}: TAP {} does not exist; run `sudo sshlab net up` first",
                vm.name,
                vm.tap
            );
        }
    }
    Ok(())
}

fn tap_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// The user the runners run as: SUDO_UID/SUDO_GID when root under sudo, else unchanged.
fn run_as() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let uid: u32 = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(uid);
    Some((uid, gid))
}

/// Starts `program` detached (own session and process group) in `cwd`, logging to `log`.
fn spawn(
    vm: &str,
    what: &str,
    program: &Path,
    cwd: &Path,
    log: &Path,
    cred: Option<(u32, u32)>,
) -> anyhow::Result<Proc> {
    let out =
        std::fs::File::create(log).with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if let Some((uid, gid)) = cred {
        cmd.uid(uid).gid(gid);
    }
    // SAFETY: the closure runs in the forked child before exec and only calls setsid, which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("VM {vm}: cannot start {}", program.display()))?;
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
fn ready(vm: &str, topology: &Topology, ep: &Endpoints) -> bool {
    match vm {
        "mcp" => healthy(ep.mcp),
        "agent" => healthy(ep.agent),
        _ => topology.vm(vm).is_some_and(|v| {
            let ports: Vec<u16> = if vm == "target" {
                topology.target_ports().iter().map(|p| p.base).collect()
            } else {
                v.services.iter().map(|s| s.port).collect()
            };
            ports.iter().all(|port| {
                TcpStream::connect_timeout(
                    &SocketAddr::from((v.ip, *port)),
                    Duration::from_millis(300),
                )
                .is_ok()
            })
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
    let cred = run_as();
    state.save(cfg)?;
    for (vm, runner) in runners {
        let work = cfg.runtime.join("microvm").join(vm);
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        if let Some((uid, gid)) = cred {
            std::os::unix::fs::chown(&work, Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {}", work.display()))?;
        }
        let mut procs = Vec::new();
        let virtiofsd = runner.join("bin/virtiofsd-run");
        if virtiofsd.is_file() {
            let log = cfg.runtime.join(format!("{vm}-virtiofsd.log"));
            let p = spawn(vm, "virtiofsd-run", &virtiofsd, &work, &log, cred)?;
            state.procs.push(p.clone());
            state.save(cfg)?;
            procs.push(p);
            // microvm-run connects to its socket: give it up to 5 s to appear.
            let t = cfg.timeout.min(Duration::from_secs(5));
            let _ = wait_ready(vm, &procs, &log, t, || has_socket(&work));
            if let Some(p) = procs.iter().find(|p| !p.alive()) {
                bail!(
                    "VM {vm}: virtiofsd-run exited at start; tail of {}:\n{}",
                    p.log,
                    process::log_tail(Path::new(&p.log), 20)
                );
            }
        }
        let log = cfg.runtime.join(format!("{vm}.log"));
        let p = spawn(
            vm,
            "microvm-run",
            &runner.join("bin/microvm-run"),
            &work,
            &log,
            cred,
        )?;
        state.procs.push(p.clone());
        state.save(cfg)?;
        procs.push(p);
        let started = Instant::now();
        wait_ready(vm, &procs, &log, cfg.timeout, || ready(vm, topology, &ep))?;
        println!(
            "vm up: {vm} ready after {:.1} s (runner {}, log {})",
            started.elapsed().as_secs_f64(),
            runner.display(),
            log.display()
        );
    }
    Ok(())
}

/// `down` for the microvm backend: stops the recorded processes (agent first, each VM's
/// microvm-run before its virtiofsd), removes the state file and work dirs; keeps the logs for
/// `vm logs`.
pub fn teardown(cfg: &VmConfig, state: &State) -> Vec<String> {
    let mut out: Vec<String> = state
        .procs
        .iter()
        .rev()
        .map(|p| p.stop(Duration::from_secs(10)))
        .collect();
    let work = cfg.runtime.join("microvm");
    if let Err(e) = std::fs::remove_dir_all(&work)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        out.push(format!("cannot remove {}: {e}", work.display()));
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
                    .find(|p| p.what == "microvm-run")
                    .map(|p| p.log.clone()),
                netem: None,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{self, Backend};
    use std::os::unix::fs::PermissionsExt;

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir().join(format!("sshlab-mvm-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A loopback topology: agent 127.0.0.5, mcp 127.0.0.10, target 127.0.0.20, given ports.
    fn topology(agent: u16, mcp: u16, target: u16) -> Topology {
        let text = format!(
            r#"
subnet = "127.0.0.0/24"
netem_port_offset = 100
[bridge]
name = "tbr0"
address = "127.0.0.1/24"
[[vm]]
name = "agent"
tap = "ttap0"
ip = "127.0.0.5"
mac = "02:00:00:00:00:05"
vcpus = 1
memory_mib = 64
[[vm.service]]
name = "control"
port = {agent}
protocol = "http"
description = "control"
[[vm]]
name = "mcp"
tap = "ttap1"
ip = "127.0.0.10"
mac = "02:00:00:00:00:0a"
vcpus = 1
memory_mib = 64
[[vm.service]]
name = "mcp"
port = {mcp}
protocol = "http"
description = "mcp"
[[vm]]
name = "target"
tap = "ttap2"
ip = "127.0.0.20"
mac = "02:00:00:00:00:14"
vcpus = 1
memory_mib = 64
[[vm.service]]
name = "standard"
port = {target}
protocol = "ssh"
description = "sshd"
"#
        );
        Topology::from_toml_str(&text, "test-topology.toml").unwrap()
    }

    fn script(path: &Path, body: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A runner whose microvm-run logs a line, appends "<vm> <pid>" to `order`, then serves
    /// HTTP on ip:port (GET /health answers "healthy") or, with `port` None, never listens.
    fn runner(root: &Path, vm: &str, order: &Path, listen: Option<(&str, u16)>) -> PathBuf {
        let dir = root.join(format!("runner-{vm}"));
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("www/health"), "healthy\n").unwrap();
        let serve = match listen {
            Some((ip, port)) => format!(
                "cd \"$(dirname \"$0\")/../www\" || exit 1\n\
                 exec python3 -m http.server --bind {ip} {port}\n"
            ),
            None => "exec sleep 1000\n".to_owned(),
        };
        script(
            &dir.join("bin/microvm-run"),
            &format!(
                "echo \"{vm}: booting the guest (pid $$)\"\necho \"{vm} $$\" >> {}\n{serve}",
                order.display()
            ),
        );
        dir
    }

    fn config(root: &Path, runners: Vec<(String, PathBuf)>, timeout: u64) -> VmConfig {
        let mut c = VmConfig::new(None, Some(root.join("results")), None);
        c.runtime = root.join("run");
        c.backend = Backend::Microvm;
        c.runners = runners;
        c.check_taps = false;
        c.timeout = Duration::from_secs(timeout);
        c
    }

    /// Reaps and waits (up to 5 s) until `pid` is gone.
    fn gone(pid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            if process::start_time(pid).is_none() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn order_lines(order: &Path) -> Vec<(String, u32)> {
        std::fs::read_to_string(order)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let (vm, pid) = l.split_once(' ').unwrap();
                (vm.to_owned(), pid.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn runner_comes_from_the_flag_then_the_variable() {
        let s = Scratch::new("runnerdir");
        let order = s.0.join("order");
        let r = runner(&s.0, "mcp", &order, None);
        assert_eq!(runner_var("mcp"), "SSHLAB_RUNNER_MCP");
        let cfg = config(&s.0, vec![("mcp".into(), r.clone())], 1);
        assert_eq!(runner_dir(&cfg, "mcp", |_| None).unwrap(), r);
        let cfg = config(&s.0, Vec::new(), 1);
        let env = |k: &str| (k == "SSHLAB_RUNNER_MCP").then(|| r.clone().into_os_string());
        assert_eq!(runner_dir(&cfg, "mcp", env).unwrap(), r);
        let e = runner_dir(&cfg, "agent", env).unwrap_err().to_string();
        assert!(
            e.contains("VM agent") && e.contains("SSHLAB_RUNNER_AGENT"),
            "{e}"
        );
        let env = |_: &str| Some(OsString::from("/nonexistent"));
        let e = runner_dir(&cfg, "agent", env).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/bin/microvm-run not found"), "{e}");
    }

    #[test]
    fn missing_taps_say_run_net_up() {
        let e = check_taps(&topology(1, 2, 3)).unwrap_err().to_string();
        assert!(
            e.contains("TAP ttap0") && e.contains("sudo sshlab net up"),
            "{e}"
        );
    }

    #[test]
    fn up_status_logs_down() {
        let s = Scratch::new("updown");
        let order = s.0.join("order");
        let (a, m, t) = (
            sshlab_testkit::free_port(),
            sshlab_testkit::free_port(),
            sshlab_testkit::free_port(),
        );
        let topo = topology(a, m, t);
        let rt = runner(&s.0, "target", &order, Some(("127.0.0.20", t)));
        // The target's share: virtiofsd-run starts first and makes its socket.
        script(
            &rt.join("bin/virtiofsd-run"),
            &format!(
                "echo \"target-virtiofsd $$\" >> {}\ntouch results.sock\nexec sleep 1000\n",
                order.display()
            ),
        );
        let rm = runner(&s.0, "mcp", &order, Some(("127.0.0.10", m)));
        let ra = runner(&s.0, "agent", &order, Some(("127.0.0.5", a)));
        let cfg = config(
            &s.0,
            vec![
                ("target".into(), rt),
                ("mcp".into(), rm),
                ("agent".into(), ra),
            ],
            20,
        );
        // A process this test started itself, plus a state entry with its pid but another start
        // time (a reused pid): `down` must leave it alone.
        let mut survivor = Command::new("sleep").arg("1000").spawn().unwrap();

        let state = vm::up(&cfg, &topo, None).unwrap();
        assert_eq!(state.backend, "microvm");
        let lines = order_lines(&order);
        let names: Vec<&str> = lines.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(names, ["target-virtiofsd", "target", "mcp", "agent"]);
        let loaded = State::load(&cfg).unwrap().unwrap();
        let recorded: Vec<(String, &str, u32)> = loaded
            .procs
            .iter()
            .map(|p| (p.vm.clone(), p.what.as_str(), p.pid))
            .collect();
        let expected: Vec<(String, &str, u32)> = lines
            .iter()
            .zip(["virtiofsd-run", "microvm-run", "microvm-run", "microvm-run"])
            .map(|((v, pid), what)| (v.trim_end_matches("-virtiofsd").to_owned(), what, *pid))
            .collect();
        assert_eq!(recorded, expected);
        assert!(
            loaded
                .procs
                .iter()
                .all(|p| p.alive() && p.pgid == Some(p.pid))
        );

        let st = vm::status(&cfg, &topo).unwrap().unwrap();
        assert!(st.iter().all(|s| s.running && s.ready), "{st:?}");

        let logs = vm::logs(&cfg, &topo, Some("target"), 1).unwrap();
        assert_eq!(logs.len(), 2, "{logs:?}");
        assert!(logs[0].0.ends_with("target.log"));
        let logs = vm::logs(&cfg, &topo, Some("mcp"), 50).unwrap();
        assert!(logs[0].1.contains("mcp: booting the guest"), "{logs:?}");
        assert!(logs[0].1.contains("GET /health"), "{logs:?}");

        let mut fake = loaded.clone();
        let real = process::start_time(survivor.id()).unwrap();
        fake.procs.push(Proc {
            vm: "agent".into(),
            what: "reused-pid".into(),
            pid: survivor.id(),
            start_time: real + 1,
            log: String::new(),
            term_pid: None,
            pgid: Some(survivor.id()),
        });
        fake.save(&cfg).unwrap();

        let out = vm::down(&cfg).unwrap();
        assert!(
            out[0].contains("reused-pid") && out[0].contains("was not running"),
            "{out:?}"
        );
        assert_eq!(
            out.iter().filter(|l| l.starts_with("stopped")).count(),
            4,
            "{out:?}"
        );
        for (_, pid) in &lines {
            assert!(gone(*pid), "pid {pid} still running");
        }
        assert!(
            survivor.try_wait().unwrap().is_none(),
            "down killed a foreign process"
        );
        assert!(State::load(&cfg).unwrap().is_none());
        // The logs stay for `vm logs`.
        assert!(vm::logs(&cfg, &topo, None, 5).unwrap().len() >= 4);
        assert!(vm::status(&cfg, &topo).unwrap().is_none());
        survivor.kill().unwrap();
        survivor.wait().unwrap();
    }

    #[test]
    fn a_vm_that_never_gets_ready_fails_with_its_log_and_leaves_nothing() {
        let s = Scratch::new("notready");
        let order = s.0.join("order");
        let (a, m, t) = (
            sshlab_testkit::free_port(),
            sshlab_testkit::free_port(),
            sshlab_testkit::free_port(),
        );
        let topo = topology(a, m, t);
        let rt = runner(&s.0, "target", &order, Some(("127.0.0.20", t)));
        let rm = runner(&s.0, "mcp", &order, None);
        let ra = runner(&s.0, "agent", &order, Some(("127.0.0.5", a)));
        let cfg = config(
            &s.0,
            vec![
                ("target".into(), rt),
                ("mcp".into(), rm),
                ("agent".into(), ra),
            ],
            2,
        );
        let e = format!("{:#}", vm::up(&cfg, &topo, None).unwrap_err());
        assert!(
            e.contains("VM mcp: microvm-run not ready within 2 s"),
            "{e}"
        );
        assert!(e.contains("mcp: booting the guest"), "{e}");
        let lines = order_lines(&order);
        let names: Vec<&str> = lines.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(names, ["target", "mcp"], "the agent must not start");
        for (_, pid) in &lines {
            assert!(gone(*pid), "pid {pid} left running");
        }
        assert!(State::load(&cfg).unwrap().is_none());
    }

    #[test]
    fn missing_runner_fails_before_starting_anything() {
        let s = Scratch::new("norunner");
        let order = s.0.join("order");
        let rt = runner(&s.0, "target", &order, None);
        let mut cfg = config(&s.0, vec![("target".into(), rt)], 1);
        cfg.runners.push(("mcp".into(), s.0.join("nope")));
        let e = format!("{:#}", vm::up(&cfg, &topology(1, 2, 3), None).unwrap_err());
        assert!(
            e.contains("VM mcp") && e.contains("nope/bin/microvm-run"),
            "{e}"
        );
        assert!(!order.exists(), "nothing may start");
    }
}
