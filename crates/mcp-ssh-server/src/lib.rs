//! `mcp-ssh-server`: an MCP server that runs allowlisted, read-only commands on remote hosts
//! over pooled SSH connections. It is the system under test of the sshlab lab, and a product
//! of its own: it depends on nothing else in the workspace.
//!
//! Data flows one way: [`http`] (sockets, HTTP checks) → [`mcp`] (JSON-RPC, protocol eras,
//! sessions, rate limits) → [`tools`] (one file per tool) → [`security`] (the allowlist) →
//! [`sessions`] / [`pool`] → [`ssh`] (russh). [`app`] holds the shared state; [`metrics`]
//! counts everything on the way.
#![deny(missing_docs)]

pub mod app;
pub mod attempts;
pub mod budget;
pub mod config;
pub mod http;
pub mod listener;
pub mod mcp;
pub mod metrics;
pub mod per_key;
pub mod pool;
pub mod process_metrics;

pub mod ratelimit;
pub mod security;
pub mod send_deadline;
pub mod sessions;
pub mod ssh;
pub mod tools;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

pub use config::{Config, Opts};

/// A running server (for tests and embedding): its address and a way to stop it.
#[derive(Debug)]
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// Shared state.
    pub app: Arc<App>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

use app::App;

impl Running {
    /// Graceful stop: stop accepting, give in-flight requests the shutdown grace, then stop
    /// their commands and answer them with an error, close every SSH connection.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("server task panicked")?
    }
}

/// Bind and serve in the background until [`Running::stop`].
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let addr = listener.local_addr()?;
    let app = App::new(config);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let task = tokio::spawn(serve(listener, app.clone(), shutdown));
    Ok(Running {
        addr,
        app,
        stop,
        task,
    })
}

async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let maintenance = tokio::spawn(app.clone().maintain());
    let l = &app.config.limits;
    let limits = listener::HttpLimits {
        max_connections: listener::fit_to_open_files(l.http.max_connections, l.max_connections),
        ..l.http
    };
    let drain = listener::Drain {
        grace: app.config.shutdown_grace,
        cancel: app.stopping.clone(),
    };
    let result = listener::serve(
        listener,
        http::router(app.clone()),
        limits,
        app.metrics.clone(),
        shutdown,
        drain,
    )
    .await
    .context("HTTP server failed");
    maintenance.abort();
    app.shutdown().await;
    result
}

/// Run until SIGINT or SIGTERM (the binary's entry point).
pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let config = Config::resolve(&opts)?;
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        profile = ?config.profile,
        pool_per_target = config.limits.pool_max_per_target,
        rate_per_min = ?config.limits.rate_per_min,
        "mcp-ssh-server listening"
    );
    let app = App::new(config);
    serve(listener, app, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT: finishing in-flight requests"),
        () = term => tracing::info!("SIGTERM: finishing in-flight requests"),
    }
}
