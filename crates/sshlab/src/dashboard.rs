//! `sshlab run --dashboard [ADDR]`: the Agent VM's live dashboard, on the host.
//!
//! The agent serves the dashboard inside the lab (`sshlab-agent serve --dashboard`, on the
//! agent VM's `dashboard` service of vms/topology.toml); this module only forwards it. The
//! lab's addresses are not reachable from where the user's browser runs: on the netns backend
//! the whole lab lives inside the namespace `--netns` names, which the machine's own namespace
//! never sees. So the listening socket is opened *before* `sshlab` enters that namespace
//! ([`bind`], called while the process is still in the user's namespace), and the connections
//! to the agent are made *after* (by [`Forwarder`]'s threads, which inherit the namespace
//! `sshlab` entered): a socket stays in the namespace it was created in. The same holds on the
//! qemu and microvm backends, whose guests sit on the bridge of the namespace `sshlab` runs in.
//!
//! Forwarding is plain TCP, byte for byte in both directions: the page, its event stream (a
//! response that lasts the whole run), `/metrics` and the stop button all pass unchanged. At
//! most [`MAX_CONNECTIONS`] at once; more are closed on arrival.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections forwarded at once (a browser opens a few per page).
pub const MAX_CONNECTIONS: usize = 64;

/// How long connecting to the agent's dashboard may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the accept loop looks for a stop.
const POLL: Duration = Duration::from_millis(50);

/// Why the dashboard cannot be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address may not be used (not loopback without `--dashboard-public`, bad syntax).
    #[error(transparent)]
    Addr(#[from] sshlab_core::dashboard::AddrError),
    /// The address is taken, or not ours to listen on.
    #[error("Cannot serve the dashboard on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Listens on `addr` (checked: loopback unless `public`), in the namespace the caller is in.
pub fn bind(addr: &str, public: bool) -> Result<TcpListener, Error> {
    use sshlab_core::dashboard::{check, parse_addr};
    let addr = check(parse_addr(addr)?, public)?;
    let listener = TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?;
    // Non-blocking accepts, so the loop can see a stop: the listener is in another namespace
    // than the forwarder's threads, which therefore cannot wake it by connecting to it.
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Bind { addr, source })?;
    Ok(listener)
}

/// Forwards every connection to `listener` to the agent's dashboard until dropped.
#[derive(Debug)]
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The URL to open.
    pub url: String,
}

impl Forwarder {
    /// Starts forwarding `listener` to `agent` (call it inside the lab's namespace).
    pub fn start(listener: TcpListener, agent: SocketAddr) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let url = sshlab_core::dashboard::url(addr);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dashboard-forward".into())
            .spawn(move || accept_loop(&listener, agent, &stopped))?;
        Ok(Self {
            stop,
            thread: Some(thread),
            addr,
            url,
        })
    }
}

impl Drop for Forwarder {
    /// Stops accepting; connections being forwarded end with the agent (or the process).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, agent: SocketAddr, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => {
                // Out of descriptors and the like: wait, do not spin.
                eprintln!("run: dashboard: accept failed: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            continue; // dropped: closed on arrival
        }
        active.fetch_add(1, Ordering::Relaxed);
        let active = active.clone();
        let spawned = std::thread::Builder::new()
            .name("dashboard-conn".into())
            .spawn(move || {
                forward(client, agent);
                active.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            eprintln!("run: dashboard: cannot start a thread for a connection; dropped");
        }
    }
}

/// One connection: to the agent, then bytes both ways until either side closes.
fn forward(client: TcpStream, agent: SocketAddr) {
    let _ = client.set_nonblocking(false);
    let upstream = match TcpStream::connect_timeout(&agent, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            unavailable(client, agent, &e);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (Ok(client_r), Ok(upstream_w)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::Builder::new()
        .name("dashboard-up".into())
        .spawn(move || pump(client_r, upstream_w));
    pump(upstream, client);
    if let Ok(t) = up {
        let _ = t.join();
    }
}

/// Copies `from` to `to` until `from` ends, then ends `to`'s writing and `from`'s reading.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// The answer when the agent's dashboard cannot be reached (the lab still booting, an agent
/// started without `--dashboard`).
fn unavailable(mut client: TcpStream, agent: SocketAddr, e: &std::io::Error) {
    let body = format!(
        "The Agent VM's dashboard at {agent} cannot be reached ({e}): the lab may still be \
         booting; reload in a moment.\n"
    );
    let _ = write!(
        client,
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn forwards_both_ways_and_says_when_the_agent_is_not_there() {
        // An "agent" that answers one request with what it read.
        let agent = TcpListener::bind("127.0.0.1:0").unwrap();
        let agent_addr = agent.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = agent.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            let body = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        });
        let f = Forwarder::start(bind("127.0.0.1:0", false).unwrap(), agent_addr).unwrap();
        let answer = get(f.addr);
        assert!(answer.ends_with("GET / HTTP/1.1"), "{answer}");
        drop(f);

        // Nobody there: a 502 that says what to do.
        let gone = TcpListener::bind("127.0.0.1:0").unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        let f = Forwarder::start(bind("127.0.0.1:0", false).unwrap(), gone_addr).unwrap();
        let answer = get(f.addr);
        assert!(
            answer.starts_with("HTTP/1.1 502") && answer.contains("reload"),
            "{answer}"
        );
    }

    #[test]
    fn addresses_follow_the_dashboard_rules() {
        let e = bind("0.0.0.0:0", false).unwrap_err();
        assert!(e.to_string().contains("--dashboard-public"), "{e}");
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = bind(&port.to_string(), false).unwrap_err();
        assert!(matches!(e, Error::Bind { .. }), "{e}");
    }
}
