//! Blocking HTTP for the lab's own small endpoints: the agent's control API and the server's
//! /health and /metrics. A thin layer over `ureq` (a well-kept blocking client; plain HTTP
//! only, no TLS or gzip compiled in), which parses status lines, chunked bodies and framing
//! errors so that a malformed or cut-off response is an error, never a silently shorter body.
//! Never through a proxy from the environment: the lab's addresses are only reachable directly.
//! Sockets are opened on the calling thread, i.e. in the namespace sshlab entered.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

/// The largest body read (the agent's status with its summary, /metrics): 16 MiB.
const BODY_LIMIT: u64 = 16 * 1024 * 1024;

/// Status code and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: String,
}

/// Sends one request to `http://<addr><path>`; `body` is sent as JSON when given. Any status
/// is a response (the caller judges it); connection, framing and timeout failures are errors.
pub fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Response> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let sent = match (method, body) {
        ("GET", None) => agent.get(&url).call(),
        ("DELETE", None) => agent.delete(&url).call(),
        ("POST", Some(b)) => agent
            .post(&url)
            .header("content-type", "application/json")
            .send(b),
        ("POST", None) => agent.post(&url).send_empty(),
        _ => anyhow::bail!("unsupported request {method} {path}"),
    };
    let mut resp = sent.with_context(|| format!("{method} {url}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(BODY_LIMIT)
        .read_to_string()
        .with_context(|| format!("reading the answer to {method} {url}"))?;
    Ok(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A one-shot server on loopback that answers the first request with `raw`.
    fn serve(raw: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(raw);
        });
        addr
    }

    #[test]
    fn plain_and_chunked_bodies_are_read_whole() {
        let t = Duration::from_secs(5);
        let a = serve(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
        let r = request("POST", a, "/jobs", Some("{}"), t).unwrap();
        assert_eq!((r.status, r.body.as_str()), (202, "{}"));
        let a = serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        assert_eq!(request("GET", a, "/", None, t).unwrap().body, "abcde");
        // Any status is a response.
        let a = serve(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(request("GET", a, "/", None, t).unwrap().status, 404);
    }

    #[test]
    fn malformed_and_cut_off_answers_are_errors_not_short_bodies() {
        let t = Duration::from_secs(5);
        // A chunk whose size line is not hex: the old hand-written parser returned "abc".
        let a = serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\nde\r\n0\r\n\r\n");
        assert!(request("GET", a, "/", None, t).is_err());
        // Fewer bytes than content-length promised, then the connection closes.
        let a = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc");
        assert!(request("GET", a, "/", None, t).is_err());
        let a = serve(b"garbage\r\n\r\n");
        assert!(request("GET", a, "/", None, t).is_err());
    }
}
