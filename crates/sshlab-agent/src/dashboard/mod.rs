//! The live dashboard: `sshlab-agent run --dashboard [ADDR]` (and `serve --dashboard`) serves
//! one page that shows the run as it goes, updated every second, and becomes its `report.html`
//! when it ends; plus the agent's own Prometheus `/metrics`.
//!
//! It is a view of the same results the reports are made of, drawn by the same code: the
//! collector's aggregate becomes a [`Summary`](sshlab_core::results::Summary) as `summary.json`
//! does, and [`sshlab_core::report::html`] draws it ([`live`] holds the frames, [`page`] wraps
//! the report in a status bar and a script, [`routes`] serves them). There is no second
//! charting path, and nothing is fetched from outside the agent.
//!
//! The listener is bound before the run starts, so a busy port or an address that may not be
//! used fails at once and nothing runs; a page that connects, drops and reconnects only ever
//! reads frames. `serve` binds it once for all its jobs: a browser keeps its URL from one job
//! to the next (reloading after each report).

pub mod listener;
pub mod live;
pub mod page;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use sshlab_core::dashboard::{self as addr, AddrError};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use live::Live;

/// The dashboard's flags, shared by `run` and `serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct DashboardArgs {
    /// Serve a live dashboard of the run (and its Prometheus /metrics) on ADDR: PORT, IP:PORT
    /// or `[IPv6]:PORT` (default 127.0.0.1:5665). Loopback unless --dashboard-public.
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:5665"
    )]
    pub dashboard: Option<String>,
    /// Allow a --dashboard address that is not loopback: anyone who reaches it can watch the
    /// run and stop it.
    #[arg(long, requires = "dashboard")]
    pub dashboard_public: bool,
}

impl DashboardArgs {
    /// The address to listen on, if any, checked.
    pub fn addr(&self) -> Result<Option<SocketAddr>, AddrError> {
        self.dashboard
            .as_deref()
            .map(|a| addr::check(addr::parse_addr(a)?, self.dashboard_public))
            .transpose()
    }
}

/// Why the dashboard could not be served.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The address is taken (or not ours to listen on).
    #[error("cannot serve the dashboard on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A dashboard being served.
#[derive(Debug)]
pub struct Dashboard {
    live: Arc<Live>,
    addr: SocketAddr,
    streams: Arc<Semaphore>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Dashboard {
    /// Listens on `addr` and serves until [`Dashboard::close`].
    pub async fn bind(addr: SocketAddr) -> Result<Self, DashboardError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DashboardError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DashboardError::Bind { addr, source })?;
        let live = Live::new();
        let streams = Arc::new(Semaphore::new(routes::MAX_STREAMS));
        let router = routes::router(routes::Shared {
            live: live.clone(),
            streams: streams.clone(),
        });
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener::Capped::new(listener), router)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the dashboard stopped serving");
            }
        });
        Ok(Self {
            live,
            addr,
            streams,
            stop,
            task,
        })
    }

    /// What the runs update.
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to open.
    pub fn url(&self) -> String {
        addr::url(self.addr)
    }

    /// Stops serving, after the open pages have received the run's end (at most `linger`):
    /// a page that reads it becomes the report even though the agent is about to exit.
    pub async fn close(self, linger: Duration) {
        let until = Instant::now() + linger;
        while self.streams.available_permits() < routes::MAX_STREAMS && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop.cancel();
        // Graceful shutdown waits for open connections; a page left open must not hold the
        // agent's exit.
        if tokio::time::timeout(Duration::from_secs(1), self.task)
            .await
            .is_err()
        {
            tracing::debug!("dashboard connections still open at exit; dropped");
        }
    }
}
