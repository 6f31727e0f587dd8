//! [`SshError`]: every way connecting to a host or running a command on it
//! can fail, with short messages meant to be shown to end users as is.
//!
//! Addresses are rendered `host:port` (`[v6addr]:port` for IPv6 literals) and
//! durations in milliseconds, so messages are stable and easy to grep.

use std::path::PathBuf;

/// Errors of the SSH client layer.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The host name could not be resolved to any address.
    #[error("cannot resolve host {host}: {reason}")]
    Resolve {
        /// The host name as given.
        host: String,
        /// Resolver message.
        reason: String,
    },

    /// Nothing listens on the port (TCP RST).
    #[error("connection refused by {addr}")]
    Refused {
        /// `host:port`.
        addr: String,
    },

    /// No route to the host or network, or another socket-level failure.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// `host:port`.
        addr: String,
        /// OS message.
        reason: String,
    },

    /// TCP connect plus SSH handshake did not finish within
    /// [`ConnectOptions::connect_timeout`](super::ConnectOptions::connect_timeout).
    #[error("connection to {addr} timed out after {after_ms} ms")]
    ConnectTimeout {
        /// `host:port`.
        addr: String,
        /// The timeout that elapsed.
        after_ms: u64,
    },

    /// The server's host key is not in the known_hosts file.
    #[error("host key of {addr} is unknown ({fingerprint}); it is not in {}", known_hosts.display())]
    HostKeyUnknown {
        /// `host:port`.
        addr: String,
        /// SHA-256 fingerprint of the key the server offered (`SHA256:...`).
        fingerprint: String,
        /// The known_hosts file that was consulted.
        known_hosts: PathBuf,
    },

    /// The known_hosts file has a different key of the same type for this
    /// host: the key changed, or someone is intercepting the connection.
    #[error(
        "host key of {addr} does not match {}:{line} (server offered {fingerprint}); \
         possible man-in-the-middle attack",
        known_hosts.display()
    )]
    HostKeyMismatch {
        /// `host:port`.
        addr: String,
        /// SHA-256 fingerprint of the key the server offered.
        fingerprint: String,
        /// The known_hosts file that was consulted.
        known_hosts: PathBuf,
        /// 1-based line of the conflicting entry.
        line: usize,
    },

    /// The known_hosts file is missing, unreadable or malformed.
    #[error("cannot use known_hosts file {}: {reason}", path.display())]
    KnownHosts {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// The server rejected the credentials.
    #[error("authentication failed for {user}@{addr}")]
    AuthFailed {
        /// The user name.
        user: String,
        /// `host:port`.
        addr: String,
        /// The method that was tried (`"password"` or `"publickey"`).
        tried: String,
        /// Methods the server said may continue (may be empty).
        allowed: Vec<String>,
    },

    /// Authentication did not finish within
    /// [`ConnectOptions::auth_timeout`](super::ConnectOptions::auth_timeout).
    #[error("authentication of {user}@{addr} timed out after {after_ms} ms")]
    AuthTimeout {
        /// The user name.
        user: String,
        /// `host:port`.
        addr: String,
        /// The timeout that elapsed.
        after_ms: u64,
    },

    /// The command did not finish within [`ExecLimits::timeout`](super::ExecLimits::timeout).
    #[error("command timed out after {after_ms} ms")]
    Timeout {
        /// The timeout that elapsed.
        after_ms: u64,
    },

    /// The connection dropped (server killed, network cut, keepalive
    /// timeout, ...). The [`Connection`](super::Connection) is unusable.
    #[error("connection to {addr} lost: {reason}")]
    Disconnected {
        /// `host:port`.
        addr: String,
        /// What was observed.
        reason: String,
    },

    /// A channel-level failure: the server refused to open a session channel
    /// (e.g. `MaxSessions` reached) or to run the command.
    #[error("ssh channel error: {0}")]
    Channel(String),

    /// Any other SSH protocol failure (key exchange, no common algorithm, ...).
    #[error("ssh protocol error: {0}")]
    Protocol(#[source] russh::Error),

    /// The private key could not be decoded (bad format, wrong or missing
    /// passphrase, unsupported type).
    #[error("cannot use private key: {0}")]
    Key(#[source] russh::keys::Error),

    /// The server's command-output budget had no room for this command's output.
    #[error("{0}")]
    Busy(String),

    /// The command was stopped before it finished because the server is shutting down: it
    /// was sent SIGTERM and its channel closed.
    #[error("command stopped: the server is shutting down (it was sent SIGTERM)")]
    ShuttingDown,

    /// The private key was refused before decoding (it asks for more work than allowed), or
    /// decoding did not finish within the connect budget.
    #[error("cannot use private key: {0}")]
    KeyPolicy(String),
}

impl From<russh::Error> for SshError {
    /// Wraps as [`SshError::Protocol`]; code that knows the address maps
    /// connection-loss errors to [`SshError::Disconnected`] instead.
    fn from(e: russh::Error) -> Self {
        SshError::Protocol(e)
    }
}

impl SshError {
    /// Classifies a russh error seen while talking to `addr`.
    pub(super) fn from_russh(e: russh::Error, addr: &str) -> Self {
        use russh::Error as E;
        match e {
            E::Disconnect | E::HUP | E::SendError | E::RecvError => SshError::Disconnected {
                addr: addr.to_owned(),
                reason: "the SSH server closed the connection".to_owned(),
            },
            E::KeepaliveTimeout => SshError::Disconnected {
                addr: addr.to_owned(),
                reason: "the server stopped answering keepalives".to_owned(),
            },
            E::InactivityTimeout => SshError::Disconnected {
                addr: addr.to_owned(),
                reason: "inactivity timeout".to_owned(),
            },
            E::IO(io) => SshError::Disconnected {
                addr: addr.to_owned(),
                reason: io.to_string(),
            },
            E::ChannelOpenFailure(reason) => SshError::Channel(format!(
                "{addr} refused to open a session channel ({reason:?})"
            )),
            other => SshError::Protocol(other),
        }
    }

    /// Re-classifies a [`SshError::Protocol`] with the address known.
    pub(super) fn with_addr(self, addr: &str) -> Self {
        match self {
            SshError::Protocol(e) => SshError::from_russh(e, addr),
            other => other,
        }
    }

    /// Whether the error means the connection itself is gone or could not
    /// be made (as opposed to a failed command, credentials or host key).
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            SshError::Resolve { .. }
                | SshError::Refused { .. }
                | SshError::Unreachable { .. }
                | SshError::ConnectTimeout { .. }
                | SshError::Disconnected { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_short_and_clear() {
        let e = SshError::Refused {
            addr: "127.0.0.1:2222".into(),
        };
        assert_eq!(e.to_string(), "connection refused by 127.0.0.1:2222");
        let e = SshError::AuthFailed {
            user: "testuser".into(),
            addr: "127.0.0.1:2222".into(),
            tried: "password".into(),
            allowed: vec!["publickey".into()],
        };
        assert_eq!(
            e.to_string(),
            "authentication failed for testuser@127.0.0.1:2222"
        );
        let e = SshError::Timeout { after_ms: 5000 };
        assert_eq!(e.to_string(), "command timed out after 5000 ms");
    }

    #[test]
    fn russh_disconnects_become_disconnected() {
        let e = SshError::from(russh::Error::Disconnect).with_addr("h:22");
        assert!(matches!(e, SshError::Disconnected { .. }), "{e:?}");
        assert!(e.is_connection_error());
        let e = SshError::from(russh::Error::Kex).with_addr("h:22");
        assert!(matches!(e, SshError::Protocol(_)), "{e:?}");
    }
}
