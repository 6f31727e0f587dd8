//! Path policy: lexical normalisation, allowed roots and forbidden files.
//!
//! Paths are checked *lexically*: `.` and empty components are dropped and
//! `..` removes the previous component (`..` above `/` stays at `/`). The
//! file lives on the remote host, so symbolic links cannot be resolved here:
//! `ssh_cat_file` therefore has the target open the path and say where the open
//! descriptor leads, and checks that path again before anything is read
//! ([`super::open_then_read`], [`validate_resolved`]). Callers should pass the
//! returned normalised path on, so that the path that is used is the one that
//! was checked.

use super::{Blocked, describe_char, is_hidden_char};

/// Longest accepted path, in bytes.
pub const MAX_PATH_LEN: usize = 512;

/// Directories under which paths are allowed (each root itself included).
pub const ALLOWED_ROOTS: &[&str] = &[
    "/etc",
    "/var/log",
    "/home",
    "/tmp",
    "/opt",
    "/usr/share",
    "/proc",
    "/sys",
    "/srv",
];

/// Forbidden subtrees: the path itself and everything under it.
const FORBIDDEN_TREES: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/passwd-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssl/private",
    "/root",
    "/proc/kcore",
    "/proc/kmsg",
    "/sys/kernel/security",
];

/// Component names forbidden anywhere in a path (the entry and, for
/// directories, everything under it): credential stores and shell histories.
const FORBIDDEN_NAMES: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".netrc",
    ".pgpass",
    ".git-credentials",
    ".bash_history",
    ".zsh_history",
    ".sh_history",
    ".mysql_history",
    ".psql_history",
    // Cloud, container and package-registry credentials.
    ".aws",
    ".azure",
    ".docker",
    ".kube",
    ".boto",
    ".s3cfg",
    ".npmrc",
    ".pypirc",
    ".vault-token",
    ".terraform.d",
];

/// Consecutive component pairs forbidden anywhere in a path (tools that keep their tokens
/// under a shared directory).
const FORBIDDEN_PAIRS: &[(&str, &str)] = &[
    (".config", "gh"),
    (".config", "hub"),
    (".config", "gcloud"),
    (".cargo", "credentials"),
    (".cargo", "credentials.toml"),
];

/// Private key file names, forbidden as any component.
const PRIVATE_KEY_NAMES: &[&str] = &[
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    "id_ecdsa_sk",
    "id_ed25519_sk",
];

/// Private key / keystore extensions (compared case-insensitively).
const PRIVATE_KEY_EXTENSIONS: &[&str] = &[".pem", ".key", ".p12", ".pfx"];

/// Components below `/proc` that expose another process's memory or
/// environment, or are "magic links" escaping the lexical check
/// (`/proc/self/root/etc/shadow`, `/proc/1/cwd/...`, `/proc/self/fd/3`).
const PROC_FORBIDDEN_NAMES: &[&str] = &[
    "mem",
    "environ",
    "root",
    "cwd",
    "fd",
    "map_files",
    "exe",
    "pagemap",
];

/// Validate and normalise a path.
///
/// The path must be absolute, at most [`MAX_PATH_LEN`] bytes, free of
/// control characters, and after lexical normalisation (`.`, `..`, `//`)
/// equal to or under one of [`ALLOWED_ROOTS`] and not a forbidden file
/// (shadow/sudoers files, SSH host keys, `/root`, `.ssh` and `.gnupg`
/// directories, private keys, `/proc/*/mem`, `/proc/*/environ`, ...).
///
/// Returns the normalised path. Symbolic links are not resolved (they are
/// on the remote host): this is a lexical check only.
pub fn validate_path(path: &str) -> Result<String, Blocked> {
    if path.is_empty() {
        return Err(Blocked::new("empty path"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(Blocked::new(format!(
            "path is longer than {MAX_PATH_LEN} bytes"
        )));
    }
    if let Some(c) = path.chars().find(|&c| is_hidden_char(c)) {
        return Err(Blocked::new(format!(
            "{} is not allowed in a path",
            describe_char(c)
        )));
    }
    if !path.starts_with('/') {
        return Err(Blocked::new(format!("path `{path}` must be absolute")));
    }
    let components = normalise_components(path);
    let normal = join(&components);
    let shown = if normal == path {
        format!("`{normal}`")
    } else {
        format!("`{normal}` (from `{path}`)")
    };
    if is_forbidden(&components) {
        return Err(Blocked::new(format!("path {shown} is forbidden")));
    }
    if !ALLOWED_ROOTS
        .iter()
        .any(|root| is_at_or_under(&normal, root))
    {
        return Err(Blocked::new(format!(
            "path {shown} is outside the allowed roots ({})",
            ALLOWED_ROOTS.join(", ")
        )));
    }
    Ok(normal)
}

/// Check where an allowed path leads on the target (where the descriptor the target opened
/// leads): it must not be a forbidden file. It may lie outside the allowed roots: system links such as `/etc/os-release ->
/// /usr/lib/os-release` are ordinary, and the roots limit what a client may *name*; what must
/// never be reached, through any link, is a forbidden file.
pub fn validate_resolved(path: &str) -> Result<(), Blocked> {
    if !path.starts_with('/') {
        return Err(Blocked::new(format!(
            "the target resolved the path to `{path}`, which is not absolute"
        )));
    }
    if is_forbidden(&normalise_components(path)) {
        return Err(Blocked::new(format!(
            "it leads to `{path}`, which is forbidden"
        )));
    }
    Ok(())
}

/// Lexically normalise an absolute path into its components.
fn normalise_components(path: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn join(components: &[&str]) -> String {
    if components.is_empty() {
        "/".to_owned()
    } else {
        components.iter().fold(String::new(), |mut acc, c| {
            acc.push('/');
            acc.push_str(c);
            acc
        })
    }
}

/// True when `path` equals `root` or lies under it (component-wise).
fn is_at_or_under(path: &str, root: &str) -> bool {
    path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn is_forbidden(components: &[&str]) -> bool {
    let normal = join(components);
    if FORBIDDEN_TREES
        .iter()
        .any(|tree| is_at_or_under(&normal, tree))
    {
        return true;
    }
    // SSH host keys (private and public alike): /etc/ssh/ssh_host_*.
    let host_key = matches!(
        components,
        ["etc", "ssh", name, ..] if name.starts_with("ssh_host_")
    );
    let proc_escape = matches!(
        components,
        ["proc", rest @ ..] if rest.iter().any(|c| PROC_FORBIDDEN_NAMES.contains(c))
    );
    if host_key || proc_escape {
        return true;
    }
    if components
        .windows(2)
        .any(|w| FORBIDDEN_PAIRS.contains(&(w[0], w[1])))
    {
        return true;
    }
    components.iter().any(|c| {
        let lower = c.to_ascii_lowercase();
        FORBIDDEN_NAMES.contains(c)
            || PRIVATE_KEY_NAMES.contains(c)
            || PRIVATE_KEY_EXTENSIONS
                .iter()
                .any(|ext| lower.ends_with(ext))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Lexically normalise an absolute path (`/a/./b//../c` → `/a/c`).
    fn normalise(path: &str) -> String {
        join(&normalise_components(path))
    }

    fn reason(path: &str) -> String {
        match validate_path(path) {
            Ok(p) => panic!("`{path}` was accepted as `{p}`"),
            Err(b) => b.reason,
        }
    }

    #[test]
    fn allowed_examples() {
        for p in [
            "/etc/hostname",
            "/etc/test-file.txt",
            "/etc/large-test-file.txt",
            "/etc/os-release",
            "/var/log/syslog",
            "/proc/cpuinfo",
            "/proc/1/status",
            "/tmp/x",
            "/etc",
            "/home/u/notes.txt",
            "/etc/ssh/sshd_config",
        ] {
            assert_eq!(validate_path(p).as_deref(), Ok(p), "{p}");
        }
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            validate_path("/etc/./hostname").as_deref(),
            Ok("/etc/hostname")
        );
        assert_eq!(
            validate_path("//etc//hostname/").as_deref(),
            Ok("/etc/hostname")
        );
        assert_eq!(validate_path("/tmp/a/../b").as_deref(), Ok("/tmp/b"));
        assert_eq!(
            validate_path("/../../etc/hostname").as_deref(),
            Ok("/etc/hostname")
        );
        assert_eq!(normalise("/"), "/");
        assert_eq!(normalise("/.."), "/");
        assert_eq!(normalise("/a/b/../../.."), "/");
    }

    #[test]
    fn forbidden_paths() {
        for p in [
            "/etc/shadow",
            "/etc/shadow-",
            "/etc/gshadow",
            "/etc/gshadow-",
            "/etc/passwd-",
            "/etc/sudoers",
            "/etc/sudoers.d",
            "/etc/sudoers.d/x",
            "/etc/../etc/shadow",
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/ssh/ssh_host_rsa_key.pub",
            "/root",
            "/root/.bashrc",
            "/home/u/.ssh",
            "/home/u/.ssh/id_ed25519",
            "/home/u/.ssh/authorized_keys",
            "/home/u/.gnupg/secring.gpg",
            "/home/u/.netrc",
            "/home/u/.bash_history",
            "/home/u/.aws/credentials",
            "/home/u/.docker/config.json",
            "/home/u/.kube/config",
            "/home/u/.config/gh/hosts.yml",
            "/home/u/.config/gcloud/credentials.db",
            "/home/u/.cargo/credentials.toml",
            "/proc/1/mem",
            "/proc/self/environ",
            "/proc/self/task/7/environ",
            "/proc/self/root/etc/hostname",
            "/proc/1/cwd/x",
            "/proc/self/fd/3",
            "/proc/kcore",
            "/sys/kernel/security/lsm",
            "/tmp/id_rsa",
            "/opt/app/server.pem",
            "/opt/app/server.KEY",
            "/etc/ssl/private/x",
        ] {
            let r = reason(p);
            assert!(r.contains("is forbidden"), "{p}: {r}");
        }
        assert_eq!(reason("/etc/shadow"), "path `/etc/shadow` is forbidden");
        assert_eq!(
            reason("/etc/../etc/shadow"),
            "path `/etc/shadow` (from `/etc/../etc/shadow`) is forbidden"
        );
    }

    #[test]
    fn similar_names_are_not_forbidden() {
        for p in [
            "/etc/shadowfax",
            "/etc/sudoers.dist",
            "/etc/passwd",
            "/tmp/ssh_host_x",
        ] {
            assert!(validate_path(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn outside_roots() {
        let r = reason("/bin/x");
        assert!(
            r.starts_with("path `/bin/x` is outside the allowed roots (/etc, /var/log"),
            "{r}"
        );
        for p in [
            "/",
            "/bin",
            "/etcetera",
            "/usr/bin/id",
            "/dev/mem",
            "/var/lib/x",
        ] {
            assert!(reason(p).contains("outside the allowed roots"), "{p}");
        }
    }

    #[test]
    fn malformed_paths() {
        assert_eq!(reason(""), "empty path");
        assert_eq!(
            reason("etc/hostname"),
            "path `etc/hostname` must be absolute"
        );
        assert_eq!(reason("./x"), "path `./x` must be absolute");
        assert_eq!(
            reason("/etc/host\nname"),
            "newline is not allowed in a path"
        );
        assert_eq!(reason("/etc/\0"), "NUL byte is not allowed in a path");
        let long = format!("/tmp/{}", "a".repeat(MAX_PATH_LEN));
        assert!(reason(&long).contains("longer than 512 bytes"));
    }

    /// Forbidden bases used by the property tests (all made of characters
    /// that survive the command-line filter, so they work as `cat <path>`).
    const FORBIDDEN_BASES: &[&str] = &[
        "/etc/shadow",
        "/etc/shadow-",
        "/etc/gshadow",
        "/etc/passwd-",
        "/etc/sudoers",
        "/etc/sudoers.d/x",
        "/etc/ssh/ssh_host_rsa_key",
        "/root/x",
        "/home/u/.ssh/id_rsa",
        "/home/u/.gnupg/pubring.kbx",
        "/home/u/.netrc",
        "/tmp/.bash_history",
        "/proc/1/mem",
        "/proc/self/environ",
        "/proc/kcore",
        "/sys/kernel/security/lsm",
        "/opt/x/server.pem",
        "/srv/tls.key",
    ];

    /// One component preceded by random lexical noise that normalises away.
    fn noisy_component(c: &'static str) -> impl Strategy<Value = String> {
        let noise = prop_oneof![
            Just(String::new()),
            Just("./".to_owned()),
            Just("/".to_owned()),
            "[a-z]{1,5}".prop_map(|x| format!("{x}/../")),
            "[a-z]{1,3}".prop_map(|x| format!("{x}/./../")),
        ];
        proptest::collection::vec(noise, 0..3).prop_map(move |n| format!("{}{c}", n.concat()))
    }

    /// A path that normalises to `base` or to something under it.
    fn noisy_forbidden() -> impl Strategy<Value = (String, &'static str)> {
        proptest::sample::select(FORBIDDEN_BASES).prop_flat_map(|base| {
            let parts: Vec<_> = base
                .split('/')
                .filter(|c| !c.is_empty())
                .map(noisy_component)
                .collect();
            let lead = prop_oneof![Just(""), Just("/.."), Just("/."), Just("/")];
            let tail = prop_oneof![
                Just(String::new()),
                Just("/".to_owned()),
                Just("/.".to_owned()),
                "[a-z]{1,6}".prop_map(|x| format!("/{x}")),
                "[a-z]{1,6}".prop_map(|x| format!("/{x}/..")),
            ];
            (lead, parts, tail).prop_map(move |(lead, parts, tail)| {
                (format!("{lead}/{}{tail}", parts.join("/")), base)
            })
        })
    }

    proptest! {
        #[test]
        fn forbidden_paths_stay_forbidden((path, base) in noisy_forbidden()) {
            let normal = normalise(&path);
            prop_assert!(is_at_or_under(&normal, base), "{path} -> {normal} not under {base}");
            prop_assert!(validate_path(&path).is_err(), "accepted {path}");
            let cmd = format!("cat {path}");
            prop_assert!(super::super::validate_command(&cmd).is_err(), "accepted {cmd}");
        }

        #[test]
        fn validate_path_never_panics(path in any::<String>()) {
            let _ = validate_path(&path);
        }

        #[test]
        fn accepted_paths_are_normal_and_rooted(path in "/[a-z./]{0,40}") {
            if let Ok(normal) = validate_path(&path) {
                prop_assert_eq!(normalise(&normal), normal.clone());
                prop_assert!(ALLOWED_ROOTS.iter().any(|r| is_at_or_under(&normal, r)));
            }
        }
    }
}
