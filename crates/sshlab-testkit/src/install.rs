//! Finding, and if need be installing, the OpenSSH server binary.
//!
//! Owns [`ensure_openssh_server`]. Debian's `openssh-server` package normally
//! starts the system `ssh` service from its maintainer scripts. Tests must
//! not leave a stray sshd on port 22, so the install runs with a
//! `policy-rc.d` that forbids service starts (Docker-style images already
//! ship one; if there is none we add one for the duration of the install and
//! remove it afterwards). Containers have no systemd as PID 1, so
//! `deb-systemd-invoke` does nothing either. As a last line of defence, any
//! `sshd` that appeared in our PID namespace during the install (and is not
//! one of our fixtures) was started by that install, and is stopped by pid.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where Debian (and a source build) put `sshd`.
const SSHD_CANDIDATES: [&str; 2] = ["/usr/sbin/sshd", "/usr/local/sbin/sshd"];
/// The Debian policy hook consulted by `invoke-rc.d` / `deb-systemd-invoke`.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
/// Serialises installs between concurrently running test binaries.
const LOCK_FILE: &str = "/tmp/sshlab-testkit-apt.lock";
/// Marker that every fixture's temp dir (and so its sshd command line) has.
pub(crate) const FIXTURE_MARKER: &str = "sshlab-sshd-";

/// Serialises installs between threads of one test binary.
static INSTALL: Mutex<()> = Mutex::new(());

/// Returns the path of the OpenSSH server binary, installing Debian's
/// `openssh-server` first if it is missing.
///
/// The install (`DEBIAN_FRONTEND=noninteractive apt-get install -y
/// --no-install-recommends openssh-server`, retried once after
/// `apt-get update`) needs root; without root a missing sshd is an error that
/// says what to install. The system ssh service is never started: see the
/// module docs for how that is ensured.
pub fn ensure_openssh_server() -> anyhow::Result<PathBuf> {
    if let Some(path) = find_sshd() {
        return Ok(path);
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the OpenSSH server (sshd) is not installed, and installing it needs root: \
             run `apt-get install openssh-server`"
        );
    }
    let _lock = InstallLock::acquire()?;
    if let Some(path) = find_sshd() {
        return Ok(path);
    }

    tracing::info!("openssh-server is missing; installing it with apt-get");
    let before = system_sshd_pids();
    let install_result = {
        let _policy = PolicyRcGuard::install()?;
        apt_get(&["install", "-y", "--no-install-recommends", "openssh-server"]).or_else(|first| {
            tracing::warn!("apt-get install failed ({first:#}); running apt-get update");
            apt_get(&["update"])?;
            apt_get(&["install", "-y", "--no-install-recommends", "openssh-server"])
        })
    };
    stop_new_system_sshd(&before);
    install_result.context("installing openssh-server failed")?;
    find_sshd().context("openssh-server was installed but no sshd binary was found")
}

/// The first existing sshd binary, if any.
fn find_sshd() -> Option<PathBuf> {
    SSHD_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Holds the install lock: one install at a time, across threads and test binaries.
pub(crate) struct InstallLock {
    _process: Flock<File>,
    _thread: std::sync::MutexGuard<'static, ()>,
}

impl InstallLock {
    pub(crate) fn acquire() -> anyhow::Result<Self> {
        let thread = INSTALL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .with_context(|| format!("cannot open install lock {LOCK_FILE}"))?;
        let process = Flock::lock(lock, FlockArg::LockExclusive)
            .map_err(|(_, errno)| errno)
            .with_context(|| format!("cannot lock {LOCK_FILE}"))?;
        Ok(Self {
            _process: process,
            _thread: thread,
        })
    }
}

/// Runs `apt-get ARGS` non-interactively; the error carries the output tail.
pub(crate) fn apt_get(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .context("cannot run apt-get")?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    bail!(
        "`apt-get {}` failed ({}):\n{}",
        args.join(" "),
        output.status,
        crate::sshd::tail(&text, 20)
    )
}

/// Installs a deny-all `policy-rc.d` while alive, if none exists already.
#[derive(Debug)]
pub(crate) struct PolicyRcGuard {
    created: bool,
}

impl PolicyRcGuard {
    pub(crate) fn install() -> anyhow::Result<Self> {
        let path = Path::new(POLICY_RC_D);
        if path.exists() {
            return Ok(Self { created: false });
        }
        fs::write(
            path,
            "#!/bin/sh\n# Temporary, written by sshlab-testkit: start no services while installing.\nexit 101\n",
        )
        .with_context(|| format!("cannot write {POLICY_RC_D}"))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot chmod {POLICY_RC_D}"))?;
        Ok(Self { created: true })
    }
}

impl Drop for PolicyRcGuard {
    fn drop(&mut self) {
        if self.created
            && let Err(e) = fs::remove_file(POLICY_RC_D)
        {
            tracing::warn!("cannot remove temporary {POLICY_RC_D}: {e}");
        }
    }
}

/// Pids of `sshd` processes in our own PID namespace that are not fixtures.
fn system_sshd_pids() -> BTreeSet<i32> {
    let own_ns = fs::read_link("/proc/self/ns/pid").ok();
    let Ok(entries) = fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let base = PathBuf::from(format!("/proc/{pid}"));
            let comm = fs::read_to_string(base.join("comm")).unwrap_or_default();
            let cmdline = fs::read(base.join("cmdline")).unwrap_or_default();
            comm.trim() == "sshd"
                && fs::read_link(base.join("ns/pid")).ok() == own_ns
                && !String::from_utf8_lossy(&cmdline).contains(FIXTURE_MARKER)
        })
        .collect()
}

/// Stops sshd processes that appeared since `before` (started by the install).
fn stop_new_system_sshd(before: &BTreeSet<i32>) {
    for pid in system_sshd_pids().difference(before) {
        tracing::warn!("stopping system sshd (pid {pid}) started by the openssh-server install");
        if let Err(e) = kill(Pid::from_raw(*pid), Signal::SIGTERM) {
            tracing::warn!("cannot stop sshd pid {pid}: {e}");
        }
    }
}
