//! The sshd side: finding the binary, probing which `sshd_config` keywords it knows, its
//! privilege-separation directory, and the settings every generated `sshd_config` shares.
//!
//! The settings are those of a lab server, not a hardened one: many sessions and unauthenticated
//! connections at once (load tests), `StrictModes no` (homes live in a caller's directory),
//! verbose logs, and no DNS, motd or lastlog (each would add latency or output that is not the
//! behaviour under test).

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::{Error, io_error, set_mode};

/// Where sshd may be, in order: Debian and most distributions, a source build, then the
/// distributions that install it in `bin`.
pub const SSHD_CANDIDATES: [&str; 4] = [
    "/usr/sbin/sshd",
    "/usr/local/sbin/sshd",
    "/usr/bin/sshd",
    "/sbin/sshd",
];

/// OpenSSH's privilege-separation directory (Debian's build): sshd chroots its unprivileged
/// child into it and refuses to start without it.
pub const PRIVSEP_DIR: &str = "/run/sshd";

/// The `sshd_config` keyword of OpenSSH 9.8's per-source penalties (lowercase, as in sshd's
/// keyword table).
pub const PER_SOURCE_PENALTIES: &str = "persourcepenalties";

/// The first of [`SSHD_CANDIDATES`] that is a file.
pub fn find_sshd() -> Option<PathBuf> {
    SSHD_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// [`find_sshd`], or [`Error::SshdNotFound`].
pub fn sshd_binary() -> Result<PathBuf, Error> {
    find_sshd().ok_or(Error::SshdNotFound)
}

/// Whether the sshd binary knows a config keyword (lowercase).
///
/// sshd's keyword table is plain lowercase text in the binary, and a keyword it does not know
/// makes it refuse the whole config: this is how a config can use keywords newer than
/// Debian 12's OpenSSH 9.2 only where they exist. An unreadable binary knows nothing.
pub fn supports_keyword(sshd_bin: &Path, keyword: &str) -> bool {
    fs::read(sshd_bin).is_ok_and(|bytes| mentions(&bytes, keyword.as_bytes()))
}

/// Whether `needle` occurs in `haystack`.
fn mentions(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Creates [`PRIVSEP_DIR`] (0755) if missing. Debian's ssh service makes it at boot, so a
/// machine or VM whose sshd never ran has none, and every sshd started there exits at once.
pub fn ensure_privsep_dir() -> Result<(), Error> {
    let dir = Path::new(PRIVSEP_DIR);
    fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
    set_mode(dir, 0o755)
}

/// The `sshd_config` settings both callers generate; they add their own lines around them.
#[derive(Debug, Clone)]
pub struct ServerConfig<'a> {
    /// `ListenAddress`.
    pub listen: Ipv4Addr,
    /// One `Port` line each.
    pub ports: &'a [u16],
    /// `HostKey`.
    pub host_key: &'a Path,
    /// `PidFile`.
    pub pid_file: &'a Path,
    /// `UsePAM`.
    pub use_pam: bool,
    /// `PasswordAuthentication`.
    pub password_authentication: bool,
    /// `PermitRootLogin`.
    pub permit_root_login: bool,
    /// Adds `PerSourcePenalties no`; set it when the sshd [`supports_keyword`]
    /// [`PER_SOURCE_PENALTIES`]. OpenSSH >= 9.8 would otherwise refuse a client address for a
    /// while after failed logins, which tests and scenarios make on purpose.
    pub no_per_source_penalties: bool,
}

impl ServerConfig<'_> {
    /// The lines, each ending in a newline.
    ///
    /// sshd keeps the first value it reads for a keyword: a caller's overrides go before
    /// these, and `Match` blocks after all of them.
    pub fn render(&self) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let mut c = format!("ListenAddress {}\n", self.listen);
        for port in self.ports {
            let _ = writeln!(c, "Port {port}");
        }
        let _ = write!(
            c,
            "HostKey {}\n\
             PidFile {}\n\
             UsePAM {}\n\
             PasswordAuthentication {}\n\
             PermitEmptyPasswords no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             PermitRootLogin {}\n\
             StrictModes no\n\
             AuthorizedKeysFile %h/.ssh/authorized_keys\n\
             MaxStartups 200:30:400\n\
             MaxSessions 100\n\
             MaxAuthTries 10\n\
             LogLevel VERBOSE\n\
             UseDNS no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             X11Forwarding no\n",
            self.host_key.display(),
            self.pid_file.display(),
            yes_no(self.use_pam),
            yes_no(self.password_authentication),
            yes_no(self.permit_root_login),
        );
        if self.no_per_source_penalties {
            c.push_str("PerSourcePenalties no\n");
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_probe_finds_exact_bytes_only() {
        let binary = b"\0\x7fELF..permitrootlogin\0persourcepenalties\0maxstartups\0";
        assert!(mentions(binary, PER_SOURCE_PENALTIES.as_bytes()));
        assert!(mentions(binary, b"maxstartups"));
        assert!(!mentions(binary, b"PerSourcePenalties"));
        assert!(!mentions(
            b"persourcepenaltie",
            PER_SOURCE_PENALTIES.as_bytes()
        ));
        assert!(!mentions(binary, b""));
        assert!(!supports_keyword(
            Path::new("/nonexistent/sshd"),
            PER_SOURCE_PENALTIES
        ));
    }

    #[test]
    fn config_renders_every_setting() {
        let config = ServerConfig {
            listen: Ipv4Addr::new(10, 0, 0, 2),
            ports: &[2222, 2322],
            host_key: Path::new("/d/host_key"),
            pid_file: Path::new("/d/sshd.pid"),
            use_pam: true,
            password_authentication: false,
            permit_root_login: true,
            no_per_source_penalties: false,
        };
        let text = config.render();
        assert!(
            text.starts_with("ListenAddress 10.0.0.2\nPort 2222\nPort 2322\nHostKey /d/host_key\n")
        );
        for line in [
            "PidFile /d/sshd.pid",
            "UsePAM yes",
            "PasswordAuthentication no",
            "PermitRootLogin yes",
            "MaxStartups 200:30:400",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.ends_with("X11Forwarding no\n"));
        let with = ServerConfig {
            no_per_source_penalties: true,
            ..config
        };
        assert!(with.render().ends_with("PerSourcePenalties no\n"));
    }
}
