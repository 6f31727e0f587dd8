//! The target VM on the netns backend: OpenSSH sshd instances, one per target service of
//! vms/topology.toml, each on its base port and base + `netem_port_offset`.
//!
//! Adapted from the dev-only `sshlab-testkit` sshd fixture (the product cannot depend on it):
//! users with generated passwd/shadow/group, ed25519 host key by `ssh-keygen`, SHA-512 crypt
//! hashes by `openssl passwd -6`. Here the account files and the seed's files live in a layer
//! `<dir>/etc` that a read-only overlay mounts over `/etc` inside a private mount (and PID)
//! namespace made by `unshare`: the host's /etc and users never change, and
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
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use sshlab_core::{TargetPort, Topology};

/// The seed's users (all with [`PASSWORD`]).
pub const USERS: [&str; 5] = ["testuser", "fancyuser", "zshuser", "dashuser", "slowuser"];
/// The seed's password.
pub const PASSWORD: &str = "testpass";
const FIRST_UID: u32 = 2001;
/// OpenSSH's privilege-separation directory (Debian's build).
const PRIVSEP_DIR: &str = "/run/sshd";

/// Everything generated for the target, under `dir`.
#[derive(Debug, Clone)]
pub struct TargetFiles {
    /// The directory.
    pub dir: PathBuf,
    /// `(role, base port, netem port)` of each instance.
    pub ports: Vec<(String, u16, u16)>,
}

/// Generates users, keys, configs and the wrapper script.
pub fn prepare(
    dir: &Path,
    topology: &Topology,
    ip: std::net::Ipv4Addr,
) -> anyhow::Result<TargetFiles> {
    fs::create_dir_all(dir.join("etc/pam.d"))?;
    set_mode(dir, 0o755)?;
    let sshd = which_sshd()?;
    let host_key = dir.join("ssh_host_ed25519_key");
    if !host_key.exists() {
        ssh_keygen(&host_key, "sshlab-target")?;
    }
    let keys = dir.join("keys");
    fs::create_dir_all(&keys)?;
    set_mode(&keys, 0o700)?;
    let hash = hash_password(PASSWORD)?;
    let mut passwd = String::from(
        "root:x:0:0:root:/root:/bin/sh\n\
         sshd:x:74:65534:sshd privilege separation:/run/sshd:/usr/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    );
    let mut group = String::from("root:x:0:\nnogroup:x:65534:\n");
    let mut shadow = format!(
        "root:{hash}:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"
    );
    for (uid, user) in (FIRST_UID..).zip(USERS) {
        let home = dir.join("home").join(user);
        let ssh_dir = home.join(".ssh");
        fs::create_dir_all(&ssh_dir)?;
        let key = keys.join(user);
        if !key.exists() {
            ssh_keygen(&key, &format!("{user}@sshlab-target"))?;
        }
        let public = fs::read_to_string(key.with_extension("pub"))?;
        let authorized = ssh_dir.join("authorized_keys");
        fs::write(&authorized, public)?;
        if user == "fancyuser" {
            fs::write(
                home.join(".profile"),
                "PS1='\\033[1;32m┌─[\\u@\\h]─[\\w]\\033[0m\\n└─▶ '\nexport PS1\n",
            )?;
        }
        for p in [&home, &ssh_dir, &authorized] {
            std::os::unix::fs::chown(p, Some(uid), Some(uid))?;
        }
        set_mode(&home, 0o755)?;
        set_mode(&ssh_dir, 0o700)?;
        set_mode(&authorized, 0o600)?;
        let shell = match user {
            "zshuser" if Path::new("/usr/bin/zsh").exists() => "/usr/bin/zsh",
            "dashuser" if Path::new("/bin/dash").exists() => "/bin/dash",
            _ => "/bin/sh",
        };
        let _ = writeln!(
            passwd,
            "{user}:x:{uid}:{uid}:sshlab test user:{}:{shell}",
            home.display()
        );
        let _ = writeln!(group, "{user}:x:{uid}:");
        let _ = writeln!(shadow, "{user}:{hash}:19000:0:99999:7:::");
    }
    let etc = dir.join("etc");
    fs::write(etc.join("passwd"), passwd)?;
    fs::write(etc.join("group"), group)?;
    fs::write(etc.join("shadow"), shadow)?;
    set_mode(&etc.join("shadow"), 0o600)?;
    fs::write(
        etc.join("test-file.txt"),
        "This is a test file for the sshlab target.\nIt has a few lines.\nThe end.\n",
    )?;
    let mut large = String::new();
    for i in 1..=1000 {
        let _ = writeln!(
            large,
            "Line {i}: the quick brown fox jumps over the lazy dog"
        );
    }
    fs::write(etc.join("large-test-file.txt"), large)?;
    fs::write(
        etc.join("pam.d/sshd"),
        "# sshlab slow-auth: every password authentication waits 2 s first.\n\
         auth required pam_exec.so quiet /bin/sleep 2\n\
         auth required pam_unix.so\n\
         account required pam_unix.so\n\
         session required pam_unix.so\n",
    )?;

    // OpenSSH chroots its unprivileged child into this directory and refuses to start without
    // it; Debian's ssh service makes it at boot, so a machine (or VM) whose sshd never ran has
    // none. Same path inside the target's mount namespace: /run is the host's.
    fs::create_dir_all(PRIVSEP_DIR).with_context(|| format!("cannot create {PRIVSEP_DIR}"))?;
    set_mode(Path::new(PRIVSEP_DIR), 0o755)?;

    let penalties = supports_keyword(&sshd, b"persourcepenalties");
    let mut ports = Vec::new();
    for TargetPort { role, base, netem } in topology.target_ports() {
        let cfg = sshd_config(dir, ip, role, base, netem, penalties);
        fs::write(dir.join(format!("sshd_{base}.conf")), cfg)?;
        ports.push((role.to_owned(), base, netem));
    }
    Ok(TargetFiles {
        dir: dir.to_path_buf(),
        ports,
    })
}

/// Whether the seed's password login (testuser/testpass) can succeed on a role's sshd: not on
/// `key-only` (no password authentication) nor on `deny-all` (`DenyUsers *`). Scenarios that
/// log in with the password skip those ports rather than report every attempt as an error.
pub fn accepts_password_login(role: &str) -> bool {
    !matches!(role, "key-only" | "deny-all")
}

fn sshd_config(
    dir: &Path,
    ip: std::net::Ipv4Addr,
    role: &str,
    base: u16,
    netem: u16,
    penalties: bool,
) -> String {
    let d = dir.display();
    let (password, root, pam, extra) = match role {
        "key-only" => ("no", "no", "no", ""),
        "slow-auth" => ("yes", "no", "yes", ""),
        "deny-all" => ("yes", "no", "no", "DenyUsers *\n"),
        "root-login" => ("yes", "yes", "no", ""),
        _ => ("yes", "no", "no", ""),
    };
    let mut c = format!(
        "# Generated by sshlab vm up (netns backend): role {role}.\n\
         ListenAddress {ip}\n\
         Port {base}\n\
         Port {netem}\n\
         HostKey {d}/ssh_host_ed25519_key\n\
         PidFile {d}/sshd_{base}.pid\n\
         UsePAM {pam}\n\
         PasswordAuthentication {password}\n\
         PermitEmptyPasswords no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         PermitRootLogin {root}\n\
         StrictModes no\n\
         AuthorizedKeysFile %h/.ssh/authorized_keys\n\
         MaxStartups 200:30:400\n\
         MaxSessions 100\n\
         MaxAuthTries 10\n\
         LogLevel VERBOSE\n\
         UseDNS no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         X11Forwarding no\n\
         {extra}"
    );
    if penalties {
        c.push_str("PerSourcePenalties no\n");
    }
    c
}

/// The `unshare` command that runs all instances in one private mount + PID namespace.
/// `unstable_every` is the restart period of the `unstable` instance, in seconds.
pub fn command(files: &TargetFiles, unstable_every: u64) -> anyhow::Result<Command> {
    let sshd = which_sshd()?;
    let mut script = String::from(
        "set -e\n\
         mount -t overlay sshlab-etc -o \"lowerdir=$1/etc:/etc\" /etc\n\
         set +e\n\
         trap 'kill -TERM -1 2>/dev/null; exit 0' TERM\n",
    );
    for (role, base, _) in &files.ports {
        let run = format!("\"$2\" -D -e -f \"$1/sshd_{base}.conf\" 2>>\"$1/sshd_{base}.log\"");
        if role == "unstable" {
            let _ = writeln!(
                script,
                "( while :; do {run} & p=$!; sleep {unstable_every}; kill $p; wait $p; echo \"sshlab: restarted unstable sshd\" >>\"$1/sshd_{base}.log\"; done ) &"
            );
        } else {
            let _ = writeln!(script, "{run} &");
        }
    }
    script.push_str("wait\n");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
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

fn which_sshd() -> anyhow::Result<PathBuf> {
    for p in ["/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("OpenSSH sshd not found (Debian: apt-get install openssh-server)")
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {mode:o} {}", path.display()))
}

fn ssh_keygen(path: &Path, comment: &str) -> anyhow::Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ssh-keygen (package openssh-client)")?;
    if !out.status.success() {
        bail!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut child = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run openssl (needed to hash the target's passwords)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(format!("{password}\n").as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !hash.starts_with("$6$") {
        bail!(
            "openssl passwd -6 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(hash)
}

/// Whether the sshd binary knows a config keyword (for keywords newer than Debian 12's 9.2).
fn supports_keyword(sshd_bin: &Path, keyword: &[u8]) -> bool {
    fs::read(sshd_bin).is_ok_and(|b| b.windows(keyword.len()).any(|w| w == keyword))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_get_their_config() {
        let ip = "10.178.0.20".parse().unwrap();
        let d = Path::new("/x");
        let c = sshd_config(d, ip, "key-only", 2223, 2323, false);
        assert!(c.contains("PasswordAuthentication no\n") && c.contains("Port 2323\n"));
        assert!(sshd_config(d, ip, "deny-all", 2226, 2326, false).contains("DenyUsers *"));
        assert!(
            sshd_config(d, ip, "root-login", 2228, 2328, false).contains("PermitRootLogin yes")
        );
        assert!(sshd_config(d, ip, "slow-auth", 2225, 2325, true).contains("UsePAM yes"));
        let std = sshd_config(d, ip, "standard", 2222, 2322, false);
        assert!(std.contains("ListenAddress 10.178.0.20\n") && std.contains("UsePAM no"));
    }
}
