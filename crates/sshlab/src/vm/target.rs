//! The target VM on the netns backend: OpenSSH sshd instances, one per target service of
//! vms/topology.toml, each on its base port and base + `netem_port_offset`.
//!
//! Accounts (generated passwd/shadow/group with SHA-512 crypt hashes), keys by `ssh-keygen`
//! and the common `sshd_config` settings come from `sshlab-sshd`, which the dev-only
//! `sshlab-testkit` fixture uses too (the product cannot depend on the test kit). This module
//! owns the roles, the seed and where the files go: the account files and the seed's files
//! live in a layer `<dir>/etc` that a read-only overlay mounts over `/etc` inside a private
//! mount (and PID) namespace made by `unshare`: the host's /etc and users never change, and
//! /etc/test-file.txt and /etc/large-test-file.txt exist only in the target.
//!
//! Roles (by service name): `standard` (password + key), `key-only` (no password), `fancy-prompt`
//! (fancyuser's shell prints a multi-line coloured prompt), `slow-auth` (`UsePAM yes` with a PAM
//! stack in the overlay whose first module is `pam_exec /bin/sleep 2`, so a password login takes
//! at least 2 s), `deny-all` (`DenyUsers *`), `unstable` (the same standard config, killed and
//! restarted every `unstable_every` seconds by the wrapper script, dropping its connections),
//! `root-login` (`PermitRootLogin yes`, root's password is testpass in the overlay's shadow).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use sshlab_core::{TargetPort, Topology};
use sshlab_sshd::{
    Account, AccountFiles, FIRST_UID, PER_SOURCE_PENALTIES, ServerConfig, ensure_privsep_dir,
    hash_password, install_home, set_mode, ssh_keygen, sshd_binary, supports_keyword,
};

/// The seed's users (all with [`PASSWORD`]).
pub const USERS: [&str; 5] = ["testuser", "fancyuser", "zshuser", "dashuser", "slowuser"];
/// The seed's password.
pub const PASSWORD: &str = "testpass";

/// Everything generated for the target, under `dir`.
#[derive(Debug, Clone)]
pub struct TargetFiles {
    /// The directory.
    pub dir: PathBuf,
    /// `(role, base port, netem port)` of each instance.
    pub ports: Vec<(String, u16, u16)>,
}

/// Generates users, keys, configs and the wrapper script.
pub fn prepare(dir: &Path, topology: &Topology) -> anyhow::Result<TargetFiles> {
    // The overlay's /etc, the homes and the seed's files are read by the target's accounts:
    // modes set explicitly, whatever the umask (a 0700 `etc` hides /etc/passwd from them).
    for (d, mode) in [
        (dir.to_path_buf(), 0o755),
        (dir.join("etc"), 0o755),
        (dir.join("etc/pam.d"), 0o755),
        (dir.join("home"), 0o755),
        (dir.join("keys"), 0o700),
    ] {
        fs::create_dir_all(&d)?;
        set_mode(&d, mode)?;
    }
    let sshd = sshd_binary()?;
    let host_key = dir.join("ssh_host_ed25519_key");
    if !host_key.exists() {
        ssh_keygen(&host_key, "sshlab-target")?;
    }
    let keys = dir.join("keys");
    let hash = hash_password(PASSWORD)?;
    let mut accounts = Vec::new();
    for (uid, user) in (FIRST_UID..).zip(USERS) {
        let home = dir.join("home").join(user);
        let key = keys.join(user);
        if !key.exists() {
            ssh_keygen(&key, &format!("{user}@sshlab-target"))?;
        }
        install_home(&home, uid, &fs::read_to_string(key.with_extension("pub"))?)?;
        if user == "fancyuser" {
            write_file(
                &home.join(".profile"),
                "PS1='\\033[1;32m┌─[\\u@\\h]─[\\w]\\033[0m\\n└─▶ '\nexport PS1\n",
            )?;
        }
        let shell = match user {
            "zshuser" if Path::new("/usr/bin/zsh").exists() => "/usr/bin/zsh",
            "dashuser" if Path::new("/bin/dash").exists() => "/bin/dash",
            _ => "/bin/sh",
        };
        accounts.push(Account {
            name: user.to_owned(),
            uid,
            home,
            shell: shell.to_owned(),
            password_hash: Some(hash.clone()),
        });
    }
    let etc = dir.join("etc");
    // root's password too: the root-login role logs in as root.
    AccountFiles::new(Some(&hash), &accounts).write(&etc)?;
    write_file(
        &etc.join("test-file.txt"),
        "This is a test file for the sshlab target.\nIt has a few lines.\nThe end.\n",
    )?;
    let mut large = String::new();
    for i in 1..=1000 {
        let _ = writeln!(
            large,
            "Line {i}: the quick brown fox jumps over the lazy dog"
        );
    }
    write_file(&etc.join("large-test-file.txt"), &large)?;
    write_file(
        &etc.join("pam.d/sshd"),
        "# sshlab slow-auth: every password authentication waits 2 s first.\n\
         auth required pam_exec.so quiet /bin/sleep 2\n\
         auth required pam_unix.so\n\
         account required pam_unix.so\n\
         session required pam_unix.so\n",
    )?;

    // Inside the target's mount namespace too: /run is the host's.
    ensure_privsep_dir()?;

    let penalties = supports_keyword(&sshd, PER_SOURCE_PENALTIES);
    let mut ports = Vec::new();
    for TargetPort { role, base, netem } in topology.target_ports() {
        let cfg = sshd_config(dir, role, base, netem, penalties);
        write_file(&dir.join(format!("sshd_{base}.conf")), &cfg)?;
        ports.push((role.to_owned(), base, netem));
    }
    Ok(TargetFiles {
        dir: dir.to_path_buf(),
        ports,
    })
}

/// What a role's sshd does differently, by service name (vms/topology.toml); every other role
/// is the standard one. The one table both the configs and [`accepts_password_login`] read.
#[derive(Debug, Clone, Copy)]
struct Behaviour {
    password: bool,
    root: bool,
    pam: bool,
    deny_all: bool,
}

fn behaviour(role: &str) -> Behaviour {
    let standard = Behaviour {
        password: true,
        root: false,
        pam: false,
        deny_all: false,
    };
    match role {
        "key-only" => Behaviour {
            password: false,
            ..standard
        },
        "slow-auth" => Behaviour {
            pam: true,
            ..standard
        },
        "deny-all" => Behaviour {
            deny_all: true,
            ..standard
        },
        "root-login" => Behaviour {
            root: true,
            ..standard
        },
        _ => standard,
    }
}

/// The role whose sshd is killed and restarted every `unstable_every` seconds ([`command`]).
pub const UNSTABLE_ROLE: &str = "unstable";

/// How long a readiness check waits for the [`UNSTABLE_ROLE`]'s ports: each of its restarts
/// closes them for a moment, by design, which does not make the lab "not ready".
pub const RESTART_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether the target at `ip` listens on every one of `ports`, the unstable role's allowed
/// [`RESTART_GRACE`] to open again.
pub fn listening(
    ip: std::net::Ipv4Addr,
    topology: &Topology,
    ports: &[u16],
    per_port: std::time::Duration,
) -> bool {
    let restarting: Vec<u16> = topology
        .target_ports()
        .iter()
        .filter(|t| t.role == UNSTABLE_ROLE)
        .flat_map(|t| [t.base, t.netem])
        .collect();
    open_allowing_restarts(ip, ports, &restarting, per_port, RESTART_GRACE)
}

/// Every one of `ports` open at `ip`; those in `restarting` may take up to `grace` to open.
fn open_allowing_restarts(
    ip: std::net::Ipv4Addr,
    ports: &[u16],
    restarting: &[u16],
    per_port: std::time::Duration,
    grace: std::time::Duration,
) -> bool {
    let (later, now): (Vec<u16>, Vec<u16>) = ports.iter().partition(|p| restarting.contains(p));
    if !super::ports_open(ip, &now, per_port) {
        return false;
    }
    let deadline = std::time::Instant::now() + grace;
    loop {
        if super::ports_open(ip, &later, per_port) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Whether the seed's password login (testuser/testpass) can succeed on a role's sshd: not on
/// `key-only` (no password authentication) nor on `deny-all` (`DenyUsers *`). Scenarios that
/// log in with the password skip those ports rather than report every attempt as an error.
pub fn accepts_password_login(role: &str) -> bool {
    let b = behaviour(role);
    b.password && !b.deny_all
}

fn sshd_config(dir: &Path, role: &str, base: u16, netem: u16, penalties: bool) -> String {
    let b = behaviour(role);
    let extra = if b.deny_all { "DenyUsers *\n" } else { "" };
    let settings = ServerConfig {
        // Every address, as vms/target.nix's `ListenAddress 0.0.0.0:<port>`.
        listen: std::net::Ipv4Addr::UNSPECIFIED,
        ports: &[base, netem],
        host_key: &dir.join("ssh_host_ed25519_key"),
        pid_file: &dir.join(format!("sshd_{base}.pid")),
        use_pam: b.pam,
        password_authentication: b.password,
        permit_root_login: b.root,
        no_per_source_penalties: penalties,
    };
    format!(
        "# Generated by sshlab vm up (netns backend): role {role}.\n{}{extra}",
        settings.render()
    )
}

/// The file whose presence keeps the sshd of `base` down: the supervisor loop of
/// [`command`] does not restart it while the file exists (an `sshd-kill` fault makes it, kills
/// the sshd with its sessions, and removes it at the fault's end).
pub fn down_flag(dir: &Path, base: u16) -> PathBuf {
    dir.join(format!("down_{base}"))
}

/// The `-f` argument that tells the listener of `base` apart (`<dir>/sshd_<base>.conf`).
pub fn config_path(dir: &Path, base: u16) -> PathBuf {
    dir.join(format!("sshd_{base}.conf"))
}

/// Writes a file of the target's, readable by its accounts (0644) whatever the umask.
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    super::dirs::write_file(path, text.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The `unshare` command that runs all instances in one private mount + PID namespace.
/// `unstable_every` is the restart period of the `unstable` instance, in seconds.
///
/// Each instance runs under a supervisor loop, as systemd's `Restart=always` would: an sshd
/// that dies is started again 0.2 s later, unless its [`down_flag`] exists. The `unstable`
/// instance is killed every `unstable_every` seconds together with every session it serves
/// (its whole process tree: OpenSSH's per-connection processes would otherwise keep their
/// connections), so its clients really lose their connections.
pub fn command(files: &TargetFiles, unstable_every: u64) -> anyhow::Result<Command> {
    let sshd = sshd_binary()?;
    let mut script = String::from(
        "set -e\n\
         mount -t overlay sshlab-etc -o \"lowerdir=$1/etc:/etc\" /etc\n\
         set +e\n\
         trap 'kill -TERM -1 2>/dev/null; exit 0' TERM\n\
         killtree() { for c in $(pgrep -P \"$1\"); do killtree \"$c\"; done; kill -KILL \"$1\" 2>/dev/null; }\n",
    );
    for (role, base, _) in &files.ports {
        let run = format!("\"$2\" -D -e -f \"$1/sshd_{base}.conf\" 2>>\"$1/sshd_{base}.log\"");
        let flag = format!("\"$1/down_{base}\"");
        if role == UNSTABLE_ROLE {
            let _ = writeln!(
                script,
                "( while :; do if [ -e {flag} ]; then sleep 0.1; continue; fi; {run} & p=$!; sleep {unstable_every}; killtree $p; wait $p; echo \"sshlab: killed the unstable sshd and its sessions; restarting\" >>\"$1/sshd_{base}.log\"; done ) &"
            );
        } else {
            let _ = writeln!(
                script,
                "( while :; do if [ -e {flag} ]; then sleep 0.1; continue; fi; {run}; echo \"sshlab: sshd {base} exited ($?); restarting\" >>\"$1/sshd_{base}.log\"; sleep 0.2; done ) &"
            );
        }
    }
    script.push_str("wait\n");
    let mut cmd = Command::new("unshare");
    // --mount-proc: a /proc of the namespace's own, so the script's pids (`$!`) and pgrep's
    // agree (the unstable role kills its sshd's whole tree with them).
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--",
        "/bin/sh",
        "-c",
        &script,
        "sshlab-target",
    ])
    .arg(&files.dir)
    .arg(sshd);
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_get_their_config() {
        let refusing: Vec<&str> = [
            "standard",
            "key-only",
            "fancy-prompt",
            "slow-auth",
            "deny-all",
            "unstable",
            "root-login",
        ]
        .into_iter()
        .filter(|r| !accepts_password_login(r))
        .collect();
        assert_eq!(refusing, ["key-only", "deny-all"]);
        let d = Path::new("/x");
        let c = sshd_config(d, "key-only", 2223, 2323, false);
        assert!(c.contains("PasswordAuthentication no\n") && c.contains("Port 2323\n"));
        assert!(sshd_config(d, "deny-all", 2226, 2326, false).contains("DenyUsers *"));
        assert!(sshd_config(d, "root-login", 2228, 2328, false).contains("PermitRootLogin yes"));
        assert!(sshd_config(d, "slow-auth", 2225, 2325, true).contains("UsePAM yes"));
        let std = sshd_config(d, "standard", 2222, 2322, false);
        assert!(std.contains("ListenAddress 0.0.0.0\n") && std.contains("UsePAM no"));
    }

    #[test]
    fn a_restarting_port_is_given_its_grace_and_no_more() {
        use std::net::{Ipv4Addr, TcpListener};
        use std::time::Duration;
        let ip = Ipv4Addr::LOCALHOST;
        let steady = TcpListener::bind((ip, 0)).expect("bind");
        let steady_port = steady.local_addr().expect("addr").port();
        // A port that is closed now and opens 0.5 s later (a restart).
        let probe = TcpListener::bind((ip, 0)).expect("bind");
        let restarting = probe.local_addr().expect("addr").port();
        drop(probe);
        let opener = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            TcpListener::bind((ip, restarting)).expect("rebind")
        });
        let per = Duration::from_millis(300);
        let ports = [steady_port, restarting];
        assert!(open_allowing_restarts(
            ip,
            &ports,
            &[restarting],
            per,
            Duration::from_secs(5)
        ));
        let reopened = opener.join().expect("opener");
        // Not restarting: a closed port is not ready, at once.
        drop(reopened);
        assert!(!open_allowing_restarts(
            ip,
            &ports,
            &[],
            per,
            Duration::from_secs(5)
        ));
        // Restarting for longer than its grace: not ready.
        let started = std::time::Instant::now();
        assert!(!open_allowing_restarts(
            ip,
            &ports,
            &[restarting],
            per,
            Duration::from_millis(400)
        ));
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
