//! `sshlab vm`, qemu backend: real guests without Nix. Each VM of vms/topology.toml is a
//! `qemu-system-x86_64` guest with the topology's vCPUs, memory and MAC, started by virtme-ng
//! (`vng`): it boots the Debian kernel of [`guest_kernel::find`] with the host's root filesystem
//! shared read-only (and private overlays for /etc, /var, /tmp ...), so the guest runs the host's
//! own sshd and the lab's binaries. Its command is `sshlab guest <vm>` ([`super::guest`]), the
//! role's init. Networking is the real path: qemu opens the TAP `sshlab net up` made (`-netdev
//! tap,ifname=...`, `queues=<vcpus>` on the multi-queue TAPs); no user networking. The Agent VM
//! gets the host's results directory read-write at the same path (virtme-ng's `--rwdir` over 9p,
//! `--force-9p`: qemu serves it itself, no virtiofsd needed).
//!
//! KVM is used when `/dev/kvm` really runs a guest, TCG otherwise ([`super::accel`]: a probe guest,
//! its verdict kept for the machine's boot, rather than trusting the device node). netem goes on
//! the host's TAP when `net up` could put it there, else inside the target guest on its own NIC
//! (`--match sport`), and the state says which. Process handling (process groups, readiness, logs,
//! teardown) is shared with the microvm backend ([`super::hypervisor`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sshlab_core::Topology;
use sshlab_core::guest_kernel::{self, BOOT, MODULES};

use super::accel::{self, Accel};
use super::dirs;
use super::error::Error;
use super::guest::GuestReport;
use super::hypervisor::{self, START_ORDER};
use super::invoker::prepare_results;
use super::{Endpoints, State, VmConfig, on_path, process, shaping, wait_ready};

/// Everything a qemu guest needs, checked before anything starts; one clear error each.
pub(crate) struct Tools {
    /// The Debian kernel image.
    pub kernel: PathBuf,
    /// virtme-ng's `vng`.
    pub vng: PathBuf,
}

/// Kernel, qemu, vng and `/dev/net/tun`, each named when missing.
pub(crate) fn check_tools() -> anyhow::Result<Tools> {
    let kernel = guest_kernel::find().ok_or_else(|| {
        Error::Missing(format!(
            "no guest kernel: no {BOOT}/vmlinuz-*-amd64 whose {MODULES}/<version> has sch_netem \
             (install Debian's linux-image-amd64: scripts/install-deps vm)"
        ))
    })?;
    if on_path("qemu-system-x86_64").is_none() {
        bail!(Error::Missing(
            "qemu-system-x86_64 is not installed (Debian: qemu-system-x86; scripts/install-deps \
             vm)"
            .into()
        ));
    }
    let vng = on_path("vng").ok_or_else(|| {
        Error::Missing(
            "virtme-ng's `vng` is not on PATH (scripts/install-deps vm installs it into \
             /opt/sshlab-tools/bin for root, ~/.cache/sshlab-tools/bin for others)"
                .into(),
        )
    })?;
    if !Path::new("/dev/net/tun").exists() {
        bail!(Error::Missing(
            "/dev/net/tun is missing: the kernel's tun module is needed for the TAPs \
             (`modprobe tun`)"
                .into()
        ));
    }
    Ok(Tools { kernel, vng })
}

/// Every VM's TAP exists and is this user's to open (owner unset or this euid; root opens any).
fn check_taps(topology: &Topology) -> anyhow::Result<()> {
    hypervisor::check_taps(topology)?;
    let euid = nix::unistd::geteuid().as_raw();
    if euid == 0 {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let h = crate::net::connect()?;
        for vm in &topology.vms {
            let link = crate::net::link::by_name(&h, &vm.tap).await?;
            if let Some(owner) = link.and_then(|l| l.tun).and_then(|t| t.owner)
                && owner != euid
                && owner != u32::MAX
            {
                bail!(Error::Input(format!(
                    "VM {}: TAP {} belongs to uid {owner}, not to this user (uid {euid}): \
                     `sudo sshlab net up --owner {euid}`",
                    vm.name, vm.tap
                )));
            }
        }
        anyhow::Ok(())
    })
}

/// How the Agent VM's guest reaches the host's results directory.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ResultsShare<'a> {
    /// virtme-ng's `--rwdir` over 9p, served by qemu itself (the qemu backend).
    NineP,
    /// A vhost-user-fs device on virtiofsd's socket (a path relative to the runner's working
    /// directory, as microvm.nix has it) with this tag; the guest mounts it itself.
    Virtiofs {
        /// virtiofsd's socket.
        socket: &'a str,
        /// The share's tag.
        tag: &'a str,
    },
}

/// Everything one guest's `vng` command line is made of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuestSpec<'a> {
    /// The Debian kernel image.
    pub kernel: &'a Path,
    /// KVM or TCG.
    pub accel: Accel,
    /// The `sshlab` the guest runs as its init.
    pub sshlab: &'a Path,
    /// `--lab` for the guest's sshlab.
    pub lab_dir: Option<&'a Path>,
    /// `--bin-dir` for the guest's sshlab.
    pub bin_dir: Option<&'a Path>,
    /// The results directory (the same path in the Agent guest as on the host).
    pub results: &'a Path,
    /// Restart period of the unstable sshd.
    pub unstable_every: u64,
    /// Whether the guest applies netem to its own NIC (the target; the MCP guest when a
    /// profile is shaped both ways).
    pub netem_in_guest: bool,
    /// How the Agent guest gets `results`.
    pub share: ResultsShare<'a>,
    /// `Some(socket)`: shaped as a NixOS test driver's node (`vm up --test-driver`): the lab's
    /// NIC is `eth1`, and the guest serves the driver's root shell on the virtio port
    /// [`super::guest::SHELL_PORT`], which qemu connects to a listening unix socket here.
    pub driver_shell: Option<&'a Path>,
    /// `Some(socket)`: the guest takes the host's fault commands on the virtio port
    /// [`super::control::PORT`], which qemu connects to a listening unix socket here (a
    /// relative one in qemu's working directory).
    pub control: Option<&'a Path>,
}

/// The lab NIC's name in a NixOS test driver's node (VLAN 1; eth0 is the driver's own).
pub const DRIVER_IFNAME: &str = "eth1";

/// A path vng and qemu can take: vng hands its arguments to a shell and to qemu's option
/// parser unquoted, so it must be plain (absolute; `[A-Za-z0-9/._+-]`).
pub(crate) fn plain_path(what: &str, p: &Path) -> anyhow::Result<String> {
    let s = p.to_str().unwrap_or_default();
    let ok = p.is_absolute()
        && !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._+-".contains(c));
    if !ok {
        bail!(Error::Input(format!(
            "the qemu backend needs {what} as a plain absolute path ([A-Za-z0-9/._+-]), got {:?}",
            p.display().to_string()
        )));
    }
    Ok(s.to_owned())
}

/// The arguments of `vng` that boot VM `vm` (the program itself is `spec.vng`).
pub(crate) fn vng_args(
    spec: &GuestSpec<'_>,
    topology: &Topology,
    vm: &str,
) -> anyhow::Result<Vec<String>> {
    let v = topology
        .vm(vm)
        .with_context(|| format!("no VM {vm} in the topology"))?;
    let plain_name = |what: &str, s: &str| -> anyhow::Result<()> {
        if s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            bail!(Error::Input(format!(
                "VM {vm}: {what} {s:?} is not plain ([A-Za-z0-9_.-])"
            )));
        }
        Ok(())
    };
    plain_name("TAP name", &v.tap)?;
    let results = plain_path("the results directory", spec.results)?;
    let mut qemu_opts = format!(
        "-netdev tap,id=lab,ifname={},script=no,downscript=no,vhost=off",
        v.tap
    );
    let mut device = format!(" -device virtio-net-pci,netdev=lab,mac={}", v.mac);
    // `sshlab net up` makes a VM's TAP multi-queue when it has more than one vCPU: qemu must
    // open it so, one queue per vCPU (and twice as many MSI-X vectors, plus two).
    if v.multi_queue() {
        qemu_opts.push_str(&format!(",queues={}", v.vcpus));
        device.push_str(&format!(",mq=on,vectors={}", 2 * v.vcpus + 2));
    }
    qemu_opts.push_str(&device);
    let mut args = vec!["--run".to_owned(), plain_path("the kernel", spec.kernel)?];
    if spec.accel == Accel::Tcg {
        args.push("--disable-kvm".into());
    }
    args.extend([
        "--memory".into(),
        format!("{}M", v.memory_mib),
        "--cpus".into(),
        v.vcpus.to_string(),
    ]);
    // 9p for the host's root (and the qemu backend's results share) whether or not a virtiofsd
    // is installed (virtme-ng would switch to virtiofs, and with KVM to another machine type).
    args.push("--force-9p".into());
    let mut guest = plain_path("the sshlab binary", spec.sshlab)?;
    if let Some(dir) = spec.lab_dir {
        guest.push_str(&format!(" --lab {}", plain_path("--lab", dir)?));
    }
    guest.push_str(&format!(
        " guest {vm} --results {results} --unstable-every {}",
        spec.unstable_every
    ));
    if let Some(dir) = spec.bin_dir {
        guest.push_str(&format!(" --bin-dir {}", plain_path("--bin-dir", dir)?));
    }
    if spec.netem_in_guest {
        guest.push_str(" --netem");
    }
    // Named virtio ports (no tty in between) on a bus of their own, qemu listening on each
    // port's unix socket.
    if spec.driver_shell.is_some() || spec.control.is_some() {
        qemu_opts.push_str(" -device virtio-serial-pci,id=sshlab-serial");
    }
    if let Some(socket) = spec.driver_shell {
        let socket = plain_path("the shell's socket", socket)?;
        guest.push_str(&format!(" --ifname {DRIVER_IFNAME} --shell"));
        // As the test driver's `-chardev socket,id=shell` + virtconsole.
        qemu_opts.push_str(&format!(
            " -chardev socket,id=sshlab-shell,path={socket},server=on,wait=off \
             -device virtserialport,bus=sshlab-serial.0,chardev=sshlab-shell,name={}",
            super::guest::SHELL_PORT
        ));
    }
    if let Some(socket) = spec.control {
        // Relative for the runners of `sshlab vm runners`: in the runner's working directory.
        let socket = match socket.to_str() {
            Some(name) if socket.is_relative() => {
                plain_name("the control socket", name)?;
                name.to_owned()
            }
            _ => plain_path("the control socket", socket)?,
        };
        guest.push_str(" --control");
        qemu_opts.push_str(&format!(
            " -chardev socket,id=sshlab-control,path={socket},server=on,wait=off \
             -device virtserialport,bus=sshlab-serial.0,chardev=sshlab-control,name={}",
            super::control::PORT
        ));
    }
    if vm == "agent" {
        match spec.share {
            ResultsShare::NineP => args.push(format!("--rwdir={results}")),
            ResultsShare::Virtiofs { socket, tag } => {
                plain_name("virtiofs socket", socket)?;
                plain_name("virtiofs tag", tag)?;
                // vhost-user needs the guest's RAM in shared memory (microvm.nix 68c9f9c
                // lib/runners/qemu.nix does the same: memfd, share=on, one NUMA node).
                qemu_opts.push_str(&format!(
                    " -object memory-backend-memfd,id=mem,size={}M,share=on \
                     -numa node,memdev=mem -chardev socket,id=fs0,path={socket} \
                     -device vhost-user-fs-pci,chardev=fs0,tag={tag}",
                    v.memory_mib
                ));
                guest.push_str(&format!(" --virtiofs {tag}"));
            }
        }
    }
    args.push(format!("--qemu-opts={qemu_opts}"));
    args.push("--exec".into());
    args.push(guest);
    Ok(args)
}

/// `up` for the qemu backend: fills `state` as it goes (so the caller can undo a failure).
pub fn build(cfg: &VmConfig, topology: &Topology, state: &mut State) -> anyhow::Result<()> {
    let tools = check_tools()?;
    for vm in START_ORDER {
        topology
            .vm(vm)
            .with_context(|| format!("no VM {vm} in the topology"))?;
    }
    // The lab binaries must exist before a guest is booted for them.
    super::roles::Bins::find(cfg.bin_dir.as_deref())?;
    if cfg.check_taps {
        check_taps(topology)?;
    }
    for line in prepare_results(&cfg.results, None)? {
        println!("vm up: {line}");
    }
    let (accel, why) = accel::detect(&tools.kernel, &tools.vng, &cfg.invoker.runtime_root());
    println!(
        "vm up: accelerator {} ({why}); guest kernel {}",
        accel.as_str(),
        tools.kernel.display()
    );
    state.accel = Some(accel);
    // netem: on the host TAP when `net up` put it there, else inside the target guest.
    let host = shaping::observe(topology, cfg.netem.as_ref());
    let netem_in_guest = cfg.netem.is_some() && !host.applied;
    let both_ways = cfg
        .netem
        .as_ref()
        .is_some_and(|n| n.profiles.iter().any(|p| p.both_ways));
    state.netem = host;
    state.save(cfg)?;
    // A TCG boot of the host's root over 9p takes tens of seconds per guest on 2 cores.
    let timeout = cfg.ready_timeout(match accel {
        Accel::Kvm => Duration::from_secs(120),
        Accel::Tcg => Duration::from_secs(420),
    });
    let ep = Endpoints::new(topology)?;
    let sshlab = std::env::current_exe().context("the sshlab binary's path")?;
    for vm in START_ORDER {
        let work = cfg.runtime.join("qemu").join(vm);
        if let Err(e) = std::fs::remove_dir_all(&work)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(e).with_context(|| format!("cannot clear {}", work.display()));
        }
        // qemu runs as root: its working directories are root's alone.
        dirs::create_dir_all(&work, 0o700)
            .with_context(|| format!("cannot create {}", work.display()))?;
        let log = cfg.runtime.join(format!("{vm}.log"));
        let shell = work.join("shell.sock");
        let control = work.join(super::control::SOCKET);
        // A unix socket's path holds at most 107 bytes (sun_path).
        if control.as_os_str().len() > 107 {
            bail!(Error::Input(format!(
                "{}: too long for a unix socket (107 bytes); use a shorter lab name",
                control.display()
            )));
        }
        let spec = GuestSpec {
            kernel: &tools.kernel,
            accel,
            sshlab: &sshlab,
            lab_dir: cfg.lab_dir.as_deref(),
            bin_dir: cfg.bin_dir.as_deref(),
            results: &cfg.results,
            unstable_every: cfg.unstable_every,
            // The MCP guest shapes the other way of the profiles shaped both ways.
            // Not when the target's failed: one direction alone is no lab shaping.
            netem_in_guest: netem_in_guest
                && (vm == "target" || (vm == "mcp" && both_ways && state.netem.applied)),
            share: ResultsShare::NineP,
            driver_shell: cfg.test_driver.then_some(shell.as_path()),
            // The guests whose processes and qdiscs faults act on.
            control: (vm != "agent").then_some(control.as_path()),
        };
        let mut cmd = Command::new(&tools.vng);
        cmd.args(vng_args(&spec, topology, vm)?);
        let p = hypervisor::spawn(vm, "qemu", cmd, &work, &log, None)?;
        state.procs.push(p.clone());
        state.save(cfg)?;
        let started = Instant::now();
        wait_ready(vm, std::slice::from_ref(&p), &log, timeout, || {
            hypervisor::ready(vm, topology, &ep)
        })?;
        hypervisor::record_descendants(state, vm);
        state.save(cfg)?;
        // The guest's own account of itself, from its console.
        let report = GuestReport::wait_in_log(&log, Duration::from_secs(30)).ok_or_else(|| {
            Error::NotReady(format!(
                "VM {vm}: ready, but its guest never printed its report; tail of {}:\n{}",
                log.display(),
                process::log_tail(&log, 20)
            ))
        })?;
        if vm == "target" && netem_in_guest {
            let ports = cfg
                .netem
                .as_ref()
                .map(|n| n.profiles.iter().map(|p| p.port).collect())
                .unwrap_or_default();
            state.netem = if report.netem_applied {
                let mut n = shaping::LabNetem::on(&report.ifname, ports);
                n.in_guest = true;
                n
            } else {
                shaping::LabNetem::off(
                    &report.ifname,
                    ports,
                    report.netem.clone().unwrap_or_else(|| "not applied".into()),
                )
            };
            println!("vm up: netem {}", state.netem.describe());
        }
        if vm == "mcp" && netem_in_guest && both_ways && state.netem.applied {
            if report.netem_applied {
                state.netem.back_ports = cfg
                    .netem
                    .iter()
                    .flat_map(|n| &n.profiles)
                    .filter(|p| p.both_ways)
                    .map(|p| p.port)
                    .collect();
                state.netem.back_dev = Some(report.ifname.clone());
            } else {
                // Half the lab's shaping is no shaping to measure against: the target's goes.
                let cleared =
                    super::control::host_socket(&cfg.runtime, super::Backend::Qemu, "target")
                        .context("no control socket")
                        .and_then(|socket| {
                            let none = sshlab_core::NetemProfiles {
                                profiles: Vec::new(),
                            };
                            super::control::send(
                                &socket,
                                &super::control::Command::Netem { profiles: none },
                                Duration::from_secs(20),
                            )
                        });
                state.netem = shaping::LabNetem::off(
                    &state.netem.dev,
                    state.netem.ports.clone(),
                    format!(
                        "the MCP guest could not shape the way back of the profiles shaped \
                         both ways: {}; {}",
                        report.netem.clone().unwrap_or_else(|| "not applied".into()),
                        match cleared {
                            Ok(()) => "the target guest's shaping was removed".to_owned(),
                            Err(e) => format!(
                                "the target guest still shapes its replies (removing it \
                                 failed: {e:#})"
                            ),
                        }
                    ),
                );
            }
            println!("vm up: netem {}", state.netem.describe());
        }
        println!(
            "vm up: {vm} ready after {:.1} s ({}, kernel {}, {} vCPUs; log {})",
            started.elapsed().as_secs_f64(),
            accel.as_str(),
            report.kernel,
            report.cpus,
            log.display()
        );
        state.guests.push(report);
        state.save(cfg)?;
    }
    Ok(())
}
