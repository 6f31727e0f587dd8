//! `nix flake check`'s NixOS VM test, run here: Nix cannot build, so its own test script
//! (nix/checks/vm-test.nix's `testScript`, evaluated by nix-instantiate with stub pkgs,
//! nix/tests/vm-test-driver.nix) runs unchanged through a stand-in for the NixOS test driver
//! (nix/tests/vm-test-driver.py: `Machine.succeed`, `fail`, `execute`, `wait_for_unit`,
//! `wait_for_open_port`, `wait_until_succeeds`, `start_all`, `subtest` with the driver's
//! semantics) against the qemu backend's three real guests, booted by its `start_all()` with
//! `sshlab vm up --backend qemu --no-netem --test-driver` inside a network namespace this test
//! makes (the NixOS nodes apply no netem at boot; the script applies it). Every command the
//! script runs, with the same arguments, runs in the guest of the node it names. Then
//! `vm down`: right after it returns, no process `vm up` recorded for a guest may be left.
//!
//! Needs root, the VM tools (`scripts/install-deps vm`, `$SSHLAB_TOOLS/bin` on PATH),
//! nix-instantiate, and release builds of mcp-ssh-server and sshlab-agent (as lab_qemu). Fails
//! under `CI=true` when it cannot run, skips otherwise. One qemu lab boot plus the script:
//! about 21 minutes under TCG on 2 cores (the script's own quick and latency_test runs take
//! 14 of them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::real_vm::{self, release_bins, which};
use common::{Netns, text};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn unavailable(why: &str) {
    real_vm::unavailable("nixos_vm_test", why);
}

/// nix/tests/vm-test-driver.nix evaluated (test script, nodes, units) into `out`.
fn driver_json(out: &Path) {
    let state = tempfile::tempdir().expect("tempdir");
    let o = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(Path::new(REPO).join("nix/tests/vm-test-driver.nix"))
        .env("NIX_STATE_DIR", state.path())
        .env("NIX_PATH", "")
        .output()
        .expect("nix-instantiate (nix-bin: scripts/install-deps) runs");
    assert!(o.status.success(), "nix eval failed: {}", text(&o));
    std::fs::write(out, &o.stdout).expect("write");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nixos_vm_test_script_passes_on_the_qemu_guests() {
        if !nix::unistd::geteuid().is_root() {
            return unavailable("needs root");
        }
        let tools = ["vng", "qemu-system-x86_64", "nix-instantiate", "python3"];
        let nodes_need = ["sshpass", "ssh", "nc", "curl", "nsenter"];
        if let Some(t) = tools.iter().chain(&nodes_need).find(|t| !which(t)) {
            return unavailable(&format!("no {t} on PATH (scripts/install-deps base vm)"));
        }
        let bins = match release_bins() {
            Ok(b) => b,
            Err(e) => return unavailable(&e),
        };
        let scratch = tempfile::tempdir().expect("tempdir");
        let json = scratch.path().join("driver.json");
        driver_json(&json);
        let Some(ns) = Netns::new("nixos") else {
            return;
        };
        ns.ip(&["link", "set", "lo", "up"]);
        let out = ns.sshlab(&["net", "up", "--no-netem"], &[]);
        assert!(out.status.success(), "net up: {}", text(&out));
        let runtime = PathBuf::from("/run/sshlab").join(&ns.name);
        let lab = ns.lab.path().display().to_string();

        let started = std::time::Instant::now();
        let driver = Command::new("python3")
            .arg(Path::new(REPO).join("nix/tests/vm-test-driver.py"))
            .arg(&json)
            .args(["--sshlab", env!("CARGO_BIN_EXE_sshlab"), "--runtime"])
            .arg(&runtime)
            .args(["--", "--netns", &ns.name, "--lab", &lab])
            .args([
                "vm",
                "up",
                "--backend",
                "qemu",
                "--no-netem",
                "--test-driver",
            ])
            .env("SSHLAB_BIN_DIR", &bins)
            .stdin(Stdio::null())
            .status()
            .expect("run the driver");
        let took = started.elapsed();
        // What `vm up` recorded for each guest (vng, virtme-run, qemu), before `down`.
        let state: Option<sshlab::vm::State> = std::fs::read(runtime.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let down = ns.sshlab(&["vm", "down"], &[]);
        let left = state
            .as_ref()
            .map(real_vm::still_running)
            .unwrap_or_default();
        let pids = Command::new("ip")
            .args(["netns", "pids", &ns.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let _ = ns.sshlab(&["net", "down"], &[]);
        let _ = std::fs::remove_dir_all(&runtime);

        println!("the VM test's script took {:.0} s", took.as_secs_f64());
        assert!(
            driver.success(),
            "nix/checks/vm-test.nix's test script failed on the qemu guests ({driver})"
        );
        assert!(down.status.success(), "vm down: {}", text(&down));
        assert_eq!(
            left,
            Vec::<String>::new(),
            "guest processes left after vm down"
        );
        assert_eq!(
            pids, "",
            "processes left in the lab's namespace after vm down"
        );
    }
}
