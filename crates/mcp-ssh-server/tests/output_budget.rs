//! The server-wide budget for command output held in memory, against real sshd. Its own test
//! binary: the budget is process-wide, and a small one would starve other tests' commands.

mod common;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use serde_json::json;
    use sshlab_testkit::SshdBuilder;

    use super::common::{Client, Era, server};

    /// A read that would take the output held past `--max-output-memory-mb` fails with a clear
    /// error naming the flag, and gives its bytes back: the next command runs. Before, any
    /// number of 16 MiB reads were held at once (48 took the server to 2.8 GB).
    #[tokio::test]
    async fn output_past_the_budget_is_refused_and_given_back() {
        let sshd = SshdBuilder::new()
            .password_user("testuser", "testpass")
            .start()
            .expect("sshd fixture");
        let dir = tempfile::Builder::new()
            .prefix("mcp-budget-")
            .tempdir_in("/tmp")
            .expect("tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let big = dir.path().join("big.txt");
        std::fs::write(&big, "x".repeat(3 * 1024 * 1024)).expect("write");
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o644)).expect("chmod");

        let srv = server(&["--max-output-memory-mb", "1"]).await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        let sid = c.connect_testuser(sshd.port).await;
        let err = c
            .call_err(
                "ssh_cat_file",
                json!({"session_id": sid, "path": big.display().to_string(),
                       "max_size": 4 * 1024 * 1024}),
            )
            .await;
        assert!(err.contains("--max-output-memory-mb 1"), "{err}");
        let ok = c
            .call_ok(
                "ssh_cat_file",
                json!({"session_id": sid, "path": "/etc/hostname"}),
            )
            .await;
        assert!(ok["bytes"].as_u64().unwrap_or(0) > 0, "{ok}");
        srv.stop().await.expect("stops");
    }
}
