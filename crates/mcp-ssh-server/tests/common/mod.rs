//! Shared helpers of the server's integration tests: start the real server in-process on an
//! ephemeral port, and talk MCP to it over real HTTP in either protocol era.
#![allow(dead_code)] // each test file uses a different subset

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use mcp_ssh_server::{Config, Opts, Running};
use serde_json::{Value, json};

/// Start a server on 127.0.0.1 with extra flags.
pub async fn server(flags: &[&str]) -> Running {
    let opts = Opts::parse_from(
        ["mcp-ssh-server", "--bind", "127.0.0.1:0"]
            .iter()
            .chain(flags.iter())
            .copied(),
    );
    let config = Config::resolve(&opts).expect("test config resolves");
    mcp_ssh_server::start(config).await.expect("server starts")
}

/// The real binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-ssh-server");

/// The server binary running as a process, killed if a test ends (or panics) before it exits.
#[derive(Debug)]
pub struct Server(pub std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Server {
    /// Its resident memory (`VmRSS`), in bytes.
    pub fn rss(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kib| kib * 1024)
    }
}

/// Starts the binary on a free port with `flags`; returns it and its address once `/health`
/// answers. Its log (RUST_LOG=info) is on its stderr pipe.
pub async fn start_binary(flags: &[&str]) -> (Server, SocketAddr) {
    let port = sshlab_testkit::free_port();
    let child = std::process::Command::new(BIN)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(flags)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("server starts");
    let server = Server(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    sshlab_testkit::wait_until("server /health", Duration::from_secs(10), || async move {
        reqwest::get(format!("http://{addr}/health")).await.is_ok()
    })
    .await
    .expect("server ready");
    (server, addr)
}

/// A real sshd with the password user testuser/testpass ([`Client::connect_testuser`]).
pub fn sshd_testuser() -> sshlab_testkit::Sshd {
    sshlab_testkit::SshdBuilder::new()
        .password_user("testuser", "testpass")
        .start()
        .expect("sshd fixture starts (needs root and openssh-server)")
}

/// A fresh directory under /tmp (an allowed root) that the target's users may enter (0755);
/// removed on drop.
pub fn shared_tmp_dir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

pub fn http() -> reqwest::Client {
    http_from(None)
}

/// An HTTP client whose connections come from `local` (a loopback address such as 127.0.0.2:
/// on Linux all of 127.0.0.0/8 is loopback, so tests can be several remote addresses).
pub fn http_from(local: Option<IpAddr>) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .local_address(local)
        .build()
        .expect("client")
}

/// 127.0.0.`n`: one of the distinct client addresses a test may use.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n))
}

/// A raw TCP connection to `addr` from the address `local`.
pub async fn tcp_from(local: IpAddr, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(addr).await
}

/// A raw HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

pub async fn post_raw(addr: SocketAddr, headers: &[(&str, &str)], body: &str) -> Answer {
    post_raw_from(None, addr, headers, body).await
}

/// [`post_raw`] from the address `local`.
pub async fn post_raw_from(
    local: Option<IpAddr>,
    addr: SocketAddr,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = http_from(local)
        .post(format!("http://{addr}/mcp"))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("HTTP request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// The `Mcp-Session-Id` an `initialize` answer issued.
fn session_id(initialized: &Answer) -> String {
    initialized
        .headers
        .get("mcp-session-id")
        .expect("initialize issues a session id")
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// Protocol era of a [`Client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2025-11-25 with initialize and Mcp-Session-Id.
    Legacy,
    /// 2026-07-28, stateless.
    Modern,
}

/// A small MCP client for tests, speaking one era.
#[derive(Debug)]
pub struct Client {
    pub addr: SocketAddr,
    pub era: Era,
    pub session: Option<String>,
    pub bearer: Option<String>,
    /// The address its requests come from (`None`: the system's choice, 127.0.0.1).
    pub local: Option<IpAddr>,
    next_id: u64,
}

impl Client {
    pub async fn connect(addr: SocketAddr, era: Era) -> Self {
        Self::connect_from(None, addr, era).await
    }

    /// [`Client::connect`] from the address `local`.
    pub async fn connect_from(local: Option<IpAddr>, addr: SocketAddr, era: Era) -> Self {
        let mut c = Self {
            addr,
            era,
            session: None,
            bearer: None,
            local,
            next_id: 1,
        };
        if era == Era::Legacy {
            let a = c
                .request_raw(
                    "initialize",
                    json!({"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "test", "version": "0"}}),
                )
                .await;
            assert_eq!(a.status, 200, "{}", a.text);
            assert_eq!(a.body["result"]["protocolVersion"], "2025-11-25");
            c.session = Some(session_id(&a));
            let n = c.notify("notifications/initialized").await;
            assert_eq!(n.status, 202);
        }
        c
    }

    /// A 2025-era client on the session an `initialize` answer issued.
    pub fn connect_with_session(addr: SocketAddr, initialized: &Answer) -> Self {
        Self {
            addr,
            era: Era::Legacy,
            session: Some(session_id(initialized)),
            bearer: None,
            local: None,
            next_id: 2,
        }
    }

    pub fn with_bearer(mut self, token: &str) -> Self {
        self.bearer = Some(token.to_owned());
        self
    }

    fn headers(&self, method: &str, params: &Value) -> Vec<(String, String)> {
        let mut h = vec![
            ("content-type".into(), "application/json".into()),
            (
                "accept".into(),
                "application/json, text/event-stream".into(),
            ),
        ];
        match self.era {
            Era::Legacy => {
                if let Some(s) = &self.session {
                    h.push(("mcp-session-id".into(), s.clone()));
                    h.push(("mcp-protocol-version".into(), "2025-11-25".into()));
                }
            }
            Era::Modern => {
                h.push(("mcp-protocol-version".into(), "2026-07-28".into()));
                h.push(("mcp-method".into(), method.into()));
                if let Some(name) = params.get("name").and_then(Value::as_str) {
                    h.push(("mcp-name".into(), name.into()));
                }
            }
        }
        if let Some(t) = &self.bearer {
            h.push(("authorization".into(), format!("Bearer {t}")));
        }
        h
    }

    fn with_meta(&self, mut params: Value) -> Value {
        if self.era == Era::Modern {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "0"},
            });
        }
        params
    }

    pub async fn request_raw(&mut self, method: &str, params: Value) -> Answer {
        let params = self.with_meta(params);
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let headers = self.headers(method, &params);
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let a = post_raw_from(self.local, self.addr, &h, &body.to_string()).await;
        if a.status == 200 {
            assert_eq!(a.body["id"], id, "response id must echo the request id");
        }
        a
    }

    pub async fn notify(&mut self, method: &str) -> Answer {
        let params = self.with_meta(json!({}));
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params});
        let headers = self.headers(method, &params);
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        post_raw_from(self.local, self.addr, &h, &body.to_string()).await
    }

    /// tools/call whose HTTP client gives up after `after` and closes its connection, as a
    /// client with `curl -m` does; `true` when it did give up (no answer came in time).
    pub async fn call_and_hang_up(&mut self, tool: &str, args: Value, after: Duration) -> bool {
        let params = self.with_meta(json!({"name": tool, "arguments": args}));
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
        let client = reqwest::Client::builder()
            .timeout(after)
            .local_address(self.local)
            .build()
            .expect("client");
        let mut req = client
            .post(format!("http://{}/mcp", self.addr))
            .body(body.to_string());
        for (k, v) in self.headers("tools/call", &params) {
            req = req.header(k, v);
        }
        let hung_up = req.send().await.is_err_and(|e| e.is_timeout());
        // The client and its connection are dropped here.
        hung_up
    }

    /// A request that must succeed at the JSON-RPC level; returns `result`.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let a = self.request_raw(method, params).await;
        assert_eq!(a.status, 200, "{method}: {}", a.text);
        assert!(a.body.get("error").is_none(), "{method}: {}", a.text);
        let r = a.body["result"].clone();
        if self.era == Era::Modern {
            assert_eq!(r["resultType"], "complete", "{method}: {}", a.text);
        } else {
            assert!(
                r.get("resultType").is_none(),
                "no resultType in 2025 results"
            );
        }
        r
    }

    /// tools/call; returns the CallToolResult (isError may be true).
    pub async fn call(&mut self, tool: &str, args: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": args}))
            .await
    }

    /// tools/call that must succeed; returns structuredContent.
    pub async fn call_ok(&mut self, tool: &str, args: Value) -> Value {
        let r = self.call(tool, args).await;
        assert_eq!(r["isError"], false, "{tool} failed: {r}");
        r["structuredContent"].clone()
    }

    /// ssh_connect as testuser/testpass to 127.0.0.1:`port` (a test's sshd fixture, host key
    /// not checked); returns the session id.
    pub async fn connect_testuser(&mut self, port: u16) -> String {
        let r = self
            .call_ok(
                "ssh_connect",
                json!({"host": "127.0.0.1", "port": port, "user": "testuser",
                       "password": "testpass", "insecure_host_key": true}),
            )
            .await;
        r["session_id"].as_str().expect("session_id").to_owned()
    }

    /// tools/call that must fail; returns the error text.
    pub async fn call_err(&mut self, tool: &str, args: Value) -> String {
        let r = self.call(tool, args).await;
        assert_eq!(r["isError"], true, "{tool} should fail: {r}");
        r["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn delete(&self) -> u16 {
        let mut req = http_from(self.local).delete(format!("http://{}/mcp", self.addr));
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        req.send().await.expect("DELETE").status().as_u16()
    }
}

/// The whole /metrics page.
pub async fn metrics_text(addr: SocketAddr) -> String {
    http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body")
}

/// Scrape one un-labelled (or exactly labelled) sample from /metrics.
pub async fn metric(addr: SocketAddr, series: &str) -> f64 {
    metrics_text(addr)
        .await
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// A real `ssh-keygen` key (encrypted, bcrypt) whose rounds field is set to `rounds`.
pub fn key_with_rounds(rounds: u32) -> String {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("k");
    let ok = std::process::Command::new("ssh-keygen")
        .args([
            "-q", "-t", "ed25519", "-N", "pass", "-a", "16", "-C", "", "-f",
        ])
        .arg(&path)
        .status()
        .expect("ssh-keygen runs");
    assert!(ok.success());
    let pem = std::fs::read_to_string(&path).expect("key");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut bytes = b64.decode(body).expect("base64");
    // magic, cipher string, kdf string, then kdfoptions: len, salt string, rounds.
    let be = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let mut at = "openssh-key-v1\0".len();
    at += 4 + be(&bytes, at); // cipher
    at += 4 + be(&bytes, at); // kdf
    at += 4; // kdfoptions' length
    at += 4 + be(&bytes, at); // salt
    assert_eq!(be(&bytes, at), 16, "the rounds ssh-keygen wrote");
    bytes[at..at + 4].copy_from_slice(&rounds.to_be_bytes());
    format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
        b64.encode(bytes)
    )
}
