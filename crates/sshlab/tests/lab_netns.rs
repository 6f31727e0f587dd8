//! The netns backend end to end, as root, each test with the whole lab inside an outer
//! namespace it creates and removes ([`Lab`]): `sshlab run quick` (zero errors, complete
//! results, teardown leaves nothing), exhaustion_test (clean rejections past the pool),
//! latency_test on this kernel (the netem ports are skipped, and the output says why), and the
//! target's sshd roles seen by a real OpenSSH client from inside the lab. Runs are a few
//! seconds each. Needs mcp-ssh-server and sshlab-agent built (SSHLAB_BIN_DIR, or the target
//! dir this test runs from, where a workspace test run builds them); outside CI it is skipped
//! with a message when they are missing, in CI (CI=true) that is a failure.

mod common;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use crate::common::{Lab, assert_root_namespace_clean, summary, text};

    #[test]
    fn run_quick_end_to_end_and_teardown_leaves_nothing() {
        let Some(lab) = Lab::new("lab") else {
            return;
        };
        let out = lab.sshlab(&["run", "quick", "5", "2", "--threshold", "errors<1%"]);
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(t.contains("vm down: deleted sshbr0"), "{t}");
        assert_root_namespace_clean();

        // Complete results with zero errors.
        let dir = lab.only_run();
        let summary = summary(&dir);
        assert_eq!(summary["run"]["complete"], true, "{summary:#}");
        assert!(
            summary["totals"]["requests"].as_u64().unwrap() > 0,
            "{summary:#}"
        );
        assert_eq!(summary["totals"]["failures"], 0, "{summary:#}");
        // The namespaces share the host's cores: the report says so, never "on 4 cores" (the
        // topology's MCP vCPUs, which no namespace has).
        let report = std::fs::read_to_string(dir.join("report.txt")).expect("report.txt");
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        assert!(
            report.contains(&format!(
                "host core{}, shared with the load generator and the target",
                if cores == 1 { "" } else { "s" }
            )) && !report.contains("on 4 cores"),
            "{report}"
        );
        assert_eq!(summary["server"]["vcpus_shared"], true, "{summary:#}");

        // Nothing left: no VM namespace, no link in the outer one, no state, no process.
        let ns = &lab.ns;
        let names = crate::common::ip(&["netns", "list"]);
        assert!(!names.contains(&format!("{}-", ns.name)), "{names}");
        assert!(ns.link("sshbr0").is_none() && ns.link("sshtap2").is_none());
        assert!(!lab.runtime().join("state.json").exists());
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        assert!(!mounts.contains("sshlab-etc"), "{mounts}");
        let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        assert!(!ps.contains(&lab.results.display().to_string()), "{ps}");
        assert!(!ps.contains(&format!("/run/sshlab/{}/", ns.name)), "{ps}");
    }

    /// exhaustion_test as it comes: 25 workers, past the server's per-target pool (20 under
    /// the lab's `--profile loadtest`), then 10 within it. In the first phase the extra
    /// connects are refused fast, every refusal is classified as pool_exhausted and the held
    /// connections keep working; in the second, nothing fails: the limit let go. The run ends
    /// on time.
    #[test]
    fn exhaustion_test_rejects_cleanly_past_the_pool_then_recovers() {
        let Some(lab) = Lab::new("exh") else {
            return;
        };
        let started = Instant::now();
        let out = lab.sshlab(&["run", "exhaustion_test", "4"]);
        let took = started.elapsed();
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        // 2 × 4 s of load plus boot and teardown: a hang would show here (the run's own
        // timeout is an hour).
        assert!(took < Duration::from_secs(60), "took {took:?}\n{t}");
        assert_root_namespace_clean();

        let s = summary(&lab.only_run());
        assert_eq!(s["run"]["complete"], true, "{s:#}");
        let errors = s["errors"].as_object().unwrap();
        assert_eq!(
            errors.keys().collect::<Vec<_>>(),
            ["pool_exhausted"],
            "only pool_exhausted, no timeouts: {errors:?}"
        );
        let phase = |name: &str| -> &Value {
            s["phases"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("no phase {name}: {s:#}"))
        };
        let over = phase("workers=25");
        let rejected = over["errors"]["pool_exhausted"].as_u64().unwrap_or(0);
        assert!(rejected >= 5, "each of the 5 extra workers refused: {s:#}");
        assert_eq!(over["totals"]["failures"].as_u64(), Some(rejected));
        let within = phase("workers=10");
        assert_eq!(within["totals"]["failures"], 0, "recovered: {s:#}");
        assert!(within["totals"]["successes"].as_u64().unwrap() > 0);
        let op = |name: &str| -> &Value {
            s["ops"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == name)
                .unwrap_or_else(|| panic!("no op {name}: {s:#}"))
        };
        let commands = op("ssh_run_command");
        assert!(commands["totals"]["successes"].as_u64().unwrap() > 0);
        assert_eq!(commands["totals"]["failures"], 0, "{s:#}");
        // Refusals are quick (the scenario's own threshold is 10 s), and the server counted
        // them as pool exhaustion too.
        let max_ms = op("ssh_connect")["latency_all"]["max"].as_f64().unwrap();
        assert!(max_ms < 5000.0, "slowest connect {max_ms} ms");
        assert!(s["thresholds"][0]["passed"].as_bool().unwrap(), "{s:#}");
        let exhausted = s["server"]["deltas"]["mcp_pool_exhausted_total"]
            .as_f64()
            .unwrap();
        assert!(exhausted >= rejected as f64, "{s:#}");
        // Each phase gave back every session it held.
        for p in s["server"]["phases"].as_array().unwrap() {
            assert_eq!(p["sessions_at_end"], 0.0, "{p}");
        }
        eprintln!(
            "exhaustion_test: {rejected} refused past the pool (slowest connect {max_ms:.0} ms), \
             {} calls and 0 failures within it, {took:?}",
            within["totals"]["requests"]
        );
    }

    /// `sshlab run full`, the user's main command (what `nix run .#ssh-loadtest-full` runs), with
    /// 3 s phases: all five scenarios in one lab, in order. No failure outside exhaustion_test
    /// (there only pool refusals, and none once within the pool); connection_rate makes a new
    /// SSH connection for every connect (no pool hits); every scenario ends within its phases
    /// plus the grace period (and the time to connect each phase's workers); every phase gives
    /// back every session; the server holds none at the end; the exit code is 0.
    #[test]
    fn run_full_as_the_user_runs_it() {
        let Some(lab) = Lab::new("full") else {
            return;
        };
        let started = Instant::now();
        let out = lab.sshlab(&["run", "full", "3", "--keep"]);
        let took = started.elapsed();
        let t = text(&out);
        assert!(out.status.success(), "exit {:?}\n{t}", out.status.code());
        assert!(
            !t.contains("still held"),
            "a scenario found leftovers:\n{t}"
        );
        let runs = lab.runs();
        let mut by_name = std::collections::BTreeMap::new();
        for dir in &runs {
            let s = summary(dir);
            by_name.insert(s["run"]["scenario"].as_str().unwrap().to_owned(), s);
        }
        assert_eq!(
            by_name.keys().collect::<Vec<_>>(),
            [
                "command_throughput",
                "connection_rate",
                "exhaustion_test",
                "latency_test",
                "sustained_load"
            ],
            "{t}"
        );
        let mut lines = Vec::new();
        for (name, s) in &by_name {
            assert_eq!(s["run"]["complete"], true, "{name}: {s:#}");
            let phases = s["phases"].as_array().map_or(1, |p| p.len().max(1)) as f64;
            let planned = 3.0 * phases;
            let grace = s["run"]["grace_s"].as_f64().unwrap();
            let ran =
                s["run"]["ended_at"].as_f64().unwrap() - s["run"]["started_at"].as_f64().unwrap();
            assert!(
                ran <= planned + grace + 2.0 * phases,
                "{name} ran {ran:.1} s for {planned} s of phases (grace {grace} s)"
            );
            let failures = s["totals"]["failures"].as_u64().unwrap();
            if name == "exhaustion_test" {
                let kinds: Vec<_> = s["errors"].as_object().unwrap().keys().collect();
                assert_eq!(kinds, ["pool_exhausted"], "{s:#}");
                let last = s["phases"].as_array().unwrap().last().unwrap();
                assert_eq!(last["totals"]["failures"], 0, "{name} recovered: {s:#}");
            } else {
                assert_eq!(failures, 0, "{name}: {:#}", s["errors"]);
            }
            assert_eq!(s["run"]["dropped"].as_u64().unwrap_or(0), 0, "{name}");
            for p in s["server"]["phases"].as_array().unwrap() {
                assert_eq!(p["sessions_at_end"], 0.0, "{name}: {p}");
            }
            lines.push(format!(
                "{name}: {} requests, {failures} failed, {:.1}/s, p50 {:.1} ms, p99 {:.1} ms, ran {ran:.1} s",
                s["totals"]["requests"],
                s["totals"]["rps_avg"].as_f64().unwrap(),
                s["latency"]["p50"].as_f64().unwrap(),
                s["latency"]["p99"].as_f64().unwrap(),
            ));
        }
        // Every connect of connection_rate was a new SSH connection.
        for p in by_name["connection_rate"]["server"]["phases"]
            .as_array()
            .unwrap()
        {
            assert_eq!(p["pool_hits"], 0.0, "{p}");
            assert!(p["new_connections"].as_f64().unwrap() > 0.0, "{p}");
            lines.push(format!(
                "connection_rate {}: {} new SSH connections",
                p["phase"], p["new_connections"]
            ));
        }
        // The lab holds nothing now.
        let out = lab.ns.sshlab(&["metrics"], &[]);
        let m = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            m.lines().any(|l| l == "mcp_ssh_sessions_active 0"),
            "sessions left in the server:\n{m}"
        );
        let out = lab.sshlab(&["vm", "down"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_root_namespace_clean();
        eprintln!("run full 3: {took:?}\n  {}", lines.join("\n  "));
    }

    /// `sshlab run capacity` in the lab: a capacity search of ssh_run_command against the lab's
    /// server (steps of at least 3 s from 200/s), its verdict, steps and the server's CPU per
    /// step in summary.json and report.txt.
    #[test]
    fn run_capacity_searches_in_the_lab() {
        let Some(lab) = Lab::new("cap") else {
            return;
        };
        let started = Instant::now();
        let out = lab.sshlab(&["run", "capacity", "3", "--rate", "200"]);
        let t = text(&out);
        assert!(out.status.success(), "exit {:?}\n{t}", out.status.code());
        let s = summary(&lab.only_run());
        let c = &s["capacity"];
        let steps = c["steps"].as_array().expect("steps");
        assert!(!steps.is_empty() && steps.len() <= 10, "{c:#}");
        for st in steps {
            assert!(st["server_cpu_percent"].as_f64().is_some(), "{st:#}");
            // The server served calls in every step. A step whose calls fell behind its
            // schedule may judge none (every call it completed was due in its warm-up), and
            // then it cannot pass.
            assert!(st["achieved_per_s"].as_f64().unwrap() > 0.0, "{st:#}");
            assert!(
                st["requests"].as_u64().unwrap() > 0 || st["passed"] == false,
                "{st:#}"
            );
        }
        assert!(c["verdict"].as_str().unwrap().len() > 10, "{c:#}");
        let report = std::fs::read_to_string(lab.only_run().join("report.txt")).unwrap();
        assert!(
            report.contains("CAPACITY (highest rate meeting p99<500ms, errors<1%)"),
            "{report}"
        );
        assert_root_namespace_clean();
        eprintln!(
            "run capacity in {:?}: {}\n  {}",
            started.elapsed(),
            c["verdict"].as_str().unwrap(),
            steps
                .iter()
                .map(|st| format!(
                    "{}: {} judged, {:.1}/s served, passed {}, broken {}",
                    st["phase"],
                    st["requests"],
                    st["achieved_per_s"].as_f64().unwrap_or(0.0),
                    st["passed"],
                    st["broken"]
                ))
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }

    /// A run in which nothing succeeds exits non-zero from `sshlab run` too (as it does from
    /// `sshlab-agent run`): here the target's sshd is stopped before the run.
    #[test]
    fn a_run_where_nothing_succeeds_exits_1() {
        let Some(lab) = Lab::new("none") else {
            return;
        };
        let out = lab.sshlab(&["vm", "up"]);
        assert!(out.status.success(), "{}", text(&out));
        let state: Value =
            serde_json::from_slice(&std::fs::read(lab.runtime().join("state.json")).unwrap())
                .unwrap();
        let target = state["procs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["vm"] == "target" && p["what"] == "sshd")
            .unwrap_or_else(|| panic!("no target sshd in {state:#}"));
        let pid = target["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("{target:#}"));
        // The lab's own sshd, started by this test's `vm up`: stopped by its pid.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let out = lab.sshlab(&["run", "quick", "2", "1"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(t.contains("no operation succeeded"), "{t}");
        let out = lab.sshlab(&["vm", "down"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_root_namespace_clean();
    }

    /// On a kernel without sch_prio/sch_netem the lab comes up unshaped, and latency_test runs
    /// 2222 only, saying which ports it skipped and why (never measuring them unshaped). On a
    /// kernel with the modules, 2222 and the netem ports whose sshd takes the password login
    /// run (2323 key-only and 2326 deny-all are skipped, and the output says so). `sshlab report` then refreshes all three
    /// reports and repeats the note.
    #[test]
    fn latency_test_covers_only_shaped_ports_and_says_why() {
        let Some(lab) = Lab::new("lat") else {
            return;
        };
        let missing = lab.ns.missing_qdisc_modules();
        let out = lab.sshlab(&["run", "latency_test", "3", "2"]);
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = lab.only_run();
        let s = summary(&dir);
        assert_eq!(s["run"]["complete"], true, "{s:#}");
        let ports: Vec<&str> = s["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let note: Value =
            serde_json::from_slice(&std::fs::read(dir.join("lab.json")).unwrap()).unwrap();
        if missing.is_empty() {
            assert_eq!(
                ports,
                ["2222", "2322", "2324", "2325", "2327", "2328"],
                "{s:#}"
            );
            assert!(
                stdout.contains("2323 (key-only), 2326 (deny-all) skipped: their sshd refuses"),
                "{t}"
            );
            assert_eq!(note["netem"]["applied"], true);
        } else {
            assert_eq!(ports, ["2222"], "{s:#}");
            let want = format!(
                "run: latency_test: netem ports 2322..2328 skipped: kernel module{} {} missing",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(" and ")
            );
            assert!(stdout.contains(&want), "want {want:?} in\n{t}");
            assert!(
                stdout.contains("vm up: netem not applied: kernel module"),
                "{t}"
            );
            assert_eq!(note["ports"], serde_json::json!([2222]));
            assert_eq!(note["netem"]["missing_modules"], serde_json::json!(missing));

            // `sshlab report` writes the three reports again and repeats the note.
            for f in ["report.html", "junit.xml"] {
                std::fs::remove_file(dir.join(f)).unwrap();
            }
            let out = crate::common::sshlab(&["report", &dir.display().to_string()], &[]);
            let rt = text(&out);
            assert!(out.status.success(), "{rt}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains(&want.replacen("run:", "note:", 1)), "{rt}");
            for f in ["report.txt", "report.html", "junit.xml"] {
                let p = dir.join(f);
                assert!(
                    stdout.contains(&format!("report: wrote {}", p.display())),
                    "{rt}"
                );
                assert!(std::fs::metadata(&p).unwrap().len() > 0, "{f}");
            }
        }
        assert_root_namespace_clean();
    }

    /// The `unstable` role (2227) drops its connections, as its description says: a real
    /// OpenSSH session on it running `sleep 60` ends when the sshd is restarted (every 3 s
    /// here), because the restart kills the sessions too, not only the listener.
    #[test]
    fn the_unstable_port_drops_its_connections() {
        let Some(lab) = Lab::new("unst") else {
            return;
        };
        if !have_ssh() {
            return;
        }
        let out = lab.sshlab(&["vm", "up", "--unstable-every", "3"]);
        assert!(out.status.success(), "{}", text(&out));
        let (out, lasted) = ssh(&lab, &askpass(&lab), 2227, "sleep 60");
        assert!(
            lasted < Duration::from_secs(20),
            "the session outlived the sshd's restart: {lasted:?} {}",
            text(&out)
        );
        assert_eq!(
            out.status.code(),
            Some(255),
            "dropped, not finished: {}",
            text(&out)
        );
        let out = lab.sshlab(&["vm", "down"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_root_namespace_clean();
        eprintln!("unstable: the session was dropped after {lasted:?}");
    }

    /// Whether an OpenSSH client is installed (outside CI a test without it is skipped; in CI
    /// its absence is a failure).
    fn have_ssh() -> bool {
        if Command::new("ssh").arg("-V").output().is_ok() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "ssh (openssh-client) missing"
        );
        eprintln!("skipped: no ssh client (openssh-client)");
        false
    }

    /// An SSH_ASKPASS script that answers the lab's password.
    fn askpass(lab: &Lab) -> PathBuf {
        let askpass: PathBuf = lab.results.join("askpass");
        std::fs::write(&askpass, "#!/bin/sh\necho testpass\n").unwrap();
        std::fs::set_permissions(
            &askpass,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        askpass
    }

    /// A real OpenSSH client in the MCP VM's namespace logging in by password (given by an
    /// SSH_ASKPASS script, so no sshpass is needed) and running `command`. Returns the output
    /// and the wall time.
    fn ssh(lab: &Lab, askpass: &Path, port: u16, command: &str) -> (Output, Duration) {
        let started = Instant::now();
        let out = lab
            .exec("mcp", "ssh")
            .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .args(["-o", "PubkeyAuthentication=no"])
            .args(["-o", "PreferredAuthentications=password"])
            .args(["-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=10"])
            .args(["-p", &port.to_string(), "testuser@10.178.0.20", command])
            .env("SSH_ASKPASS", askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .stdin(Stdio::null())
            .output()
            .expect("run ssh");
        (out, started.elapsed())
    }

    /// The target's roles, from inside the lab: 2222 accepts testuser/testpass, 2225 does too
    /// but only after its PAM stack has slept (≥ 2 s of authentication), 2226 refuses it.
    /// Also `vm status` shows whether netem is applied, and why not.
    #[test]
    fn target_roles_seen_by_a_real_ssh_client() {
        let Some(lab) = Lab::new("tgt") else {
            return;
        };
        if !have_ssh() {
            return;
        }
        let missing = lab.ns.missing_qdisc_modules();
        // Started under the strictest umask (sudo passes the caller's on): the target's
        // accounts must still read its /etc, their homes and the seed's files (issue 21).
        let out = lab.sshlab_under_umask(Some("077"), &["vm", "up"]);
        assert!(out.status.success(), "{}", text(&out));

        let out = lab.sshlab(&["vm", "status"]);
        let st = text(&out);
        assert!(out.status.success(), "{st}");
        let state: Value =
            serde_json::from_slice(&std::fs::read(lab.runtime().join("state.json")).unwrap())
                .unwrap();
        if missing.is_empty() {
            assert!(
                st.contains("netem   applied on sshtap2 (ports 2322..2328)"),
                "{st}"
            );
            assert_eq!(state["netem"]["applied"], true);
        } else {
            assert!(st.contains("netem   not applied: kernel module"), "{st}");
            assert_eq!(state["netem"]["applied"], false);
            assert_eq!(
                state["netem"]["missing_modules"],
                serde_json::json!(missing)
            );
        }
        let out = lab.sshlab(&["vm", "status", "--json"]);
        let js: Value = serde_json::from_slice(&out.stdout).unwrap();
        let target = js
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["vm"] == "target")
            .unwrap();
        assert_eq!(target["netem"]["applied"], missing.is_empty(), "{js:#}");

        let askpass = askpass(&lab);
        let (ok, fast) = ssh(&lab, &askpass, 2222, "hostname");
        assert!(ok.status.success(), "2222: {}", text(&ok));
        assert!(!ok.stdout.is_empty(), "hostname printed: {}", text(&ok));
        let (files, _) = ssh(
            &lab,
            &askpass,
            2222,
            "id -un && cd && pwd && head -1 /etc/test-file.txt && wc -l </etc/large-test-file.txt",
        );
        let seen = String::from_utf8_lossy(&files.stdout).into_owned();
        let lines: Vec<&str> = seen.lines().collect();
        assert!(
            files.status.success()
                && lines.len() == 4
                && lines[0] == "testuser"
                && lines[1].ends_with("/target/home/testuser")
                && lines[2] == "This is a test file for the sshlab target."
                && lines[3] == "1000",
            "the target's files as testuser: {}",
            text(&files)
        );

        let (slow_out, slow) = ssh(&lab, &askpass, 2225, "hostname");
        assert!(slow_out.status.success(), "2225: {}", text(&slow_out));
        assert!(slow >= Duration::from_secs(2), "slow-auth took {slow:?}");
        assert!(fast < Duration::from_secs(2), "standard took {fast:?}");

        let (denied, _) = ssh(&lab, &askpass, 2226, "hostname");
        assert_eq!(denied.status.code(), Some(255), "2226: {}", text(&denied));
        assert!(
            String::from_utf8_lossy(&denied.stderr).contains("Permission denied"),
            "{}",
            text(&denied)
        );
        eprintln!("ssh login: 2222 {fast:?}, 2225 (slow-auth) {slow:?}, 2226 refused");

        let out = lab.sshlab(&["vm", "down"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_root_namespace_clean();
    }
}
