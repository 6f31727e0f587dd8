//! MCP protocol behaviour of the real server over real HTTP, in both eras: lifecycle,
//! negotiation, header rules, error codes, encodings, health, metrics and rate limits.
//! No SSH is needed here; the tools' SSH behaviour is in `tools.rs`.

mod common;

#[cfg(test)]
mod tests {

    use super::common::{Client, Era, http, loopback, metric, metrics_text, post_raw, server};
    use serde_json::{Value, json};

    const JSON_HEADERS: &[(&str, &str)] = &[
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];

    #[tokio::test]
    async fn legacy_lifecycle_initialize_ping_list_delete() {
        let srv = server(&[]).await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        assert_eq!(c.request("ping", json!({})).await, json!({}));
        let list = c.request("tools/list", json!({})).await;
        let tools = list["tools"].as_array().expect("tools");
        assert_eq!(tools.len(), 13);
        assert_eq!(tools[0]["name"], "ssh_connect");
        assert!(list.get("ttlMs").is_none(), "ttlMs is a 2026-07-28 field");
        assert_eq!(metric(srv.addr, "mcp_sessions_active").await, 1.0);

        assert_eq!(c.delete().await, 200);
        let a = c.request_raw("tools/list", json!({})).await;
        assert_eq!(a.status, 404, "an ended session is unknown: {}", a.text);
        assert_eq!(c.delete().await, 404);
        srv.stop().await.expect("stops");
    }

    /// MCP sessions are capped: past the cap, initialize gets a clear 503, and ending one makes
    /// room. Before, every initialize added a session until the idle timeout (30 minutes).
    #[tokio::test]
    async fn mcp_sessions_are_capped() {
        let srv = server(&["--max-mcp-sessions", "3"]).await;
        // From three addresses: one address holds at most as many as are still free.
        let mut open = Vec::new();
        for n in 2..5 {
            open.push(Client::connect_from(Some(loopback(n)), srv.addr, Era::Legacy).await);
        }
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "0"}}});
        let a = post_raw(srv.addr, JSON_HEADERS, &init.to_string()).await;
        assert_eq!(a.status, 503, "{}", a.text);
        assert!(a.text.contains("--max-mcp-sessions"), "{}", a.text);
        assert!(a.headers.get("mcp-session-id").is_none());
        assert_eq!(open[0].delete().await, 200);
        let a = post_raw(srv.addr, JSON_HEADERS, &init.to_string()).await;
        assert_eq!(a.status, 200, "{}", a.text);
        srv.stop().await.expect("stops");
    }

    /// One address cannot take every MCP session: past `--max-mcp-sessions-per-address` its
    /// initialize gets a 503 naming that flag, though the server has room. Before, one client
    /// could fill the server's cap and lock every other client out.
    #[tokio::test]
    async fn one_address_cannot_take_every_mcp_session() {
        let srv = server(&[
            "--max-mcp-sessions",
            "10",
            "--max-mcp-sessions-per-address",
            "2",
        ])
        .await;
        let first = Client::connect(srv.addr, Era::Legacy).await;
        let _second = Client::connect(srv.addr, Era::Legacy).await;
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "0"}}});
        let a = post_raw(srv.addr, JSON_HEADERS, &init.to_string()).await;
        assert_eq!(a.status, 503, "{}", a.text);
        assert!(
            a.text.contains("--max-mcp-sessions-per-address"),
            "{}",
            a.text
        );
        assert_eq!(first.delete().await, 200);
        let a = post_raw(srv.addr, JSON_HEADERS, &init.to_string()).await;
        assert_eq!(a.status, 200, "{}", a.text);
        srv.stop().await.expect("stops");
    }

    /// 2025-era logging/setLevel takes the RFC 5424 levels (the server sends no log messages,
    /// so a valid level changes nothing), and refuses anything else with -32602.
    #[tokio::test]
    async fn legacy_logging_set_level() {
        let srv = server(&[]).await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        assert_eq!(
            c.request("logging/setLevel", json!({"level": "warning"}))
                .await,
            json!({})
        );
        let a = c
            .request_raw("logging/setLevel", json!({"level": "loud"}))
            .await;
        assert_eq!(a.body["error"]["code"], -32602, "{}", a.text);
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn legacy_requests_need_a_known_session() {
        let srv = server(&[]).await;
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
        let a = post_raw(srv.addr, JSON_HEADERS, &body).await;
        assert_eq!(a.status, 400, "{}", a.text);
        assert!(
            a.body["error"]["message"]
                .as_str()
                .expect("msg")
                .contains("Mcp-Session-Id")
        );
        let mut h = JSON_HEADERS.to_vec();
        h.push(("mcp-session-id", "mcp_forged"));
        let a = post_raw(srv.addr, &h, &body).await;
        assert_eq!(a.status, 404, "{}", a.text);
        // ping before initialize is allowed by the 2025 lifecycle.
        let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}).to_string();
        let a = post_raw(srv.addr, JSON_HEADERS, &ping).await;
        assert_eq!((a.status, a.body["result"].clone()), (200, json!({})));
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn initialize_negotiates_the_version() {
        let srv = server(&[]).await;
        for (asked, got) in [
            ("2025-11-25", "2025-11-25"),
            ("2025-06-18", "2025-06-18"),
            ("2025-03-26", "2025-03-26"),
            ("2024-11-05", "2025-11-25"),
        ] {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": asked, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
            let a = post_raw(srv.addr, JSON_HEADERS, &body.to_string()).await;
            assert_eq!(a.body["result"]["protocolVersion"], got, "asked {asked}");
            assert_eq!(a.body["result"]["serverInfo"]["name"], "mcp-ssh-server");
            assert!(a.headers.contains_key("mcp-session-id"));
        }
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn modern_discover_and_list_are_stateless_and_cacheable() {
        let srv = server(&[]).await;
        let mut c = Client::connect(srv.addr, Era::Modern).await;
        let d = c.request("server/discover", json!({})).await;
        let versions = d["supportedVersions"].as_array().expect("versions");
        assert!(versions.contains(&json!("2026-07-28")) && versions.contains(&json!("2025-11-25")));
        assert_eq!(d["capabilities"]["tools"], json!({"listChanged": false}));
        assert_eq!(d["cacheScope"], "public");
        assert!(d["ttlMs"].as_u64().is_some());
        assert_eq!(
            d["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            "mcp-ssh-server"
        );

        let list = c.request("tools/list", json!({})).await;
        assert_eq!(list["cacheScope"], "public");
        assert!(list["ttlMs"].as_u64().is_some());
        let names = |v: &Value| -> Vec<String> {
            v["tools"]
                .as_array()
                .expect("tools")
                .iter()
                .map(|t| t["name"].as_str().expect("name").to_owned())
                .collect()
        };
        let mut legacy = Client::connect(srv.addr, Era::Legacy).await;
        let legacy_list = legacy.request("tools/list", json!({})).await;
        assert_eq!(
            names(&list),
            names(&legacy_list),
            "deterministic order in both eras"
        );
        assert_eq!(
            names(&list),
            names(&c.request("tools/list", json!({})).await)
        );
        // No session was minted for the stateless client.
        assert_eq!(metric(srv.addr, "mcp_sessions_active").await, 1.0);
        let bad_cursor = c
            .request_raw("tools/list", json!({"cursor": "made-up"}))
            .await;
        assert_eq!(bad_cursor.body["error"]["code"], -32602);
        srv.stop().await.expect("stops");
    }

    fn modern_body(method: &str, version: &str, params: Value) -> String {
        let mut params = params;
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params}).to_string()
    }

    #[tokio::test]
    async fn modern_header_rules_and_error_codes() {
        let srv = server(&[]).await;
        let a = srv.addr;
        let call = modern_body(
            "tools/call",
            "2026-07-28",
            json!({"name": "ssh_list_sessions", "arguments": {}}),
        );
        let base = [
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "ssh_list_sessions"),
        ];
        let ok = post_raw(a, &base, &call).await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        assert_eq!(ok.body["result"]["isError"], false);

        // Each required header missing → 400 HeaderMismatch.
        for skip in 2..5 {
            let h: Vec<_> = base
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            let r = post_raw(a, &h, &call).await;
            assert_eq!(
                (r.status, r.body["error"]["code"].clone()),
                (400, json!(-32020)),
                "without {}",
                base[skip].0
            );
        }
        // A header that disagrees with the body → 400 HeaderMismatch.
        let mut h = base.to_vec();
        h[4] = ("mcp-name", "ssh_connect");
        let r = post_raw(a, &h, &call).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].clone()),
            (400, json!(-32020))
        );
        h[4] = base[4];
        h[3] = ("mcp-method", "tools/list");
        let r = post_raw(a, &h, &call).await;
        assert_eq!(r.body["error"]["code"], -32020);

        // Unsupported version → 400 UnsupportedProtocolVersion with the supported list.
        let old = modern_body("tools/list", "1900-01-01", json!({}));
        let h = [
            base[0],
            base[1],
            ("mcp-protocol-version", "1900-01-01"),
            ("mcp-method", "tools/list"),
        ];
        let r = post_raw(a, &h, &old).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].clone()),
            (400, json!(-32022)),
            "{}",
            r.text
        );
        assert_eq!(r.body["error"]["data"]["requested"], "1900-01-01");
        assert!(
            r.body["error"]["data"]["supported"]
                .as_array()
                .expect("list")
                .contains(&json!("2026-07-28"))
        );

        // Missing clientCapabilities → 400 Invalid params.
        let no_caps = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}})
        .to_string();
        let h = [base[0], base[1], base[2], ("mcp-method", "tools/list")];
        let r = post_raw(a, &h, &no_caps).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].clone()),
            (400, json!(-32602))
        );

        // Removed and unknown methods → 404 Method not found (the conformance suite's
        // server-stateless scenario checks initialize and logging/setLevel).
        for m in ["ping", "initialize", "logging/setLevel", "nope"] {
            let body = modern_body(m, "2026-07-28", json!({}));
            let h = [base[0], base[1], base[2], ("mcp-method", m)];
            let r = post_raw(a, &h, &body).await;
            assert_eq!(
                (r.status, r.body["error"]["code"].clone()),
                (404, json!(-32601)),
                "{m}"
            );
        }
        // A 2026-07-28 request (by its header) without _meta, or without the version in it:
        // invalid params, not a generic server error.
        for params in [json!({}), json!({"_meta": {}})] {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params})
                .to_string();
            let h = [base[0], base[1], base[2], ("mcp-method", "tools/list")];
            let r = post_raw(a, &h, &body).await;
            assert_eq!(
                (r.status, r.body["error"]["code"].clone()),
                (400, json!(-32602)),
                "{params}: {}",
                r.text
            );
        }
        // No prompts or resources: empty lists a client may cache like the tool list.
        for (m, key) in [("prompts/list", "prompts"), ("resources/list", "resources")] {
            let body = modern_body(m, "2026-07-28", json!({}));
            let h = [base[0], base[1], base[2], ("mcp-method", m)];
            let r = post_raw(a, &h, &body).await;
            assert_eq!(r.status, 200, "{m}: {}", r.text);
            assert_eq!(r.body["result"][key], json!([]), "{m}: {}", r.text);
            assert_eq!(r.body["result"]["cacheScope"], "public", "{m}: {}", r.text);
        }
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn malformed_http_and_jsonrpc_get_clear_errors() {
        let srv = server(&[]).await;
        let a = srv.addr;
        let r = post_raw(a, JSON_HEADERS, "{not json").await;
        assert_eq!(
            (r.status, r.body["error"]["code"].clone()),
            (400, json!(-32700))
        );
        let r = post_raw(a, JSON_HEADERS, "[1,2]").await;
        assert_eq!(r.body["error"]["code"], -32600);
        let r = post_raw(a, JSON_HEADERS, r#"{"jsonrpc":"2.0","id":1}"#).await;
        assert_eq!(r.body["error"]["code"], -32600);
        let big = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"pad\":\"{}\"}}",
            "x".repeat(1_100_000)
        );
        let r = post_raw(a, JSON_HEADERS, &big).await;
        assert_eq!(r.status, 413, "{}", r.text);
        let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let r = post_raw(a, &[("content-type", "text/plain")], ping).await;
        assert_eq!(r.status, 415);
        let r = post_raw(
            a,
            &[
                ("content-type", "application/json"),
                ("accept", "text/html"),
            ],
            ping,
        )
        .await;
        assert_eq!(r.status, 406);
        let mut evil = JSON_HEADERS.to_vec();
        evil.push(("origin", "http://evil.example"));
        assert_eq!(post_raw(a, &evil, ping).await.status, 403);
        let mut local = JSON_HEADERS.to_vec();
        local.push(("origin", "http://localhost:8080"));
        assert_eq!(post_raw(a, &local, ping).await.status, 200);
        let get = http()
            .get(format!("http://{a}/mcp"))
            .send()
            .await
            .expect("GET");
        assert_eq!(get.status().as_u16(), 405);
        let nf = http()
            .get(format!("http://{a}/nope"))
            .send()
            .await
            .expect("GET");
        assert_eq!(nf.status().as_u16(), 404);

        // The seed's clients POST to / .
        let root = http()
            .post(format!("http://{a}/"))
            .header("content-type", "application/json")
            .body(ping)
            .send()
            .await
            .expect("POST /");
        assert_eq!(root.status().as_u16(), 200);

        let mut c = Client::connect(a, Era::Legacy).await;
        let r = c
            .request_raw("tools/call", json!({"name": "rm_rf", "arguments": {}}))
            .await;
        assert_eq!(r.body["error"]["code"], -32602, "unknown tool: {}", r.text);
        let r = c
            .request_raw(
                "tools/call",
                json!({"name": "ssh_connect", "arguments": [1]}),
            )
            .await;
        assert_eq!(r.body["error"]["code"], -32602);
        let err = c
            .call_err(
                "ssh_connect",
                json!({"host": "h", "user": "u", "port": "x"}),
            )
            .await;
        assert!(err.contains("invalid arguments"), "{err}");
        let err = c
            .call_err("ssh_connect", json!({"host": "h", "user": "u"}))
            .await;
        assert!(err.contains("password or private_key"), "{err}");
        let err = c
            .call_err(
                "ssh_run_command",
                json!({"session_id": "ssh_nope", "command": "id"}),
            )
            .await;
        assert!(err.contains("session not found"), "{err}");
        let notif = c.notify("notifications/cancelled").await;
        assert_eq!(notif.status, 202);
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn sse_when_the_client_accepts_only_event_streams() {
        let srv = server(&[]).await;
        let ping = r#"{"jsonrpc":"2.0","id":"p1","method":"ping"}"#;
        let r = post_raw(
            srv.addr,
            &[
                ("content-type", "application/json"),
                ("accept", "text/event-stream"),
            ],
            ping,
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "text/event-stream");
        let data = r
            .text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("a data line");
        let msg: Value = serde_json::from_str(data).expect("JSON event");
        assert_eq!(msg, json!({"jsonrpc": "2.0", "id": "p1", "result": {}}));
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn health_and_metrics() {
        let srv = server(&[]).await;
        let h: Value = http()
            .get(format!("http://{}/health", srv.addr))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON");
        assert_eq!(h["status"], "healthy");
        for k in ["ssh_sessions", "mcp_sessions", "uptime_s", "version"] {
            assert!(h.get(k).is_some(), "missing {k}: {h}");
        }
        let before = metric(
            srv.addr,
            "mcp_http_requests_total{method=\"GET\",status=\"200\"}",
        )
        .await;
        let after = metric(
            srv.addr,
            "mcp_http_requests_total{method=\"GET\",status=\"200\"}",
        )
        .await;
        assert!(
            after > before,
            "HTTP requests are counted ({before} → {after})"
        );
        assert!(metric(srv.addr, "process_resident_memory_bytes").await > 0.0);
        // CPU time in fractions of a second (the old collector counted whole seconds: 0 here).
        let cpu = metric(srv.addr, "process_cpu_seconds_total").await;
        assert!(
            cpu > 0.0 && cpu.fract() != 0.0,
            "process_cpu_seconds_total {cpu}"
        );

        // Any token is a valid HTTP method; as a label each would be a series kept forever.
        let size = |t: &str| t.len();
        let before = metrics_text(srv.addr).await;
        for i in 0..300 {
            let token = format!("M{i}{}", "X".repeat(2000));
            let m = reqwest::Method::from_bytes(token.as_bytes()).expect("token");
            let _ = http()
                .request(m, format!("http://{}/mcp", srv.addr))
                .send()
                .await
                .expect("answered");
        }
        let after = metrics_text(srv.addr).await;
        assert!(!after.contains("XXXX"), "a client's method became a label");
        assert!(
            size(&after) < size(&before) + 2_000,
            "/metrics grew from {} to {} bytes",
            size(&before),
            size(&after)
        );
        assert!(
            after.lines().any(
                |l| l.starts_with("mcp_http_requests_total{method=\"other\"")
                    && l.ends_with(" 300")
            ),
            "{after}"
        );
        srv.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn rate_limit_per_session_and_per_identity() {
        let srv = server(&["--rate-limit-per-min", "5"]).await;
        let mut a = Client::connect(srv.addr, Era::Legacy).await; // initialize took 1 token
        for _ in 0..4 {
            a.request("ping", json!({})).await;
        }
        let r = a.request_raw("ping", json!({})).await;
        assert_eq!(r.status, 429, "{}", r.text);
        let retry: u64 = r.headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=12).contains(&retry), "retry-after {retry}");
        assert_eq!(r.body["error"]["data"]["retryAfterSeconds"], retry);
        assert_eq!(metric(srv.addr, "mcp_rate_limited_total").await, 1.0);
        // Another MCP session has its own bucket.
        let mut b = Client::connect(srv.addr, Era::Legacy).await;
        b.request("tools/list", json!({})).await;

        // Stateless: the bearer token is the identity.
        let mut t1 = Client::connect(srv.addr, Era::Modern)
            .await
            .with_bearer("token-1");
        let mut t2 = Client::connect(srv.addr, Era::Modern)
            .await
            .with_bearer("token-2");
        for _ in 0..5 {
            t1.request("tools/list", json!({})).await;
        }
        assert_eq!(t1.request_raw("tools/list", json!({})).await.status, 429);
        t2.request("tools/list", json!({})).await;
        srv.stop().await.expect("stops");
    }

    /// A client that rotates identities (a new MCP session, a new bearer token) gets a fresh
    /// client bucket each time but still draws on its address's bucket: the limit does not
    /// reset. Before, 50 sessions of 5 requests each all went through.
    #[tokio::test]
    async fn rotating_sessions_and_bearers_does_not_reset_the_limit() {
        let srv = server(&[
            "--rate-limit-per-min",
            "5",
            "--rate-limit-per-address-per-min",
            "12",
            "--global-rate-limit-per-min",
            "0",
        ])
        .await;
        let mut sent = 0;
        let mut refused = None;
        for i in 0..20 {
            // Each client makes 2 requests (initialize + ping, or two tools/list), well within
            // its own bucket of 5.
            let (a, b) = if i % 2 == 0 {
                let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                               "clientInfo": {"name": "t", "version": "0"}}});
                let a = post_raw(srv.addr, JSON_HEADERS, &init.to_string()).await;
                if a.status != 200 {
                    (a, None)
                } else {
                    let mut c = Client::connect_with_session(srv.addr, &a);
                    let b = c.request_raw("ping", json!({})).await;
                    (a, Some(b))
                }
            } else {
                let mut c = Client::connect(srv.addr, Era::Modern)
                    .await
                    .with_bearer(&format!("rotated-{i}"));
                let a = c.request_raw("tools/list", json!({})).await;
                let b = if a.status == 200 {
                    Some(c.request_raw("tools/list", json!({})).await)
                } else {
                    None
                };
                (a, b)
            };
            for r in std::iter::once(a).chain(b) {
                if r.status == 200 {
                    sent += 1;
                } else {
                    refused.get_or_insert(r);
                }
            }
            if refused.is_some() {
                break;
            }
        }
        let r = refused.expect("rotating identities ran into the address limit");
        assert_eq!(sent, 12, "the address bucket holds 12");
        assert_eq!(r.status, 429, "{}", r.text);
        assert_eq!(r.body["error"]["data"]["scope"], "address", "{}", r.text);
        assert!(r.headers.get("retry-after").is_some());
        srv.stop().await.expect("stops");
    }
}
