//! Entering an existing network namespace by name, the way `ip netns exec` does.
//!
//! `ip netns add NAME` bind-mounts a namespace file at `/var/run/netns/NAME`; [`enter`] opens it
//! and calls `setns(2)`. `setns` moves only the calling thread, so it must run before any other
//! thread exists: `crate::run` calls it before building the (single-threaded) tokio runtime and
//! before opening any netlink socket or `/dev/net/tun`, both of which bind to the namespace of
//! the thread that opens them. Nothing is created here and nothing needs tearing down.

use std::fs::File;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};

/// Where `ip netns add` puts its namespace files.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Errors of this layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name could not be a file under [`NETNS_DIR`].
    #[error("Invalid network namespace name {name:?}: {reason}")]
    InvalidName {
        /// As given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The namespace file could not be opened (usually: no such namespace).
    #[error("Cannot open network namespace {name:?} at {} (create it with `ip netns add {name}`)", path.display())]
    Open {
        /// As given.
        name: String,
        /// The file tried.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `setns(2)` refused (usually: not root).
    #[error("Cannot enter network namespace {name:?}")]
    Setns {
        /// As given.
        name: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

/// Checks that `name` is a plain file name (what `ip netns` accepts).
pub fn validate(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it is . or ..")
    } else if name.contains('/') || name.contains('\0') {
        Some("it contains '/' or NUL")
    } else if name.len() > 255 {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Moves the calling thread into the network namespace `name`. Call it before any other thread
/// or any netlink socket exists (see the module docs).
pub fn enter(name: &str) -> Result<(), Error> {
    validate(name)?;
    let path = PathBuf::from(NETNS_DIR).join(name);
    let file = File::open(&path).map_err(|source| Error::Open {
        name: name.to_owned(),
        path: path.clone(),
        source,
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Setns {
        name: name.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        assert!(validate("sshlab-test-1").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate(&"x".repeat(256)).is_err());
    }

    #[test]
    fn missing_namespace_says_how_to_create_it() {
        let err = enter("sshlab-no-such-namespace-for-sure").unwrap_err();
        assert!(err.to_string().contains("ip netns add"), "{err}");
    }
}
