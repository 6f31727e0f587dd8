//! Provisioning an OpenSSH `sshd` without touching the machine's `/etc`.
//!
//! Two parts of sshlab run real OpenSSH servers as made-up users: the lab's netns-backend
//! target (`sshlab`, `vm/target.rs`, the product) and the dev-only test fixture
//! (`sshlab-testkit`, `SshdBuilder`). Both write their own `passwd`/`group`/`shadow`, host and
//! user keys and `sshd_config` into a directory and show the account files to sshd through a
//! private mount namespace. The product may not depend on the test kit, so what they share
//! lives here:
//!
//! - [`accounts`]: the account files (lines, hashed passwords, user homes with
//!   `authorized_keys`);
//! - [`keys`]: ed25519 key pairs by `ssh-keygen`;
//! - [`server`]: finding the sshd binary, probing which `sshd_config` keywords it knows, its
//!   privilege-separation directory, and the `sshd_config` settings both use.
//!
//! Deliberately not here: namespaces, mounts and process supervision (the two callers differ:
//! one fixture sshd bound to a test's lifetime versus seven long-lived roles behind an
//! overlay), installing OpenSSH (only the test kit may run apt-get), and role policy.
//!
//! Every function is synchronous and reports a typed [`Error`]; external programs
//! (`ssh-keygen`, `openssl`) are run with their stderr kept for the message.

#![deny(missing_docs)]

pub mod accounts;
pub mod keys;
pub mod server;

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

pub use accounts::{
    Account, AccountFiles, FIRST_UID, hash_password, install_home, validate_user_name,
};
pub use keys::{read_public_key, ssh_keygen};
pub use server::{
    PER_SOURCE_PENALTIES, PRIVSEP_DIR, ServerConfig, ensure_privsep_dir, find_sshd, sshd_binary,
    supports_keyword,
};

/// Errors of this crate: one variant per step that can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed.
    #[error("Cannot {action} {}", path.display())]
    Io {
        /// What was attempted ("write", "chmod 600", ...).
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An external program could not be started (or talked to).
    #[error("Cannot run {program} (package {package})")]
    Spawn {
        /// The program.
        program: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `ssh-keygen` exited with an error.
    #[error("ssh-keygen for {} failed ({status}): {stderr}", path.display())]
    Keygen {
        /// The private key path asked for.
        path: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// Its stderr, trimmed.
        stderr: String,
    },
    /// `openssl passwd -6` failed or printed something that is not a SHA-512 crypt hash.
    #[error("openssl passwd -6 failed ({status}): {stderr}")]
    HashPassword {
        /// Its exit status.
        status: ExitStatus,
        /// Its stderr, trimmed.
        stderr: String,
    },
    /// A password with a line break (it would be cut at the break by `openssl -stdin`).
    #[error("Passwords cannot contain line breaks")]
    PasswordLineBreak,
    /// A user name that does not fit a passwd line or an sshd_config.
    #[error("Invalid user name {0:?}: use [a-z_][a-z0-9_-]*, at most 32 characters")]
    InvalidUserName(String),
    /// A user name the generated account files already define.
    #[error("User name {0:?} is reserved (root, sshd and nobody are always generated)")]
    ReservedUserName(String),
    /// A `.pub` file without the "type base64" fields.
    #[error("Malformed public key file {}", .0.display())]
    MalformedPublicKey(PathBuf),
    /// No sshd binary in any of [`server::SSHD_CANDIDATES`].
    #[error("OpenSSH sshd not found (Debian: apt-get install openssh-server)")]
    SshdNotFound,
}

/// `chmod mode path`.
///
/// Modes are set explicitly rather than left to the umask: sshd (with or without
/// `StrictModes`), PAM and the users' shells read these files as other users.
pub fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|source| io_error(format!("chmod {mode:o}"), path, source))
}

/// An [`Error::Io`].
pub(crate) fn io_error(action: impl Into<String>, path: &Path, source: io::Error) -> Error {
    Error::Io {
        action: action.into(),
        path: path.to_path_buf(),
        source,
    }
}
