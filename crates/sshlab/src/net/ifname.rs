//! Linux interface names, checked before anything touches the kernel.
//!
//! The kernel's `dev_valid_name` rules: 1 to 15 bytes (IFNAMSIZ - 1), not `.` or `..`, no `/`,
//! `:` or whitespace. `sshlab-core` checks the topology's names when it loads the file; this
//! check also covers names typed on the command line (`netem --dev`).

use super::Error;

/// Checks `name` against the kernel's rules (one implementation, in `sshlab-core`).
pub fn validate(name: &str) -> Result<(), Error> {
    sshlab_core::topology::check_ifname(name).map_err(|reason| Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_rules() {
        for good in ["sshbr0", "sshtap2", "a", "exactly15bytes_"] {
            assert!(validate(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "sixteen_bytes_xx",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
    }
}
