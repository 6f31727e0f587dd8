//! Idle, slow and half-sent HTTP clients against the real server (in-process, real sockets):
//! each is closed within its timeout, connections past the cap are bounded, and `GET /health`
//! still answers while idle sockets hold every regular connection slot. Before, 2,000 idle or
//! half-sent connections stayed open for over 130 s and 1,100 of them exhausted
//! `ulimit -n 1024`, so the server stopped accepting anything.

mod common;

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::common::{http, metric, server};

    /// Reads until the server closes the connection (or `limit` passes); returns how long that
    /// took and what was read, `None` when the connection was still open at `limit`.
    async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<(Duration, String)> {
        let started = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = limit.checked_sub(started.elapsed())?;
            match tokio::time::timeout(left, s.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return Some((started.elapsed(), String::from_utf8_lossy(&got).into()));
                }
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    async fn health(addr: SocketAddr) -> bool {
        http()
            .get(format!("http://{addr}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    }

    #[tokio::test]
    async fn idle_and_half_sent_clients_are_closed_in_time() {
        let srv = server(&[
            "--http-header-timeout-ms",
            "500",
            "--http-body-timeout-ms",
            "500",
        ])
        .await;
        let addr = srv.addr;
        // Connected, never a byte.
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        // Half a request head.
        let mut half_head = TcpStream::connect(addr).await.expect("connect");
        half_head
            .write_all(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            .await
            .expect("write");
        // A complete head, then 10 of the 100 body bytes it announces.
        let mut half_body = TcpStream::connect(addr).await.expect("connect");
        half_body
            .write_all(
                b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Accept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"",
            )
            .await
            .expect("write");
        // A kept-alive connection after one answered request.
        let mut kept = TcpStream::connect(addr).await.expect("connect");
        kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut first = [0u8; 12];
        kept.read_exact(&mut first).await.expect("answer");
        assert_eq!(&first, b"HTTP/1.1 200");

        for (what, s) in [
            ("idle", &mut idle),
            ("half head", &mut half_head),
            ("half body", &mut half_body),
            ("kept alive", &mut kept),
        ] {
            let closed = closed_within(s, Duration::from_secs(3)).await;
            let Some((after, _)) = closed else {
                panic!("{what}: still open after 3 s");
            };
            assert!(
                after < Duration::from_millis(2_500),
                "{what}: closed after {after:?}"
            );
        }
        assert!(health(addr).await);
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn health_answers_while_idle_sockets_hold_every_slot() {
        // 10 regular slots with a long head timeout, so idle sockets keep them.
        let srv = server(&[
            "--http-max-connections",
            "10",
            "--http-header-timeout-ms",
            "30000",
        ])
        .await;
        let addr = srv.addr;
        let mut held = Vec::new();
        for _ in 0..200 {
            if let Ok(s) = TcpStream::connect(addr).await {
                held.push(s);
            }
        }
        // Overflow slots free up after a one-second head timeout: /health gets through.
        let started = Instant::now();
        let mut ok = false;
        while !ok && started.elapsed() < Duration::from_secs(5) {
            ok = health(addr).await;
            if !ok {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert!(ok, "/health unreachable while idle sockets hold the slots");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // The regular and overflow slots took 42; every other socket was closed on arrival.
        assert!(
            metric(addr, "mcp_http_connections_refused_total").await >= 150.0,
            "connections past the cap must be closed, not kept"
        );
        drop(held);
        srv.stop().await.expect("stops");
    }
}
