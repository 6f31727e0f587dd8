//! A throw-away Linux guest for tests that need kernel features this machine lacks.
//!
//! Owns [`GuestVm`] (built with [`GuestVmBuilder`]), [`GuestOutput`] and [`check_vm_tools`].
//! The guest is a Debian kernel (the newest `/boot/vmlinuz-*-amd64` with `sch_netem`, or one
//! that `scripts/install-deps vm` extracted into `$SSHLAB_TOOLS/kernels`) booted by
//! virtme-ng (`vng`) under `qemu-system-x86_64` with TCG (`--disable-kvm`: this machine's
//! `/dev/kvm` cannot run stock guests, and CI machines may have none). virtme-ng exports the
//! host's root filesystem to the guest read-only over 9p, so the guest runs the host's own
//! `sh`, `ip`, `tc` and `python3`; it gives the guest its *own* (overlay) `/tmp`, `/var/tmp`
//! and `/opt`, so nothing the host writes there after boot, and nothing under
//! `CARGO_TARGET_DIR=/tmp/...`, is reliably what the guest sees.
//!
//! Each [`GuestVm::run`] therefore makes a fresh directory `/var/lib/sshlab-vm/run-XXXXXX`,
//! copies the builder's files into it and shares it read-write with `vng --rwdir` (9p, so the
//! guest's writes land on the host at once). The guest runs a wrapper that marks its start (a
//! file `started`: a guest that never got so far is told apart and booted once more), runs the
//! script with stdout and stderr redirected to files in that directory, writes its exit status
//! to a file there and prints a marker line `SSHLAB-VM-EXIT-<nonce> <status>` on the console:
//! the script's status can never be confused with vng's or qemu's own. The directory is removed
//! afterwards.
//!
//! vng (and the qemu it starts) runs in a process group of its own; on timeout that group is
//! killed by its pid (`killpg`), so no qemu outlives the run.

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// A guest that ends before its script within this long is booted once more ([`GuestVm::run`]).
const QUICK_END: Duration = Duration::from_secs(20);

/// Parent of the per-run shared directories (the guest sees the host's `/var/lib`).
const SHARE_ROOT: &str = "/var/lib/sshlab-vm";
use sshlab_core::guest_kernel::{BOOT, MODULES};

/// A guest kernel configuration; [`GuestVm::run`] boots a fresh guest per call.
#[derive(Debug, Clone)]
pub struct GuestVm {
    kernel: PathBuf,
    memory_mb: u32,
    cpus: u32,
    timeout: Duration,
    files: Vec<PathBuf>,
    rwdirs: Vec<PathBuf>,
    qemu_opts: Option<String>,
}

/// Builds a [`GuestVm`]. Defaults: the guests' Debian kernel ([`find_kernel`]), 1 GiB, 2 vCPUs,
/// a 10-minute timeout, no extra files.
#[derive(Debug, Clone)]
pub struct GuestVmBuilder {
    kernel: Option<PathBuf>,
    memory_mb: u32,
    cpus: u32,
    timeout: Duration,
    files: Vec<PathBuf>,
    rwdirs: Vec<PathBuf>,
    qemu_opts: Option<String>,
}

/// What one guest run produced.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// The script's standard output.
    pub stdout: String,
    /// The script's standard error.
    pub stderr: String,
    /// The script's exit status (not vng's).
    pub exit_code: i32,
    /// Wall time from starting vng until it exited: boot, script and shutdown.
    pub boot_and_run: Duration,
    /// vng's own output (boot messages, the exit marker), for diagnostics.
    pub console: String,
}

impl Default for GuestVmBuilder {
    fn default() -> Self {
        Self {
            kernel: None,
            memory_mb: 1024,
            cpus: 2,
            timeout: Duration::from_secs(600),
            files: Vec::new(),
            rwdirs: Vec::new(),
            qemu_opts: None,
        }
    }
}

impl GuestVmBuilder {
    /// Boots this kernel image instead of the auto-detected one.
    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel = Some(path.into());
        self
    }

    /// Guest memory in MiB.
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    /// Guest vCPUs.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Hard limit for boot + script + shutdown; the guest is killed after it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Copies this host file into the guest-visible directory as `$SSHLAB_VM_DIR/<file name>`.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.push(path.into());
        self
    }

    /// Also shares this host directory read-write at the same path (`vng --rwdir`, 9p): a test
    /// that talks to the guest while it runs reads and writes files there. It must be where the
    /// guest sees the host's own files, e.g. under `/var/lib` (see the module's note on `/tmp`).
    pub fn rwdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.rwdirs.push(dir.into());
        self
    }

    /// Extra qemu arguments (`vng --qemu-opts`), e.g. a virtio serial port on a host socket.
    pub fn qemu_opts(mut self, opts: impl Into<String>) -> Self {
        self.qemu_opts = Some(opts.into());
        self
    }

    /// Resolves the kernel and checks that vng and qemu exist.
    pub fn build(self) -> anyhow::Result<GuestVm> {
        let kernel = match self.kernel {
            Some(k) => k,
            None => find_kernel().with_context(|| {
                format!(
                    "no guest kernel: no {BOOT}/vmlinuz-*-amd64 whose {MODULES}/<version> has \
                     sch_netem.ko (scripts/install-deps vm installs linux-image-amd64)"
                )
            })?,
        };
        if !kernel.is_file() {
            bail!("guest kernel {} does not exist", kernel.display());
        }
        check_vm_tools()?;
        for f in &self.files {
            if !f.is_file() {
                bail!("file for the guest {} does not exist", f.display());
            }
        }
        for d in &self.rwdirs {
            if !d.is_dir() {
                bail!("directory for the guest {} does not exist", d.display());
            }
        }
        Ok(GuestVm {
            kernel,
            memory_mb: self.memory_mb,
            cpus: self.cpus,
            timeout: self.timeout,
            files: self.files,
            rwdirs: self.rwdirs,
            qemu_opts: self.qemu_opts,
        })
    }
}

impl GuestVm {
    /// A builder with the defaults.
    pub fn builder() -> GuestVmBuilder {
        GuestVmBuilder::default()
    }

    /// The kernel image this VM boots.
    pub fn kernel(&self) -> &Path {
        &self.kernel
    }

    /// Boots a guest, runs `script` with `sh` inside it (as root, `$SSHLAB_VM_DIR` set to the
    /// shared directory holding the builder's files) and returns its output and exit status.
    ///
    /// Errors: the shared directory cannot be made, vng cannot start, the run exceeds the
    /// timeout (the guest is killed), or the guest never reported the script's status (a boot
    /// failure; the error carries the tail of the console).
    ///
    /// A guest that ends by itself within `QUICK_END` (20 s), before its script started (vng
    /// or qemu exited at once), is booted once more, and the first attempt's error is printed
    /// on stderr: such a failure says nothing of what a test checks, and one was seen on a
    /// fresh CI machine without a word of why. A second failure is the error, with the first's. A
    /// guest that ends later without starting its script (a kernel that panics) is not booted
    /// again: the timeout stays the run's bound, but for those few seconds.
    pub fn run(&self, script: &str) -> anyhow::Result<GuestOutput> {
        let first = match self.run_once(script)? {
            Attempt::Ran(out) => return Ok(out),
            Attempt::NeverStarted { error, after } if after <= QUICK_END => error,
            Attempt::NeverStarted { error, .. } => return Err(error),
        };
        eprintln!(
            "sshlab-testkit: the guest ended before its script started; booting it once more. \
             The first attempt: {first:#}"
        );
        let context = || format!("after a first attempt that ended at once: {first:#}");
        match self.run_once(script).with_context(context)? {
            Attempt::Ran(out) => Ok(out),
            Attempt::NeverStarted { error, .. } => Err(error.context(format!(
                "the guest ended before its script started, twice; the first attempt: {first:#}"
            ))),
        }
    }

    /// One boot of [`GuestVm::run`].
    fn run_once(&self, script: &str) -> anyhow::Result<Attempt> {
        let vng = find_vng().context("virtme-ng's `vng` is not installed")?;
        fs::create_dir_all(SHARE_ROOT).with_context(|| format!("cannot create {SHARE_ROOT}"))?;
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(SHARE_ROOT)
            .with_context(|| format!("cannot make a directory under {SHARE_ROOT}"))?;
        let d = dir.path();
        for f in &self.files {
            let name = f
                .file_name()
                .with_context(|| format!("{} has no file name", f.display()))?;
            fs::copy(f, d.join(name))
                .with_context(|| format!("cannot copy {} into {}", f.display(), d.display()))?;
        }
        let nonce = format!(
            "{}-{}",
            std::process::id(),
            d.file_name().and_then(|n| n.to_str()).unwrap_or("run")
        );
        let marker = format!("SSHLAB-VM-EXIT-{nonce}");
        fs::write(d.join("script.sh"), script).context("cannot write the guest script")?;
        let wrapper = format!(
            "SSHLAB_VM_DIR='{dir}'; export SSHLAB_VM_DIR\n\
             : >\"$SSHLAB_VM_DIR/started\"\n\
             sh \"$SSHLAB_VM_DIR/script.sh\" >\"$SSHLAB_VM_DIR/stdout\" 2>\"$SSHLAB_VM_DIR/stderr\" </dev/null\n\
             code=$?\n\
             echo \"$code\" >\"$SSHLAB_VM_DIR/exit-status\"\n\
             echo \"{marker} $code\"\n\
             exit \"$code\"\n",
            dir = d.display()
        );
        fs::write(d.join("wrapper.sh"), wrapper).context("cannot write the guest wrapper")?;

        let mut cmd = Command::new(&vng);
        cmd.arg("--run")
            .arg(&self.kernel)
            .args(["--disable-kvm", "--memory"])
            .arg(format!("{}M", self.memory_mb))
            .arg("--cpus")
            .arg(self.cpus.to_string())
            .arg("--rwdir")
            .arg(d);
        for extra in &self.rwdirs {
            cmd.arg("--rwdir").arg(extra);
        }
        if let Some(opts) = &self.qemu_opts {
            cmd.arg(format!("--qemu-opts={opts}"));
        }
        cmd.arg("--exec")
            .arg(format!("sh {}/wrapper.sh", d.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", vng.display()))?;
        let pgid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        let out = reader(child.stdout.take());
        let err = reader(child.stderr.take());
        let status = loop {
            if let Some(status) = child.try_wait().context("cannot wait for vng")? {
                break Some(status);
            }
            if start.elapsed() >= self.timeout {
                // vng, qemu and any helper share the group vng leads.
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(100));
        };
        let boot_and_run = start.elapsed();
        // Stragglers in the group (e.g. a virtiofsd) must not outlive the run either.
        let _ = killpg(pgid, Signal::SIGKILL);
        let mut console = out.join().unwrap_or_default();
        console.push_str(&err.join().unwrap_or_default());
        let Some(status) = status else {
            bail!(
                "the guest did not finish within {} s and was killed; console tail:\n{}",
                self.timeout.as_secs(),
                crate::sshd::tail(&console, 30)
            );
        };
        let read = |name: &str| fs::read_to_string(d.join(name)).unwrap_or_default();
        let from_file = read("exit-status").trim().parse::<i32>().ok();
        let from_marker = console.lines().find_map(|l| {
            l.trim()
                .strip_prefix(&marker)
                .and_then(|rest| rest.trim().parse::<i32>().ok())
        });
        let Some(exit_code) = from_file.or(from_marker) else {
            let e = anyhow::anyhow!(
                "the guest never reported the script's exit status (vng: {status}, after \
                 {:.1} s); did it boot? console tail:\n{}",
                boot_and_run.as_secs_f64(),
                crate::sshd::tail(&console, 40)
            );
            if d.join("started").exists() {
                return Err(e);
            }
            return Ok(Attempt::NeverStarted {
                error: e,
                after: boot_and_run,
            });
        };
        Ok(Attempt::Ran(GuestOutput {
            stdout: read("stdout"),
            stderr: read("stderr"),
            exit_code,
            boot_and_run,
            console,
        }))
    }
}

/// How one boot of [`GuestVm::run`] ended.
enum Attempt {
    /// The script ran (whatever its status).
    Ran(GuestOutput),
    /// The guest ended by itself before the wrapper started the script.
    NeverStarted {
        error: anyhow::Error,
        /// From starting vng until it exited.
        after: Duration,
    },
}

/// Reads a pipe to its end on a thread.
fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// The guests' kernel: the newest `/boot/vmlinuz-*-amd64` with `sch_netem`, else one in a tools
/// directory's `kernels/` ([`sshlab_core::guest_kernel::find`]).
pub fn find_kernel() -> Option<PathBuf> {
    sshlab_core::guest_kernel::find()
}

/// `name` in `$PATH` (or the usual system directories). The pinned tools of
/// `scripts/install-deps` are found here: `scripts/test` puts `$SSHLAB_TOOLS/bin` on `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// virtme-ng's `vng`: on `$PATH` (`scripts/install-deps vm` installs it into
/// `$SSHLAB_TOOLS/bin`, which `scripts/test` puts on `PATH`).
fn find_vng() -> Option<PathBuf> {
    find_in_path("vng")
}

/// Whether the ELF file at `path` is statically linked: it has no `PT_INTERP` segment (no
/// program interpreter). virtme-ng builds its initramfs with busybox and refuses a dynamically
/// linked one, which is what Debian's `busybox` package ships (`busybox-static` is static).
fn is_static_elf(path: &Path) -> anyhow::Result<bool> {
    use object::read::elf::{FileHeader, ProgramHeader};
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let header = object::elf::FileHeader64::<object::Endianness>::parse(&*data)
        .with_context(|| format!("{} is not a 64-bit ELF file", path.display()))?;
    let endian = header
        .endian()
        .with_context(|| format!("{}: bad ELF byte order", path.display()))?;
    let segments = header
        .program_headers(endian, &*data)
        .with_context(|| format!("{}: bad ELF program headers", path.display()))?;
    Ok(!segments
        .iter()
        .any(|s| s.p_type(endian) == object::elf::PT_INTERP))
}

/// What [`GuestVm`] needs that is missing, each as the package that provides it.
fn missing_vm_tools() -> Vec<String> {
    let mut missing = Vec::new();
    if find_kernel().is_none() {
        missing.push("linux-image-amd64 (a Debian kernel whose modules have sch_netem)".into());
    }
    if find_in_path("qemu-system-x86_64").is_none() {
        missing.push("qemu-system-x86".into());
    }
    match find_in_path("busybox") {
        None => missing.push("busybox-static".into()),
        Some(b) => match is_static_elf(&b) {
            Ok(true) => {}
            Ok(false) => missing.push(format!(
                "busybox-static ({} is dynamically linked; virtme-ng refuses it)",
                b.display()
            )),
            Err(e) => missing.push(format!("busybox-static ({e:#})")),
        },
    }
    if find_vng().is_none() {
        missing.push("virtme-ng (its `vng` is not on PATH)".into());
    }
    missing
}

/// Checks that everything [`GuestVm`] needs is installed: a Debian kernel with `sch_netem`,
/// `qemu-system-x86_64`, a statically linked `busybox` and virtme-ng's `vng`. The error names
/// each missing package and the command that installs them all at their pinned versions
/// (`scripts/install-deps vm`, versions in `scripts/tool-versions`). Installs nothing.
pub fn check_vm_tools() -> anyhow::Result<()> {
    let missing = missing_vm_tools();
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "VM tools missing: {}; install them with `scripts/install-deps vm` (as root) and put \
         $SSHLAB_TOOLS/bin (default /opt/sshlab-tools/bin for root, else \
         ~/.cache/sshlab-tools/bin) on PATH, as scripts/test does",
        missing.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 64-bit little-endian x86-64 ELF executable: the file header and one program
    /// header per entry of `segments` (their `p_type`s), nothing else.
    fn elf64(segments: &[u32]) -> Vec<u8> {
        let phnum = u16::try_from(segments.len()).expect("few segments");
        let mut f = Vec::new();
        f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
        f.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
        f.extend_from_slice(&1u32.to_le_bytes()); // e_version
        f.extend_from_slice(&0x40_1000u64.to_le_bytes()); // e_entry
        f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff: right after this header
        f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
        f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        for half in [64u16, 56, phnum, 64, 0, 0] {
            // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
            f.extend_from_slice(&half.to_le_bytes());
        }
        for &p_type in segments {
            f.extend_from_slice(&p_type.to_le_bytes());
            f.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R+X
            for word in [0u64, 0x40_0000, 0x40_0000, 64, 64, 0x1000] {
                // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
                f.extend_from_slice(&word.to_le_bytes());
            }
        }
        f
    }

    #[test]
    fn static_and_dynamic_executables_are_told_apart() {
        // The ELF specification's segment types, written out: the test checks our reading of
        // the format, not the crate's constants against themselves.
        const PT_LOAD: u32 = 1;
        const PT_INTERP: u32 = 3;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            fs::write(&p, bytes).expect("write");
            p
        };
        let static_bin = file("static", &elf64(&[PT_LOAD]));
        assert!(is_static_elf(&static_bin).expect("an ELF file"));
        let dynamic_bin = file("dynamic", &elf64(&[PT_INTERP, PT_LOAD]));
        assert!(!is_static_elf(&dynamic_bin).expect("an ELF file"));
        // This test binary: Rust links it dynamically against the C library.
        let me = std::env::current_exe().expect("current exe");
        assert!(!is_static_elf(&me).expect("an ELF file"));
        // A script is no ELF file: an error, not a verdict.
        let script = file("busybox", b"#!/bin/sh\n");
        assert!(is_static_elf(&script).is_err());
    }

    #[test]
    fn builder_rejects_a_missing_kernel() {
        let err = GuestVm::builder()
            .kernel("/nonexistent/vmlinuz")
            .build()
            .expect_err("no such kernel");
        assert!(err.to_string().contains("/nonexistent/vmlinuz"), "{err:#}");
    }
}
