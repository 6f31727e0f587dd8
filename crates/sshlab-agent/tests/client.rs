//! The MCP client against the real `mcp-ssh-server` (both eras) and against hostile servers.

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use clap::Parser;
    use serde_json::{Value, json};
    use sshlab_agent::mcp::{ClientOptions, Era, McpClient, McpError, Protocol};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    async fn real_server() -> Result<mcp_ssh_server::Running, Box<dyn std::error::Error>> {
        let opts = mcp_ssh_server::Opts::parse_from(["mcp-ssh-server", "--bind", "127.0.0.1:0"]);
        Ok(mcp_ssh_server::start(mcp_ssh_server::Config::resolve(&opts)?).await?)
    }

    fn opts(addr: SocketAddr, protocol: Protocol, timeout: Duration) -> ClientOptions {
        ClientOptions {
            url: format!("http://{addr}/mcp"),
            protocol,
            request_timeout: timeout,
            bearer: None,
            client_name: "sshlab-agent-test".into(),
            inputs: Default::default(),
        }
    }

    async fn exercise(client: &McpClient) -> TestResult {
        let tools = client.list_tools().await?;
        assert_eq!(tools.len(), 13, "{tools:?}");
        let ok = client.call_tool("ssh_list_sessions", json!({})).await?;
        assert!(!ok.is_error, "{ok:?}");
        let bad = client
            .call_tool(
                "ssh_hostname",
                json!({"session_id": "00000000-0000-4000-8000-000000000000"}),
            )
            .await?;
        assert!(bad.is_error, "{bad:?}");
        assert!(!bad.text.is_empty());
        match client.call_tool("no_such_tool", json!({})).await {
            Err(McpError::JsonRpc { code, .. }) => assert_eq!(code, -32602),
            other => panic!("expected -32602, got {other:?}"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn auto_speaks_modern_to_the_real_server() -> TestResult {
        let server = real_server().await?;
        let client =
            McpClient::connect(opts(server.addr, Protocol::Auto, Duration::from_secs(10))).await?;
        assert_eq!(client.era(), Era::Modern);
        assert_eq!(client.protocol_version(), "2026-07-28");
        exercise(&client).await?;
        client.close().await?;
        server.stop().await?;
        Ok(())
    }

    #[tokio::test]
    async fn legacy_speaks_2025_with_a_session() -> TestResult {
        let server = real_server().await?;
        let client = McpClient::connect(opts(
            server.addr,
            Protocol::Legacy("2025-11-25".into()),
            Duration::from_secs(10),
        ))
        .await?;
        assert_eq!(client.era(), Era::Legacy);
        assert_eq!(client.protocol_version(), "2025-11-25");
        assert!(client.session_id().is_some());
        exercise(&client).await?;
        client.close().await?;
        server.stop().await?;
        Ok(())
    }

    #[tokio::test]
    async fn nothing_listening_is_a_transport_error() -> TestResult {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            l.local_addr()?
        };
        let start = Instant::now();
        let r = McpClient::connect(opts(addr, Protocol::Auto, Duration::from_secs(10))).await;
        match r {
            Err(e @ McpError::Transport(_)) => assert_eq!(e.kind(), "transport"),
            other => panic!("expected Transport, got {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(3));
        Ok(())
    }

    // ---- hostile servers: raw HTTP/1.1 over a TcpListener ----

    /// What a hostile server does with one request: the raw bytes to write, then whether to
    /// keep the connection open (forever) afterwards.
    type Handler = Arc<dyn Fn(&str, &Value) -> (String, bool) + Send + Sync>;

    /// The request's head (lowercased) and JSON body (`Null` when absent or not JSON).
    async fn read_request(sock: &mut TcpStream) -> Option<(String, Value)> {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < end + 4 + len {
                    let n = sock.read(&mut tmp).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                let body =
                    serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap_or(Value::Null);
                return Some((head, body));
            }
            let n = sock.read(&mut tmp).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&tmp[..n]);
        }
    }

    async fn hostile(handler: Handler) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let (head, body) = read_request(&mut sock).await.unwrap_or_default();
                    let (raw, keep_open) = handler(&head, &body);
                    if sock.write_all(raw.as_bytes()).await.is_err() {
                        return;
                    }
                    if keep_open {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                });
            }
        });
        Ok(addr)
    }

    fn http(status: &str, content_type: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn json_reply(body: &Value) -> String {
        http("200 OK", "application/json", &body.to_string())
    }

    fn modern_discover(req: &Value) -> String {
        json_reply(&json!({"jsonrpc": "2.0", "id": req["id"], "result": {
            "resultType": "complete", "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {}}, "ttlMs": 0, "cacheScope": "public"}}))
    }

    async fn modern_client(handler: Handler, timeout: Duration) -> Result<McpClient, McpError> {
        let addr = hostile(handler)
            .await
            .map_err(|e| McpError::InvalidResponse(e.to_string()))?;
        McpClient::connect(opts(addr, Protocol::Modern, timeout)).await
    }

    #[tokio::test]
    async fn wrong_id_is_an_id_mismatch() -> TestResult {
        let h: Handler = Arc::new(|_head, req| {
            let id = req["id"].as_u64().unwrap_or(0) + 100;
            (
                json_reply(&json!({"jsonrpc": "2.0", "id": id, "result": {"tools": []}})),
                false,
            )
        });
        let client = modern_client(h, Duration::from_secs(5)).await?;
        match client.list_tools().await {
            Err(e @ McpError::IdMismatch { .. }) => assert_eq!(e.kind(), "id_mismatch"),
            other => panic!("expected IdMismatch, got {other:?}"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn garbage_is_an_invalid_response() -> TestResult {
        let h: Handler =
            Arc::new(|_head, _| (http("200 OK", "application/json", "<html>nope"), false));
        let client = modern_client(h, Duration::from_secs(5)).await?;
        match client.list_tools().await {
            Err(McpError::InvalidResponse(_)) => {}
            other => panic!("expected InvalidResponse, got {other:?}"),
        }
        // An SSE stream that ends without the response is invalid too.
        let h: Handler = Arc::new(|_head, _| {
            let sse = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n";
            (http("200 OK", "text/event-stream", sse), false)
        });
        let client = modern_client(h, Duration::from_secs(5)).await?;
        match client.request("tools/list", json!({})).await {
            Err(McpError::InvalidResponse(_)) => {}
            other => panic!("expected InvalidResponse, got {other:?}"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() -> TestResult {
        let h: Handler = Arc::new(|_head, _| (String::new(), true));
        let client = modern_client(h, Duration::from_millis(400)).await?;
        let start = Instant::now();
        match client.list_tools().await {
            Err(McpError::Timeout) => {}
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        Ok(())
    }

    /// SSE resumption (2025-11-25, SEP-1699) across more than one resumed stream: the first
    /// stream ends after an event with id `e-1`; the resumed one brings only a notification
    /// without an id and then an event, with id `e-2`, that the stream ends inside (no blank
    /// line after it); the next resumption must still ask from `e-1` (resuming from `e-2` would
    /// skip the event that was cut), and the unfinished event must not count as the response. Before, a resumed stream started without the last id (so this one failed
    /// with "without an event id to resume from"), and the unfinished event was taken.
    #[tokio::test]
    async fn resumed_streams_keep_the_last_event_id_and_drop_unfinished_events() -> TestResult {
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicU64, Ordering};
        let call_id = Arc::new(AtomicU64::new(0));
        let gets = Arc::new(Mutex::new(Vec::<String>::new()));
        let (call_id2, gets2) = (call_id.clone(), gets.clone());
        let h: Handler = Arc::new(move |head, req| {
            if req["method"] == "server/discover" {
                return (modern_discover(req), false);
            }
            let sse = |body: &str| http("200 OK", "text/event-stream", body);
            if head.starts_with("post") {
                call_id2.store(req["id"].as_u64().unwrap_or(0), Ordering::SeqCst);
                return (sse("id: e-1\nretry: 10\ndata: \n\n"), false);
            }
            let id = call_id2.load(Ordering::SeqCst);
            let reply = |text: &str| {
                json!({"jsonrpc": "2.0", "id": id, "result": {"resultType": "complete",
                    "content": [{"type": "text", "text": text}], "isError": false}})
            };
            let mut gets = gets2.lock().unwrap_or_else(|e| e.into_inner());
            gets.push(
                head.lines()
                    .find_map(|l| l.strip_prefix("last-event-id:"))
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
            );
            let note = json!({"jsonrpc": "2.0", "method": "notifications/message",
                "params": {"level": "info", "data": "working"}});
            let body = if gets.len() == 1 {
                format!("data: {note}\n\nid: e-2\ndata: {}", reply("unfinished"))
            } else {
                format!("data: {}\n\n", reply("resumed"))
            };
            (sse(&body), false)
        });
        let addr = hostile(h).await?;
        let client = McpClient::connect(opts(addr, Protocol::Auto, Duration::from_secs(5))).await?;
        let r = client.call_tool("greet", json!({})).await?;
        assert_eq!(r.text, "resumed");
        let gets = gets.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(
            gets,
            ["e-1", "e-1"],
            "each resumption asks from the last id seen"
        );
        Ok(())
    }

    #[tokio::test]
    async fn sse_with_a_notification_first_and_an_open_stream_works() -> TestResult {
        let h: Handler = Arc::new(|_head, req| {
            if req["method"] == "server/discover" {
                return (modern_discover(req), false);
            }
            // Headers without a length: the stream stays open after the response.
            let note = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": 1, "progress": 1}});
            let resp = json!({"jsonrpc": "2.0", "id": req["id"], "result": {
                "resultType": "complete",
                "content": [{"type": "text", "text": "hello"}], "isError": false}});
            let raw = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n: hi\r\n\r\nevent: message\r\ndata: {note}\r\n\r\nevent: message\r\ndata: {resp}\r\n\r\n"
            );
            (raw, true)
        });
        let addr = hostile(h).await?;
        let client = McpClient::connect(opts(addr, Protocol::Auto, Duration::from_secs(3))).await?;
        assert_eq!(client.era(), Era::Modern);
        let r = client.call_tool("greet", json!({})).await?;
        assert!(!r.is_error);
        assert_eq!(r.text, "hello");
        // The stream we stopped reading keeps that connection busy for good: the next call
        // must go out on a new one, promptly, not wait for the old one or time out (3 s).
        let start = Instant::now();
        let r = client.call_tool("greet", json!({})).await?;
        assert_eq!(r.text, "hello");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        Ok(())
    }

    #[tokio::test]
    async fn input_required_is_a_failure_of_its_own_kind() -> TestResult {
        let h: Handler = Arc::new(|_head, req| {
            if req["method"] == "server/discover" {
                return (modern_discover(req), false);
            }
            let resp = json!({"jsonrpc": "2.0", "id": req["id"], "result": {
                "resultType": "input_required", "requestState": "s1",
                "inputRequests": {"confirm": {"method": "elicitation/create",
                    "params": {"message": "Really?", "requestedSchema": {"type": "object"}}}}}});
            (json_reply(&resp), false)
        });
        let addr = hostile(h).await?;
        let client = McpClient::connect(opts(addr, Protocol::Auto, Duration::from_secs(3))).await?;
        match client.call_tool("deploy", json!({})).await {
            Err(e @ McpError::InputRequired { .. }) => {
                assert_eq!(e.kind(), "input_required");
                assert!(e.to_string().contains("elicitation/create"), "{e}");
            }
            other => panic!("expected InputRequired, got {other:?}"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_connect_that_hangs_is_a_bounded_timeout() -> TestResult {
        // A listener that never accepts, with its backlog full: the kernel drops further SYNs,
        // so a TCP connect hangs (for minutes, by the kernel's own retries) unless bounded.
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind("127.0.0.1:0".parse()?)?;
        let listener = sock.listen(1)?;
        let addr = listener.local_addr()?;
        let mut filler = Vec::new();
        for _ in 0..4 {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
            {
                filler.push(s);
            }
        }
        let start = Instant::now();
        let r = McpClient::connect(opts(addr, Protocol::Modern, Duration::from_millis(500))).await;
        assert!(matches!(r, Err(McpError::Timeout)), "{r:?}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        drop(listener);
        Ok(())
    }

    #[tokio::test]
    async fn a_body_cut_short_is_a_transport_error() -> TestResult {
        let h: Handler = Arc::new(|_head, req| {
            if req["method"] == "server/discover" {
                return (modern_discover(req), false);
            }
            // Promises 500 bytes, sends a few, closes.
            (
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"jsonrpc\""
                    .to_owned(),
                false,
            )
        });
        let addr = hostile(h).await?;
        let client = McpClient::connect(opts(addr, Protocol::Auto, Duration::from_secs(3))).await?;
        let start = Instant::now();
        match client.call_tool("t", json!({})).await {
            Err(e @ McpError::Transport(_)) => {
                assert_eq!(e.kind(), "transport");
                assert!(e.to_string().contains("response body"), "{e}");
            }
            other => panic!("expected a transport error, got {other:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        Ok(())
    }

    #[tokio::test]
    async fn one_client_keeps_one_connection_alive() -> TestResult {
        // A keep-alive server that counts the connections it accepts.
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    while let Some((_, req)) = read_request(&mut sock).await {
                        let body = json!({"jsonrpc": "2.0", "id": req["id"], "result": {
                            "content": [{"type": "text", "text": "hi"}], "isError": false}})
                        .to_string();
                        let raw = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(raw.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let client =
            McpClient::connect(opts(addr, Protocol::Modern, Duration::from_secs(3))).await?;
        for _ in 0..5 {
            assert_eq!(client.call_tool("t", json!({})).await?.text, "hi");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        Ok(())
    }

    /// A 2025-only server whose answer to `server/discover` is `discover_reply(id)`.
    fn legacy_only(discover_reply: fn(&Value) -> String) -> Handler {
        Arc::new(move |_head, req| {
            let reply =
                |result: Value| json!({"jsonrpc": "2.0", "id": req["id"], "result": result});
            match req["method"].as_str() {
                Some("server/discover") => (discover_reply(&req["id"]), false),
                Some("initialize") => {
                    let body = reply(json!({"protocolVersion": "2025-06-18", "capabilities": {},
                        "serverInfo": {"name": "old", "version": "1"}}))
                    .to_string();
                    (
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: abc-123\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        false,
                    )
                }
                Some("notifications/initialized") => (
                    "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .into(),
                    false,
                ),
                Some("tools/list") => {
                    (json_reply(&reply(json!({"tools": [{"name": "t"}]}))), false)
                }
                _ => (http("404 Not Found", "text/plain", "no"), false),
            }
        })
    }

    #[tokio::test]
    async fn a_legacy_only_server_makes_auto_fall_back() -> TestResult {
        // Refused with a 400; answered `{}` (as the conformance suite's 2025 server answers any
        // method it does not know; before, auto gave up with "supported: []"); a version list
        // with nothing this agent speaks.
        let replies: [fn(&Value) -> String; 3] = [
            |_| http("400 Bad Request", "application/json", ""),
            |id| json_reply(&json!({"jsonrpc": "2.0", "id": id, "result": {}})),
            |id| {
                json_reply(&json!({"jsonrpc": "2.0", "id": id,
                    "result": {"supportedVersions": ["2031-01-01"]}}))
            },
        ];
        for discover in replies {
            let addr = hostile(legacy_only(discover)).await?;
            let client =
                McpClient::connect(opts(addr, Protocol::Auto, Duration::from_secs(3))).await?;
            assert_eq!(client.era(), Era::Legacy);
            assert_eq!(client.protocol_version(), "2025-06-18");
            assert_eq!(client.session_id(), Some("abc-123"));
            assert_eq!(client.list_tools().await?.len(), 1);
        }
        Ok(())
    }

    /// A 429 keeps the delay and the server's words (they name the limit that was hit).
    #[tokio::test]
    async fn http_429_is_rate_limited() -> TestResult {
        let h: Handler = Arc::new(|_head, _| {
            let body = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Rate limit exceeded (address); retry after 7 s"}}"#;
            (
                format!(
                    "HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                ),
                false,
            )
        });
        let client = modern_client(h, Duration::from_secs(3)).await?;
        match client.list_tools().await {
            Err(e @ McpError::RateLimited { .. }) => {
                assert_eq!(
                    e.to_string(),
                    "rate limited (HTTP 429, retry after 7 s): Rate limit exceeded (address); retry after 7 s"
                );
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn legacy_404_is_session_expired() -> TestResult {
        let h: Handler = Arc::new(|head, req| {
            let reply =
                |result: Value| json!({"jsonrpc": "2.0", "id": req["id"], "result": result});
            match req["method"].as_str() {
                Some("initialize") => {
                    let body = reply(json!({"protocolVersion": "2025-11-25", "capabilities": {},
                        "serverInfo": {"name": "old", "version": "1"}}))
                    .to_string();
                    let raw = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: s1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    (raw, false)
                }
                Some("notifications/initialized") if head.contains("mcp-session-id: s1") => (
                    "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .into(),
                    false,
                ),
                _ => (
                    http("404 Not Found", "text/plain", "Session not found"),
                    false,
                ),
            }
        });
        let addr = hostile(h).await?;
        let client = McpClient::connect(opts(
            addr,
            Protocol::Legacy("2025-11-25".into()),
            Duration::from_secs(3),
        ))
        .await?;
        match client.list_tools().await {
            Err(e @ McpError::SessionExpired) => assert_eq!(e.kind(), "session_expired"),
            other => panic!("expected SessionExpired, got {other:?}"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn modern_requests_carry_meta_headers_and_bearer() -> TestResult {
        let h: Handler = Arc::new(|head, req| {
            let meta = &req["params"]["_meta"];
            let ok = head.contains("content-type: application/json")
                && head.contains("accept: application/json, text/event-stream")
                && head.contains("mcp-protocol-version: 2026-07-28")
                && head.contains("mcp-method: tools/call")
                && head.contains("mcp-name: =?base64?w6ndqq==?=") // head is lowercased
                && head.contains("authorization: bearer tok")
                && meta["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
                && meta["io.modelcontextprotocol/clientCapabilities"] == json!({})
                && meta["io.modelcontextprotocol/clientInfo"]["name"] == "sshlab-agent-test"
                && req["params"]["name"] == "éé";
            let result = json!({"resultType": "complete", "isError": !ok,
                "content": [{"type": "text", "text": head}]});
            (
                json_reply(&json!({"jsonrpc": "2.0", "id": req["id"], "result": result})),
                false,
            )
        });
        let addr = hostile(h).await?;
        let mut o = opts(addr, Protocol::Modern, Duration::from_secs(3));
        o.bearer = Some("tok".into());
        let client = McpClient::connect(o).await?;
        assert!(!format!("{client:?}").contains("tok\""));
        let r = client.call_tool("éé", json!({})).await?;
        assert!(!r.is_error, "{}", r.text);
        Ok(())
    }
}
