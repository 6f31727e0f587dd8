//! Shared by the integration tests: a throwaway network namespace, the real `sshlab` binary,
//! and an independent reader of the kernel's state (`ip -j`, iproute2), so that no assertion
//! relies on sshlab's own netlink parsing.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// A network namespace made for one test and deleted (with everything in it) on drop.
#[derive(Debug)]
pub struct Netns {
    /// `sshlab-test-<pid>-<nanos>-<tag>`.
    pub name: String,
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
        ip(&["netns", "add", &name]);
        Some(Self { name })
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

    /// Runs `sshlab --netns NS <args>` with `env`.
    pub fn sshlab(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        sshlab(&[&["--netns", self.name.as_str()], args].concat(), env)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs the real `sshlab` binary from the repository root (where it finds the lab's files).
pub fn sshlab(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sshlab"));
    cmd.args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env_remove("SUDO_UID")
        .env_remove("SSHLAB_ROOT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run sshlab")
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
