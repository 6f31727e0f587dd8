//! Rendering an accepted argv as one remote shell command.
//!
//! An SSH exec request is a single string that the remote user's login
//! shell interprets, so the argv must be re-quoted: words made only of
//! characters no POSIX shell treats specially stay as they are, anything
//! else is single-quoted (inside single quotes nothing is special; a single
//! quote itself is written `'\''`). This assumes a POSIX-compatible remote
//! shell (sh, dash, bash, zsh, ksh), not csh or fish.

/// True for characters that never need quoting in a POSIX shell word.
fn is_safe(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '_' | '@' | '%' | '+' | '=' | ':' | ',' | '.' | '/' | '-')
}

/// Quote one word for a POSIX shell.
pub(super) fn quote_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(is_safe) {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Render an already-validated argv as one string safe to hand to a remote
/// POSIX shell: each word is single-quoted unless it is made only of the
/// safe characters `[A-Za-z0-9_@%+=:,./-]`; words are joined by one space.
///
/// `argv[0]` is expected to be a bare program name from
/// [`validate_command`](super::validate_command) (a first word such as
/// `A=b` would otherwise be read as a variable assignment).
pub fn to_remote_command(argv: &[String]) -> String {
    argv.iter()
        .map(|w| quote_word(w))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::validate_command;
    use proptest::prelude::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn safe_words_stay_unquoted() {
        let a = argv(&["ip", "-4", "-j", "route", "show", "table", "main"]);
        assert_eq!(to_remote_command(&a), "ip -4 -j route show table main");
        let a = argv(&["cat", "/etc/a_b@c%d+e=f:g,h.i-j"]);
        assert_eq!(to_remote_command(&a), "cat /etc/a_b@c%d+e=f:g,h.i-j");
    }

    #[test]
    fn unsafe_words_are_single_quoted() {
        let a = argv(&["cat", "/tmp/a b", "", "it's", "$(id)", "/tmp/é^"]);
        assert_eq!(
            to_remote_command(&a),
            r#"cat '/tmp/a b' '' 'it'\''s' '$(id)' '/tmp/é^'"#
        );
    }

    #[test]
    fn round_trip_examples() {
        for words in [
            &["ls", "-la", "/tmp"][..],
            &[
                "cat",
                "/tmp/x;y",
                "/tmp/'q'",
                "/tmp/\"d\"",
                "/tmp/\\",
                "/tmp/\n",
            ][..],
            &["x", "", " ", "*", "~", "#c", "!"][..],
        ] {
            let a = argv(words);
            let line = to_remote_command(&a);
            assert_eq!(shell_words::split(&line).as_ref(), Ok(&a), "{line}");
        }
        assert_eq!(to_remote_command(&[]), "");
    }

    /// Words from which accepted commands are assembled.
    const VOCABULARY: &[&str] = &[
        "-l",
        "-la",
        "-h",
        "-n",
        "5",
        "-c",
        "3",
        "-4",
        "-j",
        "-s",
        "show",
        "list",
        "dev",
        "eth0",
        "table",
        "main",
        "addr",
        "route",
        "link",
        "qdisc",
        "aux",
        "-ef",
        "-tlnp",
        "+short",
        "example.com",
        "10.0.0.1",
        "::1",
        "/tmp",
        "/etc/hostname",
        "/var/log/./syslog",
        "/tmp/a^b",
        "/tmp/é",
        "/tmp/x=y,z",
        "-L",
        "-t",
        "nat",
        "list",
        "ruleset",
        "net.core.x",
    ];

    const PROGRAMS: &[&str] = &[
        "ls", "cat", "head", "tail", "ip", "tc", "nft", "ping", "dig", "ps", "ss", "iptables",
        "sysctl", "df", "du", "hostname",
    ];

    /// Random words over the vocabulary (mostly refused, some accepted).
    fn vocabulary_command() -> impl Strategy<Value = String> {
        (
            proptest::sample::select(PROGRAMS),
            proptest::collection::vec(proptest::sample::select(VOCABULARY), 0..6),
        )
            .prop_map(|(p, words)| format!("{p} {}", words.join(" ")))
    }

    /// Allowed command shapes filled with random values (mostly accepted).
    fn template_command() -> impl Strategy<Value = String> {
        let path = "/(tmp|etc|var/log|home/u)/[a-zA-Z0-9_@%+=:,.^é-]{1,12}";
        let host = "[a-z][a-z0-9]{0,8}(\\.[a-z]{2,5}){0,2}";
        let iface = "[a-z][a-z0-9@._-]{0,9}";
        (path, path, host, iface, 1u8..=5, 0usize..8).prop_map(|(p, q, h, i, n, which)| match which
        {
            0 => format!("cat {p} {q}"),
            1 => format!("ls -la {p}"),
            2 => format!("tail -n {n} {p}"),
            3 => format!("ping -c {n} {h}"),
            4 => format!("dig +short {h}"),
            5 => format!("ip -j addr show dev {i}"),
            6 => format!("tc -s qdisc show dev {i}"),
            _ => format!("ethtool -i {i}"),
        })
    }

    proptest! {
        /// (d) for accepted commands, re-splitting the rendered command gives
        /// the argv back.
        #[test]
        fn accepted_commands_round_trip(
            cmd in prop_oneof![vocabulary_command(), template_command()],
        ) {
            if let Ok(a) = validate_command(&cmd) {
                let line = to_remote_command(&a);
                prop_assert_eq!(shell_words::split(&line).ok(), Some(a));
            }
        }

        /// Paths with characters that need quoting are accepted and round trip.
        #[test]
        fn quoted_paths_round_trip(name in "[a-zA-Z0-9_@%+=:,.^é-]{1,20}") {
            let cmd = format!("cat /tmp/{name}");
            if let Ok(a) = validate_command(&cmd) {
                let line = to_remote_command(&a);
                prop_assert_eq!(shell_words::split(&line).ok(), Some(a));
            }
        }

        /// Any argv at all round trips.
        #[test]
        fn arbitrary_argv_round_trips(a in proptest::collection::vec(any::<String>(), 0..5)) {
            let line = to_remote_command(&a);
            prop_assert_eq!(shell_words::split(&line).ok(), Some(a));
        }
    }
}
