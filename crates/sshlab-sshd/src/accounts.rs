//! Generated account files: `passwd`, `group` and `shadow` for made-up users.
//!
//! sshd looks users up through NSS, so a login as `alice` needs an `alice` line in whatever
//! `/etc/passwd` sshd sees, and a password login needs her hash in `/etc/shadow`. The callers
//! never edit the machine's files: they write these into a directory of their own and mount
//! them over `/etc` in sshd's private mount namespace. Every file always defines `root`,
//! `sshd` (the privilege-separation user OpenSSH insists on) and `nobody`; each generated user
//! gets a group of the same name and id.
//!
//! [`install_home`] makes a user's home with the `authorized_keys` sshd reads for key logins.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, io_error, set_mode};

/// First uid (and gid) given to generated users; later users get the next ones.
pub const FIRST_UID: u32 = 2001;

/// Names the account files always define.
const RESERVED: [&str; 3] = ["root", "sshd", "nobody"];

/// The days fields after the hash: last change (a fixed day in 2022), then min 0, max 99999,
/// warn 7, so that no password ever counts as expired.
const SHADOW_AGING: &str = "19000:0:99999:7:::";

/// One generated login account.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name (see [`validate_user_name`]).
    pub name: String,
    /// Uid, and gid of the user's own group.
    pub uid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: String,
    /// SHA-512 crypt hash (from [`hash_password`]); `None` for no password.
    pub password_hash: Option<String>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .field("home", &self.home)
            .field("shell", &self.shell)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<hash>"),
            )
            .finish()
    }
}

impl Account {
    /// The account's `passwd` line (with newline).
    pub fn passwd_line(&self) -> String {
        format!(
            "{name}:x:{uid}:{uid}:sshlab test user:{home}:{shell}\n",
            name = self.name,
            uid = self.uid,
            home = self.home.display(),
            shell = self.shell
        )
    }

    /// The account's `group` line (with newline).
    pub fn group_line(&self) -> String {
        format!("{}:x:{}:\n", self.name, self.uid)
    }

    /// The account's `shadow` line (with newline).
    pub fn shadow_line(&self) -> String {
        shadow_line(&self.name, self.password_hash.as_deref())
    }
}

/// A `shadow` line. No hash gives `*` rather than `!`: both refuse every password, but
/// OpenSSH treats `!` as a locked account and refuses key logins too.
fn shadow_line(name: &str, hash: Option<&str>) -> String {
    format!("{name}:{}:{SHADOW_AGING}\n", hash.unwrap_or("*"))
}

/// The contents of the three account files.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountFiles {
    /// `/etc/passwd`.
    pub passwd: String,
    /// `/etc/group`.
    pub group: String,
    /// `/etc/shadow`.
    pub shadow: String,
}

impl std::fmt::Debug for AccountFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountFiles")
            .field("passwd", &self.passwd)
            .field("group", &self.group)
            .field("shadow", &"<redacted>")
            .finish()
    }
}

impl AccountFiles {
    /// The files for `root` (with `root_password_hash`, or no password), `sshd`, `nobody` and
    /// `accounts`, in that order.
    pub fn new(root_password_hash: Option<&str>, accounts: &[Account]) -> Self {
        let mut files = Self {
            passwd: String::from(
                "root:x:0:0:root:/root:/bin/sh\n\
                 sshd:x:74:65534:sshd privilege separation:/run/sshd:/usr/sbin/nologin\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
            ),
            group: String::from("root:x:0:\nnogroup:x:65534:\n"),
            shadow: shadow_line("root", root_password_hash),
        };
        files.shadow.push_str(&shadow_line("sshd", None));
        files.shadow.push_str(&shadow_line("nobody", None));
        for account in accounts {
            files.passwd.push_str(&account.passwd_line());
            files.group.push_str(&account.group_line());
            files.shadow.push_str(&account.shadow_line());
        }
        files
    }

    /// Writes `dir/passwd` and `dir/group` (0644) and `dir/shadow` (0600).
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        for (name, text, mode) in [
            ("passwd", &self.passwd, 0o644),
            ("group", &self.group, 0o644),
            ("shadow", &self.shadow, 0o600),
        ] {
            let path = dir.join(name);
            fs::write(&path, text).map_err(|e| io_error("write", &path, e))?;
            set_mode(&path, mode)?;
        }
        Ok(())
    }
}

/// Checks that `name` is a boring login name, `[a-z_][a-z0-9_-]*` of at most 32 characters
/// (it goes into passwd lines and sshd_config), and not one of the always generated accounts.
pub fn validate_user_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        return Err(Error::InvalidUserName(name.to_owned()));
    }
    if RESERVED.contains(&name) {
        return Err(Error::ReservedUserName(name.to_owned()));
    }
    Ok(())
}

/// The SHA-512 crypt hash (`$6$...`) of `password`, by `openssl passwd -6 -stdin`.
///
/// `openssl` rather than a crypt crate: it is on every machine that has OpenSSH, and the
/// hash is then certainly one glibc's `crypt` accepts.
pub fn hash_password(password: &str) -> Result<String, Error> {
    if password.contains(['\n', '\r']) {
        return Err(Error::PasswordLineBreak);
    }
    let spawn = |source| Error::Spawn {
        program: "openssl",
        package: "openssl",
        source,
    };
    let mut child = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(format!("{password}\n").as_bytes())
            .map_err(spawn)?;
    }
    let output = child.wait_with_output().map_err(spawn)?;
    let hash = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || !hash.starts_with("$6$") {
        return Err(Error::HashPassword {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(hash)
}

/// Makes `home/.ssh/authorized_keys` with `authorized_keys` as its contents, all owned by
/// `uid:uid`: home 0755 (the caller's directory must stay traversable for the user's shell),
/// `.ssh` 0700, `authorized_keys` 0600. Needs root (chown).
pub fn install_home(home: &Path, uid: u32, authorized_keys: &str) -> Result<(), Error> {
    // The folders above the home that this makes (`<dir>/home`) must let the user through,
    // whatever the caller's umask (under 077 sshd could not read authorized_keys).
    let missing: Vec<&Path> = home
        .ancestors()
        .skip(1)
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .collect();
    for d in missing.into_iter().rev() {
        fs::create_dir(d).map_err(|e| io_error("create", d, e))?;
        set_mode(d, 0o755)?;
    }
    let ssh_dir = home.join(".ssh");
    fs::create_dir_all(&ssh_dir).map_err(|e| io_error("create", &ssh_dir, e))?;
    let keys_file = ssh_dir.join("authorized_keys");
    fs::write(&keys_file, authorized_keys).map_err(|e| io_error("write", &keys_file, e))?;
    for (path, mode) in [
        (home, 0o755),
        (ssh_dir.as_path(), 0o700),
        (keys_file.as_path(), 0o600),
    ] {
        chown(path, Some(uid), Some(uid)).map_err(|e| io_error("chown", path, e))?;
        set_mode(path, mode)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(hash: Option<&str>) -> Account {
        Account {
            name: "alice".into(),
            uid: FIRST_UID,
            home: PathBuf::from("/d/home/alice"),
            shell: "/bin/sh".into(),
            password_hash: hash.map(str::to_owned),
        }
    }

    #[test]
    fn account_lines() {
        let a = alice(Some("$6$salt$h"));
        assert_eq!(
            a.passwd_line(),
            "alice:x:2001:2001:sshlab test user:/d/home/alice:/bin/sh\n"
        );
        assert_eq!(a.group_line(), "alice:x:2001:\n");
        assert_eq!(a.shadow_line(), "alice:$6$salt$h:19000:0:99999:7:::\n");
        // No password: "*", not the "!" that would lock key logins too.
        assert_eq!(alice(None).shadow_line(), "alice:*:19000:0:99999:7:::\n");
        assert!(!format!("{a:?}").contains("salt"));
    }

    #[test]
    fn files_define_the_system_accounts_first() {
        let files = AccountFiles::new(None, &[alice(None)]);
        let names = |text: &str| -> Vec<String> {
            text.lines()
                .map(|l| l.split(':').next().unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(names(&files.passwd), ["root", "sshd", "nobody", "alice"]);
        assert_eq!(names(&files.group), ["root", "nogroup", "alice"]);
        assert_eq!(names(&files.shadow), ["root", "sshd", "nobody", "alice"]);
        assert!(files.shadow.starts_with("root:*:"));
        let with_root = AccountFiles::new(Some("$6$r$h"), &[]);
        assert!(with_root.shadow.starts_with("root:$6$r$h:19000:"));
        assert!(!format!("{with_root:?}").contains("$6$"));
    }

    #[test]
    fn user_names_are_validated() {
        assert!(validate_user_name("alice").is_ok());
        assert!(validate_user_name("test_user-2").is_ok());
        assert!(validate_user_name("").is_err());
        assert!(validate_user_name("Alice").is_err());
        assert!(validate_user_name("a:b").is_err());
        assert!(validate_user_name(&"a".repeat(33)).is_err());
        assert!(matches!(
            validate_user_name("root"),
            Err(Error::ReservedUserName(_))
        ));
    }

    #[test]
    fn passwords_with_line_breaks_are_refused_before_openssl() {
        assert!(matches!(
            hash_password("a\nb"),
            Err(Error::PasswordLineBreak)
        ));
    }
}
