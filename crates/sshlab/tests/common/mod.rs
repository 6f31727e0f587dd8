//! Shared by the integration tests: a throwaway network namespace, the real `sshlab` binary,
//! an independent reader of the kernel's state (`ip -j`, `tc -j`, iproute2), so that no
//! assertion relies on sshlab's own netlink parsing, and [`Lab`]: a netns-backend lab inside
//! such a namespace, for the tests that run scenarios and talk to the target.
#![allow(dead_code)]

pub mod real_vm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// A network namespace made for one test and deleted (with everything in it) on drop, with a
/// copy of the lab's files whose results directory lies in the copy ([`lab_copy`]), so that
/// `net up` and `vm up` never touch the machine's `/var/lib/sshlab`.
#[derive(Debug)]
pub struct Netns {
    /// `sshlab-test-<pid>-<nanos>-<tag>`.
    pub name: String,
    /// The lab files `sshlab` gets as `--lab` (and their results directory, `<lab>/results`).
    pub lab: tempfile::TempDir,
}

impl Netns {
    /// Creates it, or returns `None` (test skipped, with a message) when not root.
    pub fn new(tag: &str) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (network namespaces)");
            return None;
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("sshlab-test-{}-{nanos}-{tag}", std::process::id());
        let lab = tempfile::Builder::new()
            .prefix("sshlab-test-lab-")
            .tempdir()
            .expect("tempdir");
        lab_copy(lab.path(), &lab.path().join("results"));
        ip(&["netns", "add", &name]);
        Some(Self { name, lab })
    }

    /// The results directory of [`Netns::lab`].
    pub fn results(&self) -> PathBuf {
        self.lab.path().join("results")
    }

    /// `ip -n NS <args>`, must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `ip -n NS -d -j link show`, parsed.
    pub fn links(&self) -> Vec<Value> {
        serde_json::from_str(&self.ip(&["-d", "-j", "link", "show"])).unwrap()
    }

    /// The link called `name`, if any.
    pub fn link(&self, name: &str) -> Option<Value> {
        self.links().into_iter().find(|l| l["ifname"] == name)
    }

    /// `a.b.c.d/n` IPv4 addresses of `dev`, from `ip -n NS -j addr show dev DEV`.
    pub fn ipv4(&self, dev: &str) -> Vec<String> {
        let v: Vec<Value> =
            serde_json::from_str(&self.ip(&["-j", "addr", "show", "dev", dev])).unwrap();
        v.iter()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["family"] == "inet")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect()
    }

    /// Runs `sshlab --netns NS --lab LAB <args>` with `env`.
    pub fn sshlab(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.sshlab_command(args, env).output().expect("run sshlab")
    }

    /// `sshlab --netns NS --lab LAB <args>` with `env`, to run.
    pub fn sshlab_command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let lab = self.lab.path().to_str().expect("utf-8 temp path");
        sshlab_command(
            &[&["--netns", self.name.as_str(), "--lab", lab], args].concat(),
            env,
        )
    }

    /// `tc -n NS <args>` (test-side reader and reference only).
    pub fn tc(&self, args: &[&str]) -> Output {
        Command::new("tc")
            .args(["-n", self.name.as_str()])
            .args(args)
            .output()
            .expect("run tc")
    }

    /// The qdisc modules netem needs that this kernel lacks (`sch_prio`, `sch_netem`, in that
    /// order), probed with `tc` on a scratch veth pair that is removed again.
    pub fn missing_qdisc_modules(&self) -> Vec<&'static str> {
        self.ip(&[
            "link", "add", "probe0", "type", "veth", "peer", "name", "probe1",
        ]);
        let prio = self.tc(&[
            "qdisc", "add", "dev", "probe0", "root", "handle", "1:", "prio",
        ]);
        let netem = self.tc(&[
            "qdisc", "add", "dev", "probe1", "root", "netem", "delay", "1ms",
        ]);
        self.ip(&["link", "del", "probe0"]);
        [("sch_prio", prio), ("sch_netem", netem)]
            .into_iter()
            .filter(|(_, out)| !out.status.success())
            .map(|(m, _)| m)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The repository's lab files (vms/topology.toml, netem/profiles.toml) copied into `dir`, with
/// `[results] host` set to `results`; returns `dir`.
pub fn lab_copy(dir: &Path, results: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::create_dir_all(dir.join("vms")).expect("mkdir");
    std::fs::create_dir_all(dir.join("netem")).expect("mkdir");
    let topology = std::fs::read_to_string(repo.join("vms/topology.toml")).expect("topology");
    let host_line = topology
        .lines()
        .find(|l| l.trim_start().starts_with("host = "))
        .expect("vms/topology.toml has [results] host = ...")
        .to_owned();
    let topology = topology.replace(
        &host_line,
        &format!("host = {:?}", results.display().to_string()),
    );
    std::fs::write(dir.join("vms/topology.toml"), topology).expect("write");
    std::fs::copy(
        repo.join("netem/profiles.toml"),
        dir.join("netem/profiles.toml"),
    )
    .expect("copy");
    // Readable by the runners' user and a normal user's `sshlab --lab`, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    for (p, mode) in [
        ("", 0o755),
        ("vms", 0o755),
        ("netem", 0o755),
        ("vms/topology.toml", 0o644),
        ("netem/profiles.toml", 0o644),
    ] {
        std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
    }
    dir.to_owned()
}

/// Runs the real `sshlab` binary from the repository root.
pub fn sshlab(args: &[&str], env: &[(&str, &str)]) -> Output {
    sshlab_under_umask(None, args, env)
}

/// [`sshlab`] under `umask` when given (as `sudo` passes on the caller's), else this process's.
pub fn sshlab_under_umask(umask: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Output {
    sshlab_command_under_umask(umask, args, env)
        .output()
        .expect("run sshlab")
}

/// The real `sshlab` binary, from the repository root, with `args` and `env`, to run.
pub fn sshlab_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    sshlab_command_under_umask(None, args, env)
}

/// [`sshlab_command`] under `umask` when given, else this process's.
pub fn sshlab_command_under_umask(
    umask: Option<&str>,
    args: &[&str],
    env: &[(&str, &str)],
) -> Command {
    let bin = env!("CARGO_BIN_EXE_sshlab");
    let mut cmd = match umask {
        Some(m) => {
            let mut c = Command::new("sh");
            c.args(["-c", "umask \"$1\" && shift && exec \"$@\"", "sh", m, bin]);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env_remove("SUDO_UID")
        .env_remove("SSHLAB_ROOT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// `ip <args>`, must succeed; returns stdout.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Stdout and stderr of a run, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The machine's own namespace must never see the lab: no lab link, no lab address.
pub fn assert_root_namespace_clean() {
    let links = ip(&["-j", "link", "show"]);
    for name in ["sshbr0", "sshtap0", "sshtap1", "sshtap2"] {
        assert!(
            !links.contains(&format!("\"{name}\"")),
            "{name} in the root namespace"
        );
    }
    let addrs = ip(&["-j", "addr", "show"]);
    assert!(
        !addrs.contains("10.178.0."),
        "lab address in the root namespace"
    );
}

/// Where mcp-ssh-server and sshlab-agent are: SSHLAB_BIN_DIR, else the target dir this test
/// runs from (a workspace test run builds them there). `None` (skipped, with a message) when
/// they are missing, except in CI (CI=true), where that is a failure.
pub fn lab_bin_dir() -> Option<PathBuf> {
    // This test runs from <target>/<profile>/deps/; the workspace's binaries sit one up.
    let beside_us = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(PathBuf::from));
    let dir = match (std::env::var_os("SSHLAB_BIN_DIR"), beside_us) {
        (Some(d), _) => PathBuf::from(d),
        (None, Some(d)) => d,
        (None, None) => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/debug")),
    };
    let ok = ["mcp-ssh-server", "sshlab-agent"]
        .iter()
        .all(|b| dir.join(b).is_file());
    if !ok && std::env::var_os("CI").is_some() {
        panic!(
            "mcp-ssh-server/sshlab-agent not in {}: build the workspace (or set SSHLAB_BIN_DIR)",
            dir.display()
        );
    }
    if !ok {
        eprintln!(
            "skipped: mcp-ssh-server/sshlab-agent not in {} (build them, or set SSHLAB_BIN_DIR)",
            dir.display()
        );
    }
    ok.then_some(dir)
}

/// A netns-backend lab's outer namespace, results directory and binaries. On drop (also after
/// a failed assertion) it runs `vm down` if the lab is still up, so no VM namespace or process
/// outlives the test, then removes the results; the outer namespace goes last.
#[derive(Debug)]
pub struct Lab {
    /// Results directory handed to `--results`.
    pub results: PathBuf,
    bins: String,
    /// The outer namespace (dropped after [`Lab`]'s own drop has run).
    pub ns: Netns,
}

impl Lab {
    /// A fresh outer namespace with loopback up; `None` when the test is skipped.
    pub fn new(tag: &str) -> Option<Self> {
        let ns = Netns::new(tag)?;
        let bins = lab_bin_dir()?.display().to_string();
        ns.ip(&["link", "set", "lo", "up"]);
        let results = std::env::temp_dir().join(format!("{}-results", ns.name));
        Some(Self { results, bins, ns })
    }

    /// `sshlab --netns NS <args> --results DIR` with the lab's binaries.
    pub fn sshlab(&self, args: &[&str]) -> Output {
        self.sshlab_under_umask(None, args)
    }

    /// [`Lab::sshlab`] under `umask` when given.
    pub fn sshlab_under_umask(&self, umask: Option<&str>, args: &[&str]) -> Output {
        let res = self.results.display().to_string();
        let lab = self.ns.lab.path().to_str().expect("utf-8 temp path");
        sshlab_under_umask(
            umask,
            &[
                &["--netns", self.ns.name.as_str(), "--lab", lab],
                args,
                &["--results", &res],
            ]
            .concat(),
            &[("SSHLAB_BIN_DIR", &self.bins)],
        )
    }

    /// `sshlab --netns NS <args> --results DIR` with the lab's binaries, to run.
    pub fn sshlab_command(&self, args: &[&str]) -> Command {
        let res = self.results.display().to_string();
        self.ns.sshlab_command(
            &[args, &["--results", &res]].concat(),
            &[("SSHLAB_BIN_DIR", &self.bins)],
        )
    }

    /// The runtime directory of this lab (`/run/sshlab/<outer>`).
    pub fn runtime(&self) -> PathBuf {
        PathBuf::from("/run/sshlab").join(&self.ns.name)
    }

    /// The one results directory a single run left (the one holding summary.json).
    pub fn only_run(&self) -> PathBuf {
        let dirs = self.runs();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs.into_iter().next().unwrap()
    }

    /// Every results directory the runs left (those holding summary.json), oldest first.
    pub fn runs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&self.results)
            .expect("results dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("summary.json").is_file())
            .collect();
        dirs.sort();
        dirs
    }

    /// A command run inside one of the lab's VM namespaces (`ip netns exec <outer>-<vm>`).
    pub fn exec(&self, vm: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &format!("{}-{vm}", self.ns.name), program]);
        cmd
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.runtime().join("state.json").exists() {
            let out = self.sshlab(&["vm", "down"]);
            eprintln!("cleanup: {}", text(&out));
        }
        let _ = std::fs::remove_dir_all(&self.results);
    }
}

/// A results directory's summary.json.
pub fn summary(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).expect("summary.json"))
        .expect("summary.json parses")
}
