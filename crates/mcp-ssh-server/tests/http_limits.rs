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

    use super::common::{http, loopback, metric, server, tcp_from};

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

    /// Idle sockets from many addresses hold every regular slot (each address under its own
    /// cap): `/health` from another address still gets an overflow slot.
    #[tokio::test]
    async fn health_answers_while_idle_sockets_hold_every_slot() {
        // 10 regular slots with a long head timeout, so idle sockets keep them; at most 2 per
        // address, so 100 addresses hold them.
        let srv = server(&[
            "--http-max-connections",
            "10",
            "--http-max-connections-per-address",
            "2",
            "--http-header-timeout-ms",
            "30000",
        ])
        .await;
        let addr = srv.addr;
        let mut held = Vec::new();
        for i in 0..200u8 {
            if let Ok(s) = tcp_from(loopback(i % 100 + 2), addr).await {
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

    /// One GET /health on a new connection from `from`: whether a 200 came within `limit`.
    async fn probe_health(addr: SocketAddr, from: std::net::IpAddr, limit: Duration) -> bool {
        let probe = async {
            let mut s = tcp_from(from, addr).await.ok()?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.ok()?;
            Some(got.starts_with(b"HTTP/1.1 200"))
        };
        matches!(tokio::time::timeout(limit, probe).await, Ok(Some(true)))
    }

    /// Raises the soft open-files limit to the hard one; returns the soft limit then.
    fn raise_open_files() -> u64 {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            hard
        } else {
            soft
        }
    }

    /// A slowloris from `from`: `sockets` connections, each sending one byte of a request head
    /// every `tick` and, when the server has closed it, reconnecting at its next tick. Runs
    /// until `stop`; returns how many connections it opened.
    async fn slowloris(
        addr: SocketAddr,
        from: std::net::IpAddr,
        sockets: usize,
        tick: Duration,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> usize {
        use std::sync::atomic::Ordering;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..sockets {
            let stop = stop.clone();
            tasks.spawn(async move {
                // Spread the ticks over the interval, as independent clients would be.
                tokio::time::sleep(tick.mul_f64(i as f64 / sockets as f64)).await;
                let head = b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                let mut opened = 0usize;
                let mut socket: Option<(TcpStream, usize)> = None;
                let mut ticks = tokio::time::interval(tick);
                while !stop.load(Ordering::Relaxed) {
                    ticks.tick().await;
                    let mut closed = false;
                    if let Some((s, sent)) = &mut socket {
                        let mut buf = [0u8; 256];
                        closed = match s.try_read(&mut buf) {
                            Ok(_) => true,
                            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                        };
                        if !closed {
                            let byte = head[*sent % head.len()];
                            closed = s.try_write(&[byte]).is_err();
                            *sent += 1;
                        }
                    }
                    if closed || socket.is_none() {
                        socket = tcp_from(from, addr).await.ok().map(|s| (s, 0));
                        opened += 1;
                    }
                }
                opened
            });
        }
        let mut opened = 0;
        while let Some(n) = tasks.join_next().await {
            opened += n.unwrap_or(0);
        }
        opened
    }

    /// Issue 25, item 1: a slowloris from one address that reconnects every socket the
    /// server closes (the 3,000 sockets, one header byte every 10 s, scaled to 1,200
    /// sockets ticking every second against 256 regular slots whose head timeout is 10 s).
    /// `/health` from another address must still be answered 99% of the time. Before, the
    /// attacker took every regular slot and, reconnecting hundreds of times a second, the
    /// overflow slots too: 73% of the probes were refused.
    #[tokio::test]
    async fn health_answers_under_a_reconnecting_slowloris_from_one_address() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        const REGULAR: usize = 256;
        // Each attacking socket is two descriptors here (the server runs in this process)
        // while the server holds it; keep 600 for the server's side and everything else.
        let open_files = raise_open_files();
        let sockets = 1_200.min(usize::try_from(open_files.saturating_sub(600)).unwrap_or(0));
        assert!(
            sockets >= 3 * (REGULAR + 32),
            "RLIMIT_NOFILE {open_files} is too low for this test (raise ulimit -n to 2000)"
        );
        let srv = server(&[
            "--http-max-connections",
            &REGULAR.to_string(),
            "--http-header-timeout-ms",
            "10000",
        ])
        .await;
        let addr = srv.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let attack = tokio::spawn(slowloris(
            addr,
            loopback(66),
            sockets,
            Duration::from_secs(1),
            stop.clone(),
        ));
        // Let it take what it can, then probe for 20 s.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (mut answered, mut probes) = (0, 0);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            let t = Instant::now();
            probes += 1;
            if probe_health(addr, loopback(1), Duration::from_secs(2)).await {
                answered += 1;
            }
            tokio::time::sleep(Duration::from_millis(150).saturating_sub(t.elapsed())).await;
        }
        let refused = srv.app.metrics.http_connections_refused.get();
        stop.store(true, Ordering::Relaxed);
        let opened = attack.await.expect("attack task");
        eprintln!(
            "slowloris: {sockets} sockets opened {opened} connections; the server refused \
             {refused}; /health answered {answered} of {probes}"
        );
        assert!(
            opened > 2 * sockets,
            "the attack did not reconnect ({opened} connections from {sockets} sockets)"
        );
        assert!(
            answered * 100 >= probes * 99,
            "/health answered {answered} of {probes} probes under the slowloris"
        );
        srv.stop().await.expect("stops");
    }
}
