//! End-to-end checks of the sshd fixture with the system OpenSSH client.
//!
//! These need root (as CI has) and start real sshd processes.

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::path::Path;
    use std::process::{Command, Output};
    use std::time::Duration;

    use sshlab_testkit::{SshdBuilder, wait_until};

    /// Runs `ssh` non-interactively against the fixture with strict host-key
    /// checking against its known_hosts file.
    fn ssh(sshd: &sshlab_testkit::Sshd, user: &str, key: &Path, command: &str) -> Output {
        Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                sshd.known_hosts_file().display()
            ))
            .args(["-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5", "-i"])
            .arg(key)
            .args(["-p", &sshd.port.to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .arg(command)
            .output()
            .expect("run ssh")
    }

    #[test]
    fn key_user_can_run_commands_with_openssh_client() {
        let sshd = SshdBuilder::new()
            .key_user("bob")
            .password_user("alice", "s3cret")
            .start()
            .expect("start sshd");
        assert!(
            sshd.known_hosts_line
                .starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 AAAA", sshd.port))
        );
        assert!(sshd.host_key_pub.starts_with("ssh-ed25519 AAAA"));
        assert!(
            sshd.private_key_pem("bob")
                .contains("BEGIN OPENSSH PRIVATE KEY")
        );

        let out = ssh(
            &sshd,
            "bob",
            &sshd.private_key_path("bob"),
            "id -un; id -u; pwd; hostname",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ssh failed: {}\nstderr: {}\nsshd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            sshd.log()
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[0], "bob");
        assert_eq!(lines[1], sshd.uid("bob").to_string());
        assert_eq!(Path::new(lines[2]), sshd.home("bob"));
        assert!(
            sshd.log().contains("Accepted publickey for bob"),
            "{}",
            sshd.log()
        );

        // The host's account database is untouched.
        let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
        assert!(!passwd.contains("sshlab test user"));
    }

    #[test]
    fn drop_stops_sshd_and_removes_dir() {
        let sshd = SshdBuilder::new()
            .key_user("bob")
            .start()
            .expect("start sshd");
        let (pid, dir, port) = (sshd.pid(), sshd.dir.clone(), sshd.port);
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(sshd);
        assert!(!dir.exists(), "temp dir should be removed");
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port should be closed"
        );
        // The pid may be reused later, but not by an sshd of ours right away.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_ne!(comm.trim(), "sshd");
    }

    #[tokio::test]
    async fn kill_drops_established_sessions() {
        let mut sshd = SshdBuilder::new()
            .key_user("bob")
            .start()
            .expect("start sshd");
        let key = sshd.private_key_path("bob");
        let mut args: Vec<String> = [
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend([
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-i".into(),
        ]);
        args.push(key.display().to_string());
        args.extend([
            "-p".into(),
            sshd.port.to_string(),
            "bob@127.0.0.1".into(),
            "sleep 30".into(),
        ]);
        let mut client = tokio::process::Command::new("ssh")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn ssh");
        let log_path = sshd.log_path();
        wait_until("session to start", Duration::from_secs(10), || {
            let log_path = log_path.clone();
            async move {
                std::fs::read_to_string(log_path)
                    .unwrap_or_default()
                    .contains("Accepted publickey for bob")
            }
        })
        .await
        .expect("session starts");
        let started = std::time::Instant::now();
        sshd.kill();
        assert!(!sshd.is_running());
        let status = tokio::time::timeout(Duration::from_secs(5), client.wait())
            .await
            .expect("ssh client should notice the dead server quickly")
            .expect("wait ssh");
        assert!(!status.success());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(TcpStream::connect(("127.0.0.1", sshd.port)).is_err());
    }

    #[test]
    fn extra_config_is_applied() {
        let sshd = SshdBuilder::new()
            .key_user("bob")
            .extra_config("PubkeyAuthentication no")
            .start()
            .expect("start sshd");
        let out = ssh(&sshd, "bob", &sshd.private_key_path("bob"), "true");
        assert!(!out.status.success(), "pubkey auth should be disabled");
    }
}
