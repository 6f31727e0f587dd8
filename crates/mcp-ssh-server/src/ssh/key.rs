//! Decoding a client's private key without letting the key decide how long that takes.
//!
//! An encrypted OpenSSH key names its own bcrypt work factor (`rounds`); a key with rounds set
//! to billions makes `decode_secret_key` run for hours. So: the rounds are read from the key and
//! capped ([`MAX_BCRYPT_ROUNDS`]) before any decoding, and decoding runs on a blocking thread,
//! at most [`DECODERS`] at a time, within the caller's time budget, so the async runtime (and
//! `/health`) never waits for it. A PKCS#8 key's own work factor (PBKDF2 iterations) is not
//! read: for those the blocking thread, the concurrency cap and the budget are the bound.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine;
use russh::keys::PrivateKey;
use tokio::sync::Semaphore;

use super::error::SshError;

/// The most bcrypt rounds a key may ask for: ssh-keygen writes 16 by default and `-a 100` is
/// the usual hardened choice; each round costs about as much as the first.
pub const MAX_BCRYPT_ROUNDS: u32 = 256;

/// Keys decoded at once, server-wide.
pub const DECODERS: usize = 2;

static PERMITS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(DECODERS));

/// Decodes `pem` (with `passphrase`) within `budget`.
pub async fn decode(
    pem: &str,
    passphrase: Option<&str>,
    budget: Duration,
) -> Result<Arc<PrivateKey>, SshError> {
    if let Some(rounds) = bcrypt_rounds(pem)
        && rounds > MAX_BCRYPT_ROUNDS
    {
        return Err(SshError::KeyPolicy(format!(
            "the key asks for {rounds} bcrypt rounds; at most {MAX_BCRYPT_ROUNDS} are accepted \
             (re-encrypt it with `ssh-keygen -p -a 100`)"
        )));
    }
    let work = async {
        let permit = PERMITS
            .acquire()
            .await
            .map_err(|_| SshError::KeyPolicy("key decoding is shut down".into()))?;
        let (pem, pass) = (pem.to_owned(), passphrase.map(str::to_owned));
        let decoded = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            russh::keys::decode_secret_key(&pem, pass.as_deref())
        })
        .await
        .map_err(|e| SshError::KeyPolicy(format!("key decoding failed: {e}")))?;
        decoded.map(Arc::new).map_err(SshError::Key)
    };
    tokio::time::timeout(budget, work)
        .await
        .unwrap_or_else(|_| {
            Err(SshError::KeyPolicy(format!(
                "decoding the key took longer than {} ms",
                budget.as_millis()
            )))
        })
}

/// The bcrypt rounds an encrypted `openssh-key-v1` key asks for; `None` for anything else (an
/// unencrypted key, another format, or text that does not parse, which the decoder then
/// rejects with its own error).
pub fn bcrypt_rounds(pem: &str) -> Option<u32> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN OPENSSH PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let rest = bytes.strip_prefix(b"openssh-key-v1\0")?;
    let (_cipher, rest) = ssh_string(rest)?;
    let (kdf, rest) = ssh_string(rest)?;
    if kdf != b"bcrypt" {
        return None;
    }
    let (options, _) = ssh_string(rest)?;
    let (_salt, options) = ssh_string(options)?;
    let rounds: [u8; 4] = options.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(rounds))
}

/// One SSH `string` (u32 big-endian length, then the bytes) and what follows it.
fn ssh_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    let rest = b.get(4..)?;
    Some((rest.get(..len)?, rest.get(len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `openssh-key-v1` armour around a header with this kdf and rounds (no key inside).
    fn armoured(kdf: &str, rounds: u32) -> String {
        let mut b = b"openssh-key-v1\0".to_vec();
        let string = |b: &mut Vec<u8>, s: &[u8]| {
            b.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
            b.extend_from_slice(s);
        };
        string(&mut b, b"aes256-ctr");
        string(&mut b, kdf.as_bytes());
        let mut opts = Vec::new();
        string(&mut opts, &[7u8; 16]);
        opts.extend_from_slice(&rounds.to_be_bytes());
        string(&mut b, &opts);
        let text = base64::engine::general_purpose::STANDARD.encode(b);
        format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{text}\n-----END OPENSSH PRIVATE KEY-----\n")
    }

    #[test]
    fn rounds_are_read_from_the_key() {
        assert_eq!(bcrypt_rounds(&armoured("bcrypt", 16)), Some(16));
        assert_eq!(bcrypt_rounds(&armoured("bcrypt", u32::MAX)), Some(u32::MAX));
        assert_eq!(bcrypt_rounds(&armoured("none", 0)), None);
        assert_eq!(bcrypt_rounds("not a key"), None);
        let mut cut = armoured("bcrypt", 16);
        cut.replace_range(40..60, "");
        assert_eq!(bcrypt_rounds(&cut), None);
    }

    #[tokio::test]
    async fn a_key_asking_for_billions_of_rounds_is_refused_at_once() {
        let started = std::time::Instant::now();
        let e = decode(
            &armoured("bcrypt", 2_000_000_000),
            Some("x"),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("2000000000 bcrypt rounds"), "{e}");
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
