//! Integration tests of the SSH client layer against a real OpenSSH sshd
//! (started by `sshlab-testkit`; needs root, as CI has). No mocks.

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use mcp_ssh_server::ssh::{
        Auth, ConnectOptions, Connection, ExecLimits, HostKeyPolicy, SshError, Target,
    };
    use sshlab_testkit::{Sshd, SshdBuilder, free_port, wait_until};

    const PASSWORD: &str = "wonder land!";
    /// A valid ed25519 public key that is not the fixture's.
    const OTHER_KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    fn fixture() -> Sshd {
        SshdBuilder::new()
            .password_user("alice", PASSWORD)
            .key_user("bob")
            .start()
            .expect("start sshd fixture")
    }

    fn target(sshd: &Sshd, user: &str) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: sshd.port,
            user: user.into(),
        }
    }

    fn opts(sshd: &Sshd) -> ConnectOptions {
        ConnectOptions {
            connect_timeout: Duration::from_secs(5),
            auth_timeout: Duration::from_secs(5),
            host_keys: HostKeyPolicy::KnownHosts(sshd.known_hosts_file()),
            keepalive: Some(Duration::from_secs(10)),
        }
    }

    fn limits() -> ExecLimits {
        ExecLimits {
            timeout: Duration::from_secs(10),
            max_output: 1024 * 1024,
        }
    }

    fn key_auth(sshd: &Sshd) -> Auth {
        Auth::PrivateKey {
            pem: sshd.private_key_pem("bob"),
            passphrase: None,
        }
    }

    async fn connect_password(sshd: &Sshd) -> Connection {
        Connection::connect(
            &target(sshd, "alice"),
            &Auth::Password(PASSWORD.into()),
            &opts(sshd),
        )
        .await
        .unwrap_or_else(|e| panic!("password connect failed: {e}\nsshd log:\n{}", sshd.log()))
    }

    async fn connect_key(sshd: &Sshd) -> Connection {
        Connection::connect(&target(sshd, "bob"), &key_auth(sshd), &opts(sshd))
            .await
            .unwrap_or_else(|e| panic!("key connect failed: {e}\nsshd log:\n{}", sshd.log()))
    }

    fn write_known_hosts(sshd: &Sshd, name: &str, content: &str) -> std::path::PathBuf {
        let path = sshd.dir.join(name);
        std::fs::write(&path, content).expect("write known_hosts");
        path
    }

    fn local_hostname() -> String {
        let out = Command::new("hostname").output().expect("run hostname");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[tokio::test]
    async fn password_auth_and_exec_hostname() {
        let sshd = fixture();
        let conn = connect_password(&sshd).await;
        let out = conn
            .exec("hostname", &limits())
            .await
            .expect("exec hostname");
        assert_eq!(out.exit_status, Some(0), "{out:?}");
        assert!(out.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            local_hostname()
        );
        assert!(out.stderr.is_empty(), "{out:?}");
        assert!(!out.truncated);
        assert_eq!(out.exit_signal, None);

        let who = conn.exec("id -un", &limits()).await.expect("exec id");
        assert_eq!(String::from_utf8_lossy(&who.stdout).trim(), "alice");
        assert_eq!(conn.target().user, "alice");
        assert!(sshd.log().contains("Accepted password for alice"));
        conn.close().await;
    }

    #[tokio::test]
    async fn key_auth_ok() {
        let sshd = fixture();
        let conn = connect_key(&sshd).await;
        let out = conn.exec("id -un", &limits()).await.expect("exec");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "bob");
        assert!(sshd.log().contains("Accepted publickey for bob"));
    }

    #[tokio::test]
    async fn encrypted_key_needs_its_passphrase() {
        let sshd = fixture();
        let copy = sshd.dir.join("bob_encrypted");
        std::fs::copy(sshd.private_key_path("bob"), &copy).expect("copy key");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-p", "-P", "", "-N", "open sesame", "-f"])
            .arg(&copy)
            .status()
            .expect("run ssh-keygen -p");
        assert!(status.success());
        let pem = std::fs::read_to_string(&copy).expect("read encrypted key");

        let auth = Auth::PrivateKey {
            pem: pem.clone(),
            passphrase: Some("open sesame".into()),
        };
        let conn = Connection::connect(&target(&sshd, "bob"), &auth, &opts(&sshd))
            .await
            .expect("connect with passphrase");
        assert!(conn.exec("true", &limits()).await.expect("exec").success());

        let no_pass = Auth::PrivateKey {
            pem,
            passphrase: None,
        };
        let err = Connection::connect(&target(&sshd, "bob"), &no_pass, &opts(&sshd))
            .await
            .expect_err("encrypted key without passphrase");
        assert!(matches!(err, SshError::Key(_)), "{err:?}");
    }

    #[tokio::test]
    async fn rsa_key_auth_uses_sha2_signatures() {
        let sshd = fixture();
        let key_path = sshd.dir.join("bob_rsa");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
            .arg(&key_path)
            .status()
            .expect("run ssh-keygen");
        assert!(status.success());
        let public = std::fs::read_to_string(key_path.with_extension("pub")).expect("read pub");
        let authorized = sshd.home("bob").join(".ssh/authorized_keys");
        let mut keys = std::fs::read_to_string(&authorized).expect("read authorized_keys");
        keys.push_str(&public);
        std::fs::write(&authorized, keys).expect("write authorized_keys");

        let auth = Auth::PrivateKey {
            pem: std::fs::read_to_string(&key_path).expect("read rsa key"),
            passphrase: None,
        };
        let conn = Connection::connect(&target(&sshd, "bob"), &auth, &opts(&sshd))
            .await
            .unwrap_or_else(|e| panic!("rsa connect: {e}\n{}", sshd.log()));
        assert!(conn.exec("true", &limits()).await.expect("exec").success());
        assert!(sshd.log().contains("Accepted publickey for bob"));
        assert!(sshd.log().contains("RSA SHA256:"), "{}", sshd.log());
    }

    #[tokio::test]
    async fn wrong_password_is_auth_failed() {
        let sshd = fixture();
        let err = Connection::connect(
            &target(&sshd, "alice"),
            &Auth::Password("nope".into()),
            &opts(&sshd),
        )
        .await
        .expect_err("wrong password must fail");
        match &err {
            SshError::AuthFailed {
                user,
                tried,
                allowed,
                ..
            } => {
                assert_eq!(user, "alice");
                assert_eq!(tried, "password");
                assert!(allowed.iter().any(|m| m == "publickey"), "{allowed:?}");
            }
            other => panic!("expected AuthFailed, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!("authentication failed for alice@127.0.0.1:{}", sshd.port)
        );
    }

    #[tokio::test]
    async fn wrong_key_is_auth_failed() {
        let sshd = fixture();
        // bob's key presented for alice (who has no authorized key).
        let err = Connection::connect(&target(&sshd, "alice"), &key_auth(&sshd), &opts(&sshd))
            .await
            .expect_err("key not authorized for alice");
        assert!(
            matches!(err, SshError::AuthFailed { ref tried, .. } if tried == "publickey"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn closed_port_is_refused() {
        let port = free_port();
        let target = Target {
            host: "127.0.0.1".into(),
            port,
            user: "alice".into(),
        };
        let err = Connection::connect(
            &target,
            &Auth::Password("x".into()),
            &ConnectOptions::new(HostKeyPolicy::Insecure),
        )
        .await
        .expect_err("nothing listens");
        assert!(matches!(err, SshError::Refused { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("connection refused by 127.0.0.1:{port}")
        );
        assert!(err.is_connection_error());
    }

    #[tokio::test]
    async fn unresolvable_host_is_resolve_error() {
        let target = Target {
            host: "no-such-host.invalid".into(),
            port: 22,
            user: "alice".into(),
        };
        let err = Connection::connect(
            &target,
            &Auth::Password("x".into()),
            &ConnectOptions::new(HostKeyPolicy::Insecure),
        )
        .await
        .expect_err("cannot resolve");
        assert!(matches!(err, SshError::Resolve { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn known_hosts_verdicts() {
        let sshd = fixture();
        let auth = Auth::Password(PASSWORD.into());
        let t = target(&sshd, "alice");

        // Right key (the fixture's own file) is accepted; so is Insecure.
        connect_password(&sshd).await;
        let insecure = ConnectOptions::new(HostKeyPolicy::Insecure);
        Connection::connect(&t, &auth, &insecure)
            .await
            .expect("insecure accepts any key");

        // No entry for this host:port (only port 22 and another host).
        let unknown = write_known_hosts(
            &sshd,
            "kh_unknown",
            &format!("127.0.0.1 {}\nexample.org {OTHER_KEY}\n", sshd.host_key_pub),
        );
        let mut o = opts(&sshd);
        o.host_keys = HostKeyPolicy::KnownHosts(unknown);
        let err = Connection::connect(&t, &auth, &o)
            .await
            .expect_err("unknown");
        match &err {
            SshError::HostKeyUnknown { fingerprint, .. } => {
                assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}")
            }
            other => panic!("expected HostKeyUnknown, got {other:?}"),
        }

        // A different key of the same type for [127.0.0.1]:port.
        let wrong = write_known_hosts(
            &sshd,
            "kh_wrong",
            &format!("# test\n[127.0.0.1]:{} {OTHER_KEY}\n", sshd.port),
        );
        o.host_keys = HostKeyPolicy::KnownHosts(wrong);
        let err = Connection::connect(&t, &auth, &o)
            .await
            .expect_err("mismatch");
        assert!(
            matches!(err, SshError::HostKeyMismatch { line: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("does not match"), "{err}");

        // Hashed entries (as written by `ssh-keygen -H`) work too.
        let hashed = write_known_hosts(&sshd, "kh_hashed", &format!("{}\n", sshd.known_hosts_line));
        let status = Command::new("ssh-keygen")
            .args(["-q", "-H", "-f"])
            .arg(&hashed)
            .status()
            .expect("ssh-keygen -H");
        assert!(status.success());
        assert!(
            std::fs::read_to_string(&hashed)
                .expect("read")
                .starts_with("|1|")
        );
        o.host_keys = HostKeyPolicy::KnownHosts(hashed);
        Connection::connect(&t, &auth, &o)
            .await
            .expect("hashed entry matches");

        // A missing file is reported as such.
        o.host_keys = HostKeyPolicy::KnownHosts(Path::new("/nonexistent/kh").into());
        let err = Connection::connect(&t, &auth, &o)
            .await
            .expect_err("missing file");
        assert!(matches!(err, SshError::KnownHosts { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn stderr_and_exit_code() {
        let sshd = fixture();
        let conn = connect_key(&sshd).await;
        let out = conn
            .exec("sh -c 'echo out; echo err >&2; exit 3'", &limits())
            .await
            .expect("exec");
        assert_eq!(out.exit_status, Some(3));
        assert!(!out.success());
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[tokio::test]
    async fn exit_signal_is_reported() {
        let sshd = fixture();
        let conn = connect_key(&sshd).await;
        // The user's shell itself (what sshd spawned) dies of SIGKILL.
        let out = conn.exec("kill -KILL $$", &limits()).await.expect("exec");
        assert_eq!(out.exit_signal.as_deref(), Some("KILL"), "{out:?}");
        assert_eq!(out.exit_status, None);
    }

    #[tokio::test]
    async fn output_is_capped_and_truncated() {
        let sshd = fixture();
        let conn = connect_key(&sshd).await;
        let small = ExecLimits {
            timeout: Duration::from_secs(20),
            max_output: 65536,
        };
        let out = conn
            .exec("head -c 3000000 /dev/zero", &small)
            .await
            .expect("exec");
        assert!(out.truncated);
        assert_eq!(out.stdout.len(), 65536);
        assert!(out.stdout.iter().all(|b| *b == 0));
        assert_eq!(
            out.exit_status,
            Some(0),
            "small overflow still reports the exit"
        );

        // Cap is on stdout + stderr combined.
        let tiny = ExecLimits {
            timeout: Duration::from_secs(10),
            max_output: 6,
        };
        let out = conn
            .exec("echo abcd; sleep 0.2; echo efgh >&2", &tiny)
            .await
            .expect("exec");
        assert_eq!(out.stdout, b"abcd\n");
        assert_eq!(out.stderr, b"e");
        assert!(out.truncated);

        // Endless output: the channel is closed once far over the cap.
        let started = Instant::now();
        let out = conn.exec("yes", &small).await.expect("exec yes");
        assert!(out.truncated);
        assert_eq!(out.stdout.len(), 65536);
        assert_eq!(out.exit_status, None);
        assert!(started.elapsed() < Duration::from_secs(15));

        // The connection is still fine afterwards.
        let out = conn.exec("echo ok", &limits()).await.expect("exec after");
        assert_eq!(out.stdout, b"ok\n");
    }

    #[tokio::test]
    async fn timeout_then_connection_still_works() {
        let sshd = fixture();
        let conn = connect_key(&sshd).await;
        let started = Instant::now();
        let err = conn
            .exec(
                "sleep 5",
                &ExecLimits {
                    timeout: Duration::from_millis(300),
                    max_output: 1024,
                },
            )
            .await
            .expect_err("must time out");
        assert!(
            matches!(err, SshError::Timeout { after_ms: 300 }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "command timed out after 300 ms");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(!conn.is_closed());
        let out = conn
            .exec("echo still here", &limits())
            .await
            .expect("exec after timeout");
        assert_eq!(out.stdout, b"still here\n");
        assert!(conn.check_alive(Duration::from_secs(2)).await);
    }

    #[tokio::test]
    async fn sixteen_concurrent_execs_on_one_connection() {
        let sshd = fixture();
        let conn = connect_key(&sshd).await;
        let started = Instant::now();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let conn = conn.clone();
                tokio::spawn(async move {
                    let out = conn
                        .exec(&format!("sleep 0.5; echo {i}"), &limits())
                        .await
                        .expect("concurrent exec");
                    (i, out)
                })
            })
            .collect();
        for task in tasks {
            let (i, out) = task.await.expect("join");
            assert_eq!(out.exit_status, Some(0));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), i.to_string());
        }
        // They really ran in parallel.
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn max_sessions_exceeded_is_a_channel_error() {
        let sshd = SshdBuilder::new()
            .key_user("bob")
            .extra_config("MaxSessions 2")
            .start()
            .expect("start sshd");
        let conn = connect_key(&sshd).await;
        let busy: Vec<_> = (0..2)
            .map(|_| {
                let conn = conn.clone();
                tokio::spawn(async move { conn.exec("sleep 1", &limits()).await })
            })
            .collect();
        let log = sshd.log_path();
        wait_until("two sessions to start", Duration::from_secs(5), || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .matches("Starting session: command")
                    .count()
                    == 2
            }
        })
        .await
        .expect("sessions started");
        let err = conn
            .exec("true", &limits())
            .await
            .expect_err("third session refused");
        assert!(matches!(err, SshError::Channel(_)), "{err:?}");
        assert!(!err.is_connection_error());
        for task in busy {
            let out = task.await.expect("join").expect("busy exec");
            assert!(out.success());
        }
        // Sessions are released: the connection works again. sshd frees a
        // session slot only after our CHANNEL_CLOSE answering its own, in a
        // later turn of its main loop, so an open sent right behind that
        // close can still be refused: allow the release a bounded moment.
        // Only that refusal is retried; any other error fails at once.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match conn.exec("true", &limits()).await {
                Ok(out) => {
                    assert!(out.success());
                    break;
                }
                Err(SshError::Channel(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("exec after the busy sessions ended: {e:?}"),
            }
        }
    }

    #[tokio::test]
    async fn sshd_killed_mid_command_is_disconnected() {
        let mut sshd = fixture();
        let conn = connect_key(&sshd).await;
        assert!(conn.check_alive(Duration::from_secs(2)).await);

        let running = conn.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            (running.exec("sleep 5", &limits()).await, started)
        });
        let log = sshd.log_path();
        wait_until("the command to start", Duration::from_secs(5), || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .contains("Starting session: command")
            }
        })
        .await
        .expect("session started");

        sshd.kill();
        let (result, started) = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("exec must not hang after the server died")
            .expect("join");
        let err = result.expect_err("exec must fail");
        assert!(
            matches!(err, SshError::Disconnected { .. } | SshError::Channel(_)),
            "{err:?}"
        );
        assert!(err.is_connection_error(), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );

        assert!(!conn.check_alive(Duration::from_secs(2)).await);
        assert!(conn.is_closed());
        let err = conn
            .exec("true", &limits())
            .await
            .expect_err("dead connection");
        assert!(matches!(err, SshError::Disconnected { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn close_ends_the_session() {
        let sshd = fixture();
        let conn = connect_password(&sshd).await;
        assert!(conn.check_alive(Duration::from_secs(2)).await);
        conn.close().await;
        let c = conn.clone();
        wait_until("the session to close", Duration::from_secs(5), move || {
            let c = c.clone();
            async move { c.is_closed() }
        })
        .await
        .expect("closed after close()");
        assert!(!conn.check_alive(Duration::from_secs(1)).await);
        let err = conn.exec("true", &limits()).await.expect_err("closed");
        assert!(matches!(err, SshError::Disconnected { .. }), "{err:?}");
    }
}
