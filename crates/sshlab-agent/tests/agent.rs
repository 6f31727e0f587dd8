//! The real agent binary against the real mcp-ssh-server and a real OpenSSH sshd that the
//! test starts (root). Every built-in scenario at short durations, both protocol eras,
//! open-model rate accuracy, coordinated-omission correction, threshold exit codes,
//! Ctrl-C and crash leaving parseable partial results, and the serve API.

mod common;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use serde_json::{Value, json};
    use sshlab_testkit::SshdBuilder;

    use super::common::{AGENT, Lab, ok, records, summary};

    async fn lab(flags: &[&str]) -> Lab {
        Lab::start(flags, "testpass").await
    }

    #[tokio::test]
    async fn quick_end_to_end_in_both_eras() {
        let lab = lab(&[]).await;
        for protocol in ["2026-07-28", "2025-11-25"] {
            let (out, dir) = lab
                .run(&[
                    "--scenario",
                    "quick",
                    "--duration",
                    "3",
                    "--workers",
                    "2",
                    "--protocol",
                    protocol,
                    "--threshold",
                    "errors<1%",
                ])
                .await;
            ok(&out);
            let s = summary(&dir);
            assert!(s.run.complete, "{protocol}");
            assert_eq!(s.run.protocol, protocol);
            assert_eq!(s.totals.failures, 0, "{protocol}: {:?}", s.errors);
            assert!(s.totals.requests > 20, "{protocol}: {}", s.totals.requests);
            assert!(s.op("ssh_run_command").is_some());
            assert!(s.thresholds.iter().all(|t| t.passed));
            let recs = records(&dir);
            assert_eq!(
                recs.len() as u64,
                s.totals.requests,
                "every operation has its line"
            );
            for f in [
                "report.txt",
                "report.html",
                "junit.xml",
                "latency.hlog",
                "w0.jsonl",
                "w1.jsonl",
            ] {
                assert!(dir.join(f).is_file(), "{protocol}: missing {f}");
            }
            let txt = std::fs::read_to_string(dir.join("report.txt")).expect("txt");
            assert!(txt.contains("THROUGHPUT") && txt.contains("EXTRAPOLATION"));
            let hlog = std::fs::read_to_string(dir.join("latency.hlog")).expect("hlog");
            assert!(
                hlog.contains("#[StartTime:")
                    && hlog
                        .lines()
                        .filter(|l| !l.starts_with('#') && !l.starts_with('"'))
                        .count()
                        >= 2,
                "{hlog}"
            );
            let server = s.server.expect("server metrics scraped");
            assert!(server.error.is_none(), "{:?}", server.error);
            assert!(
                server
                    .deltas
                    .keys()
                    .any(|k| k.starts_with("mcp_ssh_commands_total"))
            );
        }
        lab.server.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn every_builtin_scenario_runs_briefly() {
        let lab = lab(&[]).await;
        // latency_test: the baseline port and one "netem" port (here a second plain sshd).
        let other = SshdBuilder::new()
            .password_user("testuser", "testpass")
            .start()
            .expect("sshd 2");
        let profiles = lab.results.path().join("profiles.toml");
        std::fs::write(
            &profiles,
            format!("[[profile]]\nbase = {}\nport = {}\ndelay_ms = 0\njitter_ms = 0\nloss_percent = 0.0\ndescription = \"test\"\n", lab.sshd.port, other.port),
        )
        .expect("write");
        for (name, extra) in [
            ("connection_rate", vec!["--duration", "1"]),
            ("command_throughput", vec!["--duration", "2"]),
            ("sustained_load", vec!["--duration", "2"]),
            (
                "latency_test",
                vec![
                    "--duration",
                    "2",
                    "--netem-profiles",
                    profiles.to_str().expect("utf8"),
                ],
            ),
            ("exhaustion_test", vec!["--duration", "2", "--workers", "4"]),
        ] {
            let mut args = vec!["--scenario", name];
            args.extend(extra);
            let (out, dir) = lab.run(&args).await;
            ok(&out);
            let s = summary(&dir);
            assert!(s.run.complete && s.totals.requests > 0, "{name}");
            assert_eq!(s.totals.failures, 0, "{name}: {:?}", s.errors);
            match name {
                "connection_rate" => {
                    let phases: Vec<_> = s.phases.iter().map(|p| p.name.as_str()).collect();
                    assert_eq!(
                        phases,
                        ["workers=1", "workers=2", "workers=5", "workers=10"]
                    );
                    assert!(s.op("ssh_connect").is_some() && s.op("ssh_disconnect").is_some());
                }
                "latency_test" => {
                    let ports: Vec<_> = s.ports.iter().map(|p| p.name.clone()).collect();
                    assert_eq!(ports, [lab.sshd.port.to_string(), other.port.to_string()]);
                    assert_eq!(s.run.model, "open");
                    // 10 arrivals/s for 2 s per port (each worker's first arrival connects).
                    assert!(
                        (38..=42).contains(&s.totals.requests),
                        "{}",
                        s.totals.requests
                    );
                }
                "sustained_load" => {
                    for op in ["ssh_run_command", "ssh_connect", "ssh_disconnect"] {
                        assert!(s.op(op).is_some(), "{op} ran");
                    }
                }
                _ => {}
            }
        }
        lab.server.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn exhaustion_is_a_clean_fast_rejection() {
        // A pool of 3 per target, 6 workers each wanting a connection.
        let lab = lab(&["--pool-max-per-target", "3", "--pool-wait-ms", "200"]).await;
        let (out, dir) = lab
            .run(&[
                "--scenario",
                "exhaustion_test",
                "--duration",
                "3",
                "--workers",
                "6",
            ])
            .await;
        let s = summary(&dir);
        assert!(
            s.run.complete,
            "no hang: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rejected = s.errors.get("pool_exhausted").copied().unwrap_or(0);
        assert!(rejected > 0, "{:?}", s.errors);
        assert_eq!(s.errors.len(), 1, "only clean rejections: {:?}", s.errors);
        let cmds = s.op("ssh_run_command").expect("holders kept working");
        assert!(cmds.totals.successes > 10);
        // Rejections come after the bounded pool wait, not a hang.
        let connect_errs: Vec<_> = records(&dir)
            .into_iter()
            .filter(|r| r.op == "ssh_connect" && !r.ok())
            .collect();
        assert!(
            connect_errs.iter().all(|r| r.service_ms < 2000.0),
            "fast rejections"
        );
        lab.server.stop().await.expect("stops");
    }

    fn cheap_scenario(dir: &Path) -> PathBuf {
        let p = dir.join("cheap.toml");
        std::fs::write(
            &p,
            "name = \"cheap\"\nduration_s = 1\n[[op]]\ntool = \"ssh_list_sessions\"\n",
        )
        .expect("write");
        p
    }

    /// The open-files limit: a run holds a connection and a record file per worker. Under a
    /// soft limit of 256 (hard 4,096), 300 workers run, because the agent raises its soft limit
    /// to the hard one; with the hard limit at 256 too, it refuses before anything runs, saying
    /// how many it needs and how to raise it. Before, such a run died midway with "Too many open
    /// files" (the common desktop default of 1,024 stopped 1,000 workers).
    #[tokio::test]
    async fn the_open_files_limit_is_raised_or_the_run_refused_up_front() {
        let lab = lab(&[]).await;
        let scenario = cheap_scenario(lab.results.path());
        let limited = |hard: u32, soft: u32| {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(format!(
                    "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""
                ))
                .arg(AGENT)
                .args(lab.agent(&[]).get_args())
                .args(["--scenario-file", scenario.to_str().expect("utf8")])
                .args(["--workers", "300", "--duration", "1"]);
            cmd
        };
        let mut raised = limited(4096, 256);
        let out = tokio::task::spawn_blocking(move || raised.output().expect("agent runs"))
            .await
            .expect("join");
        ok(&out);
        let s = summary(&lab.only_dir());
        assert_eq!(s.run.workers, 300);
        assert!(s.totals.successes > 0, "{:?}", s.totals);

        let dirs_before = std::fs::read_dir(lab.results.path()).expect("dir").count();
        let mut refused = limited(256, 256);
        let out = tokio::task::spawn_blocking(move || refused.output().expect("agent runs"))
            .await
            .expect("join");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("not enough open files for 300 workers on")
                && stderr.contains("the limit is 256 (hard limit 256); raise it (`ulimit -n"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read_dir(lab.results.path()).expect("dir").count(),
            dirs_before,
            "nothing was created"
        );
        lab.server.stop().await.expect("stops");
    }

    /// A run in which nothing succeeds is a run error (exit 1), and every report says what the
    /// server answered: the distinct messages with counts in summary.json, report.txt,
    /// report.html, and each JSONL record's `error`. Before, such a run exited 0 and the
    /// report said only `tool_error 50`.
    #[tokio::test]
    async fn a_run_where_nothing_succeeds_fails_and_says_why() {
        let lab = lab(&[]).await;
        // A port nobody listens on: every ssh_connect fails at the target.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = Command::new(AGENT);
        cmd.args(["run", "--mcp-url", &lab.url(), "--target-host", "127.0.0.1"])
            .args(["--target-port", &closed.to_string(), "--results-dir"])
            .arg(lab.results.path())
            .args([
                "--quiet",
                "--scenario",
                "quick",
                "--duration",
                "2",
                "--workers",
                "2",
            ]);
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("agent runs"))
            .await
            .expect("join");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("no operation succeeded"), "{stderr}");
        let dir = lab.only_dir();
        let s = summary(&dir);
        assert_eq!(s.totals.successes, 0);
        let top = s.error_messages.first().expect("the messages are kept");
        assert!(top.example.contains(&closed.to_string()), "{top:?}");
        assert_eq!(
            s.error_messages.iter().map(|m| m.count).sum::<u64>() + s.error_messages_unlisted,
            s.totals.failures
        );
        assert!(stderr.contains(&top.example), "{stderr}");
        let text = std::fs::read_to_string(dir.join("report.txt")).expect("report.txt");
        assert!(text.contains(&top.example), "{text}");
        let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
        assert!(
            html.contains("What failed"),
            "report.html lists the messages"
        );
        let recs = records(&dir);
        assert!(
            recs.iter()
                .all(|r| r.error.as_deref().is_some_and(|e| !e.is_empty())),
            "every failed record carries its message"
        );
        lab.server.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn open_model_hits_the_target_rate() {
        let lab = lab(&[]).await;
        let file = cheap_scenario(lab.results.path());
        let (out, dir) = lab
            .run(&[
                "--scenario-file",
                file.to_str().expect("utf8"),
                "--rate",
                "300",
                "--duration",
                "4",
                "--workers",
                "16",
            ])
            .await;
        ok(&out);
        let s = summary(&dir);
        let expected = 1200.0;
        let got = s.totals.requests as f64;
        assert!(
            (got - expected).abs() / expected <= 0.01,
            "{got} vs {expected}"
        );
        assert_eq!(s.run.model, "open");
        lab.server.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn a_server_stall_shows_in_corrected_latency_only() {
        let lab = lab(&[]).await;
        let file = lab.results.path().join("cmd.toml");
        std::fs::write(
            &file,
            "name = \"cmd\"\nduration_s = 1\n[[op]]\ntool = \"ssh_connect\"\nprovides = \"session\"\nweight = 0\nargs = { host = \"{{target_host}}\", port = \"{{target_port}}\", user = \"{{user}}\", password = \"{{password}}\", insecure_host_key = true }\n[[op]]\ntool = \"ssh_run_command\"\nneeds = \"session\"\nargs = { session_id = \"{{session}}\", command = \"hostname\" }\n[[op]]\ntool = \"ssh_disconnect\"\nconsumes = \"session\"\nweight = 0\nargs = { session_id = \"{{session}}\" }\n",
        )
        .expect("write");
        let mut cmd = lab.agent(&[
            "--scenario-file",
            file.to_str().expect("utf8"),
            "--rate",
            "100",
            "--duration",
            "5",
            "--workers",
            "4",
        ]);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("agent");
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let sshd_pid = lab.sshd.pid();
        sshlab_testkit::signal_process_tree(sshd_pid, Signal::SIGSTOP);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        sshlab_testkit::signal_process_tree(sshd_pid, Signal::SIGCONT);
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
            .await
            .expect("join");
        ok(&out);
        let s = summary(&lab.only_dir());
        let op = s.op("ssh_run_command").expect("commands ran");
        // ~100 arrivals were due during the 1 s stall and waited for it: ≥ 10% of ~500.
        assert!(
            op.latency.p90 > 150.0,
            "corrected p90 {} ms",
            op.latency.p90
        );
        assert!(
            op.latency_uncorrected.p90 < op.latency.p90 / 3.0,
            "uncorrected p90 {} vs corrected {}",
            op.latency_uncorrected.p90,
            op.latency.p90
        );
        assert!(s.run.late_starts > 50, "late starts {}", s.run.late_starts);
        lab.server.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn threshold_exit_codes() {
        let lab = lab(&[]).await;
        let file = cheap_scenario(lab.results.path());
        let f = file.to_str().expect("utf8");
        let (out, _) = lab
            .run(&[
                "--scenario-file",
                f,
                "--duration",
                "1",
                "--threshold",
                "rps>1000000",
            ])
            .await;
        assert_eq!(
            out.status.code(),
            Some(99),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let junit = std::fs::read_to_string(lab.only_dir().join("junit.xml")).expect("junit");
        assert!(junit.contains("<failure"), "{junit}");
        let before = std::fs::read_dir(lab.results.path()).expect("dir").count();
        let (out, _) = lab
            .run(&["--scenario-file", f, "--threshold", "bogus.p42<1ms"])
            .await;
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("bogus.p42"));
        assert_eq!(
            std::fs::read_dir(lab.results.path()).expect("dir").count(),
            before,
            "nothing ran"
        );
        // An unreachable server: a clear error, quickly, non-zero.
        let started = Instant::now();
        let out = Command::new(AGENT)
            .args([
                "run",
                "--mcp-url",
                "http://127.0.0.1:9/mcp",
                "--target-host",
                "127.0.0.1",
                "--quiet",
                "--results-dir",
            ])
            .arg(lab.results.path())
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(1));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:9"));
        lab.server.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn ctrl_c_and_crash_leave_parseable_partial_results() {
        let lab = lab(&[]).await;
        let file = cheap_scenario(lab.results.path());
        let f = file.to_str().expect("utf8");
        // Ctrl-C: summary marked incomplete, exit 130.
        let child = lab
            .agent(&["--scenario-file", f, "--duration", "30", "--workers", "2"])
            .stdout(Stdio::null())
            .spawn()
            .expect("agent");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("SIGINT");
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
            .await
            .expect("join");
        assert_eq!(out.status.code(), Some(130));
        let dir = lab.only_dir();
        let s = summary(&dir);
        assert!(!s.run.complete && s.run.incomplete_reason.as_deref() == Some("interrupted"));
        assert_eq!(records(&dir).len() as u64, s.totals.requests);
        assert!(s.totals.requests > 0);

        // SIGKILL: complete lines, an in-progress summary, and `report` rebuilds from records.
        let child = lab
            .agent(&["--scenario-file", f, "--duration", "30", "--workers", "2"])
            .stdout(Stdio::null())
            .spawn()
            .expect("agent");
        tokio::time::sleep(Duration::from_millis(6500)).await;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).expect("SIGKILL");
        let _ = tokio::task::spawn_blocking(move || child.wait_with_output()).await;
        let dir = lab.only_dir();
        let partial = summary(&dir);
        assert!(
            !partial.run.complete,
            "the periodic summary says it was still running"
        );
        let recs = records(&dir);
        assert!(!recs.is_empty());
        let out = Command::new(AGENT)
            .arg("report")
            .arg(&dir)
            .output()
            .expect("report");
        ok(&out);
        let rebuilt = summary(&dir);
        assert_eq!(rebuilt.totals.requests, recs.len() as u64);
        assert!(!rebuilt.run.complete);
        lab.server.stop().await.expect("stops");
    }

    /// A server whose per-client limit the workers outrun: each worker backs off for the
    /// server's Retry-After instead of hammering it, keeps its handle (a 429 says nothing about
    /// the SSH session), and at the end releases it even though the release is rate-limited
    /// at first. Before: three 429s in a row dropped the handle without a disconnect, the
    /// worker connected again, and the server kept every dropped session for 30 minutes.
    #[tokio::test]
    async fn a_rate_limited_run_backs_off_keeps_its_handles_and_leaks_nothing() {
        // 60 requests/min per client: a burst of 60, then one a second.
        let lab = lab(&["--rate-limit-per-min", "60"]).await;
        let (out, dir) = lab
            .run(&[
                "--scenario",
                "command_throughput",
                "--duration",
                "4",
                "--workers",
                "2",
            ])
            .await;
        ok(&out);
        let s = summary(&dir);
        let limited = s.errors.get("rate_limited").copied().unwrap_or(0);
        assert!(limited > 0, "the limit was reached: {:?}", s.errors);
        // About one refusal a second per worker; without the back-off, thousands.
        assert!(limited <= 2 * (4 + 2), "{limited} rate-limited calls");
        assert_eq!(
            s.errors.len(),
            1,
            "nothing but the rate limit failed: {:?}",
            s.errors
        );
        let connects = s.op("ssh_connect").expect("connects").totals.requests;
        assert_eq!(
            connects, 2,
            "one session per worker, never given up for a 429"
        );
        let server = s.server.expect("scraped");
        let left: Vec<_> = server.phases.iter().map(|p| p.sessions_at_end).collect();
        assert_eq!(left, [Some(0.0)], "every session released, 429s or not");
        assert_eq!(s.run.unreleased, 0);
        lab.server.stop().await.expect("stops");
    }

    /// A TCP listener that accepts and never says a word: an SSH target that hangs.
    async fn blackhole() -> (u16, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        (port, task)
    }

    /// An open-model run ends at its duration plus the grace period, whatever the server does:
    /// nothing starts after the phase's end, the arrivals not sent by then are counted as
    /// dropped, and a call still running at the grace's end is cut off and recorded as such.
    /// Before: workers drained every arrival due before the deadline, however late, so a run
    /// against a hanging target lasted arrivals × connect timeout.
    #[tokio::test]
    async fn an_open_run_ends_at_its_duration_and_counts_what_it_dropped() {
        let lab = lab(&[]).await;
        let (port, hole) = blackhole().await;
        let file = lab.results.path().join("hang.toml");
        std::fs::write(
            &file,
            "name = \"hang\"\nduration_s = 2\n[[op]]\ntool = \"ssh_connect\"\nprovides = \"session\"\nweight = 0\nargs = { host = \"{{target_host}}\", port = \"{{target_port}}\", user = \"{{user}}\", password = \"{{password}}\", insecure_host_key = true, timeout_ms = 60000 }\n[[op]]\ntool = \"ssh_run_command\"\nneeds = \"session\"\nargs = { session_id = \"{{session}}\", command = \"hostname\" }\n[[op]]\ntool = \"ssh_disconnect\"\nconsumes = \"session\"\nweight = 0\nargs = { session_id = \"{{session}}\" }\n",
        )
        .expect("write");
        let started = Instant::now();
        // The hanging target instead of the sshd.
        let mut cmd = Command::new(AGENT);
        cmd.args(["run", "--mcp-url", &lab.url(), "--target-host", "127.0.0.1"])
            .args(["--target-port", &port.to_string(), "--results-dir"])
            .arg(lab.results.path())
            .args(["--quiet", "--scenario-file"])
            .arg(&file)
            .args(["--rate", "10", "--workers", "2", "--grace", "1"]);
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("agent runs"))
            .await
            .expect("join");
        let took = started.elapsed();
        let s = summary(&lab.only_dir());
        // 2 s of load + 1 s of grace, plus starting and writing the results.
        assert!(took < Duration::from_secs(8), "ran {took:?}");
        assert!(s.run.complete, "{:?}", s.run.incomplete_reason);
        // 20 arrivals: the two the workers took hang until cut off, the rest never went out.
        assert_eq!(s.totals.requests + s.run.dropped, 20, "{:?}", s.run);
        assert_eq!(s.totals.requests, 2, "{:?}", s.errors);
        assert_eq!(s.errors.get("cut_off").copied(), Some(2), "{:?}", s.errors);
        assert_eq!(s.run.grace_s, Some(1.0));
        // Nothing succeeded: a run error, whatever the thresholds say.
        assert_eq!(out.status.code(), Some(1));
        let txt = std::fs::read_to_string(lab.only_dir().join("report.txt")).expect("txt");
        assert!(txt.contains("18 dropped"), "{txt}");
        hole.abort();
        lab.server.stop().await.expect("stops");
    }

    /// Polls job `id` of the control API at `base` until it is no longer running (at most
    /// `within`); its last status.
    async fn job_done(http: &reqwest::Client, base: &str, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v: Value = http
                .get(format!("{base}/jobs/{id}"))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            if v["state"] != "running" {
                return v;
            }
            assert!(Instant::now() < deadline, "job {id} still running: {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    #[tokio::test]
    async fn serve_runs_one_job_at_a_time() {
        let lab = lab(&[]).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let results = lab.results.path().to_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, sshlab_agent::serve::router(results, None)).await;
        });
        let http = reqwest::Client::new();
        let base = format!("http://{addr}");
        let job = json!({"scenario": "quick", "duration": 2, "workers": 2, "mcp_url": lab.url(),
                         "target_host": "127.0.0.1", "target_port": lab.sshd.port, "thresholds": ["errors<1%"]});
        let r = http
            .post(format!("{base}/jobs"))
            .json(&job)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().await.expect("json");
        let id = v["test_id"].as_str().expect("id").to_owned();
        let busy = http
            .post(format!("{base}/jobs"))
            .json(&job)
            .send()
            .await
            .expect("post");
        assert_eq!(busy.status().as_u16(), 409);
        let bad = http
            .post(format!("{base}/jobs"))
            .json(&json!({"scenario": "nope"}))
            .send()
            .await
            .expect("post");
        assert_eq!(bad.status().as_u16(), 400);
        let bad: Value = bad.json().await.expect("json");
        assert!(bad["error"].as_str().expect("reason").contains("nope"));
        let done = job_done(&http, &base, &id, Duration::from_secs(30)).await;
        assert_eq!(done["state"], "done", "{done}");
        assert_eq!(done["thresholds_passed"], true);
        assert_eq!(done["verdict"], json!({"verdict": "passed"}), "{done}");
        assert!(done["summary"]["totals"]["requests"].as_u64().unwrap_or(0) > 0);
        // Cancel a second job.
        let r = http
            .post(format!("{base}/jobs"))
            .json(
                &json!({"scenario": "quick", "duration": 30, "mcp_url": lab.url(),
            "target_host": "127.0.0.1", "target_port": lab.sshd.port}),
            )
            .send()
            .await
            .expect("post");
        let id2 = r.json::<Value>().await.expect("json")["test_id"]
            .as_str()
            .expect("id")
            .to_owned();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let d = http
            .delete(format!("{base}/jobs/{id2}"))
            .send()
            .await
            .expect("delete");
        assert_eq!(d.status().as_u16(), 202);
        let v = job_done(&http, &base, &id2, Duration::from_secs(15)).await;
        assert_eq!(v["state"], "interrupted", "cancel stops the job: {v}");
        // A job in which nothing succeeds: the verdict the host exits with says so (exit 1,
        // as `sshlab-agent run` gives), not "done, thresholds passed".
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let r = http
            .post(format!("{base}/jobs"))
            .json(
                &json!({"scenario": "quick", "duration": 2, "workers": 1, "mcp_url": lab.url(),
                          "target_host": "127.0.0.1", "target_port": closed,
                          "notes": ["a note from the host"]}),
            )
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 202);
        let id3 = r.json::<Value>().await.expect("json")["test_id"]
            .as_str()
            .expect("id")
            .to_owned();
        let v = job_done(&http, &base, &id3, Duration::from_secs(30)).await;
        assert_eq!(v["verdict"]["verdict"], "nothing_succeeded", "{v}");
        let verdict: sshlab_core::results::Verdict =
            serde_json::from_value(v["verdict"].clone()).expect("a verdict");
        assert_eq!(verdict.exit_code(), 1);
        assert_eq!(
            v["summary"]["notes"],
            json!(["a note from the host"]),
            "{v}"
        );
        lab.server.stop().await.expect("stops");
    }
}
