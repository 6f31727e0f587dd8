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

    /// Past the server's per-target pool (20 under `--profile loadtest`), 25 workers that each
    /// hold a connection: the extra connects are refused fast, every refusal is classified as
    /// pool_exhausted, the held connections keep working, and the run ends on time.
    #[test]
    fn exhaustion_test_rejects_cleanly_past_the_pool() {
        let Some(lab) = Lab::new("exh") else {
            return;
        };
        let started = Instant::now();
        let out = lab.sshlab(&["run", "exhaustion_test", "5", "25"]);
        let took = started.elapsed();
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        // 5 s of load plus boot and teardown: a hang would show here (the run's own timeout
        // is an hour).
        assert!(took < Duration::from_secs(60), "took {took:?}\n{t}");
        assert_root_namespace_clean();

        let s = summary(&lab.only_run());
        assert_eq!(s["run"]["complete"], true, "{s:#}");
        let errors = s["errors"].as_object().unwrap();
        let rejected = s["errors"]["pool_exhausted"].as_u64().unwrap_or(0);
        assert!(rejected >= 5, "each of the 5 extra workers refused: {s:#}");
        assert_eq!(
            errors.len(),
            1,
            "only pool_exhausted, no timeouts: {errors:?}"
        );
        let op = |name: &str| -> &Value {
            s["ops"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == name)
                .unwrap_or_else(|| panic!("no op {name}: {s:#}"))
        };
        let connect = op("ssh_connect");
        assert_eq!(connect["totals"]["failures"].as_u64(), Some(rejected));
        let held = connect["totals"]["successes"].as_u64().unwrap();
        assert!((1..=20).contains(&held), "held {held}: {s:#}");
        let commands = op("ssh_run_command");
        assert!(commands["totals"]["successes"].as_u64().unwrap() > 0);
        assert_eq!(commands["totals"]["failures"], 0, "{s:#}");
        // Refusals are quick (the scenario's own threshold is 10 s), and the server counted
        // them as pool exhaustion too.
        let max_ms = connect["latency"]["max"].as_f64().unwrap();
        assert!(max_ms < 5000.0, "slowest connect {max_ms} ms");
        assert!(s["thresholds"][0]["passed"].as_bool().unwrap(), "{s:#}");
        if let Some(n) = s["server"]["deltas"]["mcp_pool_exhausted_total"].as_f64() {
            assert!(n > 0.0, "{s:#}");
        }
        eprintln!(
            "exhaustion_test: {held} held, {rejected} refused (slowest connect {max_ms:.0} ms), {took:?}"
        );
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

    /// A real OpenSSH client in the MCP VM's namespace logging in by password (given by an
    /// SSH_ASKPASS script, so no sshpass is needed). Returns the output and the wall time.
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
        if Command::new("ssh").arg("-V").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "ssh (openssh-client) missing"
            );
            eprintln!("skipped: no ssh client (openssh-client)");
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

        let askpass: PathBuf = lab.results.join("askpass");
        std::fs::write(&askpass, "#!/bin/sh\necho testpass\n").unwrap();
        std::fs::set_permissions(
            &askpass,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();

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
