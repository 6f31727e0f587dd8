//! The HTTP/1.1 transport under one [`McpClient`](super::McpClient): one keep-alive
//! connection of its own, on hyper's connection API.
//!
//! Why not reqwest's pooled client (what this module replaced): a load agent holds one
//! connection per worker, and at 1,000 workers the pool's per-connection state dominated the
//! agent's memory. heaptrack at 1,000 workers put ~46 KB per connection inside the pooled
//! client (the dispatcher's channel block sized for reqwest's request type, an adaptive read
//! buffer that grew to ~13 KB, the write buffer) plus ~8 KB per in-flight request of pool and
//! boxing; the budget is 64 MB for all 1,000. Owning the connection lets us fix the
//! read buffer's size, send a small request type, and skip the pool: a worker's requests are
//! sequential anyway, so a pool only ever handed each worker "its" connection back.
//!
//! One connection per client also makes the load shape explicit: N workers are N TCP
//! connections, as in wrk and k6. A connection that breaks (server restart, a response body
//! we stopped reading, e.g. an SSE stream left open after our response) is replaced on the
//! next request; only plain `http://` is spoken (the agent has no TLS).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// The read buffer of each connection, fixed (hyper's adaptive default starts at 8 KiB and
/// grows). Bodies stream through it in chunks, so large results still work; a response HEAD
/// larger than this is refused ("message head is too large", a transport error). MCP response
/// heads are a few hundred bytes, and 4 KiB is also nginx's default limit for an upstream's
/// response head (`proxy_buffer_size`, one page), so a server behind nginx never sends more.
const READ_BUF: usize = 4 * 1024;

/// What can go wrong below HTTP semantics.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The MCP URL cannot be used by this client.
    #[error("unsupported MCP URL {url}: {reason}")]
    Url {
        /// As given.
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// The TCP connection could not be made (refused, unreachable, DNS…).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed (reset, closed mid-response, malformed response…).
    #[error("HTTP exchange with {addr} failed: {source}")]
    Http {
        /// `host:port`.
        addr: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// The response body broke off (reset, closed early, bad chunking…).
    #[error("reading the response body failed: {source}")]
    Body {
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// A request could not be built from our parts (a bug, reported rather than panicking).
    #[error("cannot build the request: {0}")]
    Request(#[source] http::Error),
}

/// One keep-alive HTTP/1.1 connection, (re)made on demand.
pub struct Transport {
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    host: HeaderValue,
    /// Path and query of the endpoint (origin-form request target).
    path: http::uri::PathAndQuery,
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("addr", &self.addr)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// For the endpoint `url` (`http://host[:port]/path`). Connects lazily.
    pub fn new(url: &str) -> Result<Self, TransportError> {
        let bad = |reason| TransportError::Url {
            url: url.to_owned(),
            reason,
        };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a valid URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad("https is not supported (the agent speaks plain HTTP)"));
            }
            _ => return Err(bad("the scheme must be http://")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "credentials in the URL are not supported (use --bearer)",
            ));
        }
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host();
        let addr = format!("{}:{port}", host);
        let host_header = HeaderValue::from_str(authority.as_str()).map_err(|_| bad("bad host"))?;
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        Ok(Self {
            addr,
            host: host_header,
            path,
            conn: Mutex::new(None),
        })
    }

    /// Make the connection now unless one is open (later sends reuse it).
    pub async fn open(&self) -> Result<(), TransportError> {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_none_or(SendRequest::is_closed) {
            *slot = Some(self.connect().await?);
        }
        Ok(())
    }

    /// Send one request; the caller reads (or drops) the response body.
    ///
    /// Waits for the connection to be free (a previous body not yet read to its end keeps it
    /// busy); a closed or broken connection is replaced before the request is sent. When a
    /// reused keep-alive connection turns out closed (the server's idle timeout racing our
    /// request) and hyper hands the request back unsent, it goes out once more on a new
    /// connection, as pooled clients do; a request that may have reached the server is never
    /// sent twice: one already written into a connection the server had closed is a
    /// [`TransportError::Http`] (hyper's "connection closed before message completed").
    pub async fn send(
        &self,
        method: Method,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>, TransportError> {
        let mut req = Request::builder()
            .method(method)
            .uri(self.path.clone())
            .body(Full::new(body))
            .map_err(TransportError::Request)?;
        *req.headers_mut() = headers;
        req.headers_mut()
            .insert(http::header::HOST, self.host.clone());
        let (response, reused) = {
            let mut slot = self.conn.lock().await;
            let (sender, reused) = match slot.take() {
                Some(mut s) => match s.ready().await {
                    Ok(()) => (s, true),
                    Err(_) => (self.connect().await?, false),
                },
                None => (self.connect().await?, false),
            };
            // The returned future does not borrow the sender: the lock is released before the
            // response is awaited.
            (slot.insert(sender).try_send_request(req), reused)
        };
        match response.await {
            Ok(r) => Ok(r),
            Err(mut e) => match (reused, e.take_message()) {
                (true, Some(req)) => {
                    let retry = {
                        let mut slot = self.conn.lock().await;
                        slot.insert(self.connect().await?).send_request(req)
                    };
                    retry.await.map_err(|source| self.http_error(source))
                }
                _ => Err(self.http_error(e.into_error())),
            },
        }
    }

    fn http_error(&self, source: hyper::Error) -> TransportError {
        TransportError::Http {
            addr: self.addr.clone(),
            source,
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, TransportError> {
        let connect_err = |source| TransportError::Connect {
            addr: self.addr.clone(),
            source,
        };
        let tcp = TcpStream::connect(&self.addr).await.map_err(connect_err)?;
        tcp.set_nodelay(true).map_err(connect_err)?;
        let (sender, conn) = http1::Builder::new()
            .read_buf_exact_size(Some(READ_BUF))
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|source| self.http_error(source))?;
        // The connection's I/O runs on its own task and ends when the sender is dropped or
        // the server closes; its error, if any, surfaces on the next send.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "MCP connection closed");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{Shutdown, TcpListener};
    use std::sync::mpsc;

    use super::*;

    /// Reads one request (head and content-length body) off a blocking socket; returns its body,
    /// or `None` at EOF.
    fn read_request(r: &mut BufReader<std::net::TcpStream>) -> Option<String> {
        let mut len = 0;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().ok()?;
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).ok()?;
        String::from_utf8(body).ok()
    }

    fn respond(mut w: &std::net::TcpStream, body: &str) -> std::io::Result<()> {
        write!(
            w,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// The server closes an idle keep-alive connection just as our next request goes out on
    /// it (its idle timeout racing the request): the request is written into the dead
    /// connection, so it may have reached the server and is not sent again (a tools/call is
    /// not idempotent; Go's net/http, under k6, decides the same for a POST once written). It
    /// is a transport error, and the request after it goes out on a new connection.
    ///
    /// Deterministic on a current-thread runtime because tokio learns a socket's readiness only
    /// when its I/O driver is polled, and woken tasks run before that poll: once the request is
    /// queued, the connection task runs, still sees the socket not readable (the FIN not yet
    /// learned), and writes. The sleep only makes sure the FIN has landed by then. If a tokio or
    /// hyper upgrade changes that order, hyper hands the request back unsent instead, it is
    /// retried, and this test fails on the server having seen "two".
    #[tokio::test(flavor = "current_thread")]
    async fn a_request_written_into_a_closed_connection_fails_once_and_is_not_resent() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (close_tx, close_rx) = mpsc::channel::<()>();
        let (closed_tx, closed_rx) = mpsc::channel::<()>();
        let (seen_tx, seen_rx) = mpsc::channel::<(usize, String)>();
        std::thread::spawn(move || {
            for (n, sock) in listener.incoming().enumerate() {
                let Ok(sock) = sock else { return };
                let mut reader = BufReader::new(sock.try_clone().expect("clone"));
                if n == 0 {
                    // One exchange, then close when told to.
                    let Some(body) = read_request(&mut reader) else {
                        return;
                    };
                    let _ = seen_tx.send((n, body));
                    let _ = respond(&sock, "first");
                    let _ = close_rx.recv();
                    let _ = sock.shutdown(Shutdown::Both);
                    let _ = closed_tx.send(());
                } else {
                    while let Some(body) = read_request(&mut reader) {
                        let _ = seen_tx.send((n, body));
                        let _ = respond(&sock, "again");
                    }
                }
            }
        });

        let t = Transport::new(&format!("http://{addr}/mcp")).expect("url");
        let read = async |r: Response<Incoming>| {
            use http_body_util::BodyExt;
            let bytes = r.into_body().collect().await.expect("body").to_bytes();
            String::from_utf8(bytes.to_vec()).expect("utf-8")
        };
        let r = t
            .send(Method::POST, HeaderMap::new(), Bytes::from_static(b"one"))
            .await
            .expect("first request");
        assert_eq!(read(r).await, "first");

        close_tx.send(()).expect("server alive");
        closed_rx.recv().expect("server closed the connection");
        // Let the FIN land (blocking, so the runtime learns nothing meanwhile).
        std::thread::sleep(std::time::Duration::from_millis(100));
        let err = t
            .send(Method::POST, HeaderMap::new(), Bytes::from_static(b"two"))
            .await
            .expect_err("written into a closed connection");
        assert!(
            matches!(&err, TransportError::Http { source, .. } if source.is_incomplete_message()),
            "{err:?}"
        );
        let r = t
            .send(Method::POST, HeaderMap::new(), Bytes::from_static(b"three"))
            .await
            .expect("the next request, on a new connection");
        assert_eq!(read(r).await, "again");

        let seen: Vec<_> = seen_rx.try_iter().collect();
        assert_eq!(
            seen,
            [(0, "one".to_owned()), (1, "three".to_owned())],
            "\"two\" was never sent a second time"
        );
    }

    #[test]
    fn urls() {
        let t = Transport::new("http://127.0.0.1:3000/mcp").expect("valid");
        assert_eq!(t.addr, "127.0.0.1:3000");
        assert_eq!(t.path.as_str(), "/mcp");
        assert_eq!(t.host, "127.0.0.1:3000");
        let t = Transport::new("http://mcp.example/").expect("valid");
        assert_eq!(t.addr, "mcp.example:80");
        let t = Transport::new("http://[::1]:8080/a?b=c").expect("valid");
        assert_eq!(t.addr, "[::1]:8080");
        assert_eq!(t.path.as_str(), "/a?b=c");
        for bad in [
            "https://x/mcp",
            "ftp://x/",
            "not a url",
            "/mcp",
            "http://u:p@x/mcp",
        ] {
            assert!(
                matches!(Transport::new(bad), Err(TransportError::Url { .. })),
                "{bad}"
            );
        }
    }
}
