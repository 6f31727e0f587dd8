//! Reading a file by what was opened, not by its name: how `ssh_cat_file` reads.
//!
//! The target opens the path once, on descriptor 3, and says what it opened: the path the
//! descriptor leads to (`readlink /proc/self/fd/3`: every link resolved, as of the opening),
//! then the type, number of names (hard links) and permission bits of that same descriptor
//! (`stat -L /proc/self/fd/3`). Then it waits on its stdin. The server checks that header
//! ([`check_opened`]) and only then tells it to go on, and it reads the descriptor it opened
//! (`cat <&3`). So what is checked is what is read: there is no second lookup of the path
//! (before, a directory swapped for a link between a `realpath` and the `cat` let reads of
//! another file through), and nothing of a refused file is read (before, a forbidden target
//! was read to the end, then refused).
//!
//! Refused, besides forbidden names where the descriptor leads
//! ([`validate_resolved`](super::validate_resolved)):
//! - anything but a regular file;
//! - a file only its owner may read (no read bit for group or others): SSH private keys,
//!   shell and REPL histories (readline writes them 0600: `~/.python_history`,
//!   `~/.node_repl_history`, ...) and their like are private by their mode, whatever their
//!   name or directory (before, a key under `~/.ѕsh/`, with a Cyrillic `ѕ`, was read);
//! - a file with more than one name (hard links) that not everyone may read: it may be
//!   another name of a forbidden file (before, a hard link to a private key was read), while
//!   files every user may read, such as hard-linked time zones, still read.

use super::quote::quote_word;
use super::{Blocked, validate_resolved};

/// The header's NUL-terminated fields: path, type, links, mode.
pub const HEADER_FIELDS: usize = 4;

/// Room in the output for the header (PATH_MAX, its NUL, and the short fields).
pub const HEADER_MAX: usize = 4097 + 64;

/// The remote command: open `path` on descriptor 3, print the header, wait for `y` on stdin,
/// then read descriptor 3.
pub fn open_then_read(path: &str) -> String {
    format!(
        "exec 3< {} && readlink -n /proc/self/fd/3 && printf '\\0' && \
         stat -L --printf '%F\\0%h\\0%a\\0' /proc/self/fd/3 && \
         read -r go && [ \"$go\" = y ] && exec cat <&3",
        quote_word(path)
    )
}

/// What the target opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Where the descriptor leads.
    pub path: String,
    /// `stat`'s file type (`regular file`, `regular empty file`, `directory`, ...).
    pub kind: String,
    /// Its number of names (hard links).
    pub links: u64,
    /// Its permission bits.
    pub mode: u32,
}

/// The header at the start of `out` and its length in bytes; `None` until it is complete,
/// or when it does not parse.
pub fn parse_header(out: &[u8]) -> Option<(Opened, usize)> {
    let mut fields = Vec::with_capacity(HEADER_FIELDS);
    let mut start = 0;
    for _ in 0..HEADER_FIELDS {
        let rest = out.get(start..)?;
        let end = start + rest.iter().position(|&b| b == 0)?;
        fields.push(String::from_utf8_lossy(out.get(start..end)?));
        start = end + 1;
    }
    let [path, kind, links, mode] = <[_; HEADER_FIELDS]>::try_from(fields).ok()?;
    let opened = Opened {
        path: path.into_owned(),
        kind: kind.into_owned(),
        links: links.trim().parse().ok()?,
        mode: u32::from_str_radix(mode.trim(), 8).ok()?,
    };
    Some((opened, start))
}

/// Whether what was opened may be read ([`check_opened`] of a complete header).
pub fn may_read(out: &[u8]) -> bool {
    parse_header(out).is_some_and(|(o, _)| check_opened(&o).is_ok())
}

/// Checks what was opened against the policy (see the module's documentation).
pub fn check_opened(o: &Opened) -> Result<(), Blocked> {
    validate_resolved(&o.path)?;
    if !o.kind.starts_with("regular") {
        return Err(Blocked::new(format!(
            "it is a {}, not a regular file",
            o.kind
        )));
    }
    if o.mode & 0o044 == 0 {
        return Err(Blocked::new(format!(
            "it is private to its owner (mode {:04o}): such files (keys, histories, tokens) \
             are not read, whatever their name",
            o.mode
        )));
    }
    if o.links > 1 && o.mode & 0o004 == 0 {
        return Err(Blocked::new(format!(
            "it has {} names (hard links) and not everyone may read it (mode {:04o}): it may \
             be another name of a forbidden file",
            o.links, o.mode
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(path: &str, kind: &str, links: u64, mode: u32) -> Opened {
        Opened {
            path: path.into(),
            kind: kind.into(),
            links,
            mode,
        }
    }

    #[test]
    fn the_header_is_read_only_when_complete() {
        let out = b"/etc/hostname\0regular file\x001\x00644\0myhost\n";
        let (o, len) = parse_header(out).expect("complete");
        assert_eq!(o, opened("/etc/hostname", "regular file", 1, 0o644));
        assert_eq!(&out[len..], b"myhost\n");
        assert_eq!(
            parse_header(b"/etc/hostname\0regular file\x001\x00644"),
            None
        );
        assert_eq!(parse_header(b"/etc/hostname\0regular"), None);
        assert_eq!(parse_header(b"/x\0regular file\0many\x00644\0"), None);
        assert!(may_read(out));
    }

    #[test]
    fn what_was_opened_decides() {
        assert!(check_opened(&opened("/etc/hostname", "regular file", 1, 0o644)).is_ok());
        assert!(check_opened(&opened("/var/log/syslog", "regular file", 1, 0o640)).is_ok());
        assert!(check_opened(&opened("/usr/share/zoneinfo/UTC", "regular file", 6, 0o644)).is_ok());
        let refused = |o: Opened| check_opened(&o).expect_err("refused").reason;
        assert!(
            refused(opened("/home/u/.ssh/id_rsa", "regular file", 1, 0o644)).contains("forbidden")
        );
        assert!(refused(opened("/tmp", "directory", 2, 0o777)).contains("not a regular file"));
        assert!(
            refused(opened("/home/u/.ѕsh/deploy", "regular file", 1, 0o600)).contains("private")
        );
        assert!(
            refused(opened("/home/u/.python_history", "regular file", 1, 0o600))
                .contains("private")
        );
        assert!(refused(opened("/tmp/backup", "regular file", 2, 0o640)).contains("2 names"));
    }

    #[test]
    fn the_path_is_quoted_once() {
        assert_eq!(
            open_then_read("/tmp/a b"),
            "exec 3< '/tmp/a b' && readlink -n /proc/self/fd/3 && printf '\\0' && stat -L \
             --printf '%F\\0%h\\0%a\\0' /proc/self/fd/3 && read -r go && [ \"$go\" = y ] && \
             exec cat <&3"
        );
    }
}
