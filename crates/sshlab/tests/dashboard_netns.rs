//! `sshlab run --dashboard` on the netns backend, as root, with the whole lab inside an outer
//! namespace the test creates ([`Lab`]): the Agent VM's dashboard, which only the lab's
//! namespace reaches, is served on loopback of the machine's own namespace, where this test
//! (and a user's browser) runs. Through it: the agent's /metrics while the job runs, the page,
//! and the event stream to its end, whose report is the job's report.html. The lab's addresses
//! never appear in the machine's own namespace. Needs mcp-ssh-server and sshlab-agent built
//! (as lab_netns does).

mod common;

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::SocketAddr;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use serde_json::Value;
    use sshlab::http;
    use sshlab_core::results::live_metrics;
    use sshlab_core::results::server_metrics::Sample;

    use crate::common::{Lab, assert_root_namespace_clean, text};

    /// The events of the stream at `addr` until its `report` (at most `within`): whether a
    /// running frame came first, and the report's HTML.
    fn events_until_report(addr: SocketAddr, within: Duration) -> (bool, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(within))
            .proxy(None)
            .build()
            .into();
        let resp = agent
            .get(&format!("http://{addr}/events"))
            .call()
            .expect("the event stream through the forwarder");
        let mut lines = BufReader::new(resp.into_body().into_reader()).lines();
        let (mut running, mut event) = (false, String::new());
        while let Some(Ok(line)) = lines.next() {
            if let Some(e) = line.strip_prefix("event: ") {
                e.clone_into(&mut event);
            } else if let Some(data) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(data).expect("JSON event data");
                running |= event == "frame" && v["status"] == "running";
                if event == "report" {
                    return (running, v["html"].as_str().expect("html").to_owned());
                }
            }
        }
        panic!("the stream ended without a report");
    }

    #[test]
    fn run_forwards_the_agents_dashboard_to_the_host() {
        let Some(lab) = Lab::new("dash") else {
            return;
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], sshlab_testkit::free_port()));
        let mut child = lab
            .sshlab_command(&["run", "quick", "8", "2", "--dashboard", &addr.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sshlab run");
        // The lab boots first; until its agent answers, the forwarder says so (502).
        let until = Instant::now() + Duration::from_secs(180);
        let metrics = loop {
            if let Ok(r) = http::request("GET", addr, "/metrics", None, Duration::from_secs(5))
                && r.status == 200
                && Sample::parse(&r.body).get(live_metrics::RUNNING) == Some(1.0)
            {
                break r.body;
            }
            if let Ok(Some(_)) = child.try_wait() {
                let out = child.wait_with_output().expect("output");
                panic!("sshlab run ended first:\n{}", text(&out));
            }
            assert!(Instant::now() < until, "no running job behind {addr}");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(metrics.contains(live_metrics::IN_FLIGHT), "{metrics}");
        // The lab is up, inside its namespace only.
        assert_root_namespace_clean();
        let page = http::request("GET", addr, "/", None, Duration::from_secs(10)).expect("page");
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains(r#"id="live""#) && page.body.contains("quick"),
            "{}",
            page.body
        );
        let (running, report) = events_until_report(addr, Duration::from_secs(60));
        assert!(running, "frames of the running job came through");

        let out = child.wait_with_output().expect("sshlab run");
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(
            t.contains(&format!("run: dashboard on http://{addr}/")),
            "the URL is printed: {t}"
        );
        let dir = lab.only_run();
        let file = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
        assert!(
            report == file,
            "the forwarded report is the job's report.html"
        );
        assert_root_namespace_clean();
    }
}
