//! Every tool against a real OpenSSH sshd that the test starts (generated host key, random
//! port, a password user and a key user), in both protocol eras; plus pool, ownership,
//! allowlist, timeouts and failures. Needs root (the sshd fixture runs sshd in a private
//! mount namespace with generated passwd/shadow files).

mod common;

#[cfg(test)]
mod tests {

    use std::time::{Duration, Instant};

    use super::common::{Client, Era, key_with_rounds, metric, server, shared_tmp_dir};
    use serde_json::{Value, json};
    use sshlab_testkit::{Sshd, SshdBuilder};

    fn sshd() -> Sshd {
        SshdBuilder::new()
            .password_user("testuser", "testpass")
            .key_user("keyuser")
            // Debian gives non-root users no /usr/sbin in PATH; `tc` and `nft` live there.
            .extra_config("SetEnv PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .start()
            .expect("sshd fixture starts (needs root and openssh-server)")
    }

    fn password_args(sshd: &Sshd) -> Value {
        json!({"host": "127.0.0.1", "port": sshd.port, "user": "testuser", "password": "testpass",
           "insecure_host_key": true})
    }

    async fn connect(c: &mut Client, sshd: &Sshd) -> String {
        let r = c.call_ok("ssh_connect", password_args(sshd)).await;
        r["session_id"].as_str().expect("session_id").to_owned()
    }

    fn machine_hostname() -> String {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("hostname")
            .trim()
            .to_owned()
    }

    #[tokio::test]
    async fn every_tool_works_in_both_eras() {
        let sshd = sshd();
        let srv = server(&[
            "--known-hosts",
            sshd.known_hosts_file().to_str().expect("utf8"),
        ])
        .await;
        let binary = tempfile_in_tmp(b"\x00\x01\x02binary\xff");
        for era in [Era::Legacy, Era::Modern] {
            // A stateless client is identified by its bearer token (without one, nothing is
            // listed: sessions_belong_to_their_owner).
            let mut c = Client::connect(srv.addr, era)
                .await
                .with_bearer("every-tool");
            // Host key checked against known_hosts (no insecure flag).
            let mut args = password_args(&sshd);
            args["insecure_host_key"] = json!(false);
            let s = c.call_ok("ssh_connect", args).await;
            let sid = s["session_id"].as_str().expect("id").to_owned();
            assert!(
                sid.starts_with("ssh_") && sid.len() > 20,
                "unguessable handle: {sid}"
            );

            let r = c
                .call_ok(
                    "ssh_run_command",
                    json!({"session_id": sid, "command": "hostname"}),
                )
                .await;
            assert_eq!(r["exit_status"], 0);
            assert_eq!(
                r["stdout"].as_str().expect("stdout").trim(),
                machine_hostname()
            );
            let r = c
                .call_ok(
                    "ssh_run_command",
                    json!({"session_id": sid, "command": "whoami"}),
                )
                .await;
            assert_eq!(r["stdout"].as_str().expect("stdout").trim(), "testuser");
            let r = c
                .call_ok(
                    "ssh_run_command",
                    json!({"session_id": sid, "command": "cat /etc/hostname"}),
                )
                .await;
            assert_eq!(r["exit_status"], 0, "{r}");
            let r = c
                .call_ok(
                    "ssh_run_command",
                    json!({"session_id": sid, "command": "cat /etc/no-such-file"}),
                )
                .await;
            assert_ne!(r["exit_status"], 0);
            assert!(
                r["stderr"]
                    .as_str()
                    .expect("stderr")
                    .contains("No such file"),
                "{r}"
            );

            let r = c.call_ok("ssh_hostname", json!({"session_id": sid})).await;
            assert_eq!(r["hostname"], machine_hostname());

            let r = c
                .call_ok(
                    "ssh_cat_file",
                    json!({"session_id": sid, "path": "/etc/hostname"}),
                )
                .await;
            assert_eq!(
                (r["encoding"].clone(), r["truncated"].clone()),
                (json!("text"), json!(false))
            );
            assert_eq!(
                r["content"].as_str().expect("content").trim(),
                machine_hostname()
            );
            let r = c
                .call_ok(
                    "ssh_cat_file",
                    json!({"session_id": sid, "path": binary.to_str().expect("utf8")}),
                )
                .await;
            assert_eq!(r["encoding"], "base64", "{r}");
            let r = c
                .call_ok(
                    "ssh_cat_file",
                    json!({"session_id": sid, "path": "/etc/services", "max_size": 100}),
                )
                .await;
            assert_eq!(
                (r["bytes"].clone(), r["truncated"].clone()),
                (json!(100), json!(true))
            );

            let r = c.call_ok("ssh_list_sessions", json!({})).await;
            assert_eq!(r["count"], 1);
            assert_eq!(r["sessions"][0]["session_id"], sid.as_str());

            let r = c
                .call_ok(
                    "ssh_batch_commands",
                    json!({"session_id": sid, "commands": ["hostname", "whoami", "id"]}),
                )
                .await;
            assert_eq!(
                (r["executed"].clone(), r["all_success"].clone()),
                (json!(3), json!(true))
            );
            let r = c.call_ok("ssh_batch_commands", json!({"session_id": sid, "commands": ["cat /etc/nope", "id"], "stop_on_error": true})).await;
            assert_eq!(
                (r["executed"].clone(), r["all_success"].clone()),
                (json!(1), json!(false))
            );

            let r = c
                .call_ok(
                    "ssh_network_interfaces",
                    json!({"session_id": sid, "interface": "lo"}),
                )
                .await;
            assert_eq!(r["data"][0]["ifname"], "lo", "{r}");
            let r = c
                .call_ok(
                    "ssh_network_interfaces",
                    json!({"session_id": sid, "include_stats": true}),
                )
                .await;
            assert!(r["data"].as_array().is_some_and(|a| !a.is_empty()), "{r}");
            let r = c
                .call_ok(
                    "ssh_network_routes",
                    json!({"session_id": sid, "family": "inet"}),
                )
                .await;
            assert!(r["ipv4"].is_array() && r["ipv6"].is_null(), "{r}");
            let r = c
                .call_ok(
                    "ssh_network_qdisc",
                    json!({"session_id": sid, "interface": "lo"}),
                )
                .await;
            assert!(r["data"].is_array(), "{r}");
            // nft or iptables may be missing or need privileges on a test machine: either a result
            // or a clear tool error, never a protocol error.
            let r = c
                .call("ssh_network_firewall", json!({"session_id": sid}))
                .await;
            assert!(
                r["isError"].is_boolean() && r["content"][0]["text"].is_string(),
                "{r}"
            );
            let r = c.call_ok("ssh_network_connectivity", json!({"session_id": sid, "target": "127.0.0.1", "tests": ["ping"], "ping_count": 1})).await;
            assert_eq!(r["results"][0]["success"], true, "{r}");

            let r = c
                .call_ok("ssh_pool_stats", json!({"host": "127.0.0.1"}))
                .await;
            assert_eq!(r["pools"][0]["active"], 1, "{r}");

            let r = c
                .call_ok("ssh_disconnect", json!({"session_id": sid}))
                .await;
            assert_eq!(r["pooled"], true);
            let err = c
                .call_err(
                    "ssh_run_command",
                    json!({"session_id": sid, "command": "id"}),
                )
                .await;
            assert!(err.contains("session not found"), "{err}");
            // The next connect with the same credentials reuses the pooled connection.
            let r = c.call_ok("ssh_connect", password_args(&sshd)).await;
            assert_eq!(r["reused"], true);
            c.call_ok("ssh_disconnect", json!({"session_id": r["session_id"]}))
                .await;
        }
        assert_eq!(metric(srv.addr, "mcp_ssh_sessions_active").await, 0.0);
        assert_eq!(
            metric(srv.addr, "mcp_pool_connections{state=\"active\"}").await,
            0.0
        );
        assert!(metric(srv.addr, "mcp_pool_hits_total").await >= 2.0);
        assert!(metric(srv.addr, "mcp_ssh_commands_total{status=\"success\"}").await >= 10.0);
        assert!(metric(srv.addr, "mcp_ssh_command_duration_seconds_count").await >= 10.0);
        srv.stop().await.expect("stops");
        std::fs::remove_file(binary).ok();
    }

    fn tempfile_in_tmp(data: &[u8]) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(format!(
            "mcp-bin-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let p = std::path::PathBuf::from(p.to_string_lossy().replace([' ', '{', '}', ':'], "_"));
        std::fs::write(&p, data).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        p
    }

    /// A key that names its own absurd work factor is refused before decoding; keys that are
    /// slow to decode are decoded off the async runtime and within the connect budget, so
    /// `/health` keeps answering. Before, two such keys stopped the server for hours.
    #[tokio::test]
    async fn costly_keys_never_stall_the_server() {
        let srv = server(&[]).await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        // Nothing listens on this port: decoding comes first anyway.
        let args = |key: &str, timeout_ms: u64| {
            json!({"host": "127.0.0.1", "port": 1, "user": "u", "private_key": key,
                   "passphrase": "pass", "insecure_host_key": true, "timeout_ms": timeout_ms})
        };
        let started = Instant::now();
        let err = c
            .call_err("ssh_connect", args(&key_with_rounds(2_000_000_000), 10_000))
            .await;
        assert!(err.contains("2000000000 bcrypt rounds"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );

        // Three slow (but allowed) keys at once, with a 1.5 s budget each.
        let slow = key_with_rounds(256);
        let addr = srv.addr;
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let a = args(&slow, 1_500);
                let sid = c.session.clone();
                tokio::spawn(async move {
                    let mut w = Client::connect(addr, Era::Legacy).await;
                    w.session = sid;
                    let t = Instant::now();
                    let r = w.call("ssh_connect", a).await;
                    (t.elapsed(), r)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..5 {
            let t = Instant::now();
            let h = super::common::http()
                .get(format!("http://{addr}/health"))
                .send()
                .await
                .expect("/health answers");
            assert_eq!(h.status(), 200);
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "/health took {:?}",
                t.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for call in calls {
            let (took, r) = call.await.expect("task");
            assert_eq!(r["isError"], true, "{r}");
            assert!(took < Duration::from_secs(4), "{took:?}: {r}");
        }
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn key_auth_and_connect_failures() {
        let sshd = sshd();
        let empty = tempfile_in_tmp(b"");
        let srv = server(&["--known-hosts", empty.to_str().expect("utf8")]).await;
        let mut c = Client::connect(srv.addr, Era::Modern).await;
        let r = c
            .call_ok(
                "ssh_connect",
                json!({"host": "127.0.0.1", "port": sshd.port, "user": "keyuser",
            "private_key": sshd.private_key_pem("keyuser"), "insecure_host_key": true}),
            )
            .await;
        let sid = r["session_id"].as_str().expect("id");
        let w = c
            .call_ok(
                "ssh_run_command",
                json!({"session_id": sid, "command": "whoami"}),
            )
            .await;
        assert_eq!(w["stdout"].as_str().expect("out").trim(), "keyuser");

        let mut bad = password_args(&sshd);
        bad["password"] = json!("wrong");
        let err = c.call_err("ssh_connect", bad).await;
        assert!(err.contains("authentication failed"), "{err}");

        // known_hosts has no entry for this server: refused unless insecure.
        let mut strict = password_args(&sshd);
        strict["insecure_host_key"] = json!(false);
        let err = c.call_err("ssh_connect", strict).await;
        assert!(err.to_lowercase().contains("host key"), "{err}");

        let closed = sshlab_testkit::free_port();
        let err = c
        .call_err("ssh_connect", json!({"host": "127.0.0.1", "port": closed, "user": "u", "password": "p", "insecure_host_key": true}))
        .await;
        assert!(err.contains("refused"), "{err}");
        let err = c
        .call_err("ssh_connect", json!({"host": "no-such-host.invalid", "port": 22, "user": "u", "password": "p", "insecure_host_key": true}))
        .await;
        assert!(!err.is_empty(), "unresolvable host gives an error: {err}");

        // A listener that accepts and never speaks SSH: a bounded connect timeout.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let started = Instant::now();
        let err = c
            .call_err(
                "ssh_connect",
                json!({"host": "127.0.0.1", "port": port, "user": "u", "password": "p",
            "insecure_host_key": true, "timeout_ms": 500}),
            )
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bounded: {:?}",
            started.elapsed()
        );
        assert!(
            err.contains("timed out") || err.contains("timeout"),
            "{err}"
        );
        drop(silent);
        // Failed connects leave no slot behind.
        assert_eq!(
            metric(srv.addr, "mcp_pool_connections{state=\"active\"}").await,
            1.0
        );
        srv.stop().await.expect("stops");
        std::fs::remove_file(empty).ok();
    }

    #[tokio::test]
    async fn sessions_belong_to_their_owner() {
        let sshd = sshd();
        let srv = server(&[]).await;
        let mut a = Client::connect(srv.addr, Era::Legacy).await;
        let mut b = Client::connect(srv.addr, Era::Legacy).await;
        let sid = connect(&mut a, &sshd).await;
        let err = b
            .call_err(
                "ssh_run_command",
                json!({"session_id": sid, "command": "id"}),
            )
            .await;
        assert!(err.contains("not owned"), "{err}");
        let err = b
            .call_err("ssh_disconnect", json!({"session_id": sid}))
            .await;
        assert!(err.contains("not owned"), "{err}");
        assert_eq!(b.call_ok("ssh_list_sessions", json!({})).await["count"], 0);

        // Stateless clients are told apart by their bearer token.
        let mut t1 = Client::connect(srv.addr, Era::Modern)
            .await
            .with_bearer("alice");
        let mut t2 = Client::connect(srv.addr, Era::Modern)
            .await
            .with_bearer("bob");
        let sid2 = connect(&mut t1, &sshd).await;
        let err = t2
            .call_err("ssh_hostname", json!({"session_id": sid2}))
            .await;
        assert!(err.contains("not owned"), "{err}");
        t1.call_ok("ssh_hostname", json!({"session_id": sid2}))
            .await;
        // A 2025 session can't use a stateless client's handle either.
        let err = a
            .call_err("ssh_hostname", json!({"session_id": sid2}))
            .await;
        assert!(err.contains("not owned"), "{err}");

        // Ending an MCP session releases the SSH sessions it owns.
        assert_eq!(metric(srv.addr, "mcp_ssh_sessions_active").await, 2.0);
        assert_eq!(a.delete().await, 200);
        assert_eq!(metric(srv.addr, "mcp_ssh_sessions_active").await, 1.0);
        assert_eq!(
            metric(srv.addr, "mcp_pool_connections{state=\"idle\"}").await,
            1.0
        );

        // Stateless clients without a token share an address (here 127.0.0.1), which proves
        // nothing: the handle is the owner's proof, and no list hands it to anyone.
        let mut n1 = Client::connect(srv.addr, Era::Modern).await;
        let mut n2 = Client::connect(srv.addr, Era::Modern).await;
        let sid3 = connect(&mut n1, &sshd).await;
        for c in [&mut n1, &mut n2] {
            let listed = c.call_ok("ssh_list_sessions", json!({})).await;
            assert_eq!(listed["count"], 0, "{listed}");
            assert!(!listed.to_string().contains(&sid3), "{listed}");
        }
        n1.call_ok("ssh_hostname", json!({"session_id": sid3}))
            .await;
        // A bearer's or a 2025 session's handle stays theirs.
        let err = n2
            .call_err("ssh_hostname", json!({"session_id": sid2}))
            .await;
        assert!(err.contains("not owned"), "{err}");
        srv.stop().await.expect("stops");
    }

    /// Issue 25: `ssh_pool_stats` shows a client the targets of its own sessions only. Before,
    /// every client's `user@host:port` was listed to anyone.
    #[tokio::test]
    async fn pool_stats_show_only_the_callers_targets() {
        let sshd = sshd();
        let srv = server(&[]).await;
        let mut alice = Client::connect(srv.addr, Era::Legacy).await;
        let _sid = connect(&mut alice, &sshd).await;
        let target = format!("testuser@127.0.0.1:{}", sshd.port);
        let mut eve = Client::connect(srv.addr, Era::Legacy).await;
        let mut anonymous = Client::connect(srv.addr, Era::Modern).await;
        for (who, c) in [("eve", &mut eve), ("a tokenless client", &mut anonymous)] {
            let r = c.call_ok("ssh_pool_stats", json!({})).await;
            assert_eq!(
                r["pools"],
                json!([]),
                "{who} sees another client's targets: {r}"
            );
        }
        let r = alice.call_ok("ssh_pool_stats", json!({})).await;
        assert_eq!(r["pools"][0]["target"], target.as_str(), "{r}");
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn the_allowlist_blocks_and_counts() {
        let sshd = sshd();
        let srv = server(&[]).await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        let sid = connect(&mut c, &sshd).await;
        for cmd in [
            "ls | wc",
            "cat /etc/shadow",
            "rm -rf /tmp",
            "id; id",
            "echo $HOME",
            "hostname evil",
            "cat /etc/../etc/shadow",
        ] {
            let err = c
                .call_err(
                    "ssh_run_command",
                    json!({"session_id": sid, "command": cmd}),
                )
                .await;
            assert!(err.starts_with("Command not permitted: "), "{cmd}: {err}");
        }
        let err = c
            .call_err(
                "ssh_cat_file",
                json!({"session_id": sid, "path": "/etc/sudoers.d/x"}),
            )
            .await;
        assert!(err.starts_with("Command not permitted: "), "{err}");
        let err = c
            .call_err(
                "ssh_batch_commands",
                json!({"session_id": sid, "commands": ["id", "id && id"]}),
            )
            .await;
        assert!(err.starts_with("Command not permitted: "), "{err}");
        assert_eq!(
            metric(srv.addr, "mcp_ssh_commands_blocked_total").await,
            9.0
        );
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn command_timeout_leaves_the_session_usable() {
        let sshd = sshd();
        let srv = server(&[]).await;
        let mut c = Client::connect(srv.addr, Era::Modern).await;
        let sid = connect(&mut c, &sshd).await;
        let started = Instant::now();
        let err = c
            .call_err(
                "ssh_run_command",
                json!({"session_id": sid, "command": "ping -c 5 127.0.0.1", "timeout_ms": 400}),
            )
            .await;
        assert!(err.contains("timed out"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        c.call_ok(
            "ssh_run_command",
            json!({"session_id": sid, "command": "id"}),
        )
        .await;
        assert_eq!(
            metric(srv.addr, "mcp_ssh_commands_total{status=\"timeout\"}").await,
            1.0
        );
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn sshd_killed_mid_command_fails_fast_and_the_connection_is_not_pooled() {
        let mut sshd = sshd();
        let srv = server(&[]).await;
        let mut c = Client::connect(srv.addr, Era::Modern).await;
        let sid = connect(&mut c, &sshd).await;
        let addr = srv.addr;
        let sid2 = sid.clone();
        let running = tokio::spawn(async move {
            let mut c = Client::connect(addr, Era::Modern).await;
            let started = Instant::now();
            let r = c
                .call(
                    "ssh_run_command",
                    json!({"session_id": sid2, "command": "ping -c 20 127.0.0.1"}),
                )
                .await;
            (r, started.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::task::spawn_blocking(move || {
            sshd.kill();
            sshd
        })
        .await
        .expect("kill");
        let (r, took) = running.await.expect("request task");
        assert_eq!(r["isError"], true, "{r}");
        assert!(took < Duration::from_secs(10), "no hang: {took:?}");
        let d = c
            .call_ok("ssh_disconnect", json!({"session_id": sid}))
            .await;
        assert_eq!(
            d["pooled"], false,
            "a dead connection is not returned to the pool"
        );
        assert_eq!(
            metric(srv.addr, "mcp_pool_connections{state=\"idle\"}").await,
            0.0
        );
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn pool_limits_are_enforced_before_connecting_with_a_bounded_wait() {
        let sshd = sshd();
        let srv = server(&["--pool-max-per-target", "2", "--pool-wait-ms", "1500"]).await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        let s1 = connect(&mut c, &sshd).await;
        let _s2 = connect(&mut c, &sshd).await;
        let creates = metric(srv.addr, "mcp_pool_creates_total").await;
        let started = Instant::now();
        let err = c.call_err("ssh_connect", password_args(&sshd)).await;
        let waited = started.elapsed();
        assert_eq!(
            err,
            format!("pool exhausted for testuser@127.0.0.1:{} (2/2)", sshd.port)
        );
        assert!(
            waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
        assert_eq!(
            metric(srv.addr, "mcp_pool_creates_total").await,
            creates,
            "no connection attempted"
        );

        // A waiter gets the slot a disconnect frees.
        let addr = srv.addr;
        let args = password_args(&sshd);
        let sid = c.session.clone();
        let waiter = tokio::spawn(async move {
            let mut w = Client::connect(addr, Era::Legacy).await;
            w.session = sid;
            w.call("ssh_connect", args).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.call_ok("ssh_disconnect", json!({"session_id": s1})).await;
        let r = waiter.await.expect("task");
        assert_eq!(r["isError"], false, "{r}");
        assert_eq!(r["structuredContent"]["reused"], true);

        // Pooled connections are never shared across credentials: a wrong password still fails
        // even though an idle authenticated connection for testuser exists.
        let idle_sid = r["structuredContent"]["session_id"].clone();
        c.call_ok("ssh_disconnect", json!({"session_id": idle_sid}))
            .await;
        let mut bad = password_args(&sshd);
        bad["password"] = json!("wrong");
        let err = c.call_err("ssh_connect", bad).await;
        assert!(err.contains("authentication failed"), "{err}");
        srv.stop().await.expect("stops");
    }

    /// Clients that hang up while their `ssh_connect` is still connecting (here to a host that
    /// accepts TCP and never speaks SSH) give their pool slots back: the next client gets a
    /// connect attempt (and its timeout), not "pool exhausted". Before the fix every such
    /// cancellation left a slot counted as connecting forever.
    #[tokio::test]
    async fn clients_that_hang_up_mid_connect_give_their_pool_slots_back() {
        let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = hole.local_addr().expect("addr").port();
        // Accept and hold every connection without a byte of SSH.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in hole.incoming().flatten() {
                held.push(s);
            }
        });
        let srv = server(&["--pool-max-per-target", "2", "--pool-wait-ms", "300"]).await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        let args = |timeout_ms: u64| {
            json!({"host": "127.0.0.1", "port": port, "user": "testuser", "password": "x",
                   "insecure_host_key": true, "timeout_ms": timeout_ms})
        };
        for _ in 0..6 {
            assert!(
                c.call_and_hang_up("ssh_connect", args(20_000), Duration::from_millis(300))
                    .await,
                "the connect must still be pending when the client hangs up"
            );
        }
        let active = r#"mcp_pool_connections{state="active"}"#;
        let deadline = Instant::now() + Duration::from_secs(5);
        while metric(srv.addr, active).await > 0.0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(metric(srv.addr, active).await, 0.0, "slots left connecting");
        let err = c.call_err("ssh_connect", args(500)).await;
        assert!(err.contains("timed out"), "{err}");
        srv.stop().await.expect("stops");
    }

    /// Whether a process whose command line contains `needle` runs on this machine (the sshd
    /// fixture's commands run here).
    fn running(needle: &str) -> bool {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
            })
    }

    /// Clients that hang up while their command runs: the command gets its SIGTERM and its
    /// channel is closed, so the remote process is gone long before it would have ended and
    /// the pooled connection still opens channels (sshd allows two at a time here). Before,
    /// each hang-up left the command running and its channel open.
    #[tokio::test]
    async fn clients_that_hang_up_mid_command_leave_no_command_running() {
        let sshd = SshdBuilder::new()
            .password_user("testuser", "testpass")
            .extra_config("MaxSessions 2")
            .start()
            .expect("sshd fixture");
        let srv = server(&[]).await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        let sid = connect(&mut c, &sshd).await;
        // ~4 s of pinging a loopback address no other test uses.
        let ping =
            json!({"session_id": sid, "command": "ping -c 5 127.0.0.77", "timeout_ms": 20_000});
        let mut hung_up = 0;
        for _ in 0..3 {
            // (A channel sshd refuses answers at once: then the client does not hang up.)
            if c.call_and_hang_up("ssh_run_command", ping.clone(), Duration::from_millis(400))
                .await
            {
                hung_up += 1;
            }
        }
        assert!(
            hung_up >= 1,
            "no command was still running when its client hung up"
        );
        let since = Instant::now();
        while running("127.0.0.77") && since.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            !running("127.0.0.77"),
            "the commands outlived their clients"
        );
        let out = c
            .call_ok(
                "ssh_run_command",
                json!({"session_id": sid, "command": "cat /etc/hostname"}),
            )
            .await;
        assert_eq!(out["exit_status"], 0, "{out}");
        srv.stop().await.expect("stops");
    }

    /// Credential files are refused by name, and a link inside an allowed root is judged by
    /// where it leads on the target (`realpath -e`), before any content is returned; a harmless
    /// link still reads. Before, the link handed out the file it pointed to.
    #[tokio::test]
    async fn links_are_judged_by_where_they_lead() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let sshd = sshd();
        let dir = shared_tmp_dir("mcp-links-");
        let d = dir.path();
        let open = |p: &std::path::Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        std::fs::create_dir(d.join(".aws")).expect("mkdir");
        open(&d.join(".aws"), 0o755);
        std::fs::write(d.join(".aws/credentials"), "aws_secret_access_key=SECRET\n").expect("w");
        open(&d.join(".aws/credentials"), 0o644);
        symlink(d.join(".aws/credentials"), d.join("innocent")).expect("link");
        std::fs::write(d.join("plain.txt"), "hello\n").expect("w");
        open(&d.join("plain.txt"), 0o644);
        symlink(d.join("plain.txt"), d.join("alias")).expect("link");

        let srv = server(&[]).await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        let sid = connect(&mut c, &sshd).await;
        let cat =
            |p: std::path::PathBuf| json!({"session_id": sid, "path": p.display().to_string()});
        let err = c
            .call_err("ssh_cat_file", cat(d.join(".aws/credentials")))
            .await;
        assert!(err.contains("forbidden"), "{err}");
        let err = c.call_err("ssh_cat_file", cat(d.join("innocent"))).await;
        assert!(
            err.contains("leads to") && err.contains(".aws/credentials") && !err.contains("SECRET"),
            "{err}"
        );
        let ok = c.call_ok("ssh_cat_file", cat(d.join("alias"))).await;
        assert_eq!(ok["content"], "hello\n", "{ok}");
        // A system link out of the allowed roots (Debian: /etc/os-release ->
        // ../usr/lib/os-release) still reads: only forbidden files are refused through links.
        let os_release = std::path::PathBuf::from("/etc/os-release");
        if std::fs::symlink_metadata(&os_release).is_ok_and(|m| m.file_type().is_symlink()) {
            let ok = c.call_ok("ssh_cat_file", cat(os_release)).await;
            assert!(ok["content"].as_str().unwrap_or("").contains("ID="), "{ok}");
        }
        let err = c.call_err("ssh_cat_file", cat(d.join("missing"))).await;
        assert!(err.contains("cannot read"), "{err}");
        for p in [
            "/home/u/.config/gh/hosts.yml",
            "/home/u/.kube/config",
            "/home/u/.docker/config.json",
        ] {
            let err = c
                .call_err("ssh_cat_file", json!({"session_id": sid, "path": p}))
                .await;
            assert!(err.contains("forbidden"), "{p}: {err}");
        }
        srv.stop().await.expect("stops");
    }

    /// A connection on which sshd opens no channel (`MaxSessions 0`) fails its command and is
    /// not pooled: the next ssh_connect makes a new connection instead of reusing it.
    #[tokio::test]
    async fn a_connection_that_cannot_open_channels_is_not_pooled() {
        let sshd = SshdBuilder::new()
            .password_user("testuser", "testpass")
            .extra_config("MaxSessions 0")
            .start()
            .expect("sshd fixture");
        let srv = server(&[]).await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        let sid = connect(&mut c, &sshd).await;
        let err = c
            .call_err(
                "ssh_run_command",
                json!({"session_id": sid, "command": "cat /etc/hostname"}),
            )
            .await;
        assert!(err.contains("channel"), "{err}");
        c.call_ok("ssh_disconnect", json!({"session_id": sid}))
            .await;
        let again = c.call_ok("ssh_connect", password_args(&sshd)).await;
        assert_eq!(again["reused"], false, "{again}");
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn health_checks_evict_dead_idle_connections() {
        let mut sshd = sshd();
        let srv = server(&["--health-check-interval-s", "1"]).await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        let sid = connect(&mut c, &sshd).await;
        c.call_ok("ssh_disconnect", json!({"session_id": sid}))
            .await;
        assert_eq!(
            metric(srv.addr, "mcp_pool_connections{state=\"idle\"}").await,
            1.0
        );
        tokio::task::spawn_blocking(move || {
            sshd.kill();
            sshd
        })
        .await
        .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(15);
        while metric(srv.addr, "mcp_pool_connections{state=\"idle\"}").await > 0.0 {
            assert!(
                Instant::now() < deadline,
                "dead idle connection never evicted"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            metric(srv.addr, "mcp_pool_health_fails_total").await,
            1.0,
            "the eviction is counted"
        );
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn idle_pooled_connections_expire() {
        let sshd = sshd();
        let srv = server(&[
            "--pool-idle-timeout-s",
            "1",
            "--health-check-interval-s",
            "1",
        ])
        .await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        let sid = connect(&mut c, &sshd).await;
        c.call_ok("ssh_disconnect", json!({"session_id": sid}))
            .await;
        assert_eq!(
            metric(srv.addr, "mcp_pool_connections{state=\"idle\"}").await,
            1.0
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(srv.addr, "mcp_pool_connections{state=\"idle\"}").await > 0.0 {
            assert!(Instant::now() < deadline, "idle connection never expired");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(metric(srv.addr, "mcp_pool_expires_total").await, 1.0);
        assert_eq!(metric(srv.addr, "mcp_pool_health_fails_total").await, 0.0);
        // The next connect is a miss again.
        let r = c.call_ok("ssh_connect", password_args(&sshd)).await;
        assert_eq!(r["reused"], false);
        srv.stop().await.expect("stops");
    }
}
