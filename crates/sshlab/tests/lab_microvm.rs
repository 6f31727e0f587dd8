//! The microvm backend against real hypervisor processes: `sshlab vm runners` builds runners
//! with microvm.nix's interface (`bin/microvm-run`, and the Agent's `bin/virtiofsd-run` running
//! a real virtiofsd) that boot the qemu backend's guests, and `vm up --backend microvm` starts
//! them through its own code: runner discovery, the unprivileged user from `SUDO_UID` (here
//! nobody, 65534, with a TAP owned by it), virtiofsd-run before microvm-run, process groups,
//! readiness, logs. Then `run quick 10 2 --dashboard`: zero errors, a complete summary, the
//! Agent guest's dashboard forwarded to loopback here (its /metrics show the job running), and
//! the run's files owned by that user (the Agent guest wrote them through virtiofsd, which runs as that user;
//! 9p from a root qemu or a host-side write would leave root's). Then a run with the faults the
//! guests execute on the host's command through their control ports (an sshd kill, an MCP
//! server restart): both reverted, both failing calls while they last, calls succeeding
//! after. `vm down` leaves no process in the lab's namespace. First, the bad input this path has that the others lack: a results
//! directory under a folder the runners' user cannot pass (the test's own 0700 temporary
//! folder) is refused by name before anything starts.
//!
//! Needs root, the VM tools (`scripts/install-deps vm`: vng, qemu, virtiofsd, a Debian kernel)
//! and release builds of mcp-ssh-server and sshlab-agent. Without them it fails under
//! `CI=true` and skips otherwise. About 2 minutes under TCG on 2 cores.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Output;

use common::real_vm::{self, release_bins, run_json, which};
use common::{Netns, summary, text};

/// The runners' user: nobody.
const UID: u32 = 65534;

fn unavailable(why: &str) {
    real_vm::unavailable("lab_microvm", why);
}

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", text(out));
}

/// Owner of `/proc/<pid>`.
fn proc_uid(pid: u64) -> Option<u32> {
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// `ip netns pids NS`: every process in the lab's namespace.
fn pids(ns: &Netns) -> String {
    std::process::Command::new("ip")
        .args(["netns", "pids", &ns.name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_run_through_microvm_runners_on_real_guests() {
        if !nix::unistd::geteuid().is_root() {
            return unavailable("needs root");
        }
        for tool in ["vng", "qemu-system-x86_64", "virtiofsd"] {
            if !which(tool) {
                return unavailable(&format!("no {tool} on PATH (scripts/install-deps vm)"));
            }
        }
        let bins = match release_bins() {
            Ok(b) => b,
            Err(e) => return unavailable(&e),
        };
        let Some(ns) = Netns::new("mvm") else {
            return;
        };
        ns.ip(&["link", "set", "lo", "up"]);
        let uid = UID.to_string();
        let sudo = [("SUDO_UID", uid.as_str()), ("SUDO_GID", uid.as_str())];

        // The lab copy lives in a 0700 temporary folder: nobody cannot reach its results folder,
        // which is then neither created nor given away.
        std::fs::set_permissions(ns.lab.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod the lab copy");
        let out = ns.sshlab(&["net", "up", "--no-netem", "--owner", &uid], &sudo);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            err.contains(&format!("out of reach of uid {UID}"))
                && err.contains(&ns.lab.path().display().to_string()),
            "{err}"
        );
        assert!(
            !ns.results().exists(),
            "a refused results folder was created"
        );
        std::fs::set_permissions(ns.lab.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the lab copy");
        ok(
            &ns.sshlab(&["net", "up", "--no-netem", "--owner", &uid], &sudo),
            "net up",
        );

        // The runners, in a folder every user may read (as a Nix store is).
        let store = tempfile::Builder::new()
            .prefix("sshlab-test-runners-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let runners = store.path().join("runners");
        let runners_s = runners.display().to_string();
        let bins_s = bins.display().to_string();
        // Under a umask of 077 (root's is often that): every directory the runners' user must
        // pass through is still opened for it.
        let built = std::process::Command::new("sh")
            .args([
                "-c",
                "umask 077 && exec \"$@\"",
                "sh",
                env!("CARGO_BIN_EXE_sshlab"),
            ])
            .args(["--netns", &ns.name, "--lab"])
            .arg(ns.lab.path())
            .args(["vm", "runners", &runners_s, "--bin-dir", &bins_s])
            .env_remove("SUDO_UID")
            .output()
            .expect("run sshlab vm runners");
        ok(&built, "vm runners");
        for vm in ["target", "mcp", "agent"] {
            assert!(
                String::from_utf8_lossy(&built.stdout).contains(&format!(
                    "SSHLAB_RUNNER_{}={}",
                    vm.to_uppercase(),
                    runners.join(vm).display()
                )),
                "{}",
                text(&built)
            );
        }
        let runner_args: Vec<String> = ["target", "mcp", "agent"]
            .iter()
            .map(|vm| format!("--runner={vm}={}", runners.join(vm).display()))
            .collect();
        let with_runners = |args: &[&str]| -> Vec<String> {
            args.iter()
                .map(|a| (*a).to_owned())
                .chain(runner_args.iter().cloned())
                .collect()
        };
        let runtime = PathBuf::from("/run/sshlab").join(&ns.name);
        let sshlab = |args: Vec<String>| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ns.sshlab(&args, &sudo)
        };

        let up = sshlab(with_runners(&[
            "vm",
            "up",
            "--backend",
            "microvm",
            "--ready-timeout",
            "420",
        ]));
        // While up: every runner process runs as the unprivileged user, virtiofsd included.
        let state: serde_json::Value = std::fs::read(runtime.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let owners: Vec<(String, Option<u32>)> = state["procs"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        (
                            format!("{} {}", p["vm"], p["what"]),
                            p["pid"].as_u64().and_then(proc_uid),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let status = sshlab(vec!["vm".into(), "status".into()]);
        // The Agent guest's dashboard, forwarded to this namespace's loopback while quick runs.
        let dash = std::net::SocketAddr::from(([127, 0, 0, 1], sshlab_testkit::free_port()));
        let watching = real_vm::DashboardWatch::start(dash);
        let quick = if up.status.success() {
            Some(sshlab(vec![
                "run".into(),
                "quick".into(),
                "10".into(),
                "2".into(),
                "--dashboard".into(),
                dash.to_string(),
            ]))
        } else {
            None
        };
        let forwarded = watching.requests_seen();
        // Read after `vm down`'s asserts below say why, when `vm up` failed and nothing ran.
        let quick_dir = real_vm::latest_run(&ns.results()).unwrap_or_default();
        // The faults the guests execute on the host's command, through the control ports the
        // runners give them (as vms/control.nix gives the Nix-built ones): an sshd kill and an
        // MCP server restart, at 2 calls/s after 12 s of baseline (the 20 calls recovery is
        // judged against).
        let faults = up.status.success().then(|| {
            sshlab(
                [
                    "run",
                    "quick",
                    "44",
                    "2",
                    "--rate",
                    "2",
                    "--fault",
                    "sshd-kill:2222@12s+3s",
                    "--fault",
                    "mcp-restart@28s+3s",
                ]
                .map(String::from)
                .to_vec(),
            )
        });
        let faults_dir = real_vm::latest_run(&ns.results()).unwrap_or_default();
        let status_after = sshlab(vec!["vm".into(), "status".into()]);
        let down = sshlab(vec!["vm".into(), "down".into()]);
        let left = pids(&ns);
        // `down` keeps the logs for `vm logs`.
        let vlog = std::fs::read_to_string(runtime.join("agent-virtiofsd.log")).unwrap_or_default();
        let _ = ns.sshlab(&["net", "down"], &[]);
        let _ = std::fs::remove_dir_all(&runtime);

        ok(&up, "vm up --backend microvm");
        println!("{}", String::from_utf8_lossy(&up.stdout));
        assert_eq!(
            owners.len(),
            4,
            "target, mcp, agent's virtiofsd-run and microvm-run: {owners:?}"
        );
        assert!(
            owners.iter().all(|(_, uid)| *uid == Some(UID)),
            "runner processes not (all) run as uid {UID}: {owners:?}"
        );
        assert!(
            owners
                .iter()
                .any(|(what, _)| what.contains("virtiofsd-run")),
            "{owners:?}"
        );
        ok(&status, "vm status");
        let quick = quick.expect("quick ran");
        ok(&quick, "run quick");
        ok(&down, "vm down");
        assert!(
            forwarded.is_some_and(|n| n > 0.0),
            "the Agent guest's dashboard was not forwarded to {dash} while quick ran"
        );
        assert_eq!(
            left, "",
            "processes left in the lab's namespace after vm down"
        );
        assert!(
            !runtime.join("state.json").exists(),
            "vm down left its state"
        );

        let dir = quick_dir;
        let s = summary(&dir);
        assert_eq!(s["run"]["complete"], true, "{s:#}");
        assert!(s["totals"]["requests"].as_u64().unwrap_or(0) > 0, "{s:#}");
        assert_eq!(s["totals"]["failures"], 0, "{s:#}");
        // Through the share: the agent guest's files are the runners' user's on the host.
        for f in ["summary.json", "report.txt", "junit.xml"] {
            assert_eq!(
                std::fs::metadata(dir.join(f)).map(|m| m.uid()).ok(),
                Some(UID),
                "{f} was not written through virtiofsd as uid {UID}"
            );
        }
        // lab.json: the backend, and each guest's own kernel (the Debian one the runners boot).
        let note = run_json(&dir, "lab.json");
        assert_eq!(note["backend"], "microvm", "{note:#}");
        let kernel = sshlab_core::guest_kernel::find().expect("a guest kernel");
        let release = sshlab_core::guest_kernel::release(&kernel).expect("vmlinuz-<release>");
        let guests = note["guests"].as_array().expect("guests");
        assert_eq!(guests.len(), 3, "{note:#}");
        assert!(guests.iter().all(|g| g["kernel"] == release), "{note:#}");
        // virtiofsd's own log: the Agent guest connected to it.
        assert!(vlog.contains("Client connected"), "{vlog}");

        // The faults inside the microVMs: executed and reverted (the lab ready afterwards),
        // each failing calls while it lasted, and calls succeeding after the last.
        ok(&faults.expect("the faults ran"), "run quick with faults");
        ok(&status_after, "vm status after the faults");
        let s = summary(&faults_dir);
        let recorded = s["faults"].as_array().expect("faults");
        assert_eq!(recorded.len(), 2, "{s:#}");
        for f in recorded {
            assert!(f["error"].is_null(), "{f:#}");
            assert!(f["started_at"].is_f64() && f["ended_at"].is_f64(), "{f:#}");
            println!(
                "microvm fault {}:{}: {} (during: {}; recovery: {})",
                f["spec"]["kind"],
                f["spec"]["target"],
                f["analysis"]["verdict"],
                f["analysis"]["during"],
                f["analysis"]["recovery_s"]
            );
            assert!(
                f["analysis"]["during"]["failures"].as_f64().unwrap_or(0.0) > 0.0,
                "no call failed during it: {f:#}"
            );
        }
        // The server's part: once each fault is over, no call fails (no dead pooled SSH
        // connection is handed out again), except what a restart cannot help: the SSH sessions
        // the killed server held are gone with it, and a worker learns that of each handle it
        // held at its next use ("session not found", given up at once as stale). So after the
        // last fault (the restart) only `session_gone` may fail, at most once per handle held
        // (2 workers, quick's max_sessions 2), and calls succeed after the last of them. How
        // soon latency is back is the emulated machine's (each new SSH handshake takes seconds
        // under TCG), so recovery is held to every fault's `recovery<30s`.
        let started = s["run"]["started_at"].as_f64().unwrap();
        let last_end = recorded[1]["ended_at"].as_f64().unwrap() - started;
        let late: Vec<&serde_json::Value> = s["error_messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["last_s"].as_f64().unwrap_or(0.0) > last_end + 1.0)
            .collect();
        let (gone, other): (Vec<&serde_json::Value>, Vec<_>) =
            late.into_iter().partition(|m| m["kind"] == "session_gone");
        assert!(
            other.is_empty(),
            "calls failed after the last fault, other than a lost session's first use: {other:#?}"
        );
        let gone_calls: u64 = gone.iter().filter_map(|m| m["count"].as_u64()).sum();
        assert!(
            gone_calls <= 4,
            "more lost sessions used after the restart than 2 workers x 2 handles: {gone:#?}"
        );
        let last_gone = gone
            .iter()
            .filter_map(|m| m["last_s"].as_f64())
            .fold(last_end, f64::max);
        println!(
            "microvm: after the restart's end at {last_end:.1} s, {gone_calls} call(s) used a lost \
             session, the last at {last_gone:.1} s"
        );
        for f in recorded {
            assert!(
                f["analysis"]["recovery_s"]
                    .as_f64()
                    .is_some_and(|r| r < 30.0),
                "not recovered within 30 s: {f:#}"
            );
        }
        let after = real_vm::succeeded_after(&s, last_gone);
        assert!(
            after > 0,
            "nothing succeeded after the restart (and its lost sessions' first uses): {s:#}"
        );
    }
}
