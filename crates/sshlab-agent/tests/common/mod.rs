//! What the agent's integration tests share: the real server in process, and a [`Lab`] of a
//! real sshd and that server for the agent binary to run against.
#![allow(dead_code)]

/// The real mcp-ssh-server, in process on a loopback port, in the `loadtest` profile with
/// rate limits off (the agent is the load) unless `extra` sets them, plus `extra` flags.
pub async fn loadtest_server(extra: &[&str]) -> mcp_ssh_server::Running {
    use clap::Parser;
    let mut args = vec![
        "mcp-ssh-server",
        "--bind",
        "127.0.0.1:0",
        "--profile",
        "loadtest",
    ];
    for flag in ["--rate-limit-per-min", "--global-rate-limit-per-min"] {
        if !extra.contains(&flag) {
            args.extend([flag, "0"]);
        }
    }
    args.extend_from_slice(extra);
    let opts = mcp_ssh_server::Opts::parse_from(args);
    let config = mcp_ssh_server::Config::resolve(&opts).expect("config");
    mcp_ssh_server::start(config).await.expect("server")
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sshlab_core::results::{Record, Summary};
use sshlab_testkit::{Sshd, SshdBuilder};

/// The agent binary under test.
pub const AGENT: &str = env!("CARGO_BIN_EXE_sshlab-agent");

/// A real sshd (user `testuser` with the lab's password, or another), the real server in
/// process, and a results directory.
pub struct Lab {
    /// The SSH target.
    pub sshd: Sshd,
    /// The MCP server.
    pub server: mcp_ssh_server::Running,
    /// Where the agent writes.
    pub results: tempfile::TempDir,
    /// testuser's password.
    pub password: String,
}

impl Lab {
    /// Starts it; `flags` go to the server.
    pub async fn start(flags: &[&str], password: &str) -> Self {
        let sshd = SshdBuilder::new()
            .password_user("testuser", password)
            .extra_config("MaxStartups 200:30:400")
            .start()
            .expect("sshd fixture (root, openssh-server)");
        let server = loadtest_server(flags).await;
        Self {
            sshd,
            server,
            results: tempfile::tempdir().expect("tmp"),
            password: password.to_owned(),
        }
    }

    /// The MCP endpoint.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.server.addr)
    }

    /// `sshlab-agent run` against this lab, quiet, with `extra` flags.
    pub fn agent(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(AGENT);
        c.args([
            "run",
            "--mcp-url",
            &self.url(),
            "--target-host",
            "127.0.0.1",
            "--target-port",
            &self.sshd.port.to_string(),
            "--password",
            &self.password,
            "--results-dir",
            self.results.path().to_str().expect("utf8"),
            "--server-vcpus",
            "2",
            "--quiet",
        ]);
        c.args(extra);
        c
    }

    /// Runs the agent to its end; its output and the newest results dir.
    pub async fn run(&self, extra: &[&str]) -> (Output, PathBuf) {
        let mut cmd = self.agent(extra);
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("agent runs"))
            .await
            .expect("join");
        (out, self.only_dir())
    }

    /// The results dirs, oldest first.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<_> = std::fs::read_dir(self.results.path())
            .expect("results dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        dirs
    }

    /// The newest results dir.
    pub fn only_dir(&self) -> PathBuf {
        self.dirs().pop().unwrap_or_default()
    }
}

/// A results dir's summary.json.
pub fn summary(dir: &Path) -> Summary {
    let bytes = std::fs::read(dir.join("summary.json")).expect("summary.json");
    serde_json::from_slice(&bytes).expect("summary parses")
}

/// Every line of every w<N>.jsonl, parsed as a record.
pub fn records(dir: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").filter_map(Result::ok) {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            for line in std::fs::read_to_string(&p).expect("read").lines() {
                out.push(
                    serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("{}: {e}: {line}", p.display())),
                );
            }
        }
    }
    out
}

/// A process's exit code and output, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts a successful exit, showing the output otherwise.
pub fn ok(out: &Output) {
    assert!(out.status.success(), "{}", text(out));
}
