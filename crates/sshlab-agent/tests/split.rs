//! Beyond one agent, with the real agent binary against the real mcp-ssh-server: one test split
//! across three agents (`--segment I/3`) and merged exactly (checked against the union of the
//! records and, independently, with the PyPI `hdrhistogram` decoder reading the `.hlog` files),
//! a missing segment marking the merge incomplete, `compare` catching a server that stalls, and
//! the Kubernetes Job manifest validated offline against the Kubernetes schemas.
//!
//! The independent checkers come from `scripts/install-deps oracle` (`$SSHLAB_TOOLS/bin`).

mod common;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use nix::sys::signal::Signal;
    use sshlab_core::results::{Aggregate, LatencyStats, Record};
    use sshlab_testkit::SshdBuilder;

    use super::common::{AGENT, ok, summary};

    async fn server() -> mcp_ssh_server::Running {
        super::common::loadtest_server(&[]).await
    }

    /// An independent checker installed by `scripts/install-deps oracle` (on `PATH`, as
    /// `scripts/test` sets it).
    fn oracle(name: &str) -> PathBuf {
        sshlab_testkit::find_in_path(name).unwrap_or_else(|| {
            panic!(
                "{name} is not on PATH: run scripts/install-deps oracle and put $SSHLAB_TOOLS/bin \
                 on PATH, as scripts/test does"
            )
        })
    }

    fn records(dir: &Path) -> Vec<Record> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).expect("dir").filter_map(Result::ok) {
            if e.path().extension().is_some_and(|x| x == "jsonl") {
                for line in std::fs::read_to_string(e.path()).expect("read").lines() {
                    out.push(serde_json::from_str(line).expect("record"));
                }
            }
        }
        out
    }

    fn now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    async fn run(cmd: Command) -> Output {
        let mut cmd = cmd;
        tokio::task::spawn_blocking(move || cmd.output().expect("runs"))
            .await
            .expect("join")
    }

    /// Runs agents `0/n` … `n-1/n` of test `id` together (`--start-at` in a second) against
    /// `srv`, with `extra` flags, and waits until all have passed.
    async fn run_segments(
        srv: &mcp_ssh_server::Running,
        scenario: &Path,
        root: &Path,
        id: &str,
        n: usize,
        extra: &[&str],
    ) {
        let start_at = format!("{:.3}", now() + 2.0);
        let mut agents = Vec::new();
        for i in 0..n {
            let mut c = Command::new(AGENT);
            c.args(["run", "--mcp-url", &format!("http://{}/mcp", srv.addr)])
                .args(["--target-host", "127.0.0.1", "--scenario-file"])
                .arg(scenario)
                .args(["--protocol", "2026-07-28"])
                .args(extra)
                .args(["--segment", &format!("{i}/{n}"), "--test-id", id])
                .args(["--start-at", &start_at, "--quiet", "--results-dir"])
                .arg(root)
                .args(["--metrics-url", "http://127.0.0.1:9/metrics"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            agents.push(c.spawn().expect("agent"));
        }
        for a in agents {
            let out = tokio::task::spawn_blocking(move || a.wait_with_output().expect("wait"))
                .await
                .expect("join");
            ok(&out);
        }
    }

    /// Three agents, each `--segment I/3` of one open-model test at 150 arrivals/s for 4 s,
    /// started together: the merge has the whole test's arrivals (600, ±1%), exactly the sum of
    /// the parts' records, the percentiles of their union, and an interval log whose
    /// histograms (read by the independent hdrhistogram decoder) add up to the parts'. A merge
    /// without segment 1 says it is incomplete.
    #[tokio::test]
    async fn three_segments_merge_into_the_whole_test() {
        let srv = server().await;
        let root = tempfile::tempdir().expect("tmp");
        let scenario = root.path().join("cheap.toml");
        std::fs::write(
            &scenario,
            "name = \"cheap\"\nduration_s = 4\n[[op]]\ntool = \"ssh_list_sessions\"\n",
        )
        .expect("write");
        run_segments(
            &srv,
            &scenario,
            root.path(),
            "split1",
            3,
            &["--rate", "150", "--workers", "6"],
        )
        .await;
        let parts: Vec<PathBuf> = (0..3)
            .map(|i| root.path().join(format!("split1-s{i}of3")))
            .collect();
        let mut union = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let s = summary(p);
            assert_eq!(s.run.test_id, "split1");
            assert_eq!(s.run.segment.map(|g| g.to_string()), Some(format!("{i}/3")));
            assert_eq!(s.run.workers, 2, "a third of 6 workers");
            assert_eq!(s.run.target_rate, Some(50.0), "a third of 150/s");
            let recs = records(p);
            assert!(recs.iter().all(|r| r.segment == s.run.segment));
            union.extend(recs);
        }
        let sum: u64 = parts.iter().map(|p| summary(p).totals.requests).sum();

        let out_dir = root.path().join("merged");
        let mut c = Command::new(AGENT);
        c.arg("merge").args(&parts).arg("--out").arg(&out_dir);
        ok(&run(c).await);
        let m = summary(&out_dir);
        assert!(m.run.complete, "{:?}", m.run.incomplete_reason);
        assert_eq!(m.totals.requests, sum, "the merge is the sum of its parts");
        assert_eq!(m.totals.requests, union.len() as u64);
        assert!(
            m.totals.requests.abs_diff(600) <= 6,
            "150/s for 4 s across three agents: {} arrivals",
            m.totals.requests
        );
        // Each part ran its share (2 workers, 50/s); the merge is the whole test again.
        assert_eq!((m.run.workers, m.run.target_rate), (6, Some(150.0)));
        assert_eq!(m.run.merged_from.len(), 3);
        // The percentiles of the union of every part's records.
        union.sort_by(|a, b| a.ts.total_cmp(&b.ts));
        let mut agg = Aggregate::new(m.run.started_at);
        for r in &union {
            agg.add(r);
        }
        agg.finish();
        let want = LatencyStats::of(&agg.all.corrected);
        // (The mean went through summary.json: JSON does not promise its last bit.)
        assert!(
            (m.latency.mean - want.mean).abs() < 1e-9,
            "{:?} vs {want:?}",
            m.latency
        );
        let pick = |l: &LatencyStats| (l.count, l.min, l.p50, l.p90, l.p99, l.p999, l.max);
        assert_eq!(
            pick(&m.latency),
            pick(&want),
            "the union of the parts' records"
        );

        // Independently: the interval logs, decoded by the PyPI hdrhistogram package.
        let script = r#"
import sys
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader
def total(path):
    acc = HdrHistogram(1, 3600 * 1000 * 1000, 3)
    reader = HistogramLogReader(path, acc)
    while True:
        h = reader.get_next_interval_histogram()
        if h is None:
            return acc
        acc.add(h)
parts = HdrHistogram(1, 3600 * 1000 * 1000, 3)
for p in sys.argv[2:]:
    parts.add(total(p))
merged = total(sys.argv[1])
print(merged.get_total_count(), parts.get_total_count())
for q in (50, 99, 100):
    print(merged.get_value_at_percentile(q), parts.get_value_at_percentile(q))
"#;
        let mut c = Command::new(oracle("oracle-python"));
        c.arg("-c").arg(script).arg(out_dir.join("latency.hlog"));
        for p in &parts {
            c.arg(p.join("latency.hlog"));
        }
        let out = run(c).await;
        ok(&out);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        for l in &lines {
            let v: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(
                v.first(),
                v.get(1),
                "merged vs the sum of the parts: {text}"
            );
        }
        assert_eq!(
            lines[0].split_whitespace().next(),
            Some(m.totals.successes.to_string().as_str()),
            "{text}"
        );

        // Segment 1 missing: merged, but marked incomplete, and the exit code says so.
        let partial = root.path().join("partial");
        let mut c = Command::new(AGENT);
        c.args(["merge"])
            .arg(&parts[0])
            .arg(&parts[2])
            .arg("--out")
            .arg(&partial);
        let out = run(c).await;
        assert_eq!(
            out.status.code(),
            Some(130),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let p = summary(&partial);
        assert!(!p.run.complete);
        let reason = p.run.incomplete_reason.unwrap_or_default();
        assert!(reason.contains("segment 1/3 missing"), "{reason}");
        assert!(
            std::fs::read_to_string(partial.join("report.txt"))
                .expect("report")
                .contains("INCOMPLETE")
        );
        srv.stop().await.expect("stops");
    }

    /// Agents of a split test stay in step across closed-model phases. Phase one has one
    /// worker, which only segment 0 gets; phase two has three. Before, segments 1 and 2 ended
    /// their empty phase one at once and started phase two while segment 0 still ran phase
    /// one, so the server saw load no phase described. Now every agent follows one timetable:
    /// no phase-two call starts before the last phase-one call has ended.
    #[tokio::test]
    async fn split_agents_keep_phases_in_step() {
        let srv = server().await;
        let root = tempfile::tempdir().expect("tmp");
        let scenario = root.path().join("phases.toml");
        std::fs::write(
            &scenario,
            "name = \"phases\"\nduration_s = 2\n[[phase]]\nworkers = 1\n[[phase]]\nworkers = 3\n\
             [[op]]\ntool = \"ssh_list_sessions\"\n",
        )
        .expect("write");
        run_segments(&srv, &scenario, root.path(), "phases", 3, &[]).await;
        let mut all = Vec::new();
        for i in 0..3 {
            all.extend(records(&root.path().join(format!("phases-s{i}of3"))));
        }
        let in_phase = |label: &str| -> Vec<&Record> {
            all.iter()
                .filter(|r| r.phase.as_deref() == Some(label))
                .collect()
        };
        let (one, two) = (in_phase("workers=1"), in_phase("workers=3"));
        assert!(
            !one.is_empty() && !two.is_empty(),
            "{} {}",
            one.len(),
            two.len()
        );
        let one_ended = one.iter().map(|r| r.ts).fold(f64::MIN, f64::max);
        let two_began = two
            .iter()
            .map(|r| r.ts - r.service_ms / 1000.0)
            .fold(f64::MAX, f64::min);
        assert!(
            two_began >= one_ended,
            "a phase-two call started {:.3} s before phase one's last call ended",
            one_ended - two_began
        );
        let segments_in_two: std::collections::BTreeSet<_> = two
            .iter()
            .filter_map(|r| r.segment.map(|s| s.index))
            .collect();
        assert_eq!(segments_in_two.len(), 3, "every agent ran phase two");
        srv.stop().await.expect("stops");
    }

    /// `compare`: two runs of the same healthy setup pass a loose bound; a candidate during
    /// which the SSH target is paused now and then (SIGSTOP/SIGCONT, as the coordinated-omission
    /// test does) crosses `ssh_run_command.p99=+50%`: exit 99 and a JUnit failure.
    #[tokio::test]
    async fn compare_catches_a_stalling_server() {
        let sshd = SshdBuilder::new()
            .password_user("testuser", "testpass")
            .start()
            .expect("sshd fixture (root, openssh-server)");
        let srv = server().await;
        let root = tempfile::tempdir().expect("tmp");
        let scenario = root.path().join("cmd.toml");
        std::fs::write(
            &scenario,
            "name = \"cmd\"\nduration_s = 4\n[[op]]\ntool = \"ssh_connect\"\nprovides = \"session\"\nweight = 0\nargs = { host = \"{{target_host}}\", port = \"{{target_port}}\", user = \"{{user}}\", password = \"{{password}}\", insecure_host_key = true }\n[[op]]\ntool = \"ssh_run_command\"\nneeds = \"session\"\nargs = { session_id = \"{{session}}\", command = \"hostname\" }\n[[op]]\ntool = \"ssh_disconnect\"\nconsumes = \"session\"\nweight = 0\nargs = { session_id = \"{{session}}\" }\n",
        )
        .expect("write");
        let agent = |id: &str| {
            let mut c = Command::new(AGENT);
            c.args(["run", "--mcp-url", &format!("http://{}/mcp", srv.addr)])
                .args([
                    "--target-host",
                    "127.0.0.1",
                    "--target-port",
                    &sshd.port.to_string(),
                ])
                .arg("--scenario-file")
                .arg(&scenario)
                .args(["--rate", "40", "--workers", "4", "--quiet", "--test-id", id])
                .arg("--results-dir")
                .arg(root.path())
                .args(["--metrics-url", "http://127.0.0.1:9/metrics"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            c
        };
        ok(&run(agent("base")).await);
        ok(&run(agent("again")).await);
        let compare = |cand: &str, bound: &str| {
            let mut c = Command::new(AGENT);
            c.arg("compare")
                .arg(root.path().join("base"))
                .arg(root.path().join(cand))
                .args(["--max-regression", bound]);
            c
        };
        // Two healthy runs: an absolute bound, because other tests share the CPU and a p99 of a
        // few milliseconds can grow several times over under contention; the stalls below add
        // 400 ms.
        let out = run(compare("again", "ssh_run_command.p99=+200ms")).await;
        ok(&out);
        assert!(String::from_utf8_lossy(&out.stdout).contains("PASS ssh_run_command.p99=+200ms"));

        let child = agent("stalled").spawn().expect("agent");
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            sshlab_testkit::signal_process_tree(sshd.pid(), Signal::SIGSTOP);
            tokio::time::sleep(Duration::from_millis(400)).await;
            sshlab_testkit::signal_process_tree(sshd.pid(), Signal::SIGCONT);
        }
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
            .await
            .expect("join");
        ok(&out);
        let out = run(compare("stalled", "ssh_run_command.p99=+50%")).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(99), "{stdout}");
        assert!(stdout.contains("FAIL ssh_run_command.p99=+50%"), "{stdout}");
        let junit =
            std::fs::read_to_string(root.path().join("stalled/compare-junit.xml")).expect("junit");
        assert!(junit.contains("<failure") && junit.contains("ssh_run_command.p99=+50%"));
        // The candidate's own reports, against the baseline.
        let mut c = Command::new(AGENT);
        c.arg("report")
            .arg(root.path().join("stalled"))
            .arg("--baseline")
            .arg(root.path().join("base"))
            .args(["--max-regression", "ssh_run_command.p99=+50%"]);
        let out = run(c).await;
        assert_eq!(
            out.status.code(),
            Some(99),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(root.path().join("stalled/report.txt")).expect("txt");
        assert!(
            text.contains("AGAINST BASELINE base") && text.contains("FAIL ssh_run_command.p99"),
            "{text}"
        );
        let html = std::fs::read_to_string(root.path().join("stalled/report.html")).expect("html");
        assert!(html.contains("Against baseline <code>base</code>"));
        srv.stop().await.expect("stops");
    }

    /// The Job manifest validates, strictly, against the schemas of a current Kubernetes
    /// release (kubernetes-validate, offline). What is not validated here: that a cluster runs
    /// it (none is available), that the image exists, or that the claim does.
    #[tokio::test]
    async fn the_kubernetes_job_validates() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = Command::new(AGENT);
        c.args(["k8s-job", "--segments", "3", "--test-id", "split_1", "--"])
            .args([
                "--mcp-url",
                "http://mcp.lab:3000/mcp",
                "--scenario",
                "quick",
                "--rate",
                "300",
            ]);
        let out = run(c).await;
        ok(&out);
        let manifest = dir.path().join("job.yaml");
        std::fs::write(&manifest, &out.stdout).expect("write");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("completionMode: Indexed") && text.contains("$(SSHLAB_SEGMENT_INDEX)/3")
        );
        let mut c = Command::new(oracle("kubernetes-validate"));
        c.args(["--strict", "-k", "1.37.0"]).arg(&manifest);
        let out = run(c).await;
        ok(&out);
        // A run flag that does not parse is refused before any pod would run it.
        let mut c = Command::new(AGENT);
        c.args(["k8s-job", "--segments", "3", "--", "--no-such-flag"]);
        assert_eq!(run(c).await.status.code(), Some(2));
    }

    /// Bad split, merge, compare and Job input is refused with a clear message before anything
    /// runs or is written: usage errors exit 2, unusable directories exit 1.
    #[tokio::test]
    async fn bad_input_is_refused_before_anything_runs() {
        let dir = tempfile::tempdir().expect("tmp");
        let expect = |args: &[&str], code: i32, says: &str| {
            let mut c = Command::new(AGENT);
            c.args(args);
            let out = c.output().expect("runs");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
            assert!(stderr.contains(says), "{args:?}: {stderr}");
        };
        let run = [
            "run",
            "--mcp-url",
            "http://127.0.0.1:9/mcp",
            "--target-host",
            "127.0.0.1",
        ];
        let with = |extra: &[&'static str]| -> Vec<&'static str> {
            run.iter().copied().chain(extra.iter().copied()).collect()
        };
        expect(&with(&["--segment", "3/3"]), 2, "expected I/N");
        expect(
            &with(&[
                "--scenario",
                "command_throughput",
                "--segment",
                "0/3",
                "--workers",
                "2",
            ]),
            2,
            "leave this agent none",
        );
        expect(&with(&["--start-at", "1e20"]), 2, "--start-at");
        // A split capacity search: each agent needs a worker, and the agents a shared id and
        // start; a whole-run figure cannot judge a step.
        let search = |extra: &[&'static str]| -> Vec<&'static str> {
            with(&[["--find-capacity", "--slo", "p99<200ms"].as_slice(), extra].concat())
        };
        expect(
            &search(&["--segment", "0/3", "--workers", "2"]),
            2,
            "needs at least 3 workers",
        );
        expect(
            &search(&["--segment", "0/2", "--workers", "4"]),
            2,
            "needs --test-id and --start-at",
        );
        expect(
            &with(&["--find-capacity", "--slo", "rps_peak>10"]),
            2,
            "a whole-run figure cannot judge one step",
        );
        expect(&with(&["--test-id", "../up"]), 2, "--test-id");
        expect(
            &["k8s-job", "--segments", "3", "--", "--segment=1/3"],
            2,
            "set by the Job itself",
        );
        let out = dir.path().join("out");
        std::fs::create_dir(&out).expect("mkdir");
        std::fs::write(out.join("keep"), "x").expect("write");
        let (a, b, o) = (
            dir.path().to_str().expect("utf8"),
            dir.path().join("none"),
            out.to_str().expect("utf8"),
        );
        expect(&["merge", a, "--out", o], 1, "not empty");
        let b = b.to_str().expect("utf8");
        expect(&["compare", a, b], 1, "must both hold a summary.json");
        expect(
            &["compare", a, b, "--max-regression", "p99<1ms"],
            2,
            "regression bound",
        );
        assert!(
            std::fs::read_dir(dir.path())
                .expect("dir")
                .filter_map(Result::ok)
                .all(|e| e.file_name() == "out"),
            "nothing was written"
        );
    }
}
