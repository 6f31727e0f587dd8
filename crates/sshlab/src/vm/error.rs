//! The `vm` layer's errors that a caller (a script, CI, the Nix apps) must tell apart, each with
//! its own exit code. The backends raise them where the cause is known (`Err(Error::...)?`,
//! kept through `anyhow` contexts); anything else (I/O, netlink) is a plain failure, exit 1.
//!
//! | exit | meaning |
//! |------|---------|
//! | 2    | bad input: something the user gives or must set up first is unusable (a TAP missing or another user's, a runner directory, a results directory out of reach, a path vng cannot take) |
//! | 3    | a VM did not become ready in time, or its process exited first (the message names it, with its log's tail) |
//! | 4    | a tool, kernel image or device the backend needs is not installed |
//! | 5    | the lab is already up, or was started by someone this user cannot act for |
//! | 130  | interrupted (Ctrl-C, SIGTERM) while starting; what was started is stopped |

/// A classified `vm` error (see the module's table for the exit codes).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something the user gives or must set up first is unusable.
    #[error("{0}")]
    Input(String),
    /// A VM did not become ready in time, or its process exited first.
    #[error("{0}")]
    NotReady(String),
    /// A tool, kernel image or device the backend needs is not installed.
    #[error("{0}")]
    Missing(String),
    /// The lab is already up, or belongs to someone this user cannot act for.
    #[error("{0}")]
    Conflict(String),
    /// Ctrl-C or SIGTERM while starting.
    #[error("{0}")]
    Interrupted(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Input(_) => 2,
            Self::NotReady(_) => 3,
            Self::Missing(_) => 4,
            Self::Conflict(_) => 5,
            Self::Interrupted(_) => 130,
        }
    }

    /// The exit code for any error out of the `vm` layer: the first classified error in its
    /// chain, else 1.
    pub fn exit_code_of(e: &anyhow::Error) -> u8 {
        e.chain()
            .find_map(|c| c.downcast_ref::<Self>())
            .map_or(1, Self::exit_code)
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn the_code_survives_context_and_plain_errors_are_one() {
        let e: anyhow::Result<()> = Err(Error::NotReady("VM mcp: not ready".into()).into());
        let e = e.context("vm up").unwrap_err();
        assert_eq!(Error::exit_code_of(&e), 3);
        assert_eq!(format!("{e:#}"), "vm up: VM mcp: not ready");
        assert_eq!(Error::exit_code_of(&anyhow::anyhow!("io")), 1);
        let missing: anyhow::Error = Error::Missing("no qemu".into()).into();
        assert_eq!(Error::exit_code_of(&missing), 4);
    }
}
