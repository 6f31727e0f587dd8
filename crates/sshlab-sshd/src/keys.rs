//! Host and user keys: ed25519 key pairs made by `ssh-keygen`.
//!
//! `ssh-keygen` rather than a key crate: the files are then exactly what OpenSSH writes
//! (`path` in the OpenSSH private-key format, `path.pub` as one `type base64 comment` line),
//! which is what both sshd (`HostKey`) and the SSH clients under test read.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{Error, io_error};

/// `ssh-keygen -q -t ed25519 -N '' -C comment -f path`: writes `path` (0600) and `path.pub`.
/// Fails if `path` exists (ssh-keygen would ask whether to overwrite; stdin is closed).
pub fn ssh_keygen(path: &Path, comment: &str) -> Result<(), Error> {
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            program: "ssh-keygen",
            package: "openssh-client",
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Keygen {
            path: path.to_path_buf(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Reads an OpenSSH `.pub` file as `"type base64"` (the comment dropped), the form of a
/// known_hosts entry's key.
pub fn read_public_key(path: &Path) -> Result<String, Error> {
    let text = fs::read_to_string(path).map_err(|e| io_error("read", path, e))?;
    public_key_fields(&text).ok_or_else(|| Error::MalformedPublicKey(path.to_path_buf()))
}

/// `"type base64"` from a public key line, if it has both fields.
fn public_key_fields(text: &str) -> Option<String> {
    let mut fields = text.split_whitespace();
    Some(format!("{} {}", fields.next()?, fields.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_comment_is_dropped() {
        assert_eq!(
            public_key_fields("ssh-ed25519 AAAAC3Nz host@x\n").as_deref(),
            Some("ssh-ed25519 AAAAC3Nz")
        );
        assert_eq!(
            public_key_fields("ssh-ed25519 AAAAC3Nz").as_deref(),
            Some("ssh-ed25519 AAAAC3Nz")
        );
        assert_eq!(public_key_fields("ssh-ed25519\n"), None);
        assert_eq!(public_key_fields(""), None);
    }
}
