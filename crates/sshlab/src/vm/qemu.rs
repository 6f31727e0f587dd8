//! `sshlab vm`, qemu backend: real guests without Nix. Each VM of vms/topology.toml is a
//! `qemu-system-x86_64` guest with the topology's vCPUs, memory and MAC, started by virtme-ng
//! (`vng`): it boots the newest Debian kernel in `/boot` with the host's root filesystem shared
//! read-only (and private overlays for /etc, /var, /tmp ...), so the guest runs the host's own
//! sshd and the lab's binaries. Its command is `sshlab guest <vm>` ([`super::guest`]), the
//! role's init. Networking is the real path: qemu opens the TAP `sshlab net up` made
//! (`-netdev tap,ifname=...`, `queues=<vcpus>` on the multi-queue TAPs); no user networking.
//! The Agent VM gets the host's results directory read-write at the same path (virtme-ng's
//! `--rwdir` over 9p, `--force-9p`: qemu serves it itself, no virtiofsd needed).
//!
//! KVM is used when `/dev/kvm` really runs a guest, TCG otherwise: [`detect_accel`] boots a
//! probe guest once per `vm up` rather than trusting the device node (this CI machine has a
//! `/dev/kvm` on which qemu aborts). netem goes on the host's TAP when `net up` could put it
//! there, else inside the target guest on its own NIC (`--match sport`), and the state says
//! which. Process handling (process groups, readiness, logs, teardown) is the microvm
//! backend's ([`super::microvm`]).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sshlab_core::Topology;
use sshlab_core::guest_kernel::{self, BOOT, MODULES};

use super::guest::GuestReport;
use super::invoker::prepare_results;
use super::microvm::{self, START_ORDER};
use super::{Endpoints, State, VmConfig, on_path, process, shaping, wait_ready};

/// The probe guest's marker.
const KVM_OK: &str = "SSHLAB-KVM-OK";

/// The accelerator a guest runs on (`kvm` or `tcg` in state files and `lab.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// qemu's software emulation.
    Tcg,
}

impl Accel {
    /// `kvm` or `tcg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// Everything a qemu guest needs, checked before anything starts; one clear error each.
struct Tools {
    kernel: PathBuf,
    vng: PathBuf,
}

fn check_tools() -> anyhow::Result<Tools> {
    let kernel = guest_kernel::find().with_context(|| {
        format!(
            "no guest kernel: no {BOOT}/vmlinuz-*-amd64 whose {MODULES}/<version> has sch_netem \
             (install Debian's linux-image-amd64: scripts/install-deps vm)"
        )
    })?;
    if on_path("qemu-system-x86_64").is_none() {
        bail!(
            "qemu-system-x86_64 is not installed (Debian: qemu-system-x86; scripts/install-deps vm)"
        );
    }
    let vng = on_path("vng").context(
        "virtme-ng's `vng` is not on PATH (scripts/install-deps vm installs it into \
         ~/.cache/sshlab-tools/bin)",
    )?;
    if !Path::new("/dev/net/tun").exists() {
        bail!(
            "/dev/net/tun is missing: the kernel's tun module is needed for the TAPs (`modprobe tun`)"
        );
    }
    Ok(Tools { kernel, vng })
}

/// Whether `/dev/kvm` really runs a guest: boots a probe guest with KVM (up to 60 s) and looks
/// for its marker. No `/dev/kvm`: TCG without a probe.
pub fn detect_accel(kernel: &Path, vng: &Path) -> (Accel, String) {
    if !Path::new("/dev/kvm").exists() {
        return (Accel::Tcg, "no /dev/kvm".into());
    }
    let child = Command::new(vng)
        .arg("--run")
        .arg(kernel)
        .args(["--memory", "256M", "--cpus", "1", "--exec"])
        .arg(format!("echo {KVM_OK}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let Ok(child) = child else {
        return (Accel::Tcg, "the KVM probe could not start".into());
    };
    let pgid = child.id();
    let out = process::wait_output(child, Duration::from_secs(60));
    // Whatever the probe left (qemu), by its group.
    if let Ok(g) = i32::try_from(pgid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(g),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    match out {
        Some(text) if text.contains(KVM_OK) => (Accel::Kvm, "/dev/kvm ran a probe guest".into()),
        Some(text) => {
            let why = text
                .lines()
                .rev()
                .find(|l| l.contains("qemu") || l.contains("kvm") || l.contains("KVM"))
                .unwrap_or("no output")
                .trim()
                .to_owned();
            (
                Accel::Tcg,
                format!("/dev/kvm did not run a probe guest ({why})"),
            )
        }
        None => (
            Accel::Tcg,
            "/dev/kvm: the probe guest did not finish within 60 s".into(),
        ),
    }
}

/// Every VM's TAP exists and is this user's to open (owner unset or this euid; root opens any).
fn check_taps(topology: &Topology) -> anyhow::Result<()> {
    microvm::check_taps(topology)?;
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
                bail!(
                    "VM {}: TAP {} belongs to uid {owner}, not to this user (uid {euid}): \
                     `sudo sshlab net up --owner {euid}`",
                    vm.name,
                    vm.tap
                );
            }
        }
        anyhow::Ok(())
    })
}

/// The `vng` command line of VM `vm`.
fn vng_command(
    tools: &Tools,
    accel: Accel,
    cfg: &VmConfig,
    topology: &Topology,
    vm: &str,
    netem_in_guest: bool,
) -> anyhow::Result<Command> {
    let v = topology
        .vm(vm)
        .with_context(|| format!("no VM {vm} in the topology"))?;
    let sshlab = std::env::current_exe().context("the sshlab binary's path")?;
    // vng hands its arguments to a shell and to qemu's option parser unquoted: every path and
    // name that goes into them must be plain (absolute, no spaces, quotes, `=`, `,` or `$`).
    let plain_path = |what: &str, p: &Path| -> anyhow::Result<String> {
        let s = p.to_str().unwrap_or_default();
        let ok = p.is_absolute()
            && !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._+-".contains(c));
        if !ok {
            bail!(
                "the qemu backend needs {what} as a plain absolute path ([A-Za-z0-9/._+-]), \
                 got {:?}",
                p.display().to_string()
            );
        }
        Ok(s.to_owned())
    };
    if !v
        .tap
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        bail!(
            "VM {vm}: TAP name {:?} is not plain ([A-Za-z0-9_.-])",
            v.tap
        );
    }
    let sshlab = plain_path("the sshlab binary", &sshlab)?;
    let results = plain_path("the results directory", &cfg.results)?;
    let mut netdev = format!(
        "-netdev tap,id=lab,ifname={},script=no,downscript=no,vhost=off",
        v.tap
    );
    let mut device = format!("-device virtio-net-pci,netdev=lab,mac={}", v.mac);
    // `sshlab net up` makes a VM's TAP multi-queue when it has more than one vCPU: qemu must
    // open it so, one queue per vCPU (and twice as many MSI-X vectors, plus two).
    if v.multi_queue() {
        netdev.push_str(&format!(",queues={}", v.vcpus));
        device.push_str(&format!(",mq=on,vectors={}", 2 * v.vcpus + 2));
    }
    let mut cmd = Command::new(&tools.vng);
    cmd.arg("--run").arg(&tools.kernel);
    if accel == Accel::Tcg {
        cmd.arg("--disable-kvm");
    }
    cmd.arg("--memory")
        .arg(format!("{}M", v.memory_mib))
        .arg("--cpus")
        .arg(v.vcpus.to_string())
        .arg(format!("--qemu-opts={netdev} {device}"));
    // 9p for the host's root and the results share whether or not a virtiofsd is installed
    // (virtme-ng would switch to virtiofs, and with KVM to another machine type).
    cmd.arg("--force-9p");
    if vm == "agent" {
        cmd.arg(format!("--rwdir={results}"));
    }
    let mut guest = sshlab;
    if let Some(dir) = &cfg.lab_dir {
        guest.push_str(&format!(" --lab {}", plain_path("--lab", dir)?));
    }
    guest.push_str(&format!(
        " guest {vm} --results {results} --unstable-every {}",
        cfg.unstable_every
    ));
    if let Some(dir) = &cfg.bin_dir {
        guest.push_str(&format!(" --bin-dir {}", plain_path("--bin-dir", dir)?));
    }
    if netem_in_guest {
        guest.push_str(" --netem");
    }
    cmd.arg("--exec").arg(guest);
    Ok(cmd)
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
    let (accel, why) = detect_accel(&tools.kernel, &tools.vng);
    println!(
        "vm up: accelerator {} ({why}); guest kernel {}",
        accel.as_str(),
        tools.kernel.display()
    );
    state.accel = Some(accel);
    // netem: on the host TAP when `net up` put it there, else inside the target guest.
    let host = shaping::observe(topology, cfg.netem.as_ref());
    let netem_in_guest = cfg.netem.is_some() && !host.applied;
    state.netem = host;
    state.save(cfg)?;
    // A TCG boot of the host's root over 9p takes tens of seconds per guest on 2 cores.
    let timeout = cfg.ready_timeout(match accel {
        Accel::Kvm => Duration::from_secs(120),
        Accel::Tcg => Duration::from_secs(420),
    });
    let ep = Endpoints::new(topology)?;
    for vm in START_ORDER {
        let work = cfg.runtime.join("qemu").join(vm);
        if let Err(e) = std::fs::remove_dir_all(&work)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(e).with_context(|| format!("cannot clear {}", work.display()));
        }
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        let log = cfg.runtime.join(format!("{vm}.log"));
        let cmd = vng_command(
            &tools,
            accel,
            cfg,
            topology,
            vm,
            netem_in_guest && vm == "target",
        )?;
        let p = microvm::spawn_command(vm, "qemu", cmd, &work, &log, None)?;
        state.procs.push(p.clone());
        state.save(cfg)?;
        let started = Instant::now();
        wait_ready(vm, std::slice::from_ref(&p), &log, timeout, || {
            microvm::ready(vm, topology, &ep)
        })?;
        // The guest's own account of itself, from its console.
        let report = wait_report(&log, Duration::from_secs(30)).with_context(|| {
            format!(
                "VM {vm}: ready, but its guest never printed its report; tail of {}:\n{}",
                log.display(),
                process::log_tail(&log, 20)
            )
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

/// The guest's report line in its console log, waiting up to `timeout` for it.
fn wait_report(log: &Path, timeout: Duration) -> Option<GuestReport> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = process::log_tail(log, 2000);
        if let Some(r) = GuestReport::from_log(&text) {
            return Some(r);
        }
        if Instant::now() >= deadline || crate::interrupt::requested() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
