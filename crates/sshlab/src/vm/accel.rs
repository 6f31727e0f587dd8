//! The accelerator a qemu guest runs on: KVM when `/dev/kvm` really runs a guest, TCG
//! otherwise.
//!
//! The device node is not trusted: this CI machine has a `/dev/kvm` on which a KVM guest hangs
//! until it is killed. So a probe guest is booted with KVM and must print its marker within
//! [`PROBE_TIMEOUT`]. A probe that hangs costs that whole timeout, and the verdict cannot change
//! until the machine reboots or its KVM is set up anew, so it is kept in the user's runtime root
//! ([`CACHE_FILE`]), keyed by the kernel's boot id and the guest kernel: every later `vm up` and
//! `vm runners` of that user in the same boot reuses it and says so. Deleting the file makes the
//! next one probe again.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process;

/// The probe guest's marker.
const KVM_OK: &str = "SSHLAB-KVM-OK";

/// How long the probe guest has to print its marker. A working KVM boots virtme-ng's guest in a
/// few seconds, even on a loaded machine.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The kept verdict's file in the runtime root.
pub const CACHE_FILE: &str = "accel.json";

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

/// A probe's verdict, as kept in [`CACHE_FILE`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Verdict {
    /// `/proc/sys/kernel/random/boot_id` when the probe ran.
    boot_id: String,
    /// The guest kernel it booted.
    kernel: PathBuf,
    accel: Accel,
    /// Why, as printed by `vm up`.
    why: String,
}

/// The accelerator for guests of `kernel`, and why: no `/dev/kvm` is TCG without a probe; else
/// the verdict kept in `runtime_root` for this boot and kernel, else a probe's (then kept there
/// when `runtime_root` is this user's directory).
pub fn detect(kernel: &Path, vng: &Path, runtime_root: &Path) -> (Accel, String) {
    if !Path::new("/dev/kvm").exists() {
        return (Accel::Tcg, "no /dev/kvm".into());
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let cache = runtime_root.join(CACHE_FILE);
    if let Some(boot_id) = &boot_id
        && let Some(v) = read_kept(&cache, boot_id, kernel)
    {
        return (
            v.accel,
            format!(
                "{}, probed earlier this boot (kept in {})",
                v.why,
                cache.display()
            ),
        );
    }
    let (accel, why, ran) = probe(kernel, vng);
    // A probe that could not start says nothing of KVM: not kept.
    if ran && let Some(boot_id) = boot_id {
        let v = Verdict {
            boot_id,
            kernel: kernel.to_path_buf(),
            accel,
            why: why.clone(),
        };
        if let Err(e) = keep(&cache, &v) {
            eprintln!("sshlab: the accelerator's verdict is not kept: {e:#}");
        }
    }
    (accel, why)
}

/// The verdict in `cache` if it is this user's own file (not writable by anyone else: another
/// user must not choose our accelerator) and is for this boot and kernel.
fn read_kept(cache: &Path, boot_id: &str, kernel: &Path) -> Option<Verdict> {
    let meta = std::fs::symlink_metadata(cache).ok()?;
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.is_file() || meta.uid() != euid || meta.permissions().mode() & 0o022 != 0 {
        return None;
    }
    let v: Verdict = serde_json::from_slice(&std::fs::read(cache).ok()?).ok()?;
    (v.boot_id == boot_id && v.kernel == kernel).then_some(v)
}

/// Writes `v` to `cache` (a new temporary file of this process, renamed over it, mode 0644)
/// when its directory exists, is this user's and nobody else may write in it; nothing is
/// created here.
fn keep(cache: &Path, v: &Verdict) -> anyhow::Result<()> {
    let dir = cache.parent().unwrap_or(Path::new("."));
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir()
        || meta.uid() != nix::unistd::geteuid().as_raw()
        || meta.permissions().mode() & 0o022 != 0
    {
        anyhow::bail!("{} is not this user's alone", dir.display());
    }
    let tmp = dir.join(format!(".{CACHE_FILE}.{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&serde_json::to_vec_pretty(v)?)?;
            // 0644 whatever the umask: another of this user's tools may read it.
            f.set_permissions(std::fs::Permissions::from_mode(0o644))
        })
        .and_then(|()| std::fs::rename(&tmp, cache));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(written?)
}

/// Boots a probe guest with KVM (up to [`PROBE_TIMEOUT`]) and looks for its marker; the
/// verdict, why, and whether the probe ran at all.
fn probe(kernel: &Path, vng: &Path) -> (Accel, String, bool) {
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
        return (Accel::Tcg, "the KVM probe could not start".into(), false);
    };
    let pgid = child.id();
    let out = process::wait_output(child, PROBE_TIMEOUT);
    // Whatever the probe left (qemu), by its group.
    if let Ok(g) = i32::try_from(pgid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(g),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    match out {
        Some(text) if text.contains(KVM_OK) => {
            (Accel::Kvm, "/dev/kvm ran a probe guest".into(), true)
        }
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
                true,
            )
        }
        None => (
            Accel::Tcg,
            format!(
                "/dev/kvm: the probe guest did not finish within {} s",
                PROBE_TIMEOUT.as_secs()
            ),
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(boot_id: &str, kernel: &str) -> Verdict {
        Verdict {
            boot_id: boot_id.into(),
            kernel: kernel.into(),
            accel: Accel::Tcg,
            why: "/dev/kvm: the probe guest did not finish within 30 s".into(),
        }
    }

    #[test]
    fn a_verdict_is_kept_for_its_boot_and_kernel_only() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join(CACHE_FILE);
        let v = verdict("b1", "/boot/vmlinuz-6.1.0-48-amd64");
        keep(&cache, &v).unwrap();
        assert_eq!(
            std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(
            read_kept(&cache, "b1", Path::new("/boot/vmlinuz-6.1.0-48-amd64")),
            Some(v)
        );
        // Another boot, or another kernel, probes again.
        assert_eq!(
            read_kept(&cache, "b2", Path::new("/boot/vmlinuz-6.1.0-48-amd64")),
            None
        );
        assert_eq!(
            read_kept(&cache, "b1", Path::new("/boot/vmlinuz-6.12.95+deb12-amd64")),
            None
        );
        // A file someone else may write is not trusted, nor a corrupt one.
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(
            read_kept(&cache, "b1", Path::new("/boot/vmlinuz-6.1.0-48-amd64")),
            None
        );
        std::fs::write(&cache, b"{").unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            read_kept(&cache, "b1", Path::new("/boot/vmlinuz-6.1.0-48-amd64")),
            None
        );
        // Nor written where someone else may write.
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(keep(&open.join(CACHE_FILE), &verdict("b1", "k")).is_err());
        assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);
        // Nothing is created where there is no directory.
        assert!(
            keep(
                &d.path().join("missing").join(CACHE_FILE),
                &verdict("b1", "k")
            )
            .is_err()
        );
    }
}
