//! Kinds of argument values (path, interface, host, number, ...) and their
//! checks. Each check either accepts a word (possibly normalising it, as for
//! paths) or says why not.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::path::validate_path;

/// What a positional argument or flag value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An absolute path passing [`validate_path`]; replaced by its
    /// normalised form.
    Path,
    /// A network interface name: `^[A-Za-z0-9@_.-]{1,15}$`, not starting
    /// with `-`, not `.` or `..`.
    Iface,
    /// A DNS name, IPv4 or IPv6 address; never starts with `-`.
    Host,
    /// A decimal number in `min..=max`.
    Number {
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// One word from a fixed set.
    Keyword(&'static [&'static str]),
    /// A table or object name (routing table, nftables table):
    /// `^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`.
    Name,
    /// A sysctl variable name under `net.` (never `name=value`).
    SysctlName,
}

impl Kind {
    /// Short description used in error messages ("a path", ...).
    pub(crate) fn describe(self) -> String {
        match self {
            Kind::Path => "an absolute path".to_owned(),
            Kind::Iface => "an interface name".to_owned(),
            Kind::Host => "a host name or IP address".to_owned(),
            Kind::Number { min, max } => format!("a number from {min} to {max}"),
            Kind::Keyword(words) => format!("one of {}", words.join(", ")),
            Kind::Name => "a name".to_owned(),
            Kind::SysctlName => "a sysctl name starting with `net.`".to_owned(),
        }
    }

    /// Check `word`. `Ok` carries the word to put in argv (normalised for
    /// paths); `Err` carries a reason, or `None` when the generic
    /// "expected ..." (built from [`Kind::describe`]) message should be used.
    pub(crate) fn check(self, word: &str) -> Result<String, Option<String>> {
        let ok = match self {
            Kind::Path => {
                return validate_path(word).map_err(|b| Some(b.reason));
            }
            Kind::Iface => is_iface(word),
            Kind::Host => is_host(word),
            Kind::Number { min, max } => {
                parse_decimal(word).is_some_and(|n| (min..=max).contains(&n))
            }
            Kind::Keyword(words) => words.contains(&word),
            Kind::Name => is_name(word),
            Kind::SysctlName => is_sysctl_name(word),
        };
        if ok { Ok(word.to_owned()) } else { Err(None) }
    }
}

/// Parse a plain decimal number (digits only, at most 19 of them).
fn parse_decimal(word: &str) -> Option<u64> {
    if word.is_empty() || word.len() > 19 || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    word.parse().ok()
}

fn is_iface(word: &str) -> bool {
    (1..=15).contains(&word.len())
        && !word.starts_with('-')
        && word != "."
        && word != ".."
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'@' | b'_' | b'.' | b'-'))
}

fn is_name(word: &str) -> bool {
    (1..=64).contains(&word.len())
        && word
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_sysctl_name(word: &str) -> bool {
    word.len() <= 256
        && word.strip_prefix("net.").is_some_and(|rest| {
            !rest.is_empty()
                && !rest.starts_with('.')
                && !rest.contains("..")
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        })
}

/// DNS name (labels of `[A-Za-z0-9_-]`, not starting with `-`, optional
/// trailing dot), IPv4 or IPv6 address.
fn is_host(word: &str) -> bool {
    if word.is_empty() || word.starts_with('-') {
        return false;
    }
    if word.contains(':') {
        return word.parse::<Ipv6Addr>().is_ok();
    }
    if word.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    let name = word.strip_suffix('.').unwrap_or(word);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let k = Kind::Number { min: 1, max: 5 };
        assert!(k.check("1").is_ok());
        assert!(k.check("05").is_ok());
        for bad in [
            "0",
            "6",
            "",
            "-1",
            "+1",
            "1.0",
            "0x1",
            "99999999999999999999999",
            " 1",
        ] {
            assert!(k.check(bad).is_err(), "{bad}");
        }
        assert_eq!(k.describe(), "a number from 1 to 5");
    }

    #[test]
    fn interfaces() {
        for good in [
            "eth0",
            "lo",
            "br-1a2b",
            "veth1@if3",
            "wlp3s0",
            "a.b_c",
            "abcdefghijklmno",
        ] {
            assert!(is_iface(good), "{good}");
        }
        for bad in [
            "",
            "-eth0",
            ".",
            "..",
            "eth0/1",
            "abcdefghijklmnop",
            "e th",
            "eth0:1",
        ] {
            assert!(!is_iface(bad), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        for good in [
            "example.com",
            "example.com.",
            "localhost",
            "10.0.0.1",
            "::1",
            "fe80::1",
            "2001:db8::42",
            "_sip._tcp.example.org",
            "a-b.c",
        ] {
            assert!(is_host(good), "{good}");
        }
        for bad in [
            "",
            "-f",
            "a..b",
            ".",
            "a.-b",
            "1.2.3.4:80",
            "a/b",
            "+short",
            "@x",
            "x y",
        ] {
            assert!(!is_host(bad), "{bad}");
        }
        assert!(!is_host(&"a".repeat(64)));
    }

    #[test]
    fn names_and_sysctls() {
        for good in ["main", "local", "254", "filter", "my-table", "_x"] {
            assert!(is_name(good), "{good}");
        }
        for bad in ["", "-x", ".x", "a/b", "a=b"] {
            assert!(!is_name(bad), "{bad}");
        }
        for good in [
            "net.ipv4.ip_forward",
            "net.core.somaxconn",
            "net.ipv4.conf.eth0.rp_filter",
        ] {
            assert!(is_sysctl_name(good), "{good}");
        }
        for bad in [
            "net.",
            "kernel.hostname",
            "net.ipv4.ip_forward=1",
            "net..x",
            "-a",
            "net/ipv4",
        ] {
            assert!(!is_sysctl_name(bad), "{bad}");
        }
    }

    #[test]
    fn keyword_and_path() {
        let k = Kind::Keyword(&["nat", "filter"]);
        assert_eq!(k.check("nat"), Ok("nat".to_owned()));
        assert_eq!(k.check("NAT"), Err(None));
        assert_eq!(Kind::Path.check("/tmp/./x"), Ok("/tmp/x".to_owned()));
        assert!(matches!(Kind::Path.check("/etc/shadow"), Err(Some(r)) if r.contains("forbidden")));
    }
}
