//! The real `mcp-ssh-server` binary as a process: flags, config file errors, and graceful
//! shutdown on SIGTERM (in-flight requests finish, SSH connections are closed, exit 0).

mod common;

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use serde_json::{Value, json};
    use sshlab_testkit::{SshdBuilder, free_port, wait_until};

    use super::common::{Client, Era};

    const BIN: &str = env!("CARGO_BIN_EXE_mcp-ssh-server");

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
        let sshd = SshdBuilder::new()
            .password_user("testuser", "testpass")
            .start()
            .expect("sshd fixture");
        let port = free_port();
        let mut child = Command::new(BIN)
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server starts");
        let addr = format!("127.0.0.1:{port}").parse().expect("addr");
        wait_until("server /health", Duration::from_secs(10), || async move {
            reqwest::get(format!("http://{addr}/health")).await.is_ok()
        })
        .await
        .expect("server ready");

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
}
