//! Command-line validation: raw character filter, word splitting, program
//! lookup and grammar check.
//!
//! The raw string is filtered *before* it is parsed: every shell
//! metacharacter, every quote and every control character is refused
//! outright, so the words obtained by splitting on spaces are exactly the
//! words the user typed. Those words are then checked against the
//! program's grammar (see `grammar.rs`), never against string patterns.

use super::grammar::{self, SPECS};
use super::matcher::check_args;
use super::{Blocked, describe_char, is_hidden_char};

/// Longest accepted command line, in bytes.
pub const MAX_COMMAND_LEN: usize = 1024;

/// Characters with a meaning to a POSIX shell, refused anywhere in a
/// command line. Quotes are included: nothing allowed needs them, and they
/// could hide another metacharacter inside a word.
const METACHARACTERS: &[char] = &[
    '|', ';', '&', '$', '`', '>', '<', '(', ')', '{', '}', '*', '?', '[', ']', '~', '!', '#', '\\',
    '\n', '\'', '"',
];

/// Validate a user-supplied command line.
///
/// Returns the argv (`argv[0]` is the program) when the command is
/// allowed; path arguments are returned in their normalised form (see
/// [`validate_path`](super::validate_path)), so the checked path is the one
/// that runs. Refused: empty commands, commands longer than
/// [`MAX_COMMAND_LEN`] bytes, any shell metacharacter, quote or control
/// character, programs outside the allowlist or given by path, and any
/// flag or argument the program's grammar does not describe.
pub fn validate_command(command: &str) -> Result<Vec<String>, Blocked> {
    if command.trim().is_empty() {
        return Err(Blocked::new("empty command"));
    }
    if command.len() > MAX_COMMAND_LEN {
        return Err(Blocked::new(format!(
            "command is longer than {MAX_COMMAND_LEN} bytes"
        )));
    }
    check_characters(command)?;
    let argv = shell_words::split(command)
        .map_err(|e| Blocked::new(format!("command cannot be split into words: {e}")))?;
    let Some((program, args)) = argv.split_first() else {
        return Err(Blocked::new("empty command"));
    };
    if program.contains('/') {
        let bare = program.rsplit('/').next().unwrap_or_default();
        return Err(Blocked::new(if bare.is_empty() {
            format!("program `{program}` must be given by its bare name")
        } else {
            format!("program `{program}` must be given by its bare name (`{bare}`)")
        }));
    }
    let Some(spec) = grammar::find(program) else {
        return Err(Blocked::new(format!(
            "program `{program}` is not in the allowlist"
        )));
    };
    let mut out = Vec::with_capacity(argv.len());
    out.push(spec.program.to_owned());
    out.extend(check_args(spec, args)?);
    Ok(out)
}

/// Names of all allowed programs, in table order.
pub fn allowed_programs() -> impl Iterator<Item = &'static str> {
    SPECS.iter().map(|s| s.program)
}

/// Refuse shell metacharacters, quotes and control/invisible characters.
fn check_characters(command: &str) -> Result<(), Blocked> {
    for c in command.chars() {
        let reason = match c {
            '\n' => "newline is not allowed (one command per request)".to_owned(),
            '\'' | '"' => format!(
                "quote `{c}` is not allowed (quoting is refused so it cannot hide a metacharacter)"
            ),
            '`' => "shell metacharacter backtick (`) is not allowed".to_owned(),
            c if METACHARACTERS.contains(&c) => {
                format!("shell metacharacter `{c}` is not allowed")
            }
            c if is_hidden_char(c) => format!("{} is not allowed", describe_char(c)),
            _ => continue,
        };
        return Err(Blocked::new(reason));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(cmd: &str) -> Vec<String> {
        match validate_command(cmd) {
            Ok(argv) => argv,
            Err(b) => panic!("`{cmd}` was refused: {b}"),
        }
    }

    fn refused(cmd: &str) -> String {
        match validate_command(cmd) {
            Ok(argv) => panic!("`{cmd:?}` was accepted as {argv:?}"),
            Err(b) => b.reason,
        }
    }

    /// Commands that must be accepted; also the seeds of the property tests.
    const ALLOWED: &[&str] = &[
        "cat /etc/hostname",
        "hostname",
        "hostname -f",
        "whoami",
        "id",
        "date",
        "uptime",
        "pwd",
        "uname -a",
        "uname -sr",
        "ls /tmp",
        "ls -la /tmp",
        "ls -l -h /var/log /etc",
        "cat /etc/os-release /etc/hostname",
        "head -n 20 /var/log/syslog",
        "tail -n5 /var/log/syslog",
        "tail -c 100 /etc/hostname",
        "wc -l /etc/hostname",
        "df -hT",
        "df -h /tmp",
        "du -sh /var/log",
        "du -h -d 1 /opt",
        "ps",
        "ps aux",
        "ps -ef",
        "ps -e",
        "free -h",
        "ss -tlnp",
        "netstat -tlnpa",
        "ip -4 -j route show table main",
        "ip -j addr show dev eth0",
        "ip addr show eth0",
        "ip -br link",
        "ip -s -d link show dev eth0",
        "ip rule list",
        "ip neigh",
        "ip netns list",
        "tc -j -s qdisc show dev eth0",
        "tc class show dev eth0",
        "nft list ruleset",
        "nft -j list tables inet",
        "nft list table inet filter",
        "nft list table filter",
        "bridge -j fdb show",
        "iptables -L",
        "iptables -t nat -L -n -v --line-numbers",
        "iptables -nvL",
        "ip6tables -S",
        "ping -c 3 10.0.0.1",
        "ping -c 1 -W 2 example.com",
        "ping -c3 ::1",
        "dig +short example.com",
        "dig example.com",
        "host example.com",
        "nslookup example.com",
        "traceroute -m 10 example.com",
        "ethtool -i eth0",
        "ethtool eth0",
        "sysctl net.ipv4.ip_forward",
    ];

    #[test]
    fn allowed_commands() {
        for cmd in ALLOWED {
            ok(cmd);
        }
        assert_eq!(ok("cat /etc/hostname"), ["cat", "/etc/hostname"]);
        assert_eq!(ok("  ls   -la  /tmp/./x "), ["ls", "-la", "/tmp/x"]);
        assert_eq!(
            ok("ip -4 -j route show table main"),
            ["ip", "-4", "-j", "route", "show", "table", "main"]
        );
    }

    #[test]
    fn refused_commands_with_reasons() {
        let cases: &[(&str, &str)] = &[
            ("ls & id", "shell metacharacter `&` is not allowed"),
            ("ls\nid", "newline is not allowed (one command per request)"),
            ("echo $HOME", "shell metacharacter `$` is not allowed"),
            ("ls $(id)", "shell metacharacter `$` is not allowed"),
            ("ls `id`", "shell metacharacter backtick (`) is not allowed"),
            ("ls | wc", "shell metacharacter `|` is not allowed"),
            ("ls; id", "shell metacharacter `;` is not allowed"),
            ("ls > /tmp/x", "shell metacharacter `>` is not allowed"),
            ("ls /tm?", "shell metacharacter `?` is not allowed"),
            (
                "cat '/etc/host'",
                "quote `'` is not allowed (quoting is refused so it cannot hide a metacharacter)",
            ),
            ("cat /etc/shadow", "path `/etc/shadow` is forbidden"),
            (
                "cat /etc/sudoers.d/x",
                "path `/etc/sudoers.d/x` is forbidden",
            ),
            (
                "cat /etc/../etc/shadow",
                "path `/etc/shadow` (from `/etc/../etc/shadow`) is forbidden",
            ),
            (
                "cat /home/u/.ssh/id_ed25519",
                "path `/home/u/.ssh/id_ed25519` is forbidden",
            ),
            (
                "ip addr add 1.2.3.4 dev eth0",
                "unexpected argument `add` for `ip addr`; expected one of show, list",
            ),
            (
                "ip route flush",
                "unexpected argument `flush` for `ip route`; expected one of show, list",
            ),
            (
                "tc qdisc add dev eth0 root netem",
                "expected one of show, list after `tc qdisc`, got `add`",
            ),
            ("ping -f 1.1.1.1", "flag `-f` is not allowed for `ping`"),
            (
                "ping -c 6 x",
                "invalid value `6` for flag `-c` of `ping`: expected a number from 1 to 5",
            ),
            ("ping 1.1.1.1", "`ping` requires the `-c` flag"),
            (
                "hostname evil",
                "`hostname` takes no arguments except the flags -f, -s, -i, -I, -d, -A",
            ),
            ("rm -rf /", "program `rm` is not in the allowlist"),
            (
                "/bin/ls",
                "program `/bin/ls` must be given by its bare name (`ls`)",
            ),
            ("ls rm", "path `rm` must be absolute"),
            ("sh -c id", "program `sh` is not in the allowlist"),
            (
                "ls --color=always",
                "flag `--color=always` is not allowed for `ls`",
            ),
            ("", "empty command"),
            ("   ", "empty command"),
            ("ls\t/tmp", "tab is not allowed"),
            ("ls /tmp\r", "carriage return is not allowed"),
            ("ls\0", "NUL byte is not allowed"),
        ];
        for (cmd, want) in cases {
            assert_eq!(refused(cmd), *want, "{cmd:?}");
        }
    }

    #[test]
    fn length_limit() {
        let long = format!("ls /tmp/{}", "a".repeat(MAX_COMMAND_LEN));
        assert_eq!(refused(&long), "command is longer than 1024 bytes");
    }

    #[test]
    fn attached_values_and_clusters_are_kept() {
        assert_eq!(ok("ping -c3 ::1"), ["ping", "-c3", "::1"]);
        assert_eq!(ok("iptables -tnat -nL"), ["iptables", "-tnat", "-nL"]);
    }

    #[test]
    fn allowed_programs_lists_the_table() {
        let all: Vec<_> = allowed_programs().collect();
        for p in ["cat", "ls", "ip", "tc", "nft", "ping", "sysctl"] {
            assert!(all.contains(&p), "{p}");
        }
        assert!(!all.contains(&"rm"));
    }

    proptest! {
        /// (a) a metacharacter inserted anywhere into an allowed command is
        /// never accepted.
        #[test]
        fn metacharacters_are_never_accepted(
            cmd in proptest::sample::select(ALLOWED),
            meta in proptest::sample::select(METACHARACTERS),
            at in any::<proptest::sample::Index>(),
        ) {
            let at = at.index(cmd.len() + 1);
            let mut s = cmd.to_owned();
            s.insert(at, meta);
            prop_assert!(validate_command(&s).is_err(), "accepted {s:?}");
        }

        /// (c) validate_command never panics on arbitrary strings.
        #[test]
        fn never_panics_on_arbitrary_strings(s in any::<String>()) {
            let _ = validate_command(&s);
        }

        /// (c') ... nor on printable input that reaches the grammar.
        #[test]
        fn never_panics_on_plausible_commands(
            s in "(ls|cat|head|ip|tc|nft|ping|hostname|iptables|dig|du|ps|sysctl|ethtool) [ -~]{0,60}",
        ) {
            let _ = validate_command(&s);
        }
    }
}
