//! Accepting HTTP connections within bounds, so idle, slow or half-sent clients cannot take the
//! server down (before, 1,100 idle sockets exhausted `ulimit -n 1024` and the server stopped
//! accepting, `/health` included):
//!
//! - at most [`HttpLimits::max_connections`] connections are served normally (keep-alive);
//! - a request head must arrive within [`HttpLimits::header_timeout`], which also closes a
//!   kept-alive connection that sends no next request (hyper's header-read timer runs whenever
//!   a connection waits for a head);
//! - a request body may pause at most [`HttpLimits::body_timeout`] between frames;
//! - a write to the client may stall at most [`HttpLimits::write_timeout`], so a client that
//!   stops reading its response is cut off and what was held for it is freed;
//! - a large response must be taken at [`HttpLimits::min_send_rate`] or faster: past its
//!   [`HttpLimits::send_deadline`], if its last piece is not yet handed to the socket, the
//!   connection is closed ([`crate::send_deadline`]), so a client that reads a few bytes now and
//!   then cannot hold its charge either;
//! - one remote address (an IPv6 client's /64, [`crate::ratelimit::network_of`]) holds at most
//!   [`HttpLimits::max_per_address`] connections, overflow ones included, so a client that
//!   opens sockets as fast as they are closed (a reconnecting slowloris) keeps only its share;
//! - past the cap, up to [`OVERFLOW`] more connections are served one request each with a
//!   one-second head timeout, but only to an address that holds fewer than
//!   [`OVERFLOW_FEW`] connections: a short request such as `GET /health` from an orchestrator
//!   still gets through while idle sockets hold every regular slot, and the address that holds
//!   them cannot take these too (before, a slowloris reconnecting 250 times a second took
//!   them, and 73% of `/health` probes were refused); beyond that, a new connection is closed
//!   at once (counted in `mcp_http_connections_refused_total`);
//! - at start the soft `RLIMIT_NOFILE` is raised to the hard limit, and the cap is lowered (with
//!   a warning) when the file descriptors would not cover it, the SSH pool and some spare.
//!
//! hyper's HTTP/1 connection and `hyper-util`'s graceful shutdown do the protocol work.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;
use tower::Service;
use tower_http::timeout::TimeoutBody;

use crate::metrics::Metrics;
use crate::per_key::{Held, PerKey};
use crate::ratelimit::network_of;
use crate::send_deadline::SendDeadline;

/// Connections served past the cap, one request each.
pub const OVERFLOW: usize = 32;
/// An address that holds this many connections or more gets no overflow slot.
pub const OVERFLOW_FEW: usize = 2;
/// The head timeout of an overflow connection.
pub const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// File descriptors kept free for everything but HTTP and SSH (logs, known_hosts, /proc).
const SPARE_FDS: u64 = 64;
/// How long shutdown waits, once in-flight work is cancelled, for the answers to be written.
pub const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// How shutdown treats requests still in flight: they have `grace` to finish on their own;
/// then `cancel` is cancelled (running commands are stopped and their calls answered with an
/// error) and the answers have [`ANSWER_WAIT`] to be written; whatever still runs then is
/// dropped.
#[derive(Debug, Clone)]
pub struct Drain {
    /// Time in-flight requests have to finish on their own.
    pub grace: Duration,
    /// Cancelled when the grace is over.
    pub cancel: tokio_util::sync::CancellationToken,
}

/// The HTTP side's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served with keep-alive at once.
    pub max_connections: usize,
    /// Connections one address (an IPv6 /64) may hold at once, overflow ones included.
    pub max_per_address: usize,
    /// Time allowed for a request head, and for the next one on a kept-alive connection.
    pub header_timeout: Duration,
    /// Longest pause between a request body's frames.
    pub body_timeout: Duration,
    /// Longest a write to the client may stall (the client not reading).
    pub write_timeout: Duration,
    /// The slowest a large response may be read, in bytes per second (0: no bound). A client
    /// that reads slowly but steadily never trips [`HttpLimits::write_timeout`]; this bounds
    /// how long it holds its response (see [`HttpLimits::send_deadline`]).
    pub min_send_rate: u64,
}

impl HttpLimits {
    /// How long a response of `len` bytes may take to send: the write timeout plus `len` at
    /// the minimum rate. `None` when there is no minimum rate.
    pub fn send_deadline(&self, len: usize) -> Option<Duration> {
        (self.min_send_rate > 0).then(|| {
            self.write_timeout + Duration::from_secs_f64(len as f64 / self.min_send_rate as f64)
        })
    }
}

/// Raises the soft open-files limit to the hard one and returns the connection cap that fits:
/// `wanted`, or less (with a warning) when the descriptors cannot cover it, the overflow
/// connections, `ssh_connections` and some spare.
pub fn fit_to_open_files(wanted: usize, ssh_connections: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted;
    };
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let others = (OVERFLOW as u64) + (ssh_connections as u64) + SPARE_FDS;
    let room = usize::try_from(soft.saturating_sub(others)).unwrap_or(usize::MAX);
    if room < wanted {
        tracing::warn!(
            wanted,
            fitted = room.max(1),
            open_files = soft,
            "http connection cap lowered to fit the open-files limit"
        );
    }
    wanted.min(room).max(1)
}

/// Which kind of slot a connection got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    /// Kept alive, the regular head timeout.
    Regular,
    /// One request, a one-second head timeout.
    Overflow,
}

/// A connection's place: its slot and its address's count, both given back on drop.
#[derive(Debug)]
struct Slot {
    kind: SlotKind,
    _permit: OwnedSemaphorePermit,
    _address: Held<IpAddr>,
}

/// Who gets a slot: a regular one while the address holds fewer than its cap, else an
/// overflow one while it holds fewer than [`OVERFLOW_FEW`], else none.
#[derive(Debug)]
struct Admission {
    regular: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
    per_address: PerKey<IpAddr>,
    max_per_address: usize,
}

impl Admission {
    fn admit(&self, network: IpAddr) -> Option<Slot> {
        // Only the accept loop takes counts, so nothing changes between the check and the take
        // but releases, which only make room.
        let held = self.per_address.count(&network);
        if held >= self.max_per_address {
            return None;
        }
        let (kind, permit) = if let Ok(p) = self.regular.clone().try_acquire_owned() {
            (SlotKind::Regular, p)
        } else if held < OVERFLOW_FEW
            && let Ok(p) = self.overflow.clone().try_acquire_owned()
        {
            (SlotKind::Overflow, p)
        } else {
            return None;
        };
        let address = self.per_address.hold(network, self.max_per_address).ok()?;
        Some(Slot {
            kind,
            _permit: permit,
            _address: address,
        })
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown`, then stops accepting and
/// drains in-flight requests as `drain` says.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Drain,
) -> anyhow::Result<()> {
    let admission = Admission {
        regular: Arc::new(Semaphore::new(limits.max_connections)),
        overflow: Arc::new(Semaphore::new(OVERFLOW)),
        per_address: PerKey::default(),
        max_per_address: limits.max_per_address,
    };
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: the connection waits in the backlog; try again soon.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = admission.admit(network_of(peer.ip())) else {
            metrics.http_connections_refused.inc();
            drop(stream);
            continue;
        };
        let (header_timeout, keep_alive) = match slot.kind {
            SlotKind::Regular => (limits.header_timeout, true),
            SlotKind::Overflow => (OVERFLOW_HEADER_TIMEOUT, false),
        };
        let router = router.clone();
        let body_timeout = limits.body_timeout;
        let (send_deadline, mut expiry) = SendDeadline::new();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut router = router.clone();
            let mut req = req.map(|b| Body::new(TimeoutBody::new(body_timeout, b)));
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(send_deadline.clone());
            async move { Ok::<_, Infallible>(router.call(req).await.unwrap_or_else(|e| match e {})) }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(keep_alive);
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        let io = TokioIo::new(Box::pin(stream));
        let conn = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(peer = %peer, error = %e, "http connection ended with an error");
                },
                // Dropping the connection drops the response and gives its charge back.
                () = expiry.expired() => tracing::warn!(
                    peer = %peer,
                    "a response was not read within its send deadline \
                     (--http-min-send-rate-kib); connection closed"
                ),
            }
            drop(slot);
        });
    }
    drop(listener);
    let done = graceful.shutdown();
    tokio::pin!(done);
    if tokio::time::timeout(drain.grace, done.as_mut())
        .await
        .is_err()
    {
        tracing::info!(
            grace_ms = drain.grace.as_millis(),
            "requests still in flight after the grace period: stopping their commands"
        );
        drain.cancel.cancel();
        if tokio::time::timeout(ANSWER_WAIT, done).await.is_err() {
            tracing::warn!("some responses were not sent in time; stopping anyway");
        }
    }
    Ok(())
}
