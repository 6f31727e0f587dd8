//! Host-key verification against an OpenSSH `known_hosts` file.
//!
//! Matching (plain and `|1|` hashed host names, the `[host]:port` form for
//! ports other than 22) is delegated to russh's
//! [`known_host_keys_path`](russh::keys::known_hosts::known_host_keys_path);
//! this module adds OpenSSH's verdicts on top:
//!
//! * a recorded key equal to the offered one: accepted;
//! * otherwise a recorded key of the same type: [`SshError::HostKeyMismatch`];
//! * otherwise (no entry, or entries of other key types only):
//!   [`SshError::HostKeyUnknown`]. Nothing is ever written to the file.
//!
//! Limitations inherited from russh's parser: fields must be separated by
//! single spaces (as `ssh`/`ssh-keyscan` write them), wildcard patterns and
//! `@cert-authority`/`@revoked` markers are not honoured (such lines never
//! match, so they cannot make a key trusted), and host names are compared
//! lowercased but otherwise literally (no canonicalisation, no IP check).

use std::path::Path;

use russh::keys::{Algorithm, HashAlg, PublicKey};

use super::SshError;

/// Checks the key a server offered for `host:port` against `path`.
pub(super) fn verify(
    path: &Path,
    host: &str,
    port: u16,
    addr: &str,
    key: &PublicKey,
) -> Result<(), SshError> {
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let entries = entries_for(path, host, port)?;
    if entries
        .iter()
        .any(|(_, known)| known.key_data() == key.key_data())
    {
        tracing::debug!(%addr, %fingerprint, "host key matches known_hosts");
        return Ok(());
    }
    if let Some((line, _)) = entries
        .iter()
        .find(|(_, known)| known.algorithm() == key.algorithm())
    {
        tracing::warn!(%addr, %fingerprint, line, "host key MISMATCH against known_hosts");
        return Err(SshError::HostKeyMismatch {
            addr: addr.to_owned(),
            fingerprint,
            known_hosts: path.to_owned(),
            line: *line,
        });
    }
    tracing::info!(%addr, %fingerprint, known_entries = entries.len(), "host key not in known_hosts");
    Err(SshError::HostKeyUnknown {
        addr: addr.to_owned(),
        fingerprint,
        known_hosts: path.to_owned(),
    })
}

/// Key algorithms recorded for `host:port` (empty on any problem): used to
/// ask the server for a host key type we can verify.
pub(super) fn known_algorithms(path: &Path, host: &str, port: u16) -> Vec<Algorithm> {
    entries_for(path, host, port)
        .map(|entries| entries.into_iter().map(|(_, k)| k.algorithm()).collect())
        .unwrap_or_default()
}

/// Reorders `preferred` host-key algorithms so that those with a recorded
/// key come first (what OpenSSH does), keeping the relative order otherwise.
pub(super) fn prefer_known(preferred: &[Algorithm], known: &[Algorithm]) -> Vec<Algorithm> {
    let is_rsa = |a: &Algorithm| matches!(a, Algorithm::Rsa { .. });
    let is_known = |a: &Algorithm| known.iter().any(|k| k == a || (is_rsa(k) && is_rsa(a)));
    let (mut first, rest): (Vec<_>, Vec<_>) = preferred.iter().cloned().partition(is_known);
    first.extend(rest);
    first
}

/// `(line, key)` for every entry matching `host:port`, with real 1-based line
/// numbers (russh's count skips comment lines).
fn entries_for(path: &Path, host: &str, port: u16) -> Result<Vec<(usize, PublicKey)>, SshError> {
    let known_hosts_error = |reason: String| SshError::KnownHosts {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| known_hosts_error(e.to_string()))?;
    let entries =
        russh::keys::known_hosts::known_host_keys_path(&host.to_ascii_lowercase(), port, path)
            .map_err(|e| known_hosts_error(e.to_string()))?;
    // russh numbers only the lines that do not start with '#'.
    let real_lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#'))
        .map(|(i, _)| i + 1)
        .collect();
    Ok(entries
        .into_iter()
        .map(|(n, key)| (real_lines.get(n.wrapping_sub(1)).copied().unwrap_or(n), key))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).expect("valid test key")
    }

    fn file(content: &str) -> (tempdir::Dir, std::path::PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("known_hosts");
        let mut f = std::fs::File::create(&path).expect("create known_hosts");
        f.write_all(content.as_bytes()).expect("write known_hosts");
        (dir, path)
    }

    /// A tiny self-cleaning temp dir (no extra dependency).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "mcp-ssh-kh-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).expect("create temp dir");
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn matching_key_on_custom_port_is_accepted() {
        let (_d, path) = file(&format!(
            "# comment\n[127.0.0.1]:2222 ssh-ed25519 {KEY_A}\n"
        ));
        verify(&path, "127.0.0.1", 2222, "127.0.0.1:2222", &key(KEY_A)).expect("known key");
    }

    #[test]
    fn port_matters() {
        let (_d, path) = file(&format!("127.0.0.1 ssh-ed25519 {KEY_A}\n"));
        let err = verify(&path, "127.0.0.1", 2222, "127.0.0.1:2222", &key(KEY_A))
            .expect_err("entry is for port 22");
        assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err:?}");
        verify(&path, "127.0.0.1", 22, "127.0.0.1:22", &key(KEY_A)).expect("port 22 entry");
    }

    #[test]
    fn different_key_of_same_type_is_a_mismatch_with_real_line_number() {
        let (_d, path) = file(&format!(
            "# one\n# two\nother ssh-ed25519 {KEY_A}\n[h]:2200 ssh-ed25519 {KEY_B}\n"
        ));
        let err = verify(&path, "h", 2200, "h:2200", &key(KEY_A)).expect_err("mismatch");
        match err {
            SshError::HostKeyMismatch {
                line, fingerprint, ..
            } => {
                assert_eq!(line, 4);
                assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
            }
            other => panic!("expected mismatch, got {other:?}"),
        }
    }

    #[test]
    fn missing_file_is_a_known_hosts_error() {
        let err = verify(
            Path::new("/nonexistent/known_hosts"),
            "h",
            22,
            "h:22",
            &key(KEY_A),
        )
        .expect_err("missing file");
        assert!(matches!(err, SshError::KnownHosts { .. }), "{err:?}");
    }

    #[test]
    fn known_algorithms_come_first() {
        let preferred = [
            Algorithm::Ed25519,
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa { hash: None },
        ];
        let known = [Algorithm::Rsa { hash: None }];
        let ordered = prefer_known(&preferred, &known);
        assert_eq!(
            ordered,
            vec![
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512)
                },
                Algorithm::Rsa { hash: None },
                Algorithm::Ed25519
            ]
        );
    }
}
