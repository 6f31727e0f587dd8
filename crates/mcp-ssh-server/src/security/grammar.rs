//! Declarative grammar of every allowed program.
//!
//! Each [`Spec`] says which flags a program accepts (and which of them take
//! a value of what [`Kind`]), which flags are mutually exclusive or
//! required, and what may follow the flags ([`Pat`] sequence). The
//! interpreter is in `matcher.rs`. Anything not described here is refused;
//! in particular every form that changes state (`ip addr add`,
//! `hostname NAME`, `sysctl k=v`, `ethtool -s`, `iptables -A`, ...) is
//! simply absent.
//!
//! Conventions enforced by the matcher:
//! * flags come first, each at most once; the body follows;
//! * any later word starting with `-` is refused;
//! * when `clusters` is set, single-letter flags may be combined (`-la`),
//!   and a single-letter flag taking a value may carry it attached (`-n5`).

use super::kinds::Kind;

/// One flag, with its accepted spellings (the first is the canonical one
/// shown in messages) and, when it takes a value, the value's kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flag {
    pub(crate) names: &'static [&'static str],
    pub(crate) value: Option<Kind>,
}

/// A set of flags of which at most one may be given; when `required`,
/// exactly one must be given. Flags are named by their canonical spelling.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OneOf {
    pub(crate) flags: &'static [&'static str],
    pub(crate) required: bool,
}

/// One step of the grammar of the words after the flags.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pat {
    /// A required word from the set.
    Word(&'static [&'static str]),
    /// An optional word from the set.
    OptWord(&'static [&'static str]),
    /// Between `min` and `max` arguments of a kind (greedy).
    Args { kind: Kind, min: usize, max: usize },
    /// Zero or more `key value` pairs, any order, each key at most once.
    Pairs(&'static [(&'static str, Kind)]),
    /// An optional group: taken when the next word is in the set, then the
    /// rest of the group must match.
    Opt(&'static [&'static str], &'static [Pat]),
    /// A required choice selected by the next word.
    Branch(&'static [Alt]),
}

/// One alternative of a [`Pat::Branch`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Alt {
    pub(crate) words: &'static [&'static str],
    pub(crate) rest: &'static [Pat],
}

/// The grammar of one program.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) program: &'static str,
    pub(crate) flags: &'static [Flag],
    pub(crate) clusters: bool,
    pub(crate) one_of: &'static [OneOf],
    pub(crate) body: &'static [Pat],
}

/// A program taking no flags and no arguments.
const BARE: Spec = Spec {
    program: "",
    flags: &[],
    clusters: false,
    one_of: &[],
    body: &[],
};

const fn f(names: &'static [&'static str]) -> Flag {
    Flag { names, value: None }
}

const fn v(names: &'static [&'static str], kind: Kind) -> Flag {
    Flag {
        names,
        value: Some(kind),
    }
}

const fn paths(min: usize, max: usize) -> Pat {
    Pat::Args {
        kind: Kind::Path,
        min,
        max,
    }
}

const fn one(kind: Kind) -> Pat {
    Pat::Args {
        kind,
        min: 1,
        max: 1,
    }
}

const fn num(min: u64, max: u64) -> Kind {
    Kind::Number { min, max }
}

/// `ss` and `netstat`: a cluster of letters from "tlnpaue".
const SOCKET_FLAGS: &[Flag] = &[
    f(&["-t"]),
    f(&["-l"]),
    f(&["-n"]),
    f(&["-p"]),
    f(&["-a"]),
    f(&["-u"]),
    f(&["-e"]),
];

const SHOW_LIST: &[&str] = &["show", "list"];
const IP_DEV_TABLE: &[(&str, Kind)] = &[("dev", Kind::Iface), ("table", Kind::Name)];
const NFT_FAMILIES: &[&str] = &["ip", "ip6", "inet", "arp", "bridge", "netdev"];
const IPTABLES_TABLES: &[&str] = &["filter", "nat", "mangle", "raw", "security"];

const IPTABLES: Spec = Spec {
    program: "iptables",
    flags: &[
        v(&["-t", "--table"], Kind::Keyword(IPTABLES_TABLES)),
        f(&["-L", "--list"]),
        f(&["-S", "--list-rules"]),
        f(&["-n", "--numeric"]),
        f(&["-v", "--verbose"]),
        f(&["-x", "--exact"]),
        f(&["--line-numbers"]),
    ],
    clusters: true,
    one_of: &[OneOf {
        flags: &["-L", "-S"],
        required: true,
    }],
    body: &[],
};

/// Every allowed program.
pub(crate) static SPECS: &[Spec] = &[
    Spec {
        program: "whoami",
        ..BARE
    },
    Spec {
        program: "id",
        ..BARE
    },
    Spec {
        program: "date",
        ..BARE
    },
    Spec {
        program: "uptime",
        ..BARE
    },
    Spec {
        program: "pwd",
        ..BARE
    },
    // Read-only flags only: never `hostname NAME`, `-F FILE` or `-b`.
    Spec {
        program: "hostname",
        flags: &[
            f(&["-f", "--fqdn", "--long"]),
            f(&["-s", "--short"]),
            f(&["-i", "--ip-address"]),
            f(&["-I", "--all-ip-addresses"]),
            f(&["-d", "--domain"]),
            f(&["-A", "--all-fqdns"]),
        ],
        one_of: &[OneOf {
            flags: &["-f", "-s", "-i", "-I", "-d", "-A"],
            required: false,
        }],
        ..BARE
    },
    Spec {
        program: "uname",
        flags: &[
            f(&["-a"]),
            f(&["-s"]),
            f(&["-r"]),
            f(&["-m"]),
            f(&["-n"]),
            f(&["-o"]),
            f(&["-v"]),
            f(&["-p"]),
            f(&["-i"]),
        ],
        clusters: true,
        ..BARE
    },
    // `ls` and `du` need an explicit path: the implicit one is the remote
    // user's home directory, which may lie outside the allowed roots
    // (`/root`).
    Spec {
        program: "ls",
        flags: &[
            f(&["-l"]),
            f(&["-a"]),
            f(&["-h"]),
            f(&["-t"]),
            f(&["-r"]),
            f(&["-S"]),
            f(&["-1"]),
            f(&["-d"]),
            f(&["-i"]),
            f(&["-n"]),
            f(&["-R"]),
        ],
        clusters: true,
        body: &[paths(1, 8)],
        ..BARE
    },
    // File readers need at least one path: without one they would read the
    // (empty, never closed) standard input of the SSH channel.
    Spec {
        program: "cat",
        body: &[paths(1, 8)],
        ..BARE
    },
    Spec {
        program: "head",
        flags: &[v(&["-n"], num(1, 100_000)), v(&["-c"], num(1, 10_000_000))],
        clusters: true,
        body: &[paths(1, 8)],
        ..BARE
    },
    // No `-f`/`-F`: following a file never terminates.
    Spec {
        program: "tail",
        flags: &[v(&["-n"], num(1, 100_000)), v(&["-c"], num(1, 10_000_000))],
        clusters: true,
        body: &[paths(1, 8)],
        ..BARE
    },
    Spec {
        program: "wc",
        flags: &[f(&["-l"]), f(&["-w"]), f(&["-c"]), f(&["-m"])],
        clusters: true,
        body: &[paths(1, 8)],
        ..BARE
    },
    Spec {
        program: "df",
        flags: &[f(&["-h"]), f(&["-T"]), f(&["-i"]), f(&["-P"])],
        clusters: true,
        body: &[paths(0, 1)],
        ..BARE
    },
    Spec {
        program: "du",
        flags: &[f(&["-s"]), f(&["-h"]), f(&["-c"]), v(&["-d"], num(0, 20))],
        clusters: true,
        body: &[paths(1, 8)],
        ..BARE
    },
    // `ps`, `ps aux`, `ps -ef`, `ps -e`; never `ps e` (shows environments).
    Spec {
        program: "ps",
        flags: &[f(&["-e"]), f(&["-f"])],
        clusters: true,
        body: &[Pat::OptWord(&["aux"])],
        ..BARE
    },
    Spec {
        program: "free",
        flags: &[
            f(&["-h"]),
            f(&["-m"]),
            f(&["-g"]),
            f(&["-b"]),
            f(&["-k"]),
            f(&["-w"]),
        ],
        clusters: true,
        ..BARE
    },
    Spec {
        program: "ss",
        flags: SOCKET_FLAGS,
        clusters: true,
        ..BARE
    },
    Spec {
        program: "netstat",
        flags: SOCKET_FLAGS,
        clusters: true,
        ..BARE
    },
    // ip [-4|-6] [-j] [-d] [-s] [-br] OBJECT [show|list [dev IFACE] [table ID]]
    // No `-b`/`-batch` (runs commands from a file), no `-n` (netns).
    Spec {
        program: "ip",
        flags: &[
            f(&["-4"]),
            f(&["-6"]),
            f(&["-j", "-json"]),
            f(&["-d", "-details"]),
            f(&["-s", "-stats", "-statistics"]),
            f(&["-br", "-brief"]),
        ],
        one_of: &[OneOf {
            flags: &["-4", "-6"],
            required: false,
        }],
        body: &[Pat::Branch(&[
            Alt {
                // `ip addr show eth0` is accepted as well as `dev eth0`.
                words: &["link", "addr", "address"],
                rest: &[Pat::Opt(
                    SHOW_LIST,
                    &[
                        Pat::Pairs(IP_DEV_TABLE),
                        Pat::Args {
                            kind: Kind::Iface,
                            min: 0,
                            max: 1,
                        },
                    ],
                )],
            },
            Alt {
                words: &[
                    "route",
                    "rule",
                    "neigh",
                    "neighbour",
                    "neighbor",
                    "maddr",
                    "tunnel",
                ],
                rest: &[Pat::Opt(SHOW_LIST, &[Pat::Pairs(IP_DEV_TABLE)])],
            },
            Alt {
                words: &["netns"],
                rest: &[Pat::OptWord(&["list"])],
            },
        ])],
        ..BARE
    },
    // tc [-j] [-s] [-d] (qdisc|class|filter) show [dev IFACE]
    Spec {
        program: "tc",
        flags: &[
            f(&["-j", "-json"]),
            f(&["-s", "-stats", "-statistics"]),
            f(&["-d", "-details"]),
        ],
        body: &[Pat::Branch(&[Alt {
            words: &["qdisc", "class", "filter"],
            rest: &[Pat::Word(SHOW_LIST), Pat::Pairs(&[("dev", Kind::Iface)])],
        }])],
        ..BARE
    },
    // nft [-j] list (ruleset [FAMILY] | tables [FAMILY] | table [FAMILY] NAME)
    Spec {
        program: "nft",
        flags: &[f(&["-j", "--json"])],
        body: &[
            Pat::Word(&["list"]),
            Pat::Branch(&[
                Alt {
                    words: &["ruleset", "tables"],
                    rest: &[Pat::OptWord(NFT_FAMILIES)],
                },
                Alt {
                    words: &["table"],
                    rest: &[Pat::OptWord(NFT_FAMILIES), one(Kind::Name)],
                },
            ]),
        ],
        ..BARE
    },
    // bridge [-j] (link|fdb|vlan|mdb) show
    Spec {
        program: "bridge",
        flags: &[f(&["-j", "-json"])],
        body: &[Pat::Branch(&[Alt {
            words: &["link", "fdb", "vlan", "mdb"],
            rest: &[Pat::Word(&["show"])],
        }])],
        ..BARE
    },
    // iptables [-t TABLE] (-L|-S) [-n] [-v] [-x] [--line-numbers]
    IPTABLES,
    Spec {
        program: "ip6tables",
        ..IPTABLES
    },
    // ping -c 1..=5 [-W 1..=5] HOST: bounded run time, no flood/size flags.
    Spec {
        program: "ping",
        flags: &[v(&["-c"], num(1, 5)), v(&["-W"], num(1, 5))],
        clusters: true,
        one_of: &[OneOf {
            flags: &["-c"],
            required: true,
        }],
        body: &[one(Kind::Host)],
    },
    Spec {
        program: "traceroute",
        flags: &[v(&["-m"], num(1, 15))],
        clusters: true,
        one_of: &[OneOf {
            flags: &["-m"],
            required: true,
        }],
        body: &[one(Kind::Host)],
    },
    // dig [+short] HOST: no `-f FILE`, no `@server`.
    Spec {
        program: "dig",
        body: &[Pat::OptWord(&["+short"]), one(Kind::Host)],
        ..BARE
    },
    Spec {
        program: "host",
        body: &[one(Kind::Host)],
        ..BARE
    },
    // A host is required: without one nslookup goes interactive.
    Spec {
        program: "nslookup",
        body: &[one(Kind::Host)],
        ..BARE
    },
    // ethtool [-i|-S|-k|-g] IFACE: the upper/lower-case setters
    // (-s, -K, -G, ...) are absent.
    Spec {
        program: "ethtool",
        flags: &[f(&["-i"]), f(&["-S"]), f(&["-k"]), f(&["-g"])],
        one_of: &[OneOf {
            flags: &["-i", "-S", "-k", "-g"],
            required: false,
        }],
        body: &[one(Kind::Iface)],
        ..BARE
    },
    // sysctl NAME...: reading `net.*` only; `name=value` is not a name.
    Spec {
        program: "sysctl",
        body: &[Pat::Args {
            kind: Kind::SysctlName,
            min: 1,
            max: 8,
        }],
        ..BARE
    },
];

/// The grammar of `program`, if it is allowed.
pub(crate) fn find(program: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.program == program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut names: Vec<_> = SPECS.iter().map(|s| s.program).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate program");
        for spec in SPECS {
            assert!(!spec.program.is_empty());
            let mut spellings: Vec<&str> =
                spec.flags.iter().flat_map(|f| f.names).copied().collect();
            for s in &spellings {
                assert!(s.starts_with('-'), "{}: {s}", spec.program);
            }
            spellings.sort_unstable();
            let n = spellings.len();
            spellings.dedup();
            assert_eq!(n, spellings.len(), "{}: duplicate flag", spec.program);
            for group in spec.one_of {
                for name in group.flags {
                    assert!(
                        spec.flags.iter().any(|f| f.names[0] == *name),
                        "{}: group names unknown flag {name}",
                        spec.program
                    );
                }
            }
        }
    }

    fn refused(cmd: &str) -> String {
        match crate::security::validate_command(cmd) {
            Ok(argv) => panic!("`{cmd:?}` was accepted as {argv:?}"),
            Err(b) => b.reason,
        }
    }

    /// Refusals of forms the table does not describe, with their reasons.
    #[test]
    fn refused_grammar_details() {
        let cases: &[(&str, &str)] = &[
            ("whoami root", "`whoami` takes no arguments"),
            ("ls -la", "`ls` needs an absolute path"),
            ("du -sh", "`du` needs an absolute path"),
            ("date +%s", "`date` takes no arguments"),
            (
                "tail -f /var/log/syslog",
                "flag `-f` is not allowed for `tail`",
            ),
            (
                "tail -n 0 /var/log/syslog",
                "invalid value `0` for flag `-n` of `tail`: expected a number from 1 to 100000",
            ),
            ("cat", "`cat` needs an absolute path"),
            (
                "cat /tmp/a /tmp/b /tmp/c /tmp/d /tmp/e /tmp/f /tmp/g /tmp/h /tmp/i",
                "unexpected argument `/tmp/i` for `cat` (at most 8 allowed)",
            ),
            (
                "ls -laz /tmp",
                "flag `-z` (in `-laz`) is not allowed for `ls`",
            ),
            ("ls -l -l", "flag `-l` is given more than once for `ls`"),
            (
                "ls /tmp -l",
                "flag `-l` must come before the other arguments of `ls`",
            ),
            (
                "ls /bin",
                "path `/bin` is outside the allowed roots (/etc, /var/log, /home, /tmp, /opt, /usr/share, /proc, /sys, /srv)",
            ),
            (
                "ss -tlnpx",
                "flag `-x` (in `-tlnpx`) is not allowed for `ss`",
            ),
            ("ip -b /tmp/x", "flag `-b` is not allowed for `ip`"),
            (
                "ip -4 -6 addr",
                "flags -4 and -6 cannot be combined for `ip`",
            ),
            (
                "ip",
                "missing one of link, addr, address, route, rule, neigh, neighbour, neighbor, maddr, tunnel, netns after `ip`",
            ),
            (
                "ip netns add x",
                "unexpected argument `add` for `ip netns`; expected `list`",
            ),
            (
                "ip link set eth0 down",
                "unexpected argument `set` for `ip link`; expected one of show, list",
            ),
            (
                "ip addr show dev eth0/x",
                "invalid value `eth0/x` for `dev`: expected an interface name",
            ),
            ("ip route show dev", "missing an interface name after `dev`"),
            ("tc qdisc", "missing one of show, list after `tc qdisc`"),
            (
                "nft flush ruleset",
                "expected `list` after `nft`, got `flush`",
            ),
            ("nft -f /tmp/x", "flag `-f` is not allowed for `nft`"),
            ("nft list table inet", "`nft list table inet` needs a name"),
            (
                "bridge link set dev eth0",
                "expected `show` after `bridge link`, got `set`",
            ),
            ("iptables -F", "flag `-F` is not allowed for `iptables`"),
            (
                "iptables -A INPUT -j DROP",
                "flag `-A` is not allowed for `iptables`",
            ),
            ("iptables -n", "`iptables` requires one of the flags -L, -S"),
            (
                "iptables -L -S",
                "flags -L and -S cannot be combined for `iptables`",
            ),
            (
                "iptables -t foo -L",
                "invalid value `foo` for flag `-t` of `iptables`: expected one of filter, nat, mangle, raw, security",
            ),
            (
                "iptables -L INPUT",
                "`iptables` takes no arguments except the flags -t, -L, -S, -n, -v, -x, --line-numbers",
            ),
            (
                "ping -c",
                "flag `-c` of `ping` needs a value (a number from 1 to 5)",
            ),
            ("ping -c 3 -- -x", "flag `--` is not allowed for `ping`"),
            (
                "ping -c 3 a b",
                "unexpected argument `b` for `ping` (at most 1 allowed)",
            ),
            (
                "ping -c 3 a..b",
                "invalid argument `a..b` for `ping`: expected a host name or IP address",
            ),
            (
                "ping -c 3 -W 9 a",
                "invalid value `9` for flag `-W` of `ping`: expected a number from 1 to 5",
            ),
            (
                "traceroute example.com",
                "`traceroute` requires the `-m` flag",
            ),
            (
                "traceroute -m 16 example.com",
                "invalid value `16` for flag `-m` of `traceroute`: expected a number from 1 to 15",
            ),
            (
                "dig @8.8.8.8 example.com",
                "invalid argument `@8.8.8.8` for `dig`: expected a host name or IP address",
            ),
            ("dig -f /tmp/x", "flag `-f` is not allowed for `dig`"),
            ("nslookup", "`nslookup` needs a host name or IP address"),
            (
                "ethtool -s eth0 speed 10",
                "flag `-s` is not allowed for `ethtool`",
            ),
            (
                "ethtool -K eth0 tso off",
                "flag `-K` is not allowed for `ethtool`",
            ),
            (
                "ethtool -i -S eth0",
                "flags -i and -S cannot be combined for `ethtool`",
            ),
            (
                "sysctl net.ipv4.ip_forward=1",
                "invalid argument `net.ipv4.ip_forward=1` for `sysctl`: expected a sysctl name starting with `net.`",
            ),
            (
                "sysctl kernel.hostname",
                "invalid argument `kernel.hostname` for `sysctl`: expected a sysctl name starting with `net.`",
            ),
            (
                "sysctl -w net.ipv4.ip_forward",
                "flag `-w` is not allowed for `sysctl`",
            ),
            ("ps e", "unexpected argument `e` for `ps`; expected `aux`"),
            (
                "head -n5x /tmp/x",
                "invalid value `5x` for flag `-n` of `head`: expected a number from 1 to 100000",
            ),
            (
                "du -hd 1 /tmp",
                "flag `-d` of `du` takes a value and cannot be combined in `-hd`",
            ),
            (
                "hostname -F /tmp/x",
                "flag `-F` is not allowed for `hostname`",
            ),
            (
                "hostname -f -s",
                "flags -f and -s cannot be combined for `hostname`",
            ),
            ("foo", "program `foo` is not in the allowlist"),
            ("/", "program `/` must be given by its bare name"),
        ];
        for (cmd, want) in cases {
            assert_eq!(refused(cmd), *want, "{cmd:?}");
        }
    }

    #[test]
    fn lookup() {
        assert_eq!(find("ls").map(|s| s.program), Some("ls"));
        assert_eq!(find("ip6tables").map(|s| s.one_of.len()), Some(1));
        assert!(find("rm").is_none());
        assert!(find("").is_none());
    }
}
