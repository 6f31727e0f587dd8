//! The microvm backend's process handling against stand-in runners with microvm.nix's
//! interface (`bin/virtiofsd-run`, `bin/microvm-run`) on loopback: start order, readiness,
//! state, logs, `down` stopping exactly what `up` started, and failures that leave nothing
//! running. The stand-ins serve `GET /health` with busybox httpd (`scripts/install-deps vm`
//! installs busybox-static). These were unit tests once; they start processes, so they live
//! here, and the package's check phase (`cargo test --lib` in the Nix sandbox) needs no tool
//! beyond the toolchain.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sshlab::vm::hypervisor::check_taps;
use sshlab::vm::microvm::{runner_dir, runner_var};
use sshlab::vm::{self, Backend, Invoker, Proc, State, VmConfig, process};
use sshlab_core::Topology;

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

/// A loopback topology: agent 127.0.0.5, mcp 127.0.0.10, target 127.0.0.20, given ports, the
/// results share at `<root>/results`.
fn topology(root: &Path, agent: u16, mcp: u16, target: u16) -> Topology {
    let text = format!(
        r#"
subnet = "127.0.0.0/24"
netem_port_offset = 100
[bridge]
name = "tbr0"
address = "127.0.0.1/24"
[results]
host = "{results}"
guest = "/results"
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
"#,
        results = root.join("results").display()
    );
    Topology::from_toml_str(&text, "test-topology.toml").unwrap()
}

/// Three free ports (agent, mcp, target) and the loopback [`topology`] on them.
fn free_topology(root: &Path) -> ((u16, u16, u16), Topology) {
    let ports = (
        sshlab_testkit::free_port(),
        sshlab_testkit::free_port(),
        sshlab_testkit::free_port(),
    );
    (ports, topology(root, ports.0, ports.1, ports.2))
}

/// The three runners as `--runner` pairs, in start order.
fn three(target: PathBuf, mcp: PathBuf, agent: PathBuf) -> Vec<(String, PathBuf)> {
    vec![
        ("target".into(), target),
        ("mcp".into(), mcp),
        ("agent".into(), agent),
    ]
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
        Some((ip, port)) => {
            format!("exec busybox httpd -f -vv -p {ip}:{port} -h \"$(dirname \"$0\")/../www\"\n")
        }
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
    let mut c = VmConfig::new(None, root.join("results"), None, Invoker::from_env());
    c.runtime = root.join("run");
    c.backend = Backend::Microvm;
    c.runners = runners;
    c.check_taps = false;
    c.timeout = Some(Duration::from_secs(timeout));
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let s = Scratch::new("taps");
        let e = check_taps(&topology(&s.0, 1, 2, 3))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("TAP ttap0") && e.contains("sudo sshlab net up"),
            "{e}"
        );
    }

    #[test]
    fn up_status_logs_down() {
        let s = Scratch::new("updown");
        let order = s.0.join("order");
        let ((a, m, t), topo) = free_topology(&s.0);
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
        let cfg = config(&s.0, three(rt, rm, ra), 20);
        // A process this test started itself, plus a state entry with its pid but another start
        // time (a reused pid): `down` must leave it alone.
        let mut survivor = Command::new("sleep").arg("1000").spawn().unwrap();

        let state = vm::up(&cfg, &topo, None).unwrap();
        assert_eq!(state.backend, Backend::Microvm);
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
        // A second `up` while this one runs: refused, with the conflict's code.
        let again = vm::up(&cfg, &topo, None).unwrap_err();
        assert_eq!(vm::Error::exit_code_of(&again), 5, "{again:#}");
        assert!(format!("{again:#}").contains("already up"), "{again:#}");

        let logs = vm::logs(&cfg, &topo, Some("target"), 1).unwrap();
        assert_eq!(logs.len(), 2, "{logs:?}");
        assert!(logs[0].0.ends_with("target.log"));
        let logs = vm::logs(&cfg, &topo, Some("mcp"), 50).unwrap();
        assert!(logs[0].1.contains("mcp: booting the guest"), "{logs:?}");
        assert!(logs[0].1.contains("url:/health"), "{logs:?}");

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
            members: Vec::new(),
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
        let ((a, _, t), topo) = free_topology(&s.0);
        let rt = runner(&s.0, "target", &order, Some(("127.0.0.20", t)));
        let rm = runner(&s.0, "mcp", &order, None);
        let ra = runner(&s.0, "agent", &order, Some(("127.0.0.5", a)));
        let cfg = config(&s.0, three(rt, rm, ra), 2);
        let err = vm::up(&cfg, &topo, None).unwrap_err();
        assert_eq!(vm::Error::exit_code_of(&err), 3, "not ready: {err:#}");
        let e = format!("{err:#}");
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
        let err = vm::up(&cfg, &topology(&s.0, 1, 2, 3), None).unwrap_err();
        assert_eq!(vm::Error::exit_code_of(&err), 2, "bad input: {err:#}");
        let e = format!("{err:#}");
        assert!(
            e.contains("VM mcp") && e.contains("nope/bin/microvm-run"),
            "{e}"
        );
        assert!(!order.exists(), "nothing may start");
    }

    /// Issue 21: `down` returns only when no process the lab started is left, whatever
    /// process group it ended up in. microvm.nix runs virtiofsd under supervisord, which puts
    /// each child in a process group of its own and, on SIGTERM, passes the signal on and
    /// exits; this stand-in `virtiofsd-run` does the same with a child that takes a second to
    /// stop. Checked at once after `down` returns, without waiting.
    #[test]
    fn r21_down_waits_for_processes_outside_the_runners_group() {
        let s = Scratch::new("r21group");
        let order = s.0.join("order");
        let ((a, m, t), topo) = free_topology(&s.0);
        let ra = runner(&s.0, "agent", &order, Some(("127.0.0.5", a)));
        script(
            &ra.join("bin/virtiofsd-run"),
            &format!(
                "setsid sh -c 'echo \"virtiofsd $$\" >> {o}; trap \"sleep 1; exit 0\" TERM; \
                 while :; do sleep 0.1; done' &\n\
                 child=$!\n\
                 trap 'kill -TERM $child; exit 0' TERM\n\
                 touch agent-virtiofs-results.sock\n\
                 while :; do sleep 0.1; done\n",
                o = order.display()
            ),
        );
        let rm = runner(&s.0, "mcp", &order, Some(("127.0.0.10", m)));
        let rt = runner(&s.0, "target", &order, Some(("127.0.0.20", t)));
        let cfg = config(&s.0, three(rt, rm, ra), 20);
        vm::up(&cfg, &topo, None).unwrap();
        let child = order_lines(&order)
            .into_iter()
            .find(|(what, _)| what == "virtiofsd")
            .map(|(_, pid)| pid)
            .expect("the supervised virtiofsd started");
        let pgid = std::fs::read_to_string(format!("/proc/{child}/stat"))
            .ok()
            .and_then(|st| {
                st.rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(2)?
                    .parse::<u32>()
                    .ok()
            });
        assert_eq!(pgid, Some(child), "the child leads a group of its own");
        let out = vm::down(&cfg).unwrap();
        let left = process::start_time(child).is_some();
        if left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child).unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(
            !left,
            "vm down returned while pid {child} (outside the runner's process group) still ran: {out:?}"
        );
    }

    /// Issue 21: microvm.nix runs virtiofsd under supervisord, which restarts a virtiofsd
    /// that exits (then gives up on it) and keeps running itself, so "virtiofsd-run exited"
    /// never happens there; the stand-in does the same. `vm up` says that virtiofsd-run runs
    /// but its socket never appeared, with supervisord's log, and starts no microvm-run whose
    /// qemu would only fail to connect to the socket.
    #[test]
    fn r21_a_supervised_virtiofsd_that_never_starts_is_named() {
        let s = Scratch::new("r21fsd");
        let order = s.0.join("order");
        let ((a, m, t), topo) = free_topology(&s.0);
        let ra = runner(&s.0, "agent", &order, Some(("127.0.0.5", a)));
        script(
            &ra.join("bin/virtiofsd-run"),
            "for i in 1 2 3 4; do\n\
             echo \"INFO spawned: 'virtiofsd-results' with pid $((100 + i))\"\n\
             echo \"INFO exited: virtiofsd-results (exit status 1; not expected)\"\n\
             done\n\
             echo \"INFO gave up: virtiofsd-results entered FATAL state, too many start retries too quickly\"\n\
             exec sleep 1000\n",
        );
        // qemu's vhost-user-fs chardev connects to the socket when it starts.
        let agent_run = ra.join("bin/microvm-run");
        let serve = std::fs::read_to_string(&agent_run).unwrap();
        script(
            &agent_run,
            &format!(
                "[ -e agent-virtiofs-results.sock ] || {{ echo \"qemu-system-x86_64: -chardev \
                 socket,id=fs0,path=agent-virtiofs-results.sock: Failed to connect to \
                 'agent-virtiofs-results.sock': No such file or directory\"; exit 1; }}\n{}",
                serve.trim_start_matches("#!/bin/sh\n")
            ),
        );
        let rm = runner(&s.0, "mcp", &order, Some(("127.0.0.10", m)));
        let rt = runner(&s.0, "target", &order, Some(("127.0.0.20", t)));
        let cfg = config(&s.0, three(rt, rm, ra), 3);
        let err = vm::up(&cfg, &topo, None).unwrap_err();
        let e = format!("{err:#}");
        println!("{e}");
        assert_eq!(vm::Error::exit_code_of(&err), 3, "not ready: {e}");
        assert!(
            e.contains("VM agent: virtiofsd-run (pid")
                && e.contains("no virtiofsd socket appeared")
                && e.contains("supervisord")
                && e.contains("gave up: virtiofsd-results entered FATAL state"),
            "{e}"
        );
        let lines = order_lines(&order);
        let names: Vec<&str> = lines.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(
            names,
            ["target", "mcp"],
            "the agent's microvm-run must not start"
        );
        for (_, pid) in &lines {
            assert!(gone(*pid), "pid {pid} left running");
        }
        assert!(State::load(&cfg).unwrap().is_none());
    }

    /// The Nix-built runners' control port (vms/control.nix, not in the package's sources) is the
    /// one the host connects to and the guest serves, and its executor is `sshlab guest-control`.
    #[test]
    fn the_nix_runners_control_port_is_the_hosts() {
        let nix = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../vms/control.nix"),
        )
        .expect("vms/control.nix");
        let (socket, port) = (vm::control::SOCKET, vm::control::PORT);
        assert!(nix.contains(&format!("path={socket},")), "socket {socket}");
        assert!(nix.contains(&format!("name={port}\"")), "port {port}");
        assert!(nix.contains("\"guest-control\""), "executor");
        // What restarts a unit on its own checks the executor's down flag.
        let target = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../vms/target.nix"),
        )
        .expect("vms/target.nix");
        assert!(
            target.contains(&format!(
                "ConditionPathExists = \"!{}/${{unstableUnit}}.service\"",
                vm::control::DOWN_DIR
            )),
            "the unstable sshd's restart timer ignores the down flag"
        );
    }
}
