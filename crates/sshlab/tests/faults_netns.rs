//! Faults during a run, on the netns backend, as root, each test with the whole lab inside an
//! outer namespace it creates and removes: every kind executed mid-run and judged (started,
//! reverted, recovered), the lab's state following a restarted MCP server, Ctrl-C in the
//! middle of faults leaving the lab as it was, and faults the lab cannot run refused before
//! anything starts.

mod common;

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use crate::common::{Lab, assert_root_namespace_clean, summary, text};

    /// The state file's pid of a VM's process.
    fn pid_of(lab: &Lab, vm: &str) -> u64 {
        let state: Value =
            serde_json::from_slice(&std::fs::read(lab.runtime().join("state.json")).unwrap())
                .unwrap();
        state["procs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["vm"] == vm)
            .and_then(|p| p["pid"].as_u64())
            .unwrap_or_else(|| panic!("no {vm} process in {state:#}"))
    }

    /// A process's state letter (`S`, `R`, `T` for stopped, ...).
    fn proc_state(pid: u64) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    /// Whether the outer namespace's link `name` is up.
    fn link_up(lab: &Lab, name: &str) -> bool {
        lab.ns
            .link(name)
            .is_some_and(|l| l["flags"].as_array().unwrap().iter().any(|f| f == "UP"))
    }

    /// Four kinds in one run of sustained_load (an open model of 40 calls/s over SSH sessions
    /// to 2222): sshd-kill of 2222, a partition of the target, a pause of the MCP server and its
    /// restart, far enough apart to judge each. Every one starts, ends and is judged; the
    /// system recovers from each (from 3 s after its end until the next fault, every second
    /// completes calls and none fails: sessions, pool slots and the server come back); the
    /// run's report has its FAULTS and TIMELINE; the restarted server is the one the lab's
    /// state names (`vm status` ready, `vm down` stops it). The recovery times are printed;
    /// they are not asserted, since latency noise on a shared machine moves them.
    #[test]
    fn every_kind_runs_mid_run_and_the_lab_recovers() {
        let Some(lab) = Lab::new("faults") else {
            return;
        };
        let out = lab.sshlab(&["vm", "up"]);
        assert!(out.status.success(), "{}", text(&out));
        let mcp_before = pid_of(&lab, "mcp");
        let out = lab.sshlab(&[
            "run",
            "sustained_load",
            "40",
            "--fault",
            "sshd-kill:2222@6s+3s",
            "--fault",
            "partition:target@15s+3s",
            "--fault",
            "mcp-pause@25s+2s",
            "--fault",
            "mcp-restart@31s+2s",
        ]);
        let t = text(&out);
        assert!(out.status.success(), "exit {:?}\n{t}", out.status.code());
        let s = summary(&lab.only_run());
        let faults = s["faults"].as_array().expect("faults in summary.json");
        assert_eq!(faults.len(), 4, "{s:#}");
        let mut lines = Vec::new();
        for f in faults {
            let label = format!("{}:{}", f["spec"]["kind"], f["spec"]["target"]);
            assert!(f["error"].is_null(), "{label}: {f:#}");
            let (a, b) = (
                f["started_at"].as_f64().expect("started"),
                f["ended_at"].as_f64().expect("ended"),
            );
            let planned = f["spec"]["duration_s"].as_f64().unwrap();
            assert!(
                b - a >= planned - 0.2 && b - a < planned + 5.0,
                "{label} lasted {:.1} s for a planned {planned} s",
                b - a
            );
            let an = &f["analysis"];
            assert!(an["verdict"].is_string(), "{label} judged: {f:#}");
            lines.push(format!(
                "{label}: {} calls during ({} failed); {}",
                an["during"]["requests"], an["during"]["failures"], an["verdict"]
            ));
        }
        // Functional recovery: no failure from 3 s after each fault's end to the next one.
        let t0 = s["run"]["started_at"].as_f64().unwrap();
        let end = s["run"]["ended_at"].as_f64().unwrap() - t0 - 2.0;
        let timeline = s["timeline"].as_array().unwrap();
        for (i, f) in faults.iter().enumerate() {
            let from = f["ended_at"].as_f64().unwrap() - t0 + 3.0;
            let to = faults
                .get(i + 1)
                .and_then(|n| n["started_at"].as_f64())
                .map_or(end, |n| n - t0 - 1.0);
            for sec in timeline {
                let t = sec["t"].as_f64().unwrap();
                if t >= from && t + 1.0 <= to {
                    assert_eq!(sec["err"], 0, "fault #{i}: failures at {t} s: {sec}\n{t:?}");
                    assert!(
                        sec["ok"].as_u64().unwrap() > 0,
                        "fault #{i}: nothing done at {t} s"
                    );
                }
            }
        }
        // The kinds that cut calls off show it: sshd-kill's and mcp-restart's calls failed.
        for (i, kind) in [(0, "sshd-kill"), (3, "mcp-restart")] {
            assert!(
                faults[i]["analysis"]["during"]["failures"]
                    .as_u64()
                    .unwrap()
                    > 0,
                "{kind}: {:#}",
                faults[i]
            );
        }
        let report = std::fs::read_to_string(lab.only_run().join("report.txt")).unwrap();
        assert!(
            report.contains("FAULTS (recovery:") && report.contains("TIMELINE"),
            "{report}"
        );
        assert!(report.contains("sshd-kill:2222"), "{report}");
        let html = std::fs::read_to_string(lab.only_run().join("report.html")).unwrap();
        assert!(
            html.contains("<h2>Faults</h2>"),
            "report.html has the faults"
        );
        // The restarted server is the lab's now: status sees it ready, down stops it.
        let mcp_after = pid_of(&lab, "mcp");
        assert_ne!(
            mcp_before, mcp_after,
            "the state names the restarted server"
        );
        let out = lab.sshlab(&["vm", "status"]);
        assert!(out.status.success(), "{}", text(&out));
        let out = lab.sshlab(&["vm", "down"]);
        assert!(out.status.success(), "{}", text(&out));
        // Gone, or a zombie waiting for a parent that is not this test's to reap.
        assert!(
            matches!(proc_state(mcp_after), None | Some('Z')),
            "vm down stopped the restarted server"
        );
        assert_root_namespace_clean();
        eprintln!("faults on netns:\n  {}", lines.join("\n  "));
    }

    /// Ctrl-C while a partition and a pause are in effect: `run` reverts both before it exits,
    /// so the target's link is up, the MCP server runs (not stopped) and the lab is ready.
    #[test]
    fn ctrl_c_in_the_middle_of_faults_leaves_the_lab_as_it_was() {
        let Some(lab) = Lab::new("fctrlc") else {
            return;
        };
        let out = lab.sshlab(&["vm", "up"]);
        assert!(out.status.success(), "{}", text(&out));
        let mcp = pid_of(&lab, "mcp");
        assert!(link_up(&lab, "sshtap2"));
        let qdiscs_before =
            String::from_utf8_lossy(&lab.ns.tc(&["qdisc", "show", "dev", "sshtap2"]).stdout)
                .into_owned();
        let res = lab.results.display().to_string();
        let bins = crate::common::lab_bin_dir().unwrap().display().to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sshlab"))
            .args(["--netns", &lab.ns.name, "--lab"])
            .arg(lab.ns.lab.path())
            .args(["run", "sustained_load", "30", "--results", &res])
            .args([
                "--fault",
                "partition:target@2s+20s",
                "--fault",
                "mcp-pause@3s+20s",
            ])
            .env("SSHLAB_BIN_DIR", &bins)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Both faults in effect.
        let deadline = Instant::now() + Duration::from_secs(30);
        while proc_state(mcp) != Some('T') {
            assert!(Instant::now() < deadline, "the pause never took effect");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!link_up(&lab, "sshtap2"), "the partition is in effect");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(t0.elapsed() < Duration::from_secs(40), "run did not stop");
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = child.wait_with_output().unwrap();
        let t = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(status.code(), Some(130), "{t}");
        assert!(t.contains("reverting faults"), "{t}");
        // As before the run: link up, server running, the same qdiscs, the lab ready.
        assert!(link_up(&lab, "sshtap2"), "{t}");
        assert_ne!(
            proc_state(mcp),
            Some('T'),
            "the MCP server is still stopped"
        );
        assert_eq!(pid_of(&lab, "mcp"), mcp);
        let qdiscs_after =
            String::from_utf8_lossy(&lab.ns.tc(&["qdisc", "show", "dev", "sshtap2"]).stdout)
                .into_owned();
        assert_eq!(qdiscs_before, qdiscs_after);
        let out = lab.sshlab(&["vm", "status"]);
        assert!(out.status.success(), "{}", text(&out));
        // The partial results say which faults ran and when they were reverted.
        let s = summary(&lab.only_run());
        assert_eq!(s["run"]["complete"], false);
        for f in s["faults"].as_array().unwrap() {
            assert!(f["ended_at"].is_f64(), "reverted and recorded: {f:#}");
        }
        let out = lab.sshlab(&["vm", "down"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_root_namespace_clean();
    }

    /// A fault naming a port or VM the lab does not have, outlasting its run or ending too near
    /// its end to be judged, or getting in another's way, is refused before anything starts: no
    /// lab is booted.
    #[test]
    fn faults_the_lab_cannot_run_are_refused_before_anything_starts() {
        let Some(lab) = Lab::new("fbad") else {
            return;
        };
        for (faults, says) in [
            (&["sshd-kill:9999@1s+1s"][..], "no sshd on port 9999"),
            (&["partition:db@1s+1s"], "no VM `db`"),
            (&["mcp-pause@14s+10s"], "after the run's 20.0 s"),
            (&["mcp-pause@14s+2s"], "less than 5 s before the run's end"),
            (&["explode:2222@1s+1s"], "unknown kind `explode`"),
            // 2322 is served by 2222's sshd.
            (
                &["sshd-kill:2222@0.5s+1s", "sshd-kill:2322@1s+1s"],
                "the same sshd",
            ),
            (
                &["partition:target@0.5s+1s", "sshd-kill:2222@1s+1s"],
                "waits for the port",
            ),
        ] {
            let mut args = vec!["run", "quick", "20"];
            for f in faults {
                args.extend(["--fault", f]);
            }
            let out = lab.sshlab(&args);
            let t = text(&out);
            let fault = faults.join(" ");
            assert!(!out.status.success(), "{fault}: {t}");
            assert!(t.contains(says), "{fault}: want {says:?} in\n{t}");
            assert!(
                !t.contains("booting it"),
                "{fault}: booted a lab first:\n{t}"
            );
            assert!(!lab.runtime().join("state.json").exists());
        }
        assert_root_namespace_clean();
    }
}
