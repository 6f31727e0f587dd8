//! The host's fault commands into a guest (qemu and microvm backends), and the guest's side.
//!
//! The channel is a virtio serial port, [`PORT`], that qemu connects to a unix socket in the
//! hypervisor's working directory ([`host_socket`]), as the NixOS test driver's shell is:
//! nothing crosses the lab network, so a partition fault cannot cut it and the Agent VM cannot
//! reach it. The host connects, writes one [`Request`] as a JSON line and reads one [`Reply`]
//! line. Two executors serve the port in a guest ([`Executor`]):
//! - `sshlab guest`, the init of the qemu backend's guests and of `sshlab vm runners`' ones,
//!   with the same code the netns backend runs on the host: an sshd killed with its sessions
//!   and kept down by its supervisor's flag, the MCP server killed and started again (the init
//!   does not take that exit for the role's end), and netem re-applied to the guest's own NIC;
//! - `sshlab guest-control` in a NixOS microVM (vms/control.nix), whose roles are systemd
//!   units: the unit's whole cgroup SIGKILLed and the unit stopped (so its `Restart=` does not
//!   bring it back), then started again.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sshlab_core::{NetemProfiles, Topology};

use super::Backend;
use super::roles::Bins;

/// The virtio port's name in the guest.
pub const PORT: &str = "sshlab.control";
/// The socket's name in the hypervisor's working directory on the host (vms/control.nix names
/// it too: microvm.nix's qemu runs in the runner's working directory).
pub const SOCKET: &str = "control.sock";

/// Where VM `vm`'s control socket is on the host: its hypervisor's working directory under the
/// lab's runtime directory (`qemu/<vm>` or `microvm/<vm>`). The netns backend has none.
pub fn host_socket(runtime: &Path, backend: Backend, vm: &str) -> Option<PathBuf> {
    match backend {
        Backend::Qemu => Some(runtime.join("qemu").join(vm).join(SOCKET)),
        Backend::Microvm => Some(runtime.join("microvm").join(vm).join(SOCKET)),
        Backend::Netns => None,
    }
}

/// One request: a command and its number, which the reply repeats (a reply the host gave up
/// waiting for must not be taken for the next command's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Unique per command (the host's clock in ns).
    pub id: u64,
    /// What to do.
    #[serde(flatten)]
    pub command: Command,
}

/// One command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Command {
    /// Kill the target's sshd of `base` and its sessions; keep it down.
    SshdKill {
        /// Its base port.
        base: u16,
    },
    /// Let it up again.
    SshdBack {
        /// Its base port.
        base: u16,
    },
    /// Kill mcp-ssh-server (SIGKILL).
    McpKill,
    /// Start it again, as the guest first did.
    McpStart,
    /// Apply these profiles to the guest's own NIC: the target's every one (source ports),
    /// the MCP guest's those shaped both ways (destination ports).
    Netem {
        /// The profiles.
        profiles: NetemProfiles,
    },
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The request's number.
    #[serde(default)]
    pub id: u64,
    /// Done.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Host: sends `cmd` through the socket `socket` and waits up to `timeout` for the answer.
pub fn send(socket: &Path, cmd: &Command, timeout: Duration) -> anyhow::Result<()> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the guest's control port ({})",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut line = serde_json::to_string(&Request {
        id,
        command: cmd.clone(),
    })?;
    line.push('\n');
    s.write_all(line.as_bytes())
        .context("cannot write to the guest's control port")?;
    let deadline = Instant::now() + timeout;
    let mut answers = BufReader::new(&s);
    let reply = loop {
        let mut answer = String::new();
        answers
            .read_line(&mut answer)
            .with_context(|| format!("no answer from the guest within {timeout:?}"))?;
        if answer.is_empty() {
            bail!("the guest's control port closed without an answer");
        }
        // Answers to earlier requests the host gave up on are not this one's.
        match serde_json::from_str::<Reply>(answer.trim()) {
            Ok(r) if r.id == id => break r,
            _ if Instant::now() < deadline => continue,
            _ => bail!("no answer to this request from the guest within {timeout:?}"),
        }
    };
    match reply.ok {
        true => Ok(()),
        false => bail!(
            "the guest could not: {}",
            reply.error.unwrap_or_else(|| "no reason given".into())
        ),
    }
}

/// Guest: the role the init waits on, which a fault may kill and start again.
#[derive(Debug)]
pub struct Role {
    child: Mutex<Child>,
    /// Killed by a fault: its exit is not the role's end.
    faulted: AtomicBool,
}

impl Role {
    /// The role `child`.
    pub fn new(child: Child) -> Arc<Self> {
        Arc::new(Self {
            child: Mutex::new(child),
            faulted: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current process's pid.
    pub fn id(&self) -> u32 {
        self.lock().id()
    }

    /// Waits until the role exits by itself (a fault's kill and restart are not its end).
    pub fn wait(&self) -> std::io::Result<ExitStatus> {
        loop {
            {
                let mut c = self.lock();
                if let Some(status) = c.try_wait()?
                    && !self.faulted.load(Ordering::SeqCst)
                {
                    return Ok(status);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn faulted(&self) -> bool {
        self.faulted.load(Ordering::SeqCst)
    }

    fn kill(&self) -> anyhow::Result<()> {
        let mut c = self.lock();
        self.faulted.store(true, Ordering::SeqCst);
        let _ = c.kill();
        c.wait().context("waiting for the killed role")?;
        Ok(())
    }

    fn replace(&self, child: Child) {
        let mut c = self.lock();
        *c = child;
        self.faulted.store(false, Ordering::SeqCst);
    }
}

/// What the guest's init hands its control port.
#[derive(Debug)]
pub struct Guest {
    /// The VM.
    pub vm: String,
    /// Its role.
    pub role: Arc<Role>,
    /// The target's files (its sshds' configurations and down flags).
    pub target_dir: PathBuf,
    /// The lab.
    pub topology: Topology,
    /// The lab's binaries.
    pub bins: Bins,
    /// The role's log.
    pub log: PathBuf,
    /// The lab NIC.
    pub ifname: String,
}

/// Where a NixOS guest's executor flags the units a fault keeps down (one empty file per unit,
/// named after it): what starts a unit behind the fault's back checks it, as
/// `sshd-unstable-restart` does in vms/target.nix (`ConditionPathExists=!`), the way the other
/// backends' supervisors check their down flags.
pub const DOWN_DIR: &str = "/run/sshlab-control/down";

/// A NixOS microVM's roles, as systemd units (`sshlab guest-control`'s flags, which
/// vms/control.nix sets from nix/lib/lab.nix and the role modules).
#[derive(Debug, Clone, PartialEq)]
pub struct Units {
    /// The VM.
    pub vm: String,
    /// systemctl (the guest's systemd's own).
    pub systemctl: PathBuf,
    /// Each target sshd's unit, by base port.
    pub sshd: Vec<(u16, String)>,
    /// mcp-ssh-server's unit.
    pub mcp: Option<String>,
    /// Where the units a fault keeps down are flagged ([`DOWN_DIR`]).
    pub down_dir: PathBuf,
}

impl Units {
    /// The systemctl invocations that carry out `cmd`, in order. A kill is SIGKILL to every
    /// process of the unit's cgroup (an sshd's sessions are in it: the target's PAM stack has
    /// no pam_systemd), as a crash would, then a stop: the unit's `Restart=` would otherwise
    /// bring it back within a second. The stop finds it dead, or restarted and then stops it.
    pub fn plan(&self, cmd: &Command) -> anyhow::Result<Vec<Vec<String>>> {
        let argv = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        let unit = self.unit(cmd)?;
        // `reset-failed` first: a unit that failed to restart too often refuses `start`.
        Ok(match cmd {
            Command::SshdKill { .. } | Command::McpKill => vec![
                argv(&["kill", "--signal=SIGKILL", unit]),
                argv(&["stop", unit]),
            ],
            _ => vec![argv(&["reset-failed", unit]), argv(&["start", unit])],
        })
    }

    /// The unit `cmd` acts on.
    fn unit(&self, cmd: &Command) -> anyhow::Result<&str> {
        match cmd {
            Command::SshdKill { base } | Command::SshdBack { base } => self
                .sshd
                .iter()
                .find(|(b, _)| b == base)
                .map(|(_, u)| u.as_str())
                .with_context(|| format!("VM {}: no sshd unit for port {base}", self.vm)),
            Command::McpKill | Command::McpStart => self
                .mcp
                .as_deref()
                .with_context(|| format!("VM {}: no mcp-ssh-server unit", self.vm)),
            Command::Netem { .. } => bail!(
                "VM {}: netem is shaped on the host's TAP on the microvm backend, not in the \
                 guest",
                self.vm
            ),
        }
    }

    fn execute(&self, cmd: &Command) -> anyhow::Result<()> {
        let plan = self.plan(cmd)?;
        // Flagged down before the kill, let up before the start.
        let flag = self.down_dir.join(self.unit(cmd)?);
        match matches!(cmd, Command::SshdKill { .. } | Command::McpKill) {
            true => {
                std::fs::create_dir_all(&self.down_dir)
                    .with_context(|| format!("cannot create {}", self.down_dir.display()))?;
                std::fs::write(&flag, b"")
                    .with_context(|| format!("cannot flag {}", flag.display()))?;
            }
            false => match std::fs::remove_file(&flag) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", flag.display()));
                }
                _ => {}
            },
        }
        for args in plan {
            let out = std::process::Command::new(&self.systemctl)
                .args(&args)
                .output()
                .with_context(|| format!("cannot run {}", self.systemctl.display()))?;
            // A failed `reset-failed` (nothing failed) changes nothing; anything else is said.
            if !out.status.success() && args[0] != "reset-failed" {
                bail!(
                    "systemctl {} exited {}: {}",
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok(())
    }
}

/// Who carries out the host's commands in a guest.
#[derive(Debug)]
pub enum Executor {
    /// `sshlab guest`: the init of the qemu backend's guests (and of `sshlab vm runners`'),
    /// which runs the role itself.
    Init(Guest),
    /// `sshlab guest-control` in a NixOS microVM, whose roles are systemd units.
    Systemd(Units),
}

impl Executor {
    fn vm(&self) -> &str {
        match self {
            Self::Init(g) => &g.vm,
            Self::Systemd(u) => &u.vm,
        }
    }

    fn execute(&self, cmd: &Command) -> anyhow::Result<()> {
        match self {
            Self::Init(g) => execute(g, cmd),
            Self::Systemd(u) => u.execute(cmd),
        }
    }
}

/// How long a guest waits for its control port to appear.
const PORT_WAIT: Duration = Duration::from_secs(15);

/// The guest's control port's device, once it appears (within [`PORT_WAIT`]).
fn find_port() -> Option<PathBuf> {
    let _ = std::process::Command::new("modprobe")
        .arg("virtio_console")
        .status();
    let deadline = Instant::now() + PORT_WAIT;
    loop {
        match super::guest::virtio_port(Path::new("/sys/class/virtio-ports"), PORT) {
            Some(dev) => return Some(Path::new("/dev").join(dev)),
            None if Instant::now() >= deadline => return None,
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Serves the port at `port` for ever.
fn serve_port(x: &Executor, port: &Path) -> ! {
    loop {
        if let Err(e) = session(x, port) {
            eprintln!("sshlab guest {}: control port: {e:#}", x.vm());
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Guest init: serves [`PORT`] on a thread of its own, for as long as the guest runs. A guest
/// without the port (a kernel without virtio_console) goes on without it, saying so: its role
/// matters more than the faults, which then fail with "no answer".
pub fn serve(g: Guest) {
    std::thread::spawn(move || {
        let x = Executor::Init(g);
        match find_port() {
            Some(port) => serve_port(&x, &port),
            None => eprintln!(
                "sshlab guest {}: no virtio port {PORT}: faults inside this guest cannot run",
                x.vm()
            ),
        }
    });
}

/// `sshlab guest-control`: serves [`PORT`] for a NixOS guest's systemd units; returns only
/// when the port never appears (a VM started without it: the service fails, saying so).
pub fn serve_units(units: Units) -> anyhow::Result<()> {
    let x = Executor::Systemd(units);
    match find_port() {
        Some(port) => {
            println!(
                "sshlab guest-control {}: serving {}",
                x.vm(),
                port.display()
            );
            serve_port(&x, &port)
        }
        None => bail!(
            "VM {}: no virtio port {PORT} within {} s: this VM was started without the \
             control port (vms/control.nix adds it to microvm.nix's qemu)",
            x.vm(),
            PORT_WAIT.as_secs()
        ),
    }
}

/// Reads commands until the port reports the host gone.
fn session(x: &Executor, port: &Path) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(port)
        .with_context(|| format!("cannot open {}", port.display()))?;
    let mut out = file.try_clone()?;
    let mut lines = BufReader::new(file);
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line)? == 0 {
            // No host connected: wait for the next one.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Request>(line.trim()) {
            Ok(req) => match x.execute(&req.command) {
                Ok(()) => Reply {
                    id: req.id,
                    ok: true,
                    error: None,
                },
                Err(e) => Reply {
                    id: req.id,
                    ok: false,
                    error: Some(format!("{e:#}")),
                },
            },
            Err(e) => Reply {
                id: 0,
                ok: false,
                error: Some(format!("not a command: {e}")),
            },
        };
        let mut text = serde_json::to_string(&reply)?;
        text.push('\n');
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
}

/// [`Executor::Init`]'s commands.
fn execute(g: &Guest, cmd: &Command) -> anyhow::Result<()> {
    match (g.vm.as_str(), cmd) {
        ("target", Command::SshdKill { base }) => {
            super::faults::kill_sshd(&g.target_dir, g.role.id(), *base)
        }
        ("target", Command::SshdBack { base }) => super::faults::allow_sshd(&g.target_dir, *base),
        (vm @ ("target" | "mcp"), Command::Netem { profiles }) => {
            let (applied, what) = super::guest::shape_own_nic(&g.topology, profiles, &g.ifname, vm);
            match applied {
                true => Ok(()),
                false => bail!("{what}"),
            }
        }
        ("mcp", Command::McpKill) => g.role.kill(),
        // Idempotent: only a role a fault killed is started again.
        ("mcp", Command::McpStart) if g.role.faulted() => {
            let cmd = super::roles::mcp_command(&g.bins, &g.topology)?;
            g.role.replace(super::guest::spawn(cmd, &g.log)?);
            Ok(())
        }
        ("mcp", Command::McpStart) => Ok(()),
        (vm, cmd) => bail!("VM {vm} does not take {cmd:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line_each() {
        let r = Request {
            id: 7,
            command: Command::SshdKill { base: 2222 },
        };
        let text = serde_json::to_string(&r).expect("json");
        assert_eq!(text, r#"{"id":7,"op":"sshd-kill","base":2222}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).expect("back"), r);
        let start = Request {
            id: 8,
            command: Command::McpStart,
        };
        assert_eq!(
            serde_json::to_string(&start).expect("json"),
            r#"{"id":8,"op":"mcp-start"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"id":1,"op":"reboot"}"#).is_err());
    }

    /// A NixOS guest's units: the whole cgroup killed then stopped, started after a
    /// reset-failed; what the VM has no unit for is refused, and so is netem (the host's).
    #[test]
    fn systemd_units_are_killed_stopped_and_started() {
        let units = |vm: &str| Units {
            vm: vm.into(),
            systemctl: "/run/current-system/sw/bin/systemctl".into(),
            sshd: vec![(2222, "sshd-standard.service".into())],
            mcp: (vm == "mcp").then(|| "mcp-ssh-server.service".into()),
            down_dir: DOWN_DIR.into(),
        };
        let words =
            |plan: Vec<Vec<String>>| plan.into_iter().map(|a| a.join(" ")).collect::<Vec<_>>();
        let target = units("target");
        assert_eq!(
            words(
                target
                    .plan(&Command::SshdKill { base: 2222 })
                    .expect("plan")
            ),
            [
                "kill --signal=SIGKILL sshd-standard.service",
                "stop sshd-standard.service"
            ]
        );
        assert_eq!(
            words(
                target
                    .plan(&Command::SshdBack { base: 2222 })
                    .expect("plan")
            ),
            [
                "reset-failed sshd-standard.service",
                "start sshd-standard.service"
            ]
        );
        let e = target.plan(&Command::SshdKill { base: 2223 }).unwrap_err();
        assert!(e.to_string().contains("no sshd unit for port 2223"), "{e}");
        let e = target.plan(&Command::McpKill).unwrap_err();
        assert!(e.to_string().contains("no mcp-ssh-server unit"), "{e}");
        let e = target
            .plan(&Command::Netem {
                profiles: NetemProfiles { profiles: vec![] },
            })
            .unwrap_err();
        assert!(e.to_string().contains("host's TAP"), "{e}");
        let mcp = units("mcp");
        assert_eq!(
            words(mcp.plan(&Command::McpKill).expect("plan")),
            [
                "kill --signal=SIGKILL mcp-ssh-server.service",
                "stop mcp-ssh-server.service"
            ]
        );
        assert_eq!(
            words(mcp.plan(&Command::McpStart).expect("plan")),
            [
                "reset-failed mcp-ssh-server.service",
                "start mcp-ssh-server.service"
            ]
        );
    }

    /// A unit a fault keeps down is flagged before its kill and let up before its start
    /// (`true` stands in for systemctl: the flags are what is checked here).
    #[test]
    fn a_unit_kept_down_is_flagged_for_what_would_start_it() {
        let d = tempfile::tempdir().expect("tempdir");
        let units = Units {
            vm: "target".into(),
            systemctl: "true".into(),
            sshd: vec![(2227, "sshd-unstable.service".into())],
            mcp: None,
            down_dir: d.path().join("down"),
        };
        let flag = d.path().join("down/sshd-unstable.service");
        units
            .execute(&Command::SshdKill { base: 2227 })
            .expect("kill");
        assert!(flag.exists());
        units
            .execute(&Command::SshdBack { base: 2227 })
            .expect("back");
        assert!(!flag.exists());
        units
            .execute(&Command::SshdBack { base: 2227 })
            .expect("back again: nothing to remove");
    }

    /// A role a fault kills is not the role's end; its replacement's exit is.
    #[test]
    fn a_faulted_role_is_waited_through_its_restart() {
        let sleep = |s: &str| {
            std::process::Command::new("sleep")
                .arg(s)
                .spawn()
                .expect("sleep")
        };
        let role = Role::new(sleep("30"));
        let r = role.clone();
        let waiter = std::thread::spawn(move || r.wait());
        role.kill().expect("kill");
        std::thread::sleep(Duration::from_millis(300));
        assert!(!waiter.is_finished(), "the kill ended the wait");
        role.replace(sleep("0.2"));
        let status = waiter.join().expect("join").expect("status");
        assert!(status.success());
    }
}
