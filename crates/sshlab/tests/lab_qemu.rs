//! The lab on real VMs: the qemu backend boots the three guests (Debian kernel, TCG here,
//! KVM where `/dev/kvm` runs one) on the TAPs of `sshlab net up`, inside a throwaway outer
//! network namespace. Then `run quick 10 2`: zero errors and a complete summary, the results
//! written by the Agent guest through the shared directory, and `lab.json` recording each
//! guest's own kernel (not the host's) and the accelerator; meanwhile `--dashboard` forwards the
//! Agent guest's live dashboard to loopback here, whose /metrics show the job running. Then
//! `run latency_test` with netem
//! applied inside the guests (this host's kernel has no sch_netem), 2322 shaped both ways (the
//! target guest shapes its replies, the MCP guest its requests): 2322's p50 exceeds 2222's by
//! at least 180 ms. `vm down` leaves no guest. Also the bad inputs: a missing TAP, no
//! virtme-ng on PATH, a guest that does not come up in time, and Ctrl-C during `vm up` (each
//! a clear error that leaves no process and no state behind).
//!
//! Needs root, the VM tools (`scripts/install-deps vm`, with `$SSHLAB_TOOLS/bin` on PATH) and
//! *release* builds of mcp-ssh-server and sshlab-agent (debug builds are too slow under TCG;
//! scripts/test builds them). Without them it fails under `CI=true` and skips otherwise. About
//! 4 minutes under TCG on 2 cores.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::real_vm::{self, newest_run, release_bins, run_json, which};
use common::{Netns, summary, text};

/// Fails in CI, skips (loudly) elsewhere.
fn unavailable(why: &str) {
    real_vm::unavailable("lab_qemu", why);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(out: &Output, what: &str) {
        assert!(out.status.success(), "{what}: {}", text(out));
    }

    #[test]
    fn quick_and_latency_on_real_guests() {
        if !nix::unistd::geteuid().is_root() {
            return unavailable("needs root");
        }
        if !which("vng") || !which("qemu-system-x86_64") {
            return unavailable("no vng or qemu-system-x86_64 on PATH (scripts/install-deps vm)");
        }
        let bins = match release_bins() {
            Ok(b) => b,
            Err(e) => return unavailable(&e),
        };
        let Some(ns) = Netns::new("qemu") else {
            return;
        };
        ns.ip(&["link", "set", "lo", "up"]);
        let bins = bins.display().to_string();
        let env = [("SSHLAB_BIN_DIR", bins.as_str())];

        // Before the network exists: one clear error naming the TAP, nothing started.
        let out = ns.sshlab(&["vm", "up", "--backend", "qemu"], &env);
        assert_eq!(out.status.code(), Some(2), "bad input: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("TAP sshtap") && err.contains("net up"),
            "{err}"
        );
        // No virtme-ng on PATH: named, with the command that installs it.
        let out = ns.sshlab(
            &["vm", "up", "--backend", "qemu"],
            &[("PATH", "/usr/bin:/bin")],
        );
        assert_eq!(out.status.code(), Some(4), "missing tool: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("vng") && err.contains("install-deps vm"),
            "{err}"
        );

        // This host's kernel has no sch_netem: the links only; netem goes into the target guest.
        ok(&ns.sshlab(&["net", "up", "--no-netem"], &[]), "net up");
        let pids = |ns: &Netns| {
            std::process::Command::new("ip")
                .args(["netns", "pids", &ns.name])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        let state_file = PathBuf::from("/run/sshlab")
            .join(&ns.name)
            .join("state.json");

        // A guest that does not come up in time: named, with its console's tail; nothing left.
        let out = ns.sshlab(
            &["vm", "up", "--backend", "qemu", "--ready-timeout", "3"],
            &env,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "not ready: {}", text(&out));
        assert!(
            err.contains("VM target: qemu not ready within 3 s; tail of"),
            "{err}"
        );
        assert_eq!(pids(&ns), "", "a timed-out vm up left processes");
        assert!(!state_file.exists(), "a failed vm up left its state");

        // Ctrl-C while the guests boot: vm up stops what it started and says so.
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_sshlab"))
            .args(["--netns", &ns.name, "--lab"])
            .arg(ns.lab.path())
            .args(["vm", "up", "--backend", "qemu"])
            .env("SSHLAB_BIN_DIR", &bins)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start vm up");
        // Past the KVM probe, into the target guest's boot.
        let booting = std::time::Instant::now();
        while !PathBuf::from("/run/sshlab")
            .join(&ns.name)
            .join("target.log")
            .exists()
            && booting.elapsed() < std::time::Duration::from_secs(90)
        {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        let out = child.wait_with_output().expect("vm up exits");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "interrupted: {}", text(&out));
        assert!(err.contains("interrupted"), "{err}");
        assert_eq!(pids(&ns), "", "Ctrl-C during vm up left processes");
        assert!(!state_file.exists(), "an interrupted vm up left its state");

        // 2322 shaped both ways: with netem in the guests, the target shapes its replies and
        // the MCP guest its requests to 2322 (and a netem fault's commands go to both).
        let profiles = ns.lab.path().join("netem/profiles.toml");
        let toml = std::fs::read_to_string(&profiles).expect("the lab copy's profiles");
        assert!(toml.contains("\nport = 2322\n"), "{toml}");
        std::fs::write(
            &profiles,
            toml.replace("\nport = 2322\n", "\nport = 2322\nboth_ways = true\n"),
        )
        .expect("write the profiles");
        let up = ns.sshlab(&["vm", "up", "--backend", "qemu"], &env);
        let runtime = PathBuf::from("/run/sshlab").join(&ns.name);
        let down = |ns: &Netns| {
            let out = ns.sshlab(&["vm", "down"], &[]);
            (out, pids(ns))
        };
        if !up.status.success() {
            let (_, _) = down(&ns);
            panic!("vm up --backend qemu: {}", text(&up));
        }
        let stdout = String::from_utf8_lossy(&up.stdout).into_owned();
        println!("{stdout}");

        // The Agent guest's dashboard, forwarded to this namespace's loopback while quick runs.
        let dash = std::net::SocketAddr::from(([127, 0, 0, 1], sshlab_testkit::free_port()));
        let watching = real_vm::DashboardWatch::start(dash);
        let quick = ns.sshlab(
            &["run", "quick", "10", "2", "--dashboard", &dash.to_string()],
            &env,
        );
        let forwarded = watching.requests_seen();
        let quick_dir = newest_run(&ns.results());
        // Every kind of fault on real guests, during one run: a partition of the target's TAP
        // and a pause of the MCP guest's whole qemu (the host's own), then an sshd kill, an MCP
        // server restart and a netem change, which the guests execute on the host's command
        // (their control ports). At 2 calls/s, which these emulated guests serve without a
        // queue (quick's own 20/s would hide the delay behind seconds of backlog), after
        // 12 s of baseline.
        let faults = ns.sshlab(
            &[
                "run",
                "quick",
                "56",
                "2",
                "--rate",
                "2",
                "--fault",
                "netem:2222:delay=1000ms@12s+5s",
                "--fault",
                "partition:target@21s+3s",
                "--fault",
                "mcp-pause@28s+3s",
                "--fault",
                "sshd-kill:2222@35s+3s",
                "--fault",
                "mcp-restart@42s+3s",
            ],
            &env,
        );
        let faults_dir = newest_run(&ns.results());
        // After the faults: the netem fault's revert must have left the lab's own profiles (2322
        // still 100 ms slower) and nothing of its own (2222 not slower).
        let latency = ns.sshlab(&["run", "latency_test", "5", "2", "--rate", "2"], &env);
        let latency_dir = newest_run(&ns.results());
        let status_after = ns.sshlab(&["vm", "status"], &[]);
        // Every process of each guest (vng, virtme-run, qemu), as `vm up` recorded them.
        let state: sshlab::vm::State =
            serde_json::from_slice(&std::fs::read(&state_file).expect("state.json"))
                .expect("state.json parses");
        // Each guest's recorded processes include its qemu.
        let without_qemu: Vec<&str> = state
            .procs
            .iter()
            .filter(|p| {
                !p.members.iter().any(|m| {
                    std::fs::read_to_string(format!("/proc/{}/comm", m.pid))
                        .is_ok_and(|c| c.starts_with("qemu-system"))
                })
            })
            .map(|p| p.vm.as_str())
            .collect();
        let (out, left) = down(&ns);
        // Issue 21: `down` returns only once none of them runs (zombies aside), checked at once.
        let running = real_vm::still_running(&state);
        let _ = ns.sshlab(&["net", "down"], &[]);
        let _ = std::fs::remove_dir_all(&runtime);

        ok(&quick, "run quick");
        ok(&out, "vm down");
        assert!(
            forwarded.is_some_and(|n| n > 0.0),
            "the Agent guest's dashboard was not forwarded to {dash} while quick ran"
        );
        assert_eq!(
            running,
            Vec::<String>::new(),
            "guest processes left after vm down"
        );
        assert_eq!(
            without_qemu,
            Vec::<&str>::new(),
            "vm up recorded no qemu below these guests' vng: {:?}",
            state.procs
        );
        assert_eq!(
            left, "",
            "processes left in the lab's namespace after vm down"
        );

        // quick: a complete run without errors, written by the agent guest into the share.
        let s = summary(&quick_dir);
        assert_eq!(s["run"]["complete"], true, "{s:#}");
        assert!(s["totals"]["requests"].as_u64().unwrap_or(0) > 0, "{s:#}");
        assert_eq!(s["totals"]["failures"], 0, "{s:#}");
        // lab.json: the guests' own kernels, not the host's; the accelerator.
        let note = run_json(&quick_dir, "lab.json");
        assert_eq!(note["backend"], "qemu", "{note:#}");
        let accel = note["accel"].as_str().unwrap_or_default();
        assert!(accel == "tcg" || accel == "kvm", "{note:#}");
        let host = nix::sys::utsname::uname().expect("uname");
        let host = host.release().to_string_lossy().into_owned();
        let kernel = sshlab_core::guest_kernel::find().expect("a guest kernel");
        let guest_release = sshlab_core::guest_kernel::release(&kernel)
            .expect("vmlinuz-<release>")
            .to_owned();
        let guests = note["guests"].as_array().expect("guests");
        assert_eq!(guests.len(), 3, "{note:#}");
        for g in guests {
            assert_eq!(g["kernel"], guest_release.as_str(), "{note:#}");
        }
        // Where the host runs another kernel (here a Firecracker host kernel), the guests'
        // report cannot be the host's own uname leaking through.
        if host == guest_release {
            eprintln!("note: the host runs the guest kernel {host} itself; uname cannot tell");
        } else {
            assert!(
                guests.iter().all(|g| g["kernel"] != host.as_str()),
                "{note:#}"
            );
        }

        // latency_test with netem inside the target guest, run after the faults.
        ok(&latency, "run latency_test");
        let note = run_json(&latency_dir, "lab.json");
        assert_eq!(note["netem"]["applied"], true, "{note:#}");
        assert_eq!(note["netem"]["in_guest"], true, "{note:#}");
        let s = summary(&latency_dir);
        let p50 = |port: &str| -> f64 {
            s["ports"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == port))
                .and_then(|p| p["latency"]["p50"].as_f64())
                .unwrap_or_else(|| panic!("no p50 for {port}: {s:#}"))
        };
        let (base, shaped) = (p50("2222"), p50("2322"));
        println!("latency_test p50: 2222 {base:.1} ms, 2322 (both ways) {shaped:.1} ms");
        assert_eq!(
            note["netem"]["back_ports"],
            serde_json::json!([2322]),
            "{note:#}"
        );
        assert!(note["netem"]["back_dev"].is_string(), "{note:#}");
        // 100 ms each way on every round trip (one way, it adds at least 90 ms).
        assert!(
            shaped - base >= 180.0,
            "netem in the target and MCP guests adds only {:.1} ms",
            shaped - base
        );

        // Faults on real guests: both executed and reverted (the lab ready again afterwards),
        // judged, and the run went on after them.
        ok(&faults, "run quick with faults");
        ok(&status_after, "vm status after the faults");
        let s = summary(&faults_dir);
        let recorded = s["faults"].as_array().expect("faults");
        assert_eq!(recorded.len(), 5, "{s:#}");
        for f in recorded {
            assert!(f["error"].is_null(), "{f:#}");
            assert!(f["started_at"].is_f64() && f["ended_at"].is_f64(), "{f:#}");
            assert!(f["analysis"]["verdict"].is_string(), "{f:#}");
            println!(
                "qemu fault {}:{}: {} (during: {})",
                f["spec"]["kind"],
                f["spec"]["target"],
                f["analysis"]["verdict"],
                f["analysis"]["during"]
            );
        }
        // The guests really did it: the killed sshd and the killed server failed calls, and
        // the 1 s delay showed in the calls made during it (over latency_test's 2222 p50 at
        // the same rate, measured after the faults: a delay left behind would raise it), and
        // was gone afterwards (`vm status` ready: its check connects with
        // a 300 ms timeout).
        let during = |i: usize, key: &str| recorded[i]["analysis"]["during"][key].as_f64();
        for (i, what) in [(3, "sshd-kill"), (4, "mcp-restart")] {
            assert!(
                during(i, "failures").unwrap_or(0.0) > 0.0,
                "{what}: no call failed during it: {:#}",
                recorded[i]
            );
        }
        // The delay, first of the faults (on a steady baseline, not on another fault's
        // recovery): the slowest call during it took the second. Not the p50: the guest takes
        // a moment to apply it under TCG, and only 5 to 9 calls complete in the window, some
        // before it bites (measured p50s: +86 to +253 ms with 300 ms, +88 ms with 1 s).
        let slowest = during(0, "max_ms").unwrap_or(0.0);
        assert!(
            slowest > base + 700.0,
            "netem delay=1000ms: the slowest call during it took {slowest:.1} ms, 2222's p50 is \
             {base:.1} ms: {:#}",
            recorded[0]
        );
        let last_end =
            recorded[4]["ended_at"].as_f64().unwrap() - s["run"]["started_at"].as_f64().unwrap();
        let after = real_vm::succeeded_after(&s, last_end);
        assert!(after > 0, "nothing succeeded after the pause ended: {s:#}");
    }
}
