//! Linux interface names, checked before anything touches the kernel.
//!
//! The kernel's `dev_valid_name` rules: 1 to 15 bytes (IFNAMSIZ - 1), not `.` or `..`, no `/`,
//! `:` or whitespace. `sshlab-core` checks the topology's names when it loads the file; this
//! check also covers names typed on the command line (`netem --dev`).

use super::Error;

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_LEN: usize = 15;

/// Checks `name` against the kernel's rules.
pub fn validate(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_LEN {
        Some("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("it is . or ..")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        Some("it contains '/', ':', NUL or whitespace")
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
