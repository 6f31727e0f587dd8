//! Throughput benchmark: `cargo bench -p mcp-ssh-server --bench throughput` (root: it starts
//! a real sshd). Prints figures; asserts nothing.
//!
//! Against one real OpenSSH sshd on loopback, at the same concurrency (16 in flight by
//! default, one SSH connection per worker in both cases):
//! - direct: `hostname` exec'd with the server's own SSH client (russh), no MCP;
//! - server: `ssh_run_command("hostname")` through the real `mcp-ssh-server` binary over HTTP
//!   (2026-07-28 era, rate limits off);
//!
//! and their ratio, with p50/p99, plus the CPU each process used (sshd's whole process tree,
//! the server, this client), to show where the limit is. Then tools/list requests/s in each
//! protocol era. `BENCH_SECS` (default 10) and `BENCH_CONCURRENCY` (default 16) tune it.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mcp_ssh_server::ssh::{Auth, ConnectOptions, Connection, ExecLimits, HostKeyPolicy, Target};
use serde_json::{Value, json};
use sshlab_testkit::{SshdBuilder, free_port};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) of one process, without its children (the sshd fixture is a
/// child of this benchmark and is measured on its own).
fn own_cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let f: Vec<&str> = stat[close + 2..].split(' ').collect();
    [11, 12]
        .iter()
        .filter_map(|i| f.get(*i)?.parse::<f64>().ok())
        .sum::<f64>()
        / 100.0
}

/// CPU seconds (user + system, including reaped children) of a process tree.
fn tree_cpu_secs(root: u32) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    let mut stack = vec![root];
    let all: Vec<(u32, u32, f64)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            let ppid: u32 = f.get(1)?.parse().ok()?;
            let cpu: f64 = [11, 12, 13, 14]
                .iter()
                .filter_map(|i| f.get(*i)?.parse::<f64>().ok())
                .sum();
            Some((pid, ppid, cpu / ticks))
        })
        .collect();
    while let Some(p) = stack.pop() {
        for (pid, ppid, cpu) in &all {
            if *pid == p {
                total += cpu;
            }
            if *ppid == p {
                stack.push(*pid);
            }
        }
    }
    total
}

struct Figures {
    ops: u64,
    secs: f64,
    hist: Histogram<u64>,
    errors: u64,
}

impl Figures {
    fn rps(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn line(&self, label: &str) -> String {
        format!(
            "{label:<34} {:>9.1} ops/s   p50 {:>7.2} ms   p99 {:>7.2} ms   errors {}",
            self.rps(),
            self.hist.value_at_quantile(0.5) as f64 / 1000.0,
            self.hist.value_at_quantile(0.99) as f64 / 1000.0,
            self.errors
        )
    }
}

/// Run `workers` loops of `op` for `dur`, merging per-worker histograms.
async fn drive<F, Fut>(workers: usize, dur: Duration, op: F) -> Figures
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let (mut ok, mut err) = (0u64, 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                if op(w).await {
                    ok += 1;
                    h.saturating_record(t.elapsed().as_micros() as u64);
                } else {
                    err += 1;
                }
            }
            (h, ok, err)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut ops, mut errors) = (0, 0);
    for t in tasks {
        let (h, ok, err) = t.await.expect("worker");
        hist.add(h).expect("same bounds");
        ops += ok;
        errors += err;
    }
    Figures {
        ops,
        secs: start.elapsed().as_secs_f64(),
        hist,
        errors,
    }
}

struct ServerProcess(Child);
impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mcp_headers(method: &str, name: Option<&str>) -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("content-type", "application/json".parse().expect("v"));
    h.insert(
        "accept",
        "application/json, text/event-stream".parse().expect("v"),
    );
    h.insert("mcp-protocol-version", "2026-07-28".parse().expect("v"));
    h.insert("mcp-method", method.parse().expect("v"));
    if let Some(n) = name {
        h.insert("mcp-name", n.parse().expect("v"));
    }
    h
}

fn modern(method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                             "io.modelcontextprotocol/clientCapabilities": {}});
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs = env_num("BENCH_SECS", 10);
    let workers = env_num("BENCH_CONCURRENCY", 16) as usize;
    let dur = Duration::from_secs(secs);
    let sshd = SshdBuilder::new()
        .password_user("bench", "benchpass")
        .extra_config("MaxStartups 1000:30:1000")
        .start()?;
    let sshd_pid = sshd.pid();
    println!(
        "mcp-ssh-server throughput benchmark: {workers} in flight, {secs} s per phase, sshd on 127.0.0.1:{}",
        sshd.port
    );
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // Direct: the server's SSH client, no MCP.
    let target = Target {
        host: "127.0.0.1".into(),
        port: sshd.port,
        user: "bench".into(),
    };
    let auth = Auth::Password("benchpass".into());
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(10),
        auth_timeout: Duration::from_secs(10),
        host_keys: HostKeyPolicy::Insecure,
        keepalive: None,
    };
    let mut conns = Vec::new();
    for _ in 0..workers {
        conns.push(Arc::new(Connection::connect(&target, &auth, &opts).await?));
    }
    let conns = Arc::new(conns);
    let limits = Arc::new(ExecLimits {
        timeout: Duration::from_secs(30),
        max_output: 1 << 20,
    });
    let self_pid = std::process::id();
    let (sshd0, me0, t0) = (
        tree_cpu_secs(sshd_pid),
        own_cpu_secs(self_pid),
        Instant::now(),
    );
    let c2 = conns.clone();
    let direct = drive(workers, dur, move |w| {
        let c = c2[w].clone();
        let l = limits.clone();
        async move {
            c.exec("hostname", &l)
                .await
                .is_ok_and(|o| o.exit_status == Some(0))
        }
    })
    .await;
    let wall = t0.elapsed().as_secs_f64();
    let direct_cpu = (
        (tree_cpu_secs(sshd_pid) - sshd0) / wall,
        (own_cpu_secs(self_pid) - me0) / wall,
    );
    for c in conns.iter() {
        c.close().await;
    }

    // Through the real server binary.
    let port = free_port();
    let server = ServerProcess(
        Command::new(env!("CARGO_BIN_EXE_mcp-ssh-server"))
            .args([
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--profile",
                "loadtest",
                "--rate-limit-per-min",
                "0",
                "--global-rate-limit-per-min",
                "0",
                "--pool-max-per-target",
                &workers.max(1).to_string(),
                "--max-connections",
                &(workers.max(1) * 2).to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let server_pid = server.0.id();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(workers * 2)
        .build()?;
    sshlab_testkit::wait_until("server /health", Duration::from_secs(10), || {
        let http = http.clone();
        async move {
            http.get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await
                .is_ok()
        }
    })
    .await?;
    let mut sessions = Vec::new();
    for w in 0..workers {
        let body = modern(
            "tools/call",
            json!({"name": "ssh_connect", "arguments":
            {"host": "127.0.0.1", "port": sshd.port, "user": "bench", "password": "benchpass", "insecure_host_key": true}}),
        );
        let r: Value = http
            .post(&url)
            .headers(mcp_headers("tools/call", Some("ssh_connect")))
            .header("authorization", format!("Bearer worker-{w}"))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        let sid = r["result"]["structuredContent"]["session_id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("ssh_connect failed: {r}"))?
            .to_owned();
        sessions.push(sid);
    }
    let sessions = Arc::new(sessions);
    let (sshd0, srv0, me0, t0) = (
        tree_cpu_secs(sshd_pid),
        own_cpu_secs(server_pid),
        own_cpu_secs(self_pid),
        Instant::now(),
    );
    let (h2, u2, s2) = (http.clone(), url.clone(), sessions.clone());
    let via = drive(workers, dur, move |w| {
        let (http, url, sid) = (h2.clone(), u2.clone(), s2[w].clone());
        async move {
            let body = modern(
                "tools/call",
                json!({"name": "ssh_run_command",
                "arguments": {"session_id": sid, "command": "hostname"}}),
            );
            let Ok(resp) = http
                .post(&url)
                .headers(mcp_headers("tools/call", Some("ssh_run_command")))
                .header("authorization", format!("Bearer worker-{w}"))
                .json(&body)
                .send()
                .await
            else {
                return false;
            };
            let Ok(v) = resp.json::<Value>().await else {
                return false;
            };
            v["result"]["isError"] == false && v["result"]["structuredContent"]["exit_status"] == 0
        }
    })
    .await;
    let wall = t0.elapsed().as_secs_f64();
    let via_cpu = (
        (tree_cpu_secs(sshd_pid) - sshd0) / wall,
        (own_cpu_secs(server_pid) - srv0) / wall,
        (own_cpu_secs(self_pid) - me0) / wall,
    );

    println!();
    println!("{}", direct.line("direct russh exec (no MCP)"));
    println!("{}", via.line("ssh_run_command via mcp-ssh-server"));
    println!("ratio server/direct: {:.2}", via.rps() / direct.rps());
    println!(
        "CPU (cores busy)  direct: sshd {:.2}, client {:.2}",
        direct_cpu.0, direct_cpu.1
    );
    println!(
        "CPU (cores busy)  server: sshd {:.2}, mcp-ssh-server {:.2}, client {:.2}",
        via_cpu.0, via_cpu.1, via_cpu.2
    );

    // tools/list, both eras.
    let list_dur = Duration::from_secs(secs.div_ceil(2).max(2));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params":
        {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}});
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await?;
    let sid = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (h3, u3) = (http.clone(), url.clone());
    let legacy = drive(workers, list_dur, move |_| {
        let (http, url, sid) = (h3.clone(), u3.clone(), sid.clone());
        async move {
            let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
            http.post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-session-id", sid)
                .header("mcp-protocol-version", "2025-11-25")
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    let (h4, u4) = (http.clone(), url.clone());
    let stateless = drive(workers, list_dur, move |_| {
        let (http, url) = (h4.clone(), u4.clone());
        async move {
            http.post(&url)
                .headers(mcp_headers("tools/list", None))
                .json(&modern("tools/list", json!({})))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    println!("{}", legacy.line("tools/list, 2025-11-25 session"));
    println!("{}", stateless.line("tools/list, 2026-07-28 stateless"));
    drop(server);
    drop(sshd);
    Ok(())
}
