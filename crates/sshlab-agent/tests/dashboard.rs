//! The live dashboard, in a real browser: the real agent binary runs a scenario against the
//! real mcp-ssh-server and a real OpenSSH sshd (root) with `--dashboard`, and Debian's
//! headless Chromium (through chromedriver, [`sshlab_testkit::browser`]) loads the page.
//!
//! Asserted: the request count on the page advances while the run goes; the page loads nothing
//! from outside the agent; it never shows the SSH password or the bearer token (one op makes
//! the server echo the password in its error); a busy port, a non-loopback address without
//! `--dashboard-public`, a browser that leaves and comes back and more event streams than
//! allowed do not disturb the run; at the end the page is report.html and its totals equal
//! summary.json's; the stop button ends the run as Ctrl-C does (exit 130, marked incomplete);
//! `serve --dashboard` shows each job and its `/metrics` adds up to the summary.

mod common;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};
    use sshlab_core::results::live_metrics;
    use sshlab_core::results::server_metrics::Sample;
    use sshlab_testkit::browser::Browser;

    use super::common::{AGENT, Lab, records, summary, text};

    /// testuser's password in these tests, and the bearer token: neither may reach the page.
    const PASSWORD: &str = "Dash-s3cret-91";
    const BEARER: &str = "bearer-T0ken-77";

    /// A light closed-model scenario with one op that fails with the password in its message:
    /// `cat <password>` is refused by the server's allowlist as "path `<password>` must be
    /// absolute".
    fn scenario(dir: &Path) -> PathBuf {
        let file = dir.join("dash.toml");
        std::fs::write(
            &file,
            r#"name = "dash"
duration_s = 12
workers = 2
think_ms = 20
max_sessions = 1
stale_kinds = ["session_gone", "connection_lost"]
[error_kinds]
blocked = "Command not permitted"
session_gone = "session not found"
connection_lost = " lost: "
[[op]]
tool = "ssh_connect"
provides = "session"
weight = 0
args = { host = "{{target_host}}", port = "{{target_port}}", user = "{{user}}", password = "{{password}}", insecure_host_key = true }
[[op]]
tool = "ssh_run_command"
needs = "session"
weight = 30
args = { session_id = "{{session}}", command = "hostname" }
[[op]]
name = "leaky_cat"
tool = "ssh_run_command"
needs = "session"
weight = 1
args = { session_id = "{{session}}", command = "cat {{password}}" }
[[op]]
tool = "ssh_disconnect"
consumes = "session"
weight = 0
args = { session_id = "{{session}}" }
"#,
        )
        .expect("write scenario");
        file
    }

    async fn lab() -> Lab {
        Lab::start(&[], PASSWORD).await
    }

    fn spawn(mut cmd: Command) -> Child {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("agent starts")
    }

    async fn finish(child: Child) -> Output {
        tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
            .await
            .expect("join")
    }

    /// `child`'s output once it exits within `within`; killed (and the test failed) when not.
    async fn finish_within(mut child: Child, within: Duration) -> Output {
        let until = Instant::now() + within;
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > until {
                let _ = child.kill();
                let out = finish(child).await;
                panic!("still running after {within:?}:\n{}", text(&out));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        finish(child).await
    }

    /// Waits for the dashboard of `agent` to answer; the agent's output when it exits first.
    async fn dashboard_up(base: &str, agent: &mut Child) -> String {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("{base}/metrics")).await
                && r.status().is_success()
            {
                return r.text().await.expect("metrics text");
            }
            if let Ok(Some(status)) = agent.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = agent.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("the agent exited ({status}) before its dashboard answered:\n{err}");
            }
            assert!(Instant::now() < until, "no dashboard at {base}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The dashboard's /metrics, once it answers (at most `within`).
    async fn metrics(base: &str, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            if let Ok(r) = reqwest::get(format!("{base}/metrics")).await
                && r.status().is_success()
            {
                return r.text().await.expect("metrics text");
            }
            assert!(Instant::now() < until, "no dashboard at {base}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of the key-figure card named `name` on the page (digits only), or null.
    fn card(name: &str) -> String {
        format!(
            "var c = Array.from(document.querySelectorAll('.card')).find(function (c) {{ \
               var k = c.querySelector('.k'); return k && k.textContent === '{name}'; }}); \
             return c ? Number(c.querySelector('.v').textContent.replace(/[^0-9]/g, '')) : null;"
        )
    }

    /// The "N failed" line under the Requests card.
    const FAILED: &str = "var c = Array.from(document.querySelectorAll('.card')).find(function (c) { \
           var k = c.querySelector('.k'); return k && k.textContent === 'Requests'; }); \
         return c ? Number(c.querySelector('.s').textContent.replace(/[^0-9]/g, '')) : null;";

    /// Polls the Requests card until it shows more than `than`.
    async fn requests_above(b: &Browser, than: u64, within: Duration) -> u64 {
        let body = format!(
            "var n = (function () {{ {} }})(); return n !== null && n > {than} ? n : null;",
            card("Requests")
        );
        b.wait_for(&body, within)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .as_u64()
            .expect("a count")
    }

    /// Waits until the page has become the run's report (no status bar, a final badge).
    async fn becomes_report(b: &Browser, within: Duration) {
        b.wait_for(
            "return document.getElementById('live') === null && \
                    document.querySelector('h1') !== null && \
                    /COMPLETE/.test(document.querySelector('h1').textContent) ? true : null;",
            within,
        )
        .await
        .unwrap_or_else(|e| panic!("the page did not become the report: {e}"));
    }

    const OUTER_HTML: &str = "return document.documentElement.outerHTML;";

    /// The page, as it stands, equals report.html as the same browser reads it from the file,
    /// and its totals equal summary.json's.
    async fn page_is_the_report(b: &Browser, dir: &Path) {
        let s = summary(dir);
        let requests = b.eval(&card("Requests")).await.expect("card");
        assert_eq!(requests, json!(s.totals.requests), "page vs summary.json");
        let failed = b.eval(FAILED).await.expect("failed line");
        assert_eq!(failed, json!(s.totals.failures), "page vs summary.json");
        let page = b.eval(OUTER_HTML).await.expect("page");
        b.goto(&format!("file://{}", dir.join("report.html").display()))
            .await
            .expect("open report.html");
        let file = b.eval(OUTER_HTML).await.expect("report.html");
        assert!(
            page == file,
            "the page at the end is not report.html:\npage: {} bytes, file: {} bytes",
            page.as_str().map_or(0, str::len),
            file.as_str().map_or(0, str::len)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_page_follows_the_run_and_becomes_its_report() {
        let lab = lab().await;
        let file = scenario(lab.results.path());
        let port = sshlab_testkit::free_port();
        let addr = format!("127.0.0.1:{port}");
        let base = format!("http://{addr}");
        let mut agent = spawn(lab.agent(&[
            "--scenario-file",
            file.to_str().expect("utf8"),
            "--duration",
            "25",
            "--bearer",
            BEARER,
            "--dashboard",
            &addr,
        ]));
        let m = dashboard_up(&base, &mut agent).await;
        assert!(m.contains(live_metrics::REQUESTS_TOTAL), "{m}");
        assert_eq!(lab.dirs().len(), 1, "the run started");

        // Bad input while it runs: a second agent on the same port, and one on a non-loopback
        // address without the flag. Both are refused before they run anything.
        let busy = finish(spawn(lab.agent(&["--duration", "2", "--dashboard", &addr]))).await;
        assert_eq!(busy.status.code(), Some(1), "{}", text(&busy));
        assert!(
            String::from_utf8_lossy(&busy.stderr)
                .contains(&format!("cannot serve the dashboard on {addr}")),
            "{}",
            text(&busy)
        );
        let public = finish(spawn(lab.agent(&[
            "--duration",
            "2",
            "--dashboard",
            &format!("0.0.0.0:{port}"),
        ])))
        .await;
        assert_eq!(public.status.code(), Some(2), "{}", text(&public));
        assert!(
            String::from_utf8_lossy(&public.stderr).contains("--dashboard-public"),
            "{}",
            text(&public)
        );
        assert_eq!(lab.dirs().len(), 1, "neither ran anything");

        let b = Browser::start().await.expect("headless chromium");
        b.goto(&format!("{base}/")).await.expect("open the page");
        let first = requests_above(&b, 0, Duration::from_secs(15)).await;
        let later = requests_above(&b, first, Duration::from_secs(10)).await;
        assert!(later > first, "the count advances: {first} then {later}");
        let bar = b
            .eval("return [document.getElementById('status').textContent, document.getElementById('phase').textContent];")
            .await
            .expect("bar");
        assert_eq!(bar, json!(["RUNNING", "all"]), "{bar}");

        // Offline: everything the page loaded came from the agent.
        let loaded = b
            .eval("return [location.origin].concat(performance.getEntriesByType('resource').map(function (e) { return e.name; }));")
            .await
            .expect("resources");
        let loaded: Vec<String> = serde_json::from_value(loaded).expect("strings");
        assert!(
            loaded[1..].iter().all(|u| u.starts_with(&loaded[0])),
            "{loaded:?}"
        );
        let headers = reqwest::get(format!("{base}/")).await.expect("page");
        let csp = headers
            .headers()
            .get("content-security-policy")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");

        // No secret: the leaky op's failure shows, masked.
        b.wait_for(
            "return document.body.innerHTML.indexOf('path `********` must be absolute') >= 0 ? true : null;",
            Duration::from_secs(15),
        )
        .await
        .expect("the leaky op's masked message on the page");
        let page = b.eval(OUTER_HTML).await.expect("page");
        let page = page.as_str().expect("html");
        for secret in [PASSWORD, BEARER] {
            assert!(!page.contains(secret), "{secret} on the page");
            assert!(
                !metrics(&base, Duration::from_secs(5))
                    .await
                    .contains(secret)
            );
        }

        // A browser that leaves and comes back.
        b.goto("about:blank").await.expect("leave");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        b.goto(&format!("{base}/")).await.expect("come back");
        let back = requests_above(&b, later, Duration::from_secs(10)).await;
        assert!(back > later);

        // More event streams than allowed: the extra ones are refused, the page goes on.
        let http = reqwest::Client::new();
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..20 {
            let r = http
                .get(format!("{base}/events"))
                .send()
                .await
                .expect("events");
            if r.status() == 503 {
                refused += 1;
            } else {
                held.push(r); // never read: a stalled reader
            }
        }
        assert!(
            refused >= 4,
            "{refused} refused of 20 (16 at most, one is the page's)"
        );
        let more = requests_above(&b, back, Duration::from_secs(10)).await;
        assert!(more > back);
        drop(held);

        // The end: the page becomes report.html, with summary.json's totals.
        becomes_report(&b, Duration::from_secs(40)).await;
        let out = finish(agent).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let dir = lab.only_dir();
        let s = summary(&dir);
        assert!(s.run.complete, "undisturbed: {:?}", s.run.incomplete_reason);
        assert_eq!(
            s.errors.keys().collect::<Vec<_>>(),
            ["blocked"],
            "only the leaky op failed: {:?}",
            s.errors
        );
        assert_eq!(
            s.op("leaky_cat").map(|o| o.totals.failures),
            Some(s.totals.failures)
        );
        assert_eq!(records(&dir).len() as u64, s.totals.requests);
        page_is_the_report(&b, &dir).await;
        for f in ["summary.json", "report.html", "report.txt"] {
            let t = std::fs::read_to_string(dir.join(f)).expect(f);
            assert!(
                !t.contains(PASSWORD) && !t.contains(BEARER),
                "a secret in {f}"
            );
        }
        b.close().await;
        lab.server.stop().await.expect("stops");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stop_button_ends_the_run_as_ctrl_c_does() {
        let lab = lab().await;
        let file = scenario(lab.results.path());
        let port = sshlab_testkit::free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut agent = spawn(lab.agent(&[
            "--scenario-file",
            file.to_str().expect("utf8"),
            "--duration",
            "120",
            "--dashboard",
            &port.to_string(),
        ]));
        dashboard_up(&base, &mut agent).await;
        let b = Browser::start().await.expect("headless chromium");
        b.goto(&format!("{base}/")).await.expect("open the page");
        let n = requests_above(&b, 0, Duration::from_secs(15)).await;

        // Only the page may stop it: no header, or another origin, is refused.
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{base}/stop"))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 403);
        let r = http
            .post(format!("{base}/stop"))
            .header("x-sshlab-dashboard", "stop")
            .header("origin", "http://evil.example")
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 403);
        requests_above(&b, n, Duration::from_secs(10)).await;

        let clicked = Instant::now();
        b.click("#stop").await.expect("click stop");
        // The grace period (10 s) bounds the calls in flight; the results follow at once.
        let out = finish_within(agent, Duration::from_secs(30)).await;
        assert_eq!(out.status.code(), Some(130), "{}", text(&out));
        assert!(
            clicked.elapsed() < Duration::from_secs(15),
            "{:?}",
            clicked.elapsed()
        );
        let dir = lab.only_dir();
        let s = summary(&dir);
        assert!(!s.run.complete);
        assert_eq!(s.run.incomplete_reason.as_deref(), Some("interrupted"));
        assert_eq!(records(&dir).len() as u64, s.totals.requests);
        becomes_report(&b, Duration::from_secs(10)).await;
        let reason = b
            .eval("return document.querySelector('.reason').textContent;")
            .await
            .expect("reason");
        assert!(
            reason.as_str().unwrap_or("").contains("interrupted"),
            "{reason}"
        );
        page_is_the_report(&b, &dir).await;
        b.close().await;
        lab.server.stop().await.expect("stops");
    }

    /// `serve --dashboard`: one listener for every job; during a job its frames and metrics,
    /// after it its report.html byte for byte and metrics that add up to its summary.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serve_shows_each_job_and_its_metrics_add_up() {
        let lab = lab().await;
        let (api, dash) = (sshlab_testkit::free_port(), sshlab_testkit::free_port());
        let mut serve = Command::new(AGENT)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{api}"),
                "--results",
            ])
            .arg(lab.results.path())
            .args(["--dashboard", &format!("127.0.0.1:{dash}")])
            .stderr(Stdio::null())
            .spawn()
            .expect("serve");
        let base = format!("http://127.0.0.1:{dash}");
        let idle = metrics(&base, Duration::from_secs(15)).await;
        assert!(idle.contains("sshlab_agent_running 0"), "{idle}");
        let http = reqwest::Client::new();
        for round in 0..2 {
            let job = json!({"scenario": "quick", "duration": 3, "workers": 2,
                "mcp_url": lab.url(), "target_host": "127.0.0.1",
                "target_port": lab.sshd.port, "password": PASSWORD});
            let r = http
                .post(format!("http://127.0.0.1:{api}/jobs"))
                .json(&job)
                .send()
                .await
                .expect("post job");
            assert_eq!(r.status(), 202, "round {round}");
            let id = r.json::<Value>().await.expect("json")["test_id"]
                .as_str()
                .expect("id")
                .to_owned();
            // The job's frames, from the event stream, until its report.
            let mut events = http
                .get(format!("{base}/events"))
                .send()
                .await
                .expect("events");
            // (The stream starts with the current frame: in round 1 that may still be the first
            // job's report, before the second job has begun.)
            let mut seen = String::new();
            let ended = |seen: &str| {
                seen.find("\"status\":\"running\"")
                    .is_some_and(|at| seen[at..].contains("event: report"))
            };
            while !ended(&seen) {
                match tokio::time::timeout(Duration::from_secs(30), events.chunk()).await {
                    Ok(Ok(Some(c))) => seen.push_str(&String::from_utf8_lossy(&c)),
                    Ok(Ok(None)) if round == 1 && !seen.contains("running") => {
                        // The first job's report ended that stream: open it again.
                        events = http
                            .get(format!("{base}/events"))
                            .send()
                            .await
                            .expect("events");
                    }
                    other => panic!("round {round}: the stream ended: {other:?}\n{seen}"),
                }
            }
            let dir = lab.results.path().join(&id);
            let s = summary(&dir);
            let page = reqwest::get(format!("{base}/")).await.expect("page");
            let page = page.text().await.expect("text");
            let file = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
            assert!(page == file, "round {round}: / is not report.html");
            let m = Sample::parse(&metrics(&base, Duration::from_secs(5)).await);
            assert_eq!(
                m.sum(live_metrics::REQUESTS_TOTAL, &[]),
                Some(s.totals.requests as f64),
                "round {round}"
            );
            assert_eq!(
                m.sum(live_metrics::ERRORS_TOTAL, &[]).unwrap_or(0.0),
                s.totals.failures as f64
            );
            assert_eq!(m.get(live_metrics::RUNNING), Some(0.0));
            assert!(
                s.totals.requests > 0 && s.totals.failures == 0,
                "{:?}",
                s.errors
            );
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(serve.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = tokio::task::spawn_blocking(move || serve.wait()).await;
        lab.server.stop().await.expect("stops");
    }
}
