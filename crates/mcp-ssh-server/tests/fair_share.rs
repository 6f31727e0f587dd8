//! One address, or a few, flooding what every client needs, against the real server (and real
//! sshd where SSH is involved): the pool slots and key decoders that `ssh_connect` uses, and
//! the 2025-era MCP sessions. Each client address is a distinct loopback address (127.0.0.x).

mod common;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::common::{Client, Era, key_with_rounds, loopback, server, sshd_testuser};

    /// Issue 25, item 3: twenty concurrent `ssh_connect` calls with 256-round keys (a wrong
    /// passphrase: they need not even be valid) from one address, each caller its own MCP
    /// session and within the default rate limits, while a client at another address
    /// connects 20 times with the right password (a new connection each time). It must be
    /// served at least 19 times. Before, the flood's callers reserved the target's 10 pool
    /// slots while their keys waited to be decoded, and the client was refused "pool
    /// exhausted (10/10)" on most attempts.
    #[tokio::test]
    async fn a_key_flood_leaves_the_pool_to_clients_with_the_right_password() {
        const FLOODERS: usize = 20;
        let sshd = sshd_testuser();
        let srv = server(&[]).await;
        let addr = srv.addr;
        let key = Arc::new(key_with_rounds(256));
        let stop = Arc::new(AtomicBool::new(false));
        let flood_calls = Arc::new(AtomicUsize::new(0));
        let mut flood = tokio::task::JoinSet::new();
        for _ in 0..FLOODERS {
            let (key, stop, calls) = (key.clone(), stop.clone(), flood_calls.clone());
            let port = sshd.port;
            flood.spawn(async move {
                let mut c = Client::connect_from(Some(loopback(77)), addr, Era::Legacy).await;
                let args = json!({"host": "127.0.0.1", "port": port, "user": "testuser",
                                  "private_key": *key, "passphrase": "wrong",
                                  "insecure_host_key": true});
                while !stop.load(Ordering::Relaxed) {
                    // One call every 6 s at most: 20 callers stay within the address's 200
                    // requests a minute.
                    let next = Instant::now() + Duration::from_secs(6);
                    c.call("ssh_connect", args.clone()).await;
                    calls.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep_until(next.into()).await;
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;

        let mut c = Client::connect(addr, Era::Legacy).await;
        let password = json!({"host": "127.0.0.1", "port": sshd.port, "user": "testuser",
                              "password": "testpass", "insecure_host_key": true,
                              "reuse": false});
        let mut served = 0;
        let mut refusals = Vec::new();
        let started = Instant::now();
        for _ in 0..20 {
            let r = c.call("ssh_connect", password.clone()).await;
            if r["isError"] == false {
                served += 1;
                let sid = &r["structuredContent"]["session_id"];
                c.call_ok("ssh_disconnect", json!({"session_id": sid}))
                    .await;
            } else {
                refusals.push(r["content"][0]["text"].to_string());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        while flood.join_next().await.is_some() {}
        refusals.dedup();
        eprintln!(
            "key flood: the right password was served {served} of 20 times in {took:?}, during \
             {} flood calls; refusals: {refusals:?}",
            flood_calls.load(Ordering::Relaxed)
        );
        assert!(served >= 19, "served {served} of 20: {refusals:?}");
        srv.stop().await.expect("stops");
    }
}
