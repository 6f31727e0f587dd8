//! `sshlab guest <vm>`: the init of one qemu-backend guest, run inside it (virtme-ng boots the
//! Debian kernel with the host's root filesystem and runs this as its command). It gives the
//! guest's NIC (found by the topology's MAC) the VM's address, lo, and a default route via the
//! bridge, then starts the role exactly as the netns backend does ([`super::roles`]): the
//! target's seven sshd instances, `mcp-ssh-server --profile loadtest`, or `sshlab-agent serve`.
//! On the target it applies netem to its own NIC (`--match sport`, the guest kernel has the
//! modules) when asked. It prints one line `SSHLAB-GUEST {json}` ([`GuestReport`]) on the
//! console, which the host reads from the VM's log, and then waits for the role: when the
//! role exits, so does the guest.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sshlab_core::{NetemProfiles, Topology};

use super::{control, net, roles, target};
use crate::netem::{self, NetemPlan, PortMatch};

/// The marker of the report line on the guest's console.
pub const REPORT_MARKER: &str = "SSHLAB-GUEST ";
/// How the init's first line on the console begins (its report follows once the role is up).
pub const GUEST_ANNOUNCE: &str = "sshlab guest ";

/// What a guest says about itself once its role is up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestReport {
    /// The VM.
    pub vm: String,
    /// The guest kernel's release (`uname -r` inside the guest).
    pub kernel: String,
    /// The guest's interface that carries the VM's address.
    pub ifname: String,
    /// CPUs the guest kernel sees.
    pub cpus: usize,
    /// Target (and MCP, for the profiles shaped both ways): netem applied on the guest's own
    /// NIC, or why not.
    pub netem: Option<String>,
    /// Whether that netem is in place.
    pub netem_applied: bool,
}

impl GuestReport {
    /// The report in the console log `log` of a guest that runs `sshlab guest`, waiting up to
    /// `timeout` for it once the init has announced itself ([`GUEST_ANNOUNCE`]); `None` at
    /// once when it has not (a guest with another init, e.g. a NixOS microVM), on timeout, or
    /// on Ctrl-C.
    pub fn wait_in_log(log: &Path, timeout: Duration) -> Option<Self> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = super::process::log_tail(log, 2000);
            if let Some(r) = Self::from_log(&text) {
                return Some(r);
            }
            if !text.contains(GUEST_ANNOUNCE)
                || Instant::now() >= deadline
                || crate::interrupt::requested()
            {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The report in a console log, if the guest printed one.
    pub fn from_log(text: &str) -> Option<Self> {
        text.lines()
            .filter_map(|l| l.split_once(REPORT_MARKER).map(|(_, json)| json))
            .find_map(|json| serde_json::from_str(json.trim()).ok())
    }
}

/// Settings of one guest's init (from `sshlab guest`'s flags, set by the host).
#[derive(Debug, Clone)]
pub struct GuestOpts {
    /// The VM this guest is.
    pub vm: String,
    /// Results directory (agent).
    pub results: PathBuf,
    /// Where mcp-ssh-server and sshlab-agent are.
    pub bin_dir: Option<PathBuf>,
    /// Restart period of the unstable sshd (target).
    pub unstable_every: u64,
    /// netem profiles to apply inside the target guest; `None`: none.
    pub netem: Option<NetemProfiles>,
    /// Mount the virtiofs share with this tag on `results` first (the microvm runners of
    /// `sshlab vm runners`; the qemu backend's share is virtme-ng's 9p, already mounted).
    pub virtiofs: Option<String>,
    /// The name the lab's NIC gets (`eth0`; `eth1` in a NixOS test driver's node).
    pub ifname: String,
    /// Serve the NixOS test driver's root shell on the virtio port [`SHELL_PORT`].
    pub shell: bool,
    /// Serve the host's fault commands on the virtio port [`super::control::PORT`].
    pub control: bool,
}

/// The virtio port (qemu `virtserialport` name) of the driver's root shell.
pub const SHELL_PORT: &str = "sshlab.shell";
/// What the shell prints once it reads commands (the NixOS test driver waits for it).
pub const SHELL_READY: &str = "Spawning backdoor root shell...";

/// Runs the guest's init; returns the role's exit code (the guest then powers off).
pub fn run(opts: &GuestOpts, topology: &Topology) -> anyhow::Result<u8> {
    let vm = topology
        .vm(&opts.vm)
        .with_context(|| format!("no VM {} in the topology", opts.vm))?;
    // This configures the machine's own network: only ever inside a guest virtme-ng booted.
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if !is_virtme_guest(&cmdline) {
        bail!(
            "`sshlab guest` is the init of a qemu-backend guest and runs only inside one \
             (this kernel's command line has no virtme_ marker); use `sshlab vm up --backend qemu`"
        );
    }
    // virtio_net is a module in Debian's kernel: load it (udev may not have), then give the
    // NIC a moment to appear.
    let _ = Command::new("modprobe").arg("virtio_net").status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let ifname = loop {
        match nic_by_mac(Path::new("/sys/class/net"), &vm.mac.to_string()) {
            Ok(name) => break name,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    let prefix = topology.bridge.address.prefix();
    let gateway = topology.bridge.address.addr();
    let ip = vm.ip;
    let (nic, name) = (ifname.clone(), opts.ifname.clone());
    block_on(async move {
        let h = crate::net::connect()?;
        net::configure_inner(&h, &nic, &name, ip, prefix, gateway).await
    })
    .with_context(|| format!("VM {}: network on {ifname}", opts.vm))?;
    println!(
        "{GUEST_ANNOUNCE}{}: {ip}/{prefix} on {} (was {ifname}, MAC {}), gateway {gateway}",
        opts.vm, opts.ifname, vm.mac
    );
    let ifname = opts.ifname.clone();

    let mut report = GuestReport {
        vm: opts.vm.clone(),
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        ifname: ifname.clone(),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        ..GuestReport::default()
    };
    if let Some(tag) = &opts.virtiofs {
        mount_virtiofs(tag, &opts.results)?;
        println!(
            "{GUEST_ANNOUNCE}{}: virtiofs {tag} on {}",
            opts.vm,
            opts.results.display()
        );
    }
    let bins = roles::Bins::find(opts.bin_dir.as_deref())?;
    let log = PathBuf::from(format!("/tmp/sshlab-{}.log", opts.vm));
    let target_dir = Path::new("/tmp/sshlab-target");
    let child = match opts.vm.as_str() {
        "target" => {
            let files = target::prepare(target_dir, topology)?;
            let child = spawn(target::command(&files, opts.unstable_every)?, &log)?;
            let ports: Vec<u16> = files.ports.iter().flat_map(|(_, b, n)| [*b, *n]).collect();
            wait_ports(ip, &ports, Duration::from_secs(120))?;
            if let Some(profiles) = &opts.netem {
                let (applied, what) = shape_own_nic(topology, profiles, &ifname, "target");
                report.netem_applied = applied;
                report.netem = Some(what);
            }
            child
        }
        "mcp" => {
            // The other way of the profiles shaped both ways: the requests to the target.
            if let Some(profiles) = &opts.netem {
                let (applied, what) = shape_own_nic(topology, profiles, &ifname, "mcp");
                report.netem_applied = applied;
                report.netem = Some(what);
            }
            spawn(roles::mcp_command(&bins, topology)?, &log)?
        }
        "agent" => spawn(roles::agent_command(&bins, topology, &opts.results)?, &log)?,
        other => bail!("VM {other} has no role"),
    };
    if opts.shell {
        // The target's accounts and files are in its sshd's mount namespace (the child of
        // `unshare`): the shell joins it, as a NixOS node has them in its only one.
        let mount_ns = (opts.vm == "target")
            .then(|| super::process::first_child(child.id()))
            .flatten();
        let mut path: Vec<PathBuf> = [&bins.mcp, &bins.agent]
            .into_iter()
            .chain(std::env::current_exe().ok().as_ref())
            .filter_map(|b| b.parent().map(Path::to_path_buf))
            .collect();
        path.dedup();
        spawn_shell(&path, mount_ns)?;
        println!("{GUEST_ANNOUNCE}{}: root shell on {SHELL_PORT}", opts.vm);
    }
    let role = control::Role::new(child);
    if opts.control {
        control::serve(control::Guest {
            vm: opts.vm.clone(),
            role: role.clone(),
            target_dir: target_dir.to_owned(),
            topology: topology.clone(),
            bins,
            log: log.clone(),
            ifname: ifname.clone(),
        });
        println!(
            "{GUEST_ANNOUNCE}{}: fault commands on {}",
            opts.vm,
            control::PORT
        );
    }
    println!(
        "{REPORT_MARKER}{}",
        serde_json::to_string(&report).context("report")?
    );
    let status: ExitStatus = role.wait().context("waiting for the role")?;
    eprintln!(
        "sshlab guest {}: the role exited ({status}); tail of {}:\n{}",
        opts.vm,
        log.display(),
        super::process::log_tail(&log, 20)
    );
    Ok(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1))
}

/// Mounts the virtiofs share `tag` on `dir` (created: the guest's /var is a writable overlay;
/// its root is the host's, read-only). Debian's kernel has virtiofs as a module.
fn mount_virtiofs(tag: &str, dir: &Path) -> anyhow::Result<()> {
    let _ = Command::new("modprobe").arg("virtiofs").status();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    nix::mount::mount(
        Some(tag),
        dir,
        Some("virtiofs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "cannot mount the virtiofs share {tag} on {} (no vhost-user-fs device with that \
             tag, or no virtiofsd behind it)",
            dir.display()
        )
    })
}

/// Whether a kernel command line is a virtme-ng guest's (it passes `virtme_*` parameters).
fn is_virtme_guest(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|p| p.starts_with("virtme_hostname=") || p.starts_with("virtme_root_user="))
}

/// The interface under `sys_class_net` whose address is `mac` (case-insensitive).
pub fn nic_by_mac(sys_class_net: &Path, mac: &str) -> anyhow::Result<String> {
    let want = mac.to_ascii_lowercase();
    let entries = std::fs::read_dir(sys_class_net)
        .with_context(|| format!("cannot list {}", sys_class_net.display()))?;
    let mut seen = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let addr = std::fs::read_to_string(e.path().join("address")).unwrap_or_default();
        if addr.trim().eq_ignore_ascii_case(&want) {
            return Ok(name);
        }
        seen.push(format!("{name} {}", addr.trim()));
    }
    bail!(
        "no network interface has MAC {mac} (vms/topology.toml); the guest has: {}",
        seen.join(", ")
    )
}

/// netem on the guest's own NIC (the qemu backend's guests, when the host kernel lacks the
/// qdiscs): `(applied, what happened)`. The target shapes its replies (source ports), every
/// profile; the MCP guest shapes its requests to the target (destination ports), the profiles
/// shaped both ways only, and clears what it shaped before when there are none. Loads the
/// qdisc modules first (the guest kernel has them as modules).
pub(super) fn shape_own_nic(
    topology: &Topology,
    profiles: &NetemProfiles,
    ifname: &str,
    vm: &str,
) -> (bool, String) {
    for m in ["sch_prio", "sch_netem", "cls_u32"] {
        let _ = Command::new("modprobe").arg(m).status();
    }
    let plan = match vm {
        "mcp" => NetemPlan::both_ways(profiles, ifname, PortMatch::Sport.opposite()),
        _ => NetemPlan::new(topology, profiles, Some(ifname), Some(PortMatch::Sport)),
    };
    let plan = match plan {
        Ok(p) => p,
        Err(e) => return (false, format!("netem plan: {e}")),
    };
    let done = match plan.classes.is_empty() {
        true => netem::clear(&plan),
        false => netem::apply(&plan),
    };
    match done {
        Ok(_) if plan.classes.is_empty() => (true, format!("nothing to shape in the {vm} guest")),
        Ok(_) => (
            true,
            format!(
                "applied in the {vm} guest on {ifname} (match {})",
                plan.port_match.as_str()
            ),
        ),
        Err(e) => (false, format!("not applied in the {vm} guest: {e}")),
    }
}

/// The NixOS test driver's backdoor, as nixpkgs `nixos/modules/testing/test-instrumentation.nix`
/// (`backdoorService`) has it: a root bash in /tmp reading commands from a virtio channel and
/// writing their output back (stderr to the console), after one line saying it is ready. Here
/// the channel is the virtio port [`SHELL_PORT`] (no tty, so no `stty raw`; a port opens once,
/// so bash reads its commands from stdin, one byte at a time as from any pipe), `path` goes first
/// on `PATH` (a node's system packages: sshlab, sshlab-agent, mcp-ssh-server), and with
/// `mount_ns` (a pid) it runs in that process's mount namespace.
fn spawn_shell(path: &[PathBuf], mount_ns: Option<u32>) -> anyhow::Result<std::process::Child> {
    let _ = Command::new("modprobe").arg("virtio_console").status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let port = loop {
        match virtio_port(Path::new("/sys/class/virtio-ports"), SHELL_PORT) {
            Some(dev) => break Path::new("/dev").join(dev),
            None if Instant::now() >= deadline => {
                bail!("no virtio port {SHELL_PORT} in this guest (`vm up --test-driver` adds it)")
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let dirs: Vec<String> = path.iter().map(|d| d.display().to_string()).collect();
    let script = format!(
        "export USER=root HOME=/root\n\
         if [ -e /etc/profile ]; then set +u; . /etc/profile; fi\n\
         export PATH=\"{}:$PATH\" PAGER=\n\
         cd /tmp\n\
         exec <>\"$0\" >&0\n\
         echo \"{SHELL_READY}\"\n\
         PS1=\"\" exec bash --norc -s\n",
        dirs.join(":")
    );
    let mut cmd = match mount_ns {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--target={pid}"))
                .args(["--mount", "--", "bash"]);
            c
        }
        None => Command::new("bash"),
    };
    cmd.args(["-c", &script])
        .arg(&port)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd.spawn()
        .with_context(|| format!("cannot start the root shell on {}", port.display()))
}

/// The device name (`vport1p2`) of the virtio port called `name`, from `sys_class` (sysfs'
/// `/sys/class/virtio-ports`, one directory per port with its `name`).
pub fn virtio_port(sys_class: &Path, name: &str) -> Option<String> {
    std::fs::read_dir(sys_class)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| std::fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.trim() == name))
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

/// Starts a role with its output appended to `log` (a role a fault restarts keeps the first
/// one's log).
pub(super) fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<std::process::Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    cmd.spawn().context("cannot start the role")
}

fn wait_ports(ip: Ipv4Addr, ports: &[u16], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if super::ports_open(ip, ports, Duration::from_millis(300)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the target's sshd ports on {ip} did not open within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nic_is_found_by_its_mac() {
        let d = tempfile::tempdir().unwrap();
        for (name, mac) in [
            ("lo", "00:00:00:00:00:00"),
            ("enp0s10", "02:00:00:b2:00:14"),
        ] {
            std::fs::create_dir_all(d.path().join(name)).unwrap();
            std::fs::write(d.path().join(name).join("address"), format!("{mac}\n")).unwrap();
        }
        assert_eq!(
            nic_by_mac(d.path(), "02:00:00:B2:00:14").unwrap(),
            "enp0s10"
        );
        let e = nic_by_mac(d.path(), "02:00:00:b2:00:05")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("02:00:00:b2:00:05") && e.contains("enp0s10"),
            "{e}"
        );
    }

    #[test]
    fn the_shell_port_is_found_by_its_name() {
        let d = tempfile::tempdir().unwrap();
        for (dev, name) in [("vport1p1", "virtme.stdin"), ("vport2p1", SHELL_PORT)] {
            std::fs::create_dir_all(d.path().join(dev)).unwrap();
            std::fs::write(d.path().join(dev).join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(
            virtio_port(d.path(), SHELL_PORT).as_deref(),
            Some("vport2p1")
        );
        assert_eq!(virtio_port(d.path(), "nope"), None);
    }

    #[test]
    fn only_a_virtme_guest_runs_the_guest_init() {
        assert!(is_virtme_guest(
            "virtme_hostname=virtme-ng nr_open=1048576 console=ttyS0 init=/x/virtme-ng-init"
        ));
        assert!(!is_virtme_guest(
            "BOOT_IMAGE=/vmlinuz-6.1.0-48-amd64 root=/dev/vda1 ro quiet"
        ));
    }

    #[test]
    fn the_report_is_read_back_from_a_console_log() {
        let r = GuestReport {
            vm: "target".into(),
            kernel: "6.1.0-48-amd64".into(),
            ifname: "eth0".into(),
            cpus: 4,
            netem: Some("applied".into()),
            netem_applied: true,
        };
        let log = format!(
            "[    1.2] virtio_net\nnoise {REPORT_MARKER}{{bad\n{REPORT_MARKER}{}\n",
            serde_json::to_string(&r).unwrap()
        );
        assert_eq!(GuestReport::from_log(&log), Some(r));
        assert_eq!(GuestReport::from_log("nothing"), None);
    }
}
