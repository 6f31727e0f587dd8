//! The real `mcp-ssh-server` binary as a process: flags, config file errors, and graceful
//! shutdown on SIGTERM (in-flight requests finish, SSH connections are closed, exit 0).

mod common;

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{Duration, Instant};

    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use serde_json::{Value, json};
    use sshlab_testkit::wait_until;

    use super::common::{BIN, Client, Era, shared_tmp_dir, sshd_testuser, start_binary};

    #[test]
    fn a_bad_config_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = dir.path().join("server.toml");
        std::fs::write(&cfg, "pool_max_per_target = \"many\"\n").expect("write");
        let out = Command::new(BIN)
            .args([
                "--config",
                cfg.to_str().expect("utf8"),
                "--bind",
                "127.0.0.1:0",
            ])
            .output()
            .expect("runs");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("server.toml") && err.contains("pool_max_per_target"),
            "{err}"
        );
        let out = Command::new(BIN)
            .args(["--profile", "turbo"])
            .output()
            .expect("runs");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("loadtest"));
    }

    #[tokio::test]
    async fn sigterm_finishes_in_flight_requests_and_closes_ssh() {
        let sshd = sshd_testuser();
        let (mut server, addr) = start_binary(&[]).await;
        let child = &mut server.0;

        let mut c = Client::connect(addr, Era::Modern).await;
        let sid = c.connect_testuser(sshd.port).await;
        // ~1 s of work in flight when SIGTERM arrives.
        let in_flight = tokio::spawn(async move {
            let mut c = Client::connect(addr, Era::Modern).await;
            c.call(
                "ssh_run_command",
                json!({"session_id": sid, "command": "ping -c 2 -W 1 127.0.0.1"}),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM");
        let r: Value = in_flight.await.expect("request task");
        assert_eq!(r["isError"], false, "the in-flight command finished: {r}");
        assert_eq!(r["structuredContent"]["exit_status"], 0);

        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "exit status {status}");
        let mut log = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut log)
            .expect("log");
        assert!(log.contains("SIGTERM"), "{log}");
        assert!(log.contains("pooled connections closed"), "{log}");
        // sshd saw the client disconnect (not a dropped socket).
        wait_until("sshd logs the disconnect", Duration::from_secs(5), || {
            let log = sshd.log();
            async move { log.contains("Received disconnect") || log.contains("Disconnected from") }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "nothing listens after shutdown"
        );
    }

    /// Processes on this machine (the sshd fixture's commands run here) named `comm` whose
    /// command line mentions `needle`.
    fn processes(comm: &str, needle: &str) -> usize {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let p = e.path();
                std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim() == comm)
                    && std::fs::read(p.join("cmdline")).is_ok_and(|c| {
                        String::from_utf8_lossy(&c)
                            .replace('\0', " ")
                            .contains(needle)
                    })
            })
            .count()
    }

    /// Issue 25, item 2: SIGTERM while 50 allowed commands block on the target (`cat` of a
    /// FIFO nobody writes, 10 on each of 5 SSH connections). After the shutdown grace (3 s)
    /// the server sends every command SIGTERM, closes its channel, answers every call with an
    /// error, closes its SSH connections and exits, within 10 s, leaving no `cat` behind.
    /// Before, it waited out a 30 s drain, answered none of the calls, and left all 50 `cat`
    /// processes running on the target.
    #[tokio::test]
    async fn sigterm_stops_blocked_commands_and_leaves_no_remote_process() {
        const CONNECTIONS: usize = 5;
        const PER_CONNECTION: usize = 10;
        let sshd = sshd_testuser();
        let dir = shared_tmp_dir("mcp-sigterm-");
        let fifo = dir.path().join("fifo");
        let made = Command::new("mkfifo")
            .args(["-m", "0644"])
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let fifo = fifo.display().to_string();

        let (mut server, addr) = start_binary(&[]).await;
        let child = &mut server.0;
        let mut c = Client::connect(addr, Era::Modern)
            .await
            .with_bearer("sigterm");
        let mut sids = Vec::new();
        for _ in 0..CONNECTIONS {
            sids.push(c.connect_testuser(sshd.port).await);
        }
        let calls: Vec<_> = (0..CONNECTIONS * PER_CONNECTION)
            .map(|i| {
                let args = json!({"session_id": sids[i % CONNECTIONS],
                                  "command": format!("cat {fifo}"), "timeout_ms": 120_000});
                tokio::spawn(async move {
                    let mut c = Client::connect(addr, Era::Modern)
                        .await
                        .with_bearer("sigterm");
                    c.call("ssh_run_command", args).await
                })
            })
            .collect();
        let all = CONNECTIONS * PER_CONNECTION;
        let needle = fifo.clone();
        wait_until("every cat running", Duration::from_secs(30), || {
            let n = processes("cat", &needle);
            async move { n >= all }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {} running", processes("cat", &fifo)));

        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        let signalled = Instant::now();
        kill(pid, Signal::SIGTERM).expect("SIGTERM");
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                signalled.elapsed() < Duration::from_secs(10),
                "server did not exit within 10 s of SIGTERM ({} cat still running)",
                processes("cat", &fifo)
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let exited_after = signalled.elapsed();
        assert!(status.success(), "exit status {status}");
        let mut answered = 0;
        for call in calls {
            let r: Value = call.await.expect("call task");
            assert_eq!(r["isError"], true, "{r}");
            let text = r["content"][0]["text"].as_str().unwrap_or_default();
            assert!(text.contains("shutting down"), "{text}");
            answered += 1;
        }
        // The target delivers the signals it was sent before the connections closed.
        let left = |f: &str| processes("cat", f);
        let settled = wait_until("no cat left", Duration::from_secs(2), || {
            let n = left(&fifo);
            async move { n == 0 }
        })
        .await;
        eprintln!(
            "SIGTERM: exit after {exited_after:?}, {answered} of {all} calls answered, {} cat left",
            left(&fifo)
        );
        assert!(
            settled.is_ok(),
            "{} cat processes left on the target",
            left(&fifo)
        );
        let mut log = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut log)
            .expect("log");
        assert!(log.contains("stopping their commands"), "{log}");
        drop(sshd);
    }
}
