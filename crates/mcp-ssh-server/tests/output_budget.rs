//! The server-wide budget for command output held in memory, against real sshd. Its own test
//! binary: the budget is process-wide, and a small one would starve other tests' commands.

mod common;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use serde_json::json;

    use super::common::{Client, Era, metric, server, shared_tmp_dir, sshd_testuser, start_binary};

    /// A real sshd with testuser, and a world-readable file of `size` bytes for it to read.
    fn sshd_and_file(size: usize) -> (sshlab_testkit::Sshd, tempfile::TempDir, std::path::PathBuf) {
        let sshd = sshd_testuser();
        let dir = shared_tmp_dir("mcp-budget-");
        let big = dir.path().join("big.txt");
        std::fs::write(&big, "x".repeat(size)).expect("write");
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        (sshd, dir, big)
    }

    /// The next command runs: the budget has room again.
    async fn reads_a_small_file(c: &mut Client, sid: &str) {
        let ok = c
            .call_ok(
                "ssh_cat_file",
                json!({"session_id": sid, "path": "/etc/hostname"}),
            )
            .await;
        assert!(ok["bytes"].as_u64().unwrap_or(0) > 0, "{ok}");
    }

    /// Asks for `path` (`size` bytes) with `ssh_cat_file` in the 2025-era MCP session
    /// `mcp_session`, on a raw socket with a receive buffer of `rcvbuf` bytes, and returns the
    /// socket unread: the test decides how (or whether) its client reads.
    async fn raw_cat_file(
        addr: std::net::SocketAddr,
        mcp_session: &str,
        sid: &str,
        path: &std::path::Path,
        size: usize,
        rcvbuf: u32,
    ) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        let mut stream = socket.connect(addr).await.expect("connect");
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "ssh_cat_file",
            "arguments": {"session_id": sid, "path": path.display().to_string(), "max_size": size}}})
        .to_string();
        let head = format!(
            "POST /mcp HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             accept: application/json\r\nmcp-session-id: {mcp_session}\r\n\
             mcp-protocol-version: 2025-11-25\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("send head");
        stream.write_all(body.as_bytes()).await.expect("send body");
        stream
    }

    /// A read that would take the output held past `--max-output-memory-mb` fails with a clear
    /// error naming the flag, and gives its bytes back: the next command runs. Before, any
    /// number of 16 MiB reads were held at once (48 took the server to 2.8 GB).
    /// The budget is process-wide: its tests run one after the other, in one test (plain
    /// `cargo test` runs a binary's tests in parallel threads of one process).
    #[tokio::test]
    async fn the_output_budget() {
        output_past_the_budget_is_refused_and_given_back().await;
        a_client_that_stops_reading_is_cut_off_and_its_response_freed().await;
        a_client_that_reads_too_slowly_is_cut_off_at_the_send_deadline().await;
    }

    async fn output_past_the_budget_is_refused_and_given_back() {
        let (sshd, _dir, big) = sshd_and_file(3 * 1024 * 1024);

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
        reads_a_small_file(&mut c, &sid).await;
        srv.stop().await.expect("stops");
    }

    /// A client that asks for a large file and then stops reading: its response stays charged
    /// to the output budget while it waits (so new output is refused rather than piled up),
    /// and the write timeout cuts the client off and gives the charge back. Before, the
    /// response was never counted, and a client that never read held it, and its connection,
    /// forever.
    async fn a_client_that_stops_reading_is_cut_off_and_its_response_freed() {
        use mcp_ssh_server::budget;
        use std::time::{Duration, Instant};
        use tokio::io::AsyncReadExt;

        let size = 12 * 1024 * 1024;
        let (sshd, _dir, big) = sshd_and_file(size);

        let srv = server(&[
            "--max-output-memory-mb",
            "16",
            "--http-write-timeout-ms",
            "1500",
        ])
        .await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        let sid = c.connect_testuser(sshd.port).await;
        let mcp_session = c.session.clone().expect("2025-era session");

        // A client with a tiny receive window that sends the request and reads nothing.
        let mut stream = raw_cat_file(srv.addr, &mcp_session, &sid, &big, size, 4096).await;

        // The response is encoded and stuck: most of it is still charged.
        let deadline = Instant::now() + Duration::from_secs(20);
        while budget::SERVER.used() < size / 2 {
            assert!(
                Instant::now() < deadline,
                "the stalled response is not charged ({} bytes)",
                budget::SERVER.used()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // (Collection is charged too; by now the output has long been collected and sits in
        // the response.)
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            budget::SERVER.used() >= size / 2,
            "the stalled response is not charged ({} bytes)",
            budget::SERVER.used()
        );
        let charged_at = Instant::now();
        // Meanwhile a new large read does not fit next to it.
        let err = c
            .call_err(
                "ssh_cat_file",
                json!({"session_id": sid, "path": big.display().to_string(), "max_size": size}),
            )
            .await;
        assert!(err.contains("--max-output-memory-mb"), "{err}");

        // The write timeout cuts the client off, and the charge comes back.
        while budget::SERVER.used() > 0 {
            assert!(
                charged_at.elapsed() < Duration::from_secs(15),
                "the stalled client was never cut off ({} bytes still charged)",
                budget::SERVER.used()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // What the client can still read ends well short of the whole response.
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
            .await
            .expect("the server closed the connection");
        assert!(
            read.is_err() || got.len() < size,
            "the whole response arrived ({} bytes): the client was not cut off",
            got.len()
        );
        // And the server still serves.
        reads_a_small_file(&mut c, &sid).await;
        srv.stop().await.expect("stops");
    }

    /// A client that keeps reading, about 1 MiB/s, so each write goes through within the
    /// write timeout and it never fires: before the send deadline it held its 16 MiB response
    /// and the charge for it to the end (~16 s here). Now it has the write timeout plus the
    /// response's size at `--http-min-send-rate-kib` (4 s + 1 s), then the server closes the
    /// connection and the charge comes back.
    async fn a_client_that_reads_too_slowly_is_cut_off_at_the_send_deadline() {
        use mcp_ssh_server::budget;
        use std::time::{Duration, Instant};
        use tokio::io::AsyncReadExt;

        let size = 16 * 1024 * 1024;
        let (sshd, _dir, big) = sshd_and_file(size);
        let srv = server(&[
            "--max-output-memory-mb",
            "64",
            "--http-write-timeout-ms",
            "4000",
            "--http-min-send-rate-kib",
            "16384",
        ])
        .await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        let sid = c.connect_testuser(sshd.port).await;
        let mcp_session = c.session.clone().expect("2025-era session");

        let mut stream = raw_cat_file(srv.addr, &mcp_session, &sid, &big, size, 256 * 1024).await;

        // Wait for the response to be charged, then read ~100 KiB every 100 ms until the
        // charge is given back. (The client cannot see the cut itself soon: the kernel still
        // delivers what it had queued, up to the socket's send buffer, before the FIN.)
        let wait_until = Instant::now() + Duration::from_secs(20);
        while budget::SERVER.used() < size / 2 {
            assert!(
                Instant::now() < wait_until,
                "the response was never charged"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let charged_at = Instant::now();
        let mut got = 0usize;
        let mut buf = vec![0u8; 100 * 1024];
        let released_after = loop {
            if budget::SERVER.used() == 0 {
                break charged_at.elapsed();
            }
            assert!(
                charged_at.elapsed() < Duration::from_secs(30),
                "the slow reader still holds {} bytes of charge after 30 s ({got} bytes read)",
                budget::SERVER.used()
            );
            let mut this_tick = 0;
            while this_tick < buf.len() {
                let want = buf.len() - this_tick;
                match tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf[..want]))
                    .await
                {
                    Ok(Ok(0) | Err(_)) => {
                        panic!("the connection ended before the charge came back")
                    }
                    Ok(Ok(n)) => this_tick += n,
                    Err(_) => break,
                }
            }
            got += this_tick;
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            released_after >= Duration::from_millis(4500) - Duration::from_millis(500),
            "charge given back after {released_after:?}, before the deadline of 5 s"
        );
        assert!(
            released_after < Duration::from_secs(9),
            "charge given back only after {released_after:?}: no deadline cut the client off"
        );
        assert!(
            got < size / 2,
            "{got} bytes read: the client was not slow enough to test anything"
        );
        drop(stream);
        // The server serves.
        reads_a_small_file(&mut c, &sid).await;
        srv.stop().await.expect("stops");
    }

    /// Issue 25, item 5: the server's resident memory follows what the output budget says it
    /// holds. The real binary (its own allocator settings) sends a 32 MiB response (a 16 MiB
    /// file, twice in the JSON) in full, then another to a client that reads three quarters
    /// of it and stops. Once a response is sent, the memory is given back; while one is
    /// stalled, what is resident beyond a fresh server's size is what the budget holds.
    /// Before, the budget gave the response's charge back piece by piece while the whole
    /// 32 MiB buffer stayed resident (the issue: 353 MiB resident once the budget said it
    /// was free).
    #[tokio::test]
    async fn resident_memory_follows_the_output_budget() {
        use std::time::Duration;
        use tokio::io::AsyncReadExt;
        const MIB: u64 = 1024 * 1024;
        let size = 16 * 1024 * 1024;
        let (sshd, _dir, big) = sshd_and_file(size);
        // No send deadline and a long write timeout: the stalled client is not cut off.
        let (srv, addr) = start_binary(&[
            "--http-min-send-rate-kib",
            "0",
            "--http-write-timeout-ms",
            "60000",
        ])
        .await;
        let mut c = Client::connect(addr, Era::Legacy).await;
        let sid = c.connect_testuser(sshd.port).await;
        let mcp_session = c.session.clone().expect("2025-era session");

        // One read in full first, so the baseline is that of a server that has sent one.
        let t0 = std::time::Instant::now();
        let fresh = srv.rss();
        let mut warm = raw_cat_file(addr, &mcp_session, &sid, &big, size, 1 << 20).await;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        while got < 2 * size {
            let n = warm.read(&mut buf).await.expect("read");
            assert!(n > 0, "the response ended after {got} bytes");
            got += n;
        }
        drop(warm);
        eprintln!("warm read done after {:?}", t0.elapsed());
        // Settled: two readings half a second apart within 1 MiB.
        let mut baseline = srv.rss();
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = srv.rss();
            if now.abs_diff(baseline) < MIB {
                break;
            }
            baseline = now;
        }
        eprintln!(
            "baseline settled after {:?}: fresh {} MiB, after one response {} MiB",
            t0.elapsed(),
            fresh / MIB,
            baseline / MIB
        );

        let mut slow = raw_cat_file(addr, &mcp_session, &sid, &big, size, 64 * 1024).await;
        let mut got = 0;
        while got < 3 * size / 2 {
            let n = slow.read(&mut buf).await.expect("read");
            assert!(n > 0, "the response ended after {got} bytes");
            got += n;
        }
        eprintln!("three quarters read after {:?}", t0.elapsed());
        // The server writes what the socket buffers take, then waits for the client.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = metric(addr, "mcp_output_memory_bytes").await as u64;
        let rss = srv.rss();
        let grown = rss.saturating_sub(fresh);
        eprintln!(
            "resident memory: fresh {} MiB, with the stalled response {} MiB (+{} MiB); the \
             budget holds {} MiB",
            fresh / MIB,
            rss / MIB,
            grown / MIB,
            held / MIB
        );
        assert!(
            baseline <= fresh + 8 * MIB,
            "{} MiB stayed resident after the response was sent ({} MiB fresh)",
            baseline / MIB,
            fresh / MIB
        );
        assert!(held > 0, "the stalled response is not charged");
        assert!(
            grown <= held + 8 * MIB,
            "resident memory grew {} MiB while the budget holds {} MiB",
            grown / MIB,
            held / MIB
        );
        drop(slow);
    }
}
