//! Decoding a client's private key without letting the key decide how long that takes.
//!
//! An encrypted OpenSSH key names its own bcrypt work factor (`rounds`); a key with rounds set
//! to billions makes `decode_secret_key` run for hours. So: the rounds are read from the key and
//! capped ([`MAX_BCRYPT_ROUNDS`]) before any decoding, and decoding runs on a blocking thread,
//! at most [`DECODERS`] at a time, within the caller's time budget, so the async runtime (and
//! `/health`) never waits for it. The decoders are shared fairly between remote addresses: an
//! address decodes one key at a time and queues the rest behind its own, so at most one of its
//! keys waits for a decoder at once, and a flood of slow keys from one address (each 256
//! rounds, about a second of CPU) delays another address's key by one decode at most, and
//! takes one core, not all of them. Formats whose work factor the key sets and that are not read
//! here are refused: encrypted PKCS#8 (scrypt or PBKDF2; an scrypt `N` of 2^40 makes the
//! decoder allocate terabytes and abort the process) and encrypted PuTTY keys (Argon2). The
//! key text is read the way russh reads it (`decode_secret_key`: exact armour lines, and only
//! the lines made of base64 characters), so an extra line cannot hide the rounds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use base64::Engine;
use russh::keys::PrivateKey;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::SshError;

/// The most bcrypt rounds a key may ask for: ssh-keygen writes 16 by default and `-a 100` is
/// the usual hardened choice; each round costs about as much as the first.
pub const MAX_BCRYPT_ROUNDS: u32 = 256;

/// Keys decoded at once, server-wide.
pub const DECODERS: usize = 2;

static PERMITS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(DECODERS));

/// Each address's turn: a semaphore of one, for as long as one of its keys decodes or waits.
static TURNS: LazyLock<Mutex<HashMap<IpAddr, Arc<Semaphore>>>> = LazyLock::new(Mutex::default);

fn turns() -> std::sync::MutexGuard<'static, HashMap<IpAddr, Arc<Semaphore>>> {
    TURNS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Forgets an address's turn once nobody holds or waits for it (dropped after the permit and
/// after any wait for it, so the map only holds addresses with a key in progress).
struct ForgetTurn(IpAddr);

impl Drop for ForgetTurn {
    fn drop(&mut self) {
        let mut turns = turns();
        if turns
            .get(&self.0)
            .is_some_and(|t| Arc::strong_count(t) == 1)
        {
            turns.remove(&self.0);
        }
    }
}

/// An address's turn to decode. Fields drop in order: the permit, then the map entry.
struct Turn {
    _permit: OwnedSemaphorePermit,
    _forget: ForgetTurn,
}

/// Waits for `address`'s turn.
async fn turn_of(address: IpAddr) -> Result<Turn, SshError> {
    let semaphore = turns()
        .entry(address)
        .or_insert_with(|| Arc::new(Semaphore::new(1)))
        .clone();
    let forget = ForgetTurn(address);
    let permit = semaphore
        .acquire_owned()
        .await
        .map_err(|_| SshError::KeyPolicy("key decoding is shut down".into()))?;
    Ok(Turn {
        _permit: permit,
        _forget: forget,
    })
}

/// Decodes `pem` (with `passphrase`) within `budget`, in `address`'s turn (its network, as
/// [`crate::ratelimit::network_of`] draws it).
pub async fn decode(
    pem: &str,
    passphrase: Option<&str>,
    budget: Duration,
    address: IpAddr,
) -> Result<Arc<PrivateKey>, SshError> {
    if let Some(why) = refused_format(pem) {
        return Err(SshError::KeyPolicy(why.to_owned()));
    }
    if let Some(rounds) = bcrypt_rounds(pem)
        && rounds > MAX_BCRYPT_ROUNDS
    {
        return Err(SshError::KeyPolicy(format!(
            "the key asks for {rounds} bcrypt rounds; at most {MAX_BCRYPT_ROUNDS} are accepted \
             (re-encrypt it with `ssh-keygen -p -a 100`)"
        )));
    }
    let work = async {
        let turn = turn_of(address).await?;
        let permit = PERMITS
            .acquire()
            .await
            .map_err(|_| SshError::KeyPolicy("key decoding is shut down".into()))?;
        let (pem, pass) = (pem.to_owned(), passphrase.map(str::to_owned));
        let decoded = tokio::task::spawn_blocking(move || {
            // Held until decoding ends, even if the caller gave up meanwhile: the CPU is busy
            // until then.
            let _held = (permit, turn);
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

/// Why a key of a format whose decoding cost the key itself sets is refused, if it is one.
fn refused_format(pem: &str) -> Option<&'static str> {
    if pem.trim().starts_with("PuTTY-User-Key-File-") {
        let encrypted = pem.lines().any(|l| {
            l.strip_prefix("Encryption:")
                .is_some_and(|v| v.trim() != "none")
        });
        return encrypted.then_some(
            "encrypted PuTTY keys are not accepted (the key sets its own Argon2 cost); convert \
             it to an OpenSSH key (puttygen KEY -O private-openssh-new)",
        );
    }
    pem.lines()
        .any(|l| l == "-----BEGIN ENCRYPTED PRIVATE KEY-----")
        .then_some(
            "encrypted PKCS#8 keys are not accepted (the key sets its own scrypt or PBKDF2 \
             cost); convert it to an OpenSSH key (ssh-keygen -p -f KEY)",
        )
}

/// A base64 character, as russh's key reader judges a line (`is_base64_char`).
fn is_base64_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')
}

/// The bcrypt rounds an encrypted `openssh-key-v1` key asks for; `None` for anything else (an
/// unencrypted key, another format, or text that does not parse, which the decoder then
/// rejects with its own error). The body is gathered as russh gathers it.
pub fn bcrypt_rounds(pem: &str) -> Option<u32> {
    let body: String = pem
        .lines()
        .skip_while(|l| *l != "-----BEGIN OPENSSH PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| !l.starts_with("-----END "))
        .filter(|l| l.chars().all(is_base64_char))
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
        // A line russh skips cannot hide the rounds from this reader.
        let padded = armoured("bcrypt", 2_000_000_000).replace(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n",
            "-----BEGIN OPENSSH PRIVATE KEY-----\n!\n",
        );
        assert_eq!(bcrypt_rounds(&padded), Some(2_000_000_000));
    }

    #[test]
    fn formats_whose_cost_the_key_sets_are_refused() {
        let pkcs8 =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(refused_format(pkcs8).is_some_and(|w| w.contains("PKCS#8")));
        let ppk = "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: aes256-cbc\nKey-Derivation: Argon2id\n";
        assert!(refused_format(ppk).is_some_and(|w| w.contains("PuTTY")));
        let plain_ppk = "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n";
        assert_eq!(refused_format(plain_ppk), None);
        assert_eq!(refused_format(&armoured("bcrypt", 16)), None);
    }

    /// An address's turn is forgotten once nobody holds or waits for it, also when a waiter
    /// gives up.
    #[tokio::test]
    async fn turns_are_forgotten_when_done_or_abandoned() {
        // An address no other test uses (the turns are process-wide).
        let here = IpAddr::from([192, 0, 2, 25]);
        let e = decode("not a key", None, Duration::from_secs(5), here).await;
        assert!(matches!(e, Err(SshError::Key(_))), "{e:?}");
        assert!(
            !turns().contains_key(&here),
            "a finished decode left its turn"
        );
        let holder = turn_of(here).await.expect("a turn");
        let waiter = tokio::time::timeout(Duration::from_millis(20), turn_of(here)).await;
        assert!(waiter.is_err(), "one turn at a time per address");
        assert!(turns().contains_key(&here));
        drop(holder);
        assert!(
            !turns().contains_key(&here),
            "an abandoned wait left its turn"
        );
    }

    #[tokio::test]
    async fn a_key_asking_for_billions_of_rounds_is_refused_at_once() {
        let started = std::time::Instant::now();
        let e = decode(
            &armoured("bcrypt", 2_000_000_000),
            Some("x"),
            Duration::from_secs(5),
            IpAddr::from([127, 0, 0, 1]),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("2000000000 bcrypt rounds"), "{e}");
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
