//! The capacity search against MCP servers whose capacity is known by construction: a real
//! Streamable HTTP server (axum, 2026-07-28 stateless) whose one tool takes 10 ms and runs 4
//! calls at a time, so it serves at most 400 calls/s. Its capacity is also measured directly in
//! the same test (as many calls as it takes, from 64 callers at once), and the search must land
//! within ±5% of that in at most 10 steps. A second server fails 1 call in 100: it must fail an
//! `errors<0.5%` SLO at every rate, however few failures a step happens to see.

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::Command;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use axum::Json;
    use axum::extract::State;
    use axum::routing::post;
    use serde_json::{Value, json};
    use sshlab_core::results::Summary;
    use tokio::sync::Semaphore;

    const AGENT: &str = env!("CARGO_BIN_EXE_sshlab-agent");

    /// The server: `work` takes `service` with at most `slots` running; every `fail_every`-th
    /// call (0: none) is a tool error.
    #[derive(Clone)]
    struct Known {
        slots: Arc<Semaphore>,
        service: Duration,
        fail_every: u64,
        calls: Arc<AtomicU64>,
    }

    async fn mcp(State(k): State<Known>, Json(req): Json<Value>) -> Json<Value> {
        let id = req["id"].clone();
        let result = match req["method"].as_str() {
            Some("server/discover") => json!({"resultType": "complete",
                "supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                "serverInfo": {"name": "known-capacity", "version": "1"},
                "ttlMs": 0, "cacheScope": "public"}),
            Some("tools/call") => {
                let permit = k.slots.acquire().await;
                let started = tokio::time::Instant::now();
                tokio::time::sleep_until(started + k.service).await;
                drop(permit);
                let n = k.calls.fetch_add(1, Ordering::Relaxed) + 1;
                let failed = k.fail_every > 0 && n % k.fail_every == 0;
                json!({"resultType": "complete", "isError": failed,
                       "content": [{"type": "text", "text": if failed { "failed" } else { "ok" }}]})
            }
            _ => {
                return Json(json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32601, "message": "method not found"}}));
            }
        };
        Json(json!({"jsonrpc": "2.0", "id": id, "result": result}))
    }

    async fn known(fail_every: u64) -> SocketAddr {
        let state = Known {
            slots: Arc::new(Semaphore::new(4)),
            service: Duration::from_millis(10),
            fail_every,
            calls: Arc::new(AtomicU64::new(0)),
        };
        let app = axum::Router::new()
            .route("/mcp", post(mcp))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }

    /// The server's real capacity: calls completed per second with 64 callers at once.
    async fn measured_capacity(addr: SocketAddr) -> f64 {
        let http = reqwest::Client::new();
        let done = Arc::new(AtomicU64::new(0));
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (http, done) = (http.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                while tokio::time::Instant::now() < until {
                    let r = http
                        .post(format!("http://{addr}/mcp"))
                        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                      "params": {"name": "work", "arguments": {}}}))
                        .send()
                        .await;
                    if r.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        done.load(Ordering::Relaxed) as f64 / 3.0
    }

    fn scenario(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("work.toml");
        std::fs::write(
            &p,
            "name = \"work\"\nduration_s = 6\n[[op]]\ntool = \"work\"\n",
        )
        .expect("write");
        p
    }

    fn search(addr: SocketAddr, dir: &Path, extra: &[&str]) -> (std::process::Output, Summary) {
        let out = command(addr, dir, extra).output().expect("agent runs");
        (out, summary(dir))
    }

    fn command(addr: SocketAddr, dir: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new(AGENT);
        cmd.args(["run", "--mcp-url", &format!("http://{addr}/mcp")])
            .args(["--protocol", "2026-07-28", "--quiet", "--find-capacity"])
            .args([
                "--server-vcpus",
                "1",
                "--metrics-url",
                &format!("http://{addr}/metrics"),
            ])
            .arg("--scenario-file")
            .arg(scenario(dir))
            .arg("--results-dir")
            .arg(dir)
            .args(extra);
        cmd
    }

    fn summary(dir: &Path) -> Summary {
        let run = std::fs::read_dir(dir)
            .expect("results")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.join("summary.json").is_file())
            .expect("a results directory with summary.json");
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).expect("read"))
            .expect("summary")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_search_finds_a_known_capacity_within_five_percent_in_ten_steps() {
        let addr = known(0).await;
        let before = measured_capacity(addr).await;
        assert!(
            (250.0..=410.0).contains(&before),
            "4 slots of 10 ms serve about 400/s, measured {before:.1}/s"
        );
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().to_owned();
        let (out, s) = tokio::task::spawn_blocking(move || {
            search(
                addr,
                &path,
                &[
                    "--slo",
                    "p99<200ms",
                    "--rate",
                    "50",
                    "--workers",
                    "64",
                    "--threshold",
                    "capacity>100/s",
                ],
            )
        })
        .await
        .expect("join");
        // Measured again after the search: what the server can do on this (shared) machine
        // moves a little; the search must land within 5% of what it could do meanwhile.
        let after = measured_capacity(addr).await;
        let truth = (before + after) / 2.0;
        let c = s.capacity.expect("a capacity search");
        let found = c.rate_per_s.expect("a capacity");
        let steps: Vec<String> = c
            .steps
            .iter()
            .map(|st| {
                format!(
                    "{:.1}/s served {:.1}/s p99 {:.0} ms {}",
                    st.rate_per_s,
                    st.achieved_per_s,
                    st.p99_ms,
                    if st.passed { "pass" } else { "FAIL" }
                )
            })
            .collect();
        // The search claims the capacity lies between the rate it found (passed) and the
        // lowest rate above it that failed: that bracket must meet what was measured, within
        // 5% (a bracket is at most 5% wide, below). Its lower end alone can sit more than 5%
        // under a measurement taken while the machine was quieter than during the failing step
        // (seen: 351.3/s passed and 366.8/s failed under other tests' load, 374/s measured).
        let ceiling = c
            .steps
            .iter()
            .filter(|st| !st.passed && st.rate_per_s > found)
            .map(|st| st.rate_per_s)
            .fold(f64::INFINITY, f64::min);
        assert!(
            found <= before.max(after) * 1.05 && ceiling >= before.min(after) * 0.95,
            "found {found:.1}/s (next failing {ceiling:.1}/s) for a measured {before:.1}/s \
             before and {after:.1}/s after, via\n  {}",
            steps.join("\n  ")
        );
        assert!(c.steps.len() <= 10, "{} steps", c.steps.len());
        assert!(c.precision_percent.expect("bracketed") <= 5.0);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(s.thresholds[0].passed, "capacity>100/s: {:?}", s.thresholds);
        let report = std::fs::read_to_string(
            std::fs::read_dir(dir.path())
                .expect("dir")
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.join("report.txt").is_file())
                .expect("run dir")
                .join("report.txt"),
        )
        .expect("report");
        assert!(
            report.contains("CAPACITY (highest rate meeting p99<200ms)"),
            "{report}"
        );
        eprintln!(
            "capacity: found {found:.1}/s, measured {truth:.1}/s, {} steps:\n  {}",
            c.steps.len(),
            steps.join("\n  ")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_failing_one_call_in_a_hundred_never_shows_errors_under_half_a_percent() {
        let addr = known(100).await;
        let dir = tempfile::tempdir().expect("tmp");
        // Watched live: the dashboard shows the steps judged so far while the search runs.
        let port = sshlab_testkit::free_port().to_string();
        let mut child = command(
            addr,
            dir.path(),
            &[
                "--slo",
                "errors<0.5%",
                "--rate",
                "200",
                "--workers",
                "32",
                "--max-steps",
                "3",
                "--dashboard",
                &port,
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("agent runs");
        let http = reqwest::Client::new();
        let mut live = None;
        while child.try_wait().expect("wait").is_none() {
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{port}/"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && let Ok(page) = r.text().await
                && page.contains("searching, after step 1:")
            {
                live = Some(page);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let Some(page) = live else {
            let out = child.wait_with_output().expect("agent exits");
            panic!(
                "the live page never showed step 1 while the search ran: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        assert!(
            page.contains("<h2>Capacity</h2>") && page.contains("latency against throughput"),
            "{page}"
        );
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("join")
            .expect("agent exits");
        let s = summary(dir.path());
        let c = s.capacity.expect("a capacity search");
        assert_eq!(c.rate_per_s, None, "{:#?}", c.steps);
        assert_eq!(c.steps.len(), 3);
        // Every step fails. On the error bound, one of two ways: judged at its end (not shown
        // at 95% confidence), or stopped early once the step's error budget was spent (at 1%
        // errors, the 0.5% budget of a 500-call step is often spent before its end). A step
        // on a machine too busy to keep up may stop for its backlog instead, which proves
        // nothing about errors: at least one step must fail on the error bound.
        let mut on_errors = 0;
        for st in &c.steps {
            assert!(!st.passed, "{st:?}");
            let judged = st
                .broken
                .iter()
                .any(|b| b.starts_with("errors<0.5% not shown"));
            let stopped = st.stopped_early.as_deref().unwrap_or_default();
            let spent = stopped.starts_with("errors<0.5% broken beyond doubt");
            let backlog = stopped.starts_with("the calls in flight ran away");
            assert!(judged || spent || backlog, "{st:?}");
            on_errors += usize::from(judged || spent);
        }
        assert!(on_errors >= 1, "{:#?}", c.steps);
        assert!(c.verdict.starts_with("no capacity"), "{}", c.verdict);
        // Something succeeded: not a run error; the verdict is in the results.
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn summary_in(dir: &Path) -> Summary {
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).expect("summary.json"))
            .expect("summary")
    }

    fn unix_now() -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64()
    }

    /// One capacity search split across two agents (`--segment 0/2` and `1/2`, two processes,
    /// one results dir): after every step each reads the other's part, so both judge the same
    /// whole step and pick the same next rate; both find the same capacity, which is the
    /// server's (each agent offers half of every rate). `merge` judges the search again from
    /// the two agents' step files and finds it too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_search_split_across_two_agents_steps_together_and_merge_reproduces_it() {
        let addr = known(0).await;
        let before = measured_capacity(addr).await;
        let dir = tempfile::tempdir().expect("tmp");
        let start_at = format!("{:.3}", unix_now() + 2.0);
        let spawn = |segment: &str| {
            command(
                addr,
                dir.path(),
                &[
                    "--slo",
                    "p99<200ms",
                    "--rate",
                    "50",
                    "--workers",
                    "64",
                    "--segment",
                    segment,
                    "--test-id",
                    "split",
                    "--start-at",
                    &start_at,
                ],
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("agent runs")
        };
        let (a, b) = (spawn("0/2"), spawn("1/2"));
        let (a, b) = tokio::task::spawn_blocking(move || {
            (
                a.wait_with_output().expect("agent 0 exits"),
                b.wait_with_output().expect("agent 1 exits"),
            )
        })
        .await
        .expect("join");
        let after = measured_capacity(addr).await;
        for out in [&a, &b] {
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (d0, d1) = (
            dir.path().join("split-s0of2"),
            dir.path().join("split-s1of2"),
        );
        let (s0, s1) = (summary_in(&d0), summary_in(&d1));
        let (c0, c1) = (
            s0.capacity.expect("agent 0 searched"),
            s1.capacity.expect("agent 1 searched"),
        );
        let verdicts = |c: &sshlab_core::results::capacity::Capacity| -> Vec<String> {
            c.steps
                .iter()
                .map(|st| {
                    format!(
                        "{:.1}/s served {:.1}/s ({} calls) p99 {:.0} ms {}",
                        st.rate_per_s,
                        st.achieved_per_s,
                        st.requests,
                        st.p99_ms,
                        st.verdict()
                    )
                })
                .collect()
        };
        // One search: the same steps, at the same rates, with the same verdicts, judged on
        // the same calls (both agents' together).
        assert_eq!(verdicts(&c0), verdicts(&c1));
        assert_eq!(c0.rate_per_s, c1.rate_per_s);
        let found = c0.rate_per_s.expect("a capacity");
        let steps = verdicts(&c0).join("\n  ");
        assert!(
            found >= before.min(after) * 0.9 && found <= before.max(after) * 1.1,
            "found {found:.1}/s for a measured {before:.1}/s before and {after:.1}/s after, \
             via\n  {steps}"
        );
        assert!(c0.precision_percent.expect("bracketed") <= 5.0, "{steps}");
        // Each step's calls are both agents': each made about half of them.
        for (k, st) in c0.steps.iter().enumerate() {
            let part = |d: &Path| -> serde_json::Value {
                serde_json::from_slice(
                    &std::fs::read(d.join(format!("capacity/step-{:03}.json", k + 1)))
                        .expect("step file"),
                )
                .expect("json")
            };
            let (p0, p1) = (part(&d0), part(&d1));
            let calls = |p: &serde_json::Value| {
                p["all"]["ok"].as_u64().unwrap_or(0) + p["all"]["err"].as_u64().unwrap_or(0)
            };
            assert_eq!(calls(&p0) + calls(&p1), st.requests, "step {}", k + 1);
            assert!(
                calls(&p0) > 0 && calls(&p1) > 0,
                "step {}: {} and {} calls",
                k + 1,
                calls(&p0),
                calls(&p1)
            );
            // A step one agent stopped early, the other stopped too (unless its own end came
            // first): both parts cover the same time.
            if st.stopped_early.is_some() {
                let (a, b) = (p0["stopped"]["at"].as_f64(), p1["stopped"]["at"].as_f64());
                let end = p0["judged_from"].as_f64().unwrap_or(0.0)
                    + p0["planned_s"].as_f64().unwrap_or(0.0);
                let stop = a.or(b).unwrap_or(end);
                assert!(
                    (a.is_some() && b.is_some()) || end - stop < 0.5,
                    "step {}: {p0} {p1}",
                    k + 1
                );
            }
        }
        let merged = dir.path().join("merged");
        let out = Command::new(AGENT)
            .arg("merge")
            .arg(&d0)
            .arg(&d1)
            .arg("--out")
            .arg(&merged)
            .output()
            .expect("merge runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = summary_in(&merged);
        assert!(m.run.complete, "{:?}", m.run.incomplete_reason);
        let cm = m.capacity.expect("merge judged the search again");
        assert_eq!(verdicts(&cm), verdicts(&c0));
        assert_eq!(cm.rate_per_s, c0.rate_per_s);
        eprintln!(
            "split capacity: found {found:.1}/s, measured {before:.1}/s before and \
             {after:.1}/s after, {} steps:\n  {steps}",
            c0.steps.len()
        );
    }

    /// An agent of a split search whose peer never comes stops after the first step, says
    /// which segment did not report and where it looked, and marks its results incomplete,
    /// in the grace it gives its calls plus 20 s, never waiting forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_split_search_without_its_peer_stops_and_says_so() {
        let addr = known(0).await;
        let dir = tempfile::tempdir().expect("tmp");
        let start_at = format!("{:.3}", unix_now() + 1.0);
        let started = std::time::Instant::now();
        let path = dir.path().to_owned();
        let out = tokio::task::spawn_blocking(move || {
            command(
                addr,
                &path,
                &[
                    "--slo",
                    "p99<200ms",
                    "--rate",
                    "50",
                    "--workers",
                    "8",
                    "--duration",
                    "3",
                    "--grace",
                    "1",
                    "--segment",
                    "0/2",
                    "--test-id",
                    "alone",
                    "--start-at",
                    &start_at,
                ],
            )
            .output()
            .expect("agent runs")
        })
        .await
        .expect("join");
        let took = started.elapsed();
        let s = summary_in(&dir.path().join("alone-s0of2"));
        assert!(!s.run.complete);
        let reason = s.run.incomplete_reason.unwrap_or_default();
        assert!(
            reason.contains("step 1: no result from segment(s) 1/2 within 21 s"),
            "{reason}"
        );
        assert!(took < Duration::from_secs(60), "took {took:?}");
        assert_ne!(out.status.code(), Some(0));
        // The step it judged alone is not a verdict on the whole: no capacity is claimed.
        let c = s.capacity.expect("the search so far");
        assert!(c.steps.is_empty(), "{:?}", c.steps);
        assert_eq!(c.rate_per_s, None);
    }
}
