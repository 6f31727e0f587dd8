//! Who runs `sshlab`, and what follows from it: where a lab's runtime directory lives, which
//! user and groups the VM runners run as, and the results directory they must be able to write.
//!
//! - Root keeps its labs under `/run/sshlab/<lab>`; anyone else under
//!   `$XDG_RUNTIME_DIR/sshlab/<lab>` (or `<tmp>/sshlab-<uid>/<lab>` without one), since
//!   `/run/sshlab` is root's. `vm status` and `vm down` also look where the other side keeps
//!   them: root under sudo in the invoking user's `/run/user/<uid>/sshlab`, a user in
//!   `/run/sshlab`.
//! - Root's labs stay in `/run/sshlab` when root starts the runners for another user: it
//!   exists whenever root does (`/run/user/<uid>` needs a logind session, which sudo in CI
//!   has not), and the user can change nothing in it. `/run/sshlab` and each lab directory are
//!   root's, mode 0755 ([`runtime_mode`]): the runners' user passes through to its own working
//!   directory (`<lab>/microvm/<vm>`, 0700, the user's), and a user's `vm status` reads root's
//!   state file. A user's own runtime directories are 0700. Modes are set explicitly, whatever
//!   the umask ([`super::dirs`]).
//! - Under `sudo` (root with `SUDO_UID`), the runners run as the invoking user with *all* of
//!   that user's groups (`getgrouplist`), as a login would give them: qemu opens `/dev/kvm`
//!   through group `kvm`, and a dropped supplementary group is a VM that cannot start.
//! - The results directory (`[results] host` in vms/topology.toml) is shared into the Agent VM
//!   by a virtiofsd running as that user, which exits when the directory is missing or not
//!   its to write: [`prepare_results`] makes sure of both before any runner starts.

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::dirs;
use super::error::Error;

/// Root's runtime root.
pub const ROOT_RUNTIME: &str = "/run/sshlab";

/// The user and groups a child process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Every group, the primary one included.
    pub groups: Vec<u32>,
}

impl Credentials {
    /// User `uid` as the user database has it: primary group and every group (`getgrouplist`);
    /// just `uid` as its own group when the database does not know it.
    pub fn of_uid(uid: u32) -> Self {
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(u)) => {
                let gid = u.gid.as_raw();
                let groups = user_groups(&u.name, gid).unwrap_or_else(|| vec![gid]);
                Self { uid, gid, groups }
            }
            _ => Self {
                uid,
                gid: uid,
                groups: vec![uid],
            },
        }
    }
}

/// What the environment says about who runs `sshlab`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoker {
    /// Effective uid.
    pub euid: u32,
    /// `$XDG_RUNTIME_DIR`, when set and absolute.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// The user behind `sudo` (`SUDO_UID`, `SUDO_GID`, and their groups), when root.
    pub sudo: Option<Credentials>,
}

impl Invoker {
    /// From this process: euid, `XDG_RUNTIME_DIR`, and `SUDO_UID`/`SUDO_GID`/`SUDO_USER` when
    /// root (the groups of `SUDO_USER` from the group database; just `SUDO_GID` when the name
    /// is unknown there).
    pub fn from_env() -> Self {
        let euid = nix::unistd::geteuid().as_raw();
        let xdg_runtime_dir = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute());
        let sudo = (euid == 0)
            .then(|| {
                let uid: u32 = std::env::var("SUDO_UID").ok()?.parse().ok()?;
                let gid = std::env::var("SUDO_GID")
                    .ok()
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(uid);
                let groups = std::env::var("SUDO_USER")
                    .ok()
                    .and_then(|name| user_groups(&name, gid))
                    .unwrap_or_else(|| vec![gid]);
                Some(Credentials { uid, gid, groups })
            })
            .flatten()
            .filter(|c| c.uid != 0);
        Self {
            euid,
            xdg_runtime_dir,
            sudo,
        }
    }

    /// Where this user's labs live: `/run/sshlab` for root, else `$XDG_RUNTIME_DIR/sshlab`,
    /// else `<tmp>/sshlab-<uid>`.
    pub fn runtime_root(&self) -> PathBuf {
        if self.euid == 0 {
            PathBuf::from(ROOT_RUNTIME)
        } else if let Some(x) = &self.xdg_runtime_dir {
            x.join("sshlab")
        } else {
            std::env::temp_dir().join(format!("sshlab-{}", self.euid))
        }
    }

    /// Where else a lab of this user may be, each with the uid that must own it: root under
    /// sudo also looks in the invoking user's runtime directory, `$XDG_RUNTIME_DIR/sshlab` when
    /// sudo kept it (`sudo -E`), else systemd-logind's `/run/user/<uid>/sshlab`; a user also in
    /// root's `/run/sshlab` (a lab started with sudo).
    pub fn other_runtime_roots(&self) -> Vec<(PathBuf, u32)> {
        if self.euid != 0 {
            return vec![(PathBuf::from(ROOT_RUNTIME), 0)];
        }
        let Some(c) = &self.sudo else {
            return Vec::new();
        };
        let mut roots: Vec<(PathBuf, u32)> = self
            .xdg_runtime_dir
            .iter()
            .map(|x| (x.join("sshlab"), c.uid))
            .collect();
        let logind = PathBuf::from(format!("/run/user/{}/sshlab", c.uid));
        if !roots.iter().any(|(r, _)| *r == logind) {
            roots.push((logind, c.uid));
        }
        roots
    }

    /// Who the VM runners run as: the user behind sudo, with all their groups; `None` runs
    /// them as this process (a normal user's own runners, or root without sudo).
    pub fn runner_credentials(&self) -> Option<Credentials> {
        self.sudo.clone()
    }
}

/// Every group of user `name` with primary group `gid` (`getgrouplist`), `None` when the group
/// database does not know the user.
fn user_groups(name: &str, gid: u32) -> Option<Vec<u32>> {
    let cname = CString::new(name).ok()?;
    let groups = nix::unistd::getgrouplist(&cname, nix::unistd::Gid::from_raw(gid)).ok()?;
    Some(groups.into_iter().map(|g| g.as_raw()).collect())
}

/// Makes sure `dir` exists and that the runners' user (`cred`, or this process when `None`)
/// can write into it, before anything starts. Creates it when missing, with every missing
/// folder above it, mode 0755 whatever the umask (as root for `cred`, then owned by `cred`'s
/// user). Hands over only what it may: a directory this call created, or an empty root-owned
/// one; never a symlink, never one with files in it or owned by another user (an error naming
/// the owner). Returns what it did.
pub fn prepare_results(dir: &Path, cred: Option<&Credentials>) -> anyhow::Result<Vec<String>> {
    // virtiofsd opens the directory by its path as the runners' user: every folder above it
    // must let them through (a 0700 home or temporary folder does not). Checked first, so a
    // refused directory is neither created nor handed over; the folders this call creates
    // are 0755, and all are checked again once they exist.
    if let Some(cred) = cred {
        check_reachable(dir, cred)?;
    }
    let mut done = Vec::new();
    let created = match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => bail!(Error::Input(format!(
            "the results directory {} is a symlink; give the real path in vms/topology.toml",
            dir.display()
        ))),
        Ok(m) if !m.is_dir() => bail!(Error::Input(format!(
            "the results directory {} is not a directory",
            dir.display()
        ))),
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let made = match dirs::create_dir_all(dir, RESULTS_MODE) {
                Ok(made) => made,
                Err(e) => bail!(Error::Input(format!(
                    "the results directory {} does not exist and cannot be created ({e}); \
                     `sudo sshlab net up` creates it for the invoking user, or run \
                     `sudo install -d -o $USER {}`",
                    dir.display(),
                    dir.display()
                ))),
            };
            let above: Vec<String> = made
                .iter()
                .filter(|d| d.as_path() != dir)
                .map(|d| d.display().to_string())
                .collect();
            done.push(if above.is_empty() {
                format!(
                    "created results directory {} (mode {RESULTS_MODE:o})",
                    dir.display()
                )
            } else {
                format!(
                    "created results directory {} and {} (mode {RESULTS_MODE:o})",
                    dir.display(),
                    above.join(", ")
                )
            });
            true
        }
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", dir.display())),
    };
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    let Some(cred) = cred else {
        if nix::unistd::access(
            dir,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .is_err()
        {
            bail!(Error::Input(format!(
                "the results directory {} is not writable by uid {} (owner uid {}): the \
                 Agent VM's virtiofsd runs as this user; `sudo chown $USER {}`",
                dir.display(),
                nix::unistd::geteuid(),
                meta.uid(),
                dir.display()
            )));
        }
        return Ok(done);
    };
    check_reachable(dir, cred)?;
    let empty = || std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
    if meta.uid() == 0 && cred.uid != 0 && (created || empty()) {
        std::os::unix::fs::lchown(dir, Some(cred.uid), Some(cred.gid))
            .with_context(|| format!("cannot chown {} to {}", dir.display(), cred.uid))?;
        done.push(format!(
            "results directory {} now owned by uid {}",
            dir.display(),
            cred.uid
        ));
    }
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    if !writable_by(&meta, cred) {
        bail!(Error::Input(format!(
            "the results directory {} (owner uid {}, mode {:o}) is not writable by uid {}, \
             whom the VM runners run as: `sudo chown {} {}`, or empty it",
            dir.display(),
            meta.uid(),
            meta.permissions().mode() & 0o7777,
            cred.uid,
            cred.uid,
            dir.display()
        )));
    }
    Ok(done)
}

/// Mode of the results directory and of the folders above it that the lab creates: the
/// runners' user must pass through each.
const RESULTS_MODE: u32 = 0o755;

/// Every existing folder above `dir` lets `cred` through; else an error naming the first that
/// does not.
fn check_reachable(dir: &Path, cred: &Credentials) -> anyhow::Result<()> {
    let Some(blocker) = dir
        .ancestors()
        .skip(1)
        .find(|a| std::fs::metadata(a).is_ok_and(|m| !searchable_by(&m, cred)))
    else {
        return Ok(());
    };
    let m =
        std::fs::metadata(blocker).with_context(|| format!("cannot stat {}", blocker.display()))?;
    bail!(Error::Input(format!(
        "the results directory {} is out of reach of uid {}, whom the VM runners run as: \
         {} (owner uid {}, mode {:o}) does not let that user through; use a directory \
         under one that does (the default /var/lib/sshlab/results)",
        dir.display(),
        cred.uid,
        blocker.display(),
        m.uid(),
        m.permissions().mode() & 0o7777
    )))
}

/// The mode of runtime directories (the runtime root and each lab's) made for user `euid`:
/// 0755 for root, whose labs' runners may run as another user who must pass through, and whose
/// state another user's `vm status` reads; 0700 for anyone else.
pub fn runtime_mode(euid: u32) -> u32 {
    if euid == 0 { 0o755 } else { 0o700 }
}

/// Creates a runtime directory of this user (the runtime root or a lab's directory) if needed,
/// with [`runtime_mode`] whatever the umask, and checks that it is safe to keep state in: a
/// real directory (no symlink), owned by this process's euid, writable by nobody else. A
/// `/tmp/sshlab-<uid>` someone else made first is refused. Root's are set to 0755 when they
/// exist with another mode (made by an older sshlab, 0700, or under another umask).
pub fn ensure_runtime_dir(dir: &Path) -> anyhow::Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    let mode = runtime_mode(euid);
    if let Err(e) = dirs::create_dir_all(dir, mode) {
        bail!(Error::Input(format!(
            "cannot create the runtime directory {}: {e}",
            dir.display()
        )));
    }
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        bail!(Error::Input(format!(
            "the runtime directory {} is not a directory",
            dir.display()
        )));
    }
    if meta.uid() != euid || meta.permissions().mode() & 0o022 != 0 {
        bail!(Error::Input(format!(
            "the runtime directory {} (owner uid {}, mode {:o}) is not this user's alone \
             (uid {euid}); remove it or set XDG_RUNTIME_DIR",
            dir.display(),
            meta.uid(),
            meta.permissions().mode() & 0o7777
        )));
    }
    if euid == 0 && meta.permissions().mode() & 0o7777 != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod {:o} {}", mode, dir.display()))?;
    }
    Ok(())
}

/// Whether `dir` and its `file` may be trusted as the state of a lab that user `owner` started:
/// both real (no symlinks), both owned by `owner`.
pub fn owned_state(dir: &Path, file: &str, owner: u32) -> bool {
    let ok = |p: &Path, is_dir: bool| {
        std::fs::symlink_metadata(p)
            .is_ok_and(|m| !m.file_type().is_symlink() && m.is_dir() == is_dir && m.uid() == owner)
    };
    ok(dir, true) && ok(&dir.join(file), false)
}

/// Whether `cred` may pass through the directory `meta` describes (its `x` bit for them).
fn searchable_by(meta: &std::fs::Metadata, cred: &Credentials) -> bool {
    let mode = meta.permissions().mode();
    if cred.uid == 0 {
        true
    } else if meta.uid() == cred.uid {
        mode & 0o100 != 0
    } else if cred.groups.contains(&meta.gid()) {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Whether `cred` may create files in a directory with `meta` (by its mode bits).
fn writable_by(meta: &std::fs::Metadata, cred: &Credentials) -> bool {
    let mode = meta.permissions().mode();
    if meta.uid() == cred.uid {
        mode & 0o300 == 0o300
    } else if cred.groups.contains(&meta.gid()) {
        mode & 0o030 == 0o030
    } else {
        mode & 0o003 == 0o003
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoker(euid: u32, xdg: Option<&str>, sudo_uid: Option<u32>) -> Invoker {
        Invoker {
            euid,
            xdg_runtime_dir: xdg.map(PathBuf::from),
            sudo: sudo_uid.map(|uid| Credentials {
                uid,
                gid: uid,
                groups: vec![uid],
            }),
        }
    }

    #[test]
    fn root_and_users_keep_labs_apart_and_find_each_other() {
        let root = invoker(0, None, None);
        assert_eq!(root.runtime_root(), PathBuf::from("/run/sshlab"));
        assert!(root.other_runtime_roots().is_empty());
        assert_eq!(root.runner_credentials(), None);

        let sudo = invoker(0, None, Some(1000));
        assert_eq!(sudo.runtime_root(), PathBuf::from("/run/sshlab"));
        assert_eq!(
            sudo.other_runtime_roots(),
            [(PathBuf::from("/run/user/1000/sshlab"), 1000)]
        );
        let sudo_e = invoker(0, Some("/tmp/xdg"), Some(1000));
        assert_eq!(
            sudo_e.other_runtime_roots(),
            [
                (PathBuf::from("/tmp/xdg/sshlab"), 1000),
                (PathBuf::from("/run/user/1000/sshlab"), 1000)
            ]
        );
        assert_eq!(sudo.runner_credentials().map(|c| c.uid), Some(1000));

        let user = invoker(1000, Some("/run/user/1000"), None);
        assert_eq!(user.runtime_root(), PathBuf::from("/run/user/1000/sshlab"));
        assert_eq!(
            user.other_runtime_roots(),
            [(PathBuf::from("/run/sshlab"), 0)]
        );
        assert_eq!(user.runner_credentials(), None);

        let bare = invoker(1000, None, None);
        assert_eq!(
            bare.runtime_root(),
            std::env::temp_dir().join("sshlab-1000")
        );
    }

    #[test]
    fn write_permission_follows_owner_group_other() {
        let dir = tempfile::tempdir().unwrap();
        let meta = |mode: u32| {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::metadata(dir.path()).unwrap()
        };
        let m = meta(0o700);
        let (uid, gid) = (m.uid(), m.gid());
        let owner = Credentials {
            uid,
            gid,
            groups: vec![gid],
        };
        let other = Credentials {
            uid: uid + 1,
            gid: gid + 1,
            groups: vec![gid + 1],
        };
        let member = Credentials {
            groups: vec![gid + 1, gid],
            ..other.clone()
        };
        assert!(writable_by(&meta(0o700), &owner));
        assert!(!writable_by(&meta(0o500), &owner));
        assert!(!writable_by(&meta(0o755), &other));
        assert!(!writable_by(&meta(0o755), &member));
        assert!(writable_by(&meta(0o770), &member));
        assert!(writable_by(&meta(0o777), &other));
        assert!(!writable_by(&meta(0o776), &other));
    }

    #[test]
    fn root_shares_its_runtime_directories_users_keep_theirs() {
        assert_eq!(runtime_mode(0), 0o755);
        assert_eq!(runtime_mode(1000), 0o700);
    }
}
