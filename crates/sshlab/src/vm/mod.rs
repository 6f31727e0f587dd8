//! `sshlab vm up|down|status|logs`, three backends behind one seam ([`Backend`], dispatched
//! by `up`, `teardown` and `status`, and stored typed in the state file):
//! - `netns` ([`netns`]): each VM is a network namespace with its processes, no hypervisor;
//! - `qemu` ([`qemu`]): each VM is a real guest booted by virtme-ng, running `sshlab guest`
//!   ([`guest`]) with the same role definitions ([`roles`], [`target`]);
//! - `microvm` ([`microvm`]): each VM is its microvm.nix runner, started unprivileged on the
//!   TAPs `sshlab net up` made ([`runners`] builds such runners without Nix).
//!
//! qemu and microvm share their process handling, `down` and `status` ([`hypervisor`]). Errors
//! a caller must tell apart are typed, with exit codes ([`Error`]).
//!
//! Everything happens in the namespace sshlab runs in (the caller's `--netns OUTER`, entered
//! before this module runs): the bridge and the veths' host ends live there, the VMs'
//! namespaces hang off it. Nothing is created in any other namespace. The state file
//! (`<runtime>/state.json`) lists exactly what `up` created and started, so `status` and `down`
//! work from another shell, and `down` removes exactly that.

pub mod accel;
pub mod control;
pub mod dirs;
pub mod error;
pub mod faults;
pub mod guest;
pub mod hypervisor;
pub mod invoker;
pub mod microvm;
pub mod net;
pub mod netns;
pub mod process;
pub mod qemu;
pub mod roles;
pub mod runners;
pub mod shaping;
pub mod target;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sshlab_core::{NetemProfiles, Topology};

pub use error::Error;
pub use invoker::Invoker;
pub use process::Proc;
pub use shaping::LabNetem;

/// The state file's name in a lab's runtime directory.
const STATE_FILE: &str = "state.json";

/// Which backend boots the VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Network + mount namespaces, no hypervisor.
    #[default]
    Netns,
    /// microvm.nix runners (`SSHLAB_RUNNER_<VM>`).
    Microvm,
    /// qemu guests booted by virtme-ng from the host's root filesystem (no Nix).
    Qemu,
}

impl Backend {
    /// The name in the state file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Netns => "netns",
            Self::Microvm => "microvm",
            Self::Qemu => "qemu",
        }
    }
}

/// How `vm up` is configured (from the command line).
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Lab name: `default`, or the outer namespace's name.
    pub lab: String,
    /// Prefix of the VMs' namespace names (`sshlab-`, or `<outer>-`).
    pub ns_prefix: String,
    /// Runtime directory (state, logs, target files): `<root>/<lab>`, the root by
    /// [`Invoker::runtime_root`], or another user's where their lab already is.
    pub runtime: PathBuf,
    /// The uid that owns `runtime` when it is another user's lab ([`VmConfig::locate`]).
    pub runtime_owner: Option<u32>,
    /// Who runs `sshlab` (runtime roots, runner credentials).
    pub invoker: Invoker,
    /// Results directory given to the agent.
    pub results: PathBuf,
    /// `--lab DIR`, when the lab's files come from there (the qemu guests get it too).
    pub lab_dir: Option<PathBuf>,
    /// Where mcp-ssh-server and sshlab-agent are.
    pub bin_dir: Option<PathBuf>,
    /// Readiness timeout per VM (`None`: the backend's default, [`VmConfig::ready_timeout`]).
    pub timeout: Option<Duration>,
    /// Restart period of the unstable sshd, seconds.
    pub unstable_every: u64,
    /// Backend `up` uses (`down` and `status` follow the state file's).
    pub backend: Backend,
    /// microvm runners from `--runner VM=PATH` (before `SSHLAB_RUNNER_<VM>`).
    pub runners: Vec<(String, PathBuf)>,
    /// microvm: require the topology's TAPs before starting (tests on loopback turn it off).
    pub check_taps: bool,
    /// netem/profiles.toml for the target's link: netns `up` applies it, microvm `up` and
    /// `status` check it against the kernel. `None`: `--no-netem` (the degraded ports stay
    /// unshaped and `run latency_test` covers the baseline only).
    pub netem: Option<NetemProfiles>,
    /// qemu: guests shaped as the NixOS test driver's nodes (`--test-driver`).
    pub test_driver: bool,
}

impl VmConfig {
    /// Names from the outer namespace (if any); the runtime dir is this user's own
    /// ([`Invoker::runtime_root`]); [`VmConfig::locate`] may move it to a lab started by the
    /// other side.
    pub fn new(
        outer: Option<&str>,
        results: PathBuf,
        bin_dir: Option<PathBuf>,
        invoker: Invoker,
    ) -> Self {
        let lab = outer.unwrap_or("default").to_owned();
        let ns_prefix = outer.map_or_else(|| "sshlab-".to_owned(), |o| format!("{o}-"));
        let runtime = invoker.runtime_root().join(&lab);
        Self {
            lab,
            ns_prefix,
            runtime,
            runtime_owner: None,
            invoker,
            results,
            lab_dir: None,
            bin_dir,
            timeout: None,
            unstable_every: 30,
            backend: Backend::Netns,
            runners: Vec::new(),
            check_taps: true,
            netem: None,
            test_driver: false,
        }
    }

    /// For `status`, `down`, `logs` and `run`: when this user has no such lab but the other
    /// side does (root's under sudo for the user, the user's for root under sudo), use that
    /// one: only a real directory and state file owned by the uid expected there. `up` never
    /// calls this, so it always starts in this user's own runtime directory.
    pub fn locate(&mut self) {
        if self.state_path().exists() {
            return;
        }
        let euid = self.invoker.euid;
        if let Some((dir, owner)) = self
            .invoker
            .other_runtime_roots()
            .into_iter()
            .map(|(root, owner)| (root.join(&self.lab), owner))
            .find(|(dir, owner)| invoker::owned_state(dir, STATE_FILE, *owner))
        {
            self.runtime = dir;
            self.runtime_owner = (owner != euid).then_some(owner);
        }
    }

    /// How long a VM may take to become ready: `--ready-timeout`, else `default`.
    pub fn ready_timeout(&self, default: Duration) -> Duration {
        self.timeout.unwrap_or(default)
    }

    /// The state file.
    pub fn state_path(&self) -> PathBuf {
        self.runtime.join(STATE_FILE)
    }
}

/// What `up` created, for `status` and `down`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Lab name.
    pub lab: String,
    /// The backend that started the lab.
    pub backend: Backend,
    /// The namespace sshlab ran in (`None`: the caller's own).
    pub outer: Option<String>,
    /// Whether `up` created the bridge (then `down` deletes it).
    pub bridge_created: bool,
    /// The bridge's name.
    pub bridge: String,
    /// VM namespaces created: (vm, namespace).
    pub namespaces: Vec<(String, String)>,
    /// Veths created (host ends).
    pub veths: Vec<String>,
    /// Processes started.
    pub procs: Vec<Proc>,
    /// Results directory.
    pub results: PathBuf,
    /// Unix time of `up`.
    pub started_at: u64,
    /// Whether the target's netem ports are shaped, and why not (absent in older files).
    #[serde(default)]
    pub netem: LabNetem,
    /// qemu backend: the accelerator the guests run on.
    #[serde(default)]
    pub accel: Option<accel::Accel>,
    /// qemu backend: each guest's own report (kernel, CPUs, netem).
    #[serde(default)]
    pub guests: Vec<guest::GuestReport>,
}

impl State {
    /// Reads the state file, `None` when the lab is not up.
    pub fn load(cfg: &VmConfig) -> anyhow::Result<Option<Self>> {
        match std::fs::read(cfg.state_path()) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
                format!("corrupt state file {}", cfg.state_path().display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context("cannot read the state file"),
        }
    }

    /// Writes the state file atomically (a temporary file renamed over it), mode 0644: a
    /// user's `vm status` reads root's (it holds pids and paths, nothing secret).
    pub fn save(&self, cfg: &VmConfig) -> anyhow::Result<()> {
        dirs::create_dir_all(
            &cfg.runtime,
            invoker::runtime_mode(nix::unistd::geteuid().as_raw()),
        )
        .with_context(|| format!("cannot create {}", cfg.runtime.display()))?;
        let tmp = cfg.runtime.join("state.json.tmp");
        dirs::write_file(&tmp, &serde_json::to_vec_pretty(self)?, 0o644)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, cfg.state_path())?;
        Ok(())
    }
}

/// Finds a lab binary: `--bin-dir`, then next to the running `sshlab`, then `$PATH`.
pub fn find_bin(cfg: &VmConfig, name: &str) -> anyhow::Result<PathBuf> {
    find_bin_in(cfg.bin_dir.as_deref(), name)
}

/// Finds `name` in `bin_dir`, then next to the running `sshlab`, then `$PATH`.
pub fn find_bin_in(bin_dir: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    let beside_sshlab = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    bin_dir
        .map(Path::to_path_buf)
        .into_iter()
        .chain(beside_sshlab)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .or_else(|| on_path(name))
        .with_context(|| {
            format!("{name} not found (looked in --bin-dir/SSHLAB_BIN_DIR, next to sshlab, $PATH)")
        })
}

/// `name` in a directory of `$PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The lab's addresses.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    /// Agent control API.
    pub agent: SocketAddr,
    /// MCP server.
    pub mcp: SocketAddr,
    /// Target IP.
    pub target: Ipv4Addr,
    /// The target's clean baseline port: its `standard` sshd (vms/topology.toml).
    pub baseline: u16,
    /// The agent's live dashboard (`None` when the topology gives the agent VM no
    /// `dashboard` service).
    pub dashboard: Option<SocketAddr>,
}

impl Endpoints {
    /// From the topology (VMs agent, mcp, target).
    pub fn new(t: &Topology) -> anyhow::Result<Self> {
        let addr = |vm: &str, svc: &str| -> anyhow::Result<SocketAddr> {
            let v = t
                .vm(vm)
                .with_context(|| format!("no VM {vm} in the topology"))?;
            let s = v
                .services
                .iter()
                .find(|s| s.name == svc)
                .with_context(|| format!("VM {vm} has no service {svc}"))?;
            Ok(SocketAddr::from((v.ip, s.port)))
        };
        Ok(Self {
            agent: addr("agent", "control")?,
            mcp: addr("mcp", "mcp")?,
            target: t.vm("target").context("no VM target")?.ip,
            baseline: addr("target", "standard")?.port(),
            dashboard: addr("agent", "dashboard").ok(),
        })
    }
}

/// Boots the lab. On failure, tears down what this call created and returns the error.
pub fn up(cfg: &VmConfig, topology: &Topology, outer: Option<&str>) -> anyhow::Result<State> {
    // Ctrl-C during `up` stops the waiting; the error path below then stops what was started.
    crate::interrupt::install();
    if let Some(s) = State::load(cfg)? {
        bail!(Error::Conflict(format!(
            "lab {} is already up (since {}, state {}); `sshlab vm down` first",
            s.lab,
            s.started_at,
            cfg.state_path().display()
        )));
    }
    // The runtime root, then the lab's directory: root's shared 0755, a user's 0700.
    if let Some(root) = cfg.runtime.parent() {
        invoker::ensure_runtime_dir(root)?;
    }
    invoker::ensure_runtime_dir(&cfg.runtime)?;
    let mut state = State {
        lab: cfg.lab.clone(),
        backend: cfg.backend,
        outer: outer.map(str::to_owned),
        bridge: topology.bridge.name.clone(),
        results: cfg.results.clone(),
        started_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        ..State::default()
    };
    let built = match cfg.backend {
        Backend::Netns => netns::build(cfg, topology, &mut state),
        Backend::Qemu => qemu::build(cfg, topology, &mut state),
        Backend::Microvm => microvm::build(cfg, topology, &mut state).and_then(|()| {
            // `sshlab net up` shaped the TAP (or not) before the VMs started: record which.
            state.netem = shaping::observe(topology, cfg.netem.as_ref());
            println!("vm up: netem {}", state.netem.describe());
            state.save(cfg)
        }),
    };
    // Ctrl-C after the last wait: still undo, as promised.
    let built = built.and_then(|()| {
        if crate::interrupt::requested() {
            bail!(Error::Interrupted(
                "vm up: interrupted (Ctrl-C or SIGTERM)".into()
            ));
        }
        Ok(())
    });
    match built {
        Ok(()) => Ok(state),
        Err(e) => {
            for line in teardown(cfg, &state) {
                eprintln!("vm up (undo): {line}");
            }
            Err(e)
        }
    }
}

/// Whether every port in `ports` on `ip` accepts a TCP connection within `per_port`.
pub fn ports_open(ip: Ipv4Addr, ports: &[u16], per_port: Duration) -> bool {
    ports.iter().all(|port| {
        std::net::TcpStream::connect_timeout(&SocketAddr::from((ip, *port)), per_port).is_ok()
    })
}

/// `GET /health` answers 200 with "healthy" in the body.
pub fn healthy(addr: SocketAddr) -> bool {
    crate::http::request("GET", addr, "/health", None, Duration::from_secs(2))
        .is_ok_and(|r| r.status == 200 && r.body.contains("healthy"))
}

/// Polls `ready` until it holds; fails when one of `procs` exits first (with the tail of its
/// log) or after `timeout` (with the tail of `log`).
fn wait_ready(
    vm: &str,
    procs: &[Proc],
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if crate::interrupt::requested() {
            bail!(Error::Interrupted(format!(
                "VM {vm}: interrupted while waiting for it (Ctrl-C or SIGTERM)"
            )));
        }
        if let Some(p) = procs.iter().find(|p| !p.alive()) {
            let plog = Path::new(&p.log);
            bail!(Error::NotReady(format!(
                "VM {vm}: {} exited before it was ready; tail of {}:\n{}",
                p.what,
                plog.display(),
                process::log_tail(plog, 20)
            )));
        }
        if Instant::now() >= deadline {
            let what = procs.last().map_or("it", |p| p.what.as_str());
            bail!(Error::NotReady(format!(
                "VM {vm}: {what} not ready within {} s; tail of {}:\n{}",
                timeout.as_secs(),
                log.display(),
                process::log_tail(log, 20)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops what `up` started and removes what it created, by the state's backend. Returns one
/// line per step.
pub fn teardown(cfg: &VmConfig, state: &State) -> Vec<String> {
    match state.backend {
        Backend::Netns => netns::teardown(cfg, state),
        Backend::Microvm | Backend::Qemu => hypervisor::teardown(cfg, state),
    }
}

/// `vm down`: stops and removes what the state file lists.
pub fn down(cfg: &VmConfig) -> anyhow::Result<Vec<String>> {
    let Some(s) = State::load(cfg)? else {
        return Ok(vec![format!("lab {} is not up", cfg.lab)]);
    };
    match cfg.runtime_owner {
        None => {}
        // A user cannot stop root's processes nor remove root's files: say so up front.
        Some(0) => bail!(Error::Conflict(format!(
            "lab {} was started by root ({}): stop it with `sudo sshlab vm down`",
            cfg.lab,
            cfg.runtime.display()
        ))),
        // Root acting on a user's state file: only what that user could have started.
        Some(uid) => {
            if s.backend != Backend::Microvm {
                bail!(Error::Conflict(format!(
                    "{} (owned by uid {uid}) records a {} lab, which only root can start: \
                     refusing to act on it",
                    cfg.state_path().display(),
                    s.backend.as_str()
                )));
            }
            if let Some(p) = s.procs.iter().find(|p| {
                (p.alive() && !(p.owned_by(uid) && p.pgid == Some(p.pid)))
                    || p.members.iter().any(|m| m.alive() && !m.owned_by(uid))
            }) {
                bail!(Error::Conflict(format!(
                    "{} (owned by uid {uid}) names pid {} ({}) or one of its processes, which \
                     is not that user's own: refusing to act on it",
                    cfg.state_path().display(),
                    p.pid,
                    p.what
                )));
            }
        }
    }
    Ok(teardown(cfg, &s))
}

/// One VM's status.
#[derive(Debug, Clone, Serialize)]
pub struct VmStatus {
    /// VM name.
    pub vm: String,
    /// Namespace.
    pub namespace: String,
    /// Its eth0 is up with the topology's address.
    pub network: bool,
    /// Its processes are running.
    pub running: bool,
    /// Its service answers (TCP / health).
    pub ready: bool,
    /// Its log.
    pub log: Option<String>,
    /// Target only: whether its netem ports are shaped (re-checked against the kernel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netem: Option<LabNetem>,
    /// qemu backend: the accelerator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<accel::Accel>,
    /// qemu backend: the guest's kernel release, as the guest reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

/// `vm status`.
pub fn status(cfg: &VmConfig, topology: &Topology) -> anyhow::Result<Option<Vec<VmStatus>>> {
    let Some(state) = State::load(cfg)? else {
        return Ok(None);
    };
    let mut out = match state.backend {
        Backend::Netns => netns::status(&state, topology)?,
        Backend::Microvm | Backend::Qemu => {
            let mut st = hypervisor::status(&state, topology)?;
            for s in &mut st {
                s.accel = state.accel;
                s.kernel = state
                    .guests
                    .iter()
                    .find(|g| g.vm == s.vm)
                    .map(|g| g.kernel.clone());
            }
            st
        }
    };
    if let Some(t) = out
        .iter_mut()
        .find(|s| s.vm == sshlab_core::topology::TARGET_VM)
    {
        t.netem = Some(shaping::verify(&state.netem, topology, cfg.netem.as_ref()));
    }
    Ok(Some(out))
}

/// `vm logs`: the last `lines` lines of each VM's log files in the runtime dir (`<vm>.log`,
/// and `<vm>-virtiofsd.log` for microvm), as (file, tail) pairs; an error when there are none.
pub fn logs(
    cfg: &VmConfig,
    topology: &Topology,
    vm: Option<&str>,
    lines: usize,
) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let vms: Vec<&str> = match vm {
        Some(v) => {
            topology
                .vm(v)
                .with_context(|| format!("no VM {v} in the topology"))?;
            vec![v]
        }
        None => hypervisor::START_ORDER
            .iter()
            .copied()
            .filter(|v| topology.vm(v).is_some())
            .collect(),
    };
    let mut out = Vec::new();
    for v in vms {
        for f in [format!("{v}.log"), format!("{v}-virtiofsd.log")] {
            let p = cfg.runtime.join(f);
            if p.is_file() {
                let tail = process::log_tail(&p, lines);
                out.push((p, tail));
            }
        }
    }
    if out.is_empty() {
        bail!(
            "no logs for {} in {} (is the lab up? `sshlab vm up`)",
            vm.unwrap_or("any VM"),
            cfg.runtime.display()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_outer_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let user = Invoker {
            euid: 4321,
            xdg_runtime_dir: Some(dir.path().to_owned()),
            sudo: None,
        };
        let c = VmConfig::new(None, "/r".into(), None, user.clone());
        assert_eq!(c.ns_prefix, "sshlab-");
        assert_eq!(c.runtime, dir.path().join("sshlab/default"));
        assert_eq!(c.results, PathBuf::from("/r"));
        let c = VmConfig::new(Some("t1"), "/r".into(), None, user);
        assert_eq!(c.ns_prefix, "t1-");
        assert_eq!(c.state_path(), dir.path().join("sshlab/t1/state.json"));
    }

    #[test]
    fn endpoints_come_from_the_topology() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let t = sshlab_core::Lab::load(root).unwrap().topology;
        let e = Endpoints::new(&t).unwrap();
        assert_eq!(e.agent.to_string(), "10.178.0.5:9100");
        assert_eq!(e.mcp.to_string(), "10.178.0.10:3000");
        assert_eq!(e.target.to_string(), "10.178.0.20");
        assert_eq!(
            e.dashboard.map(|d| d.to_string()).as_deref(),
            Some("10.178.0.5:9101")
        );
    }
}
