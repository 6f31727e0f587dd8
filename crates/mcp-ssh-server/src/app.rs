//! The server's shared state, built once from the resolved [`Config`], and its background
//! maintenance (pool health checks, session expiry, rate-limit memory).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::attempts::ConnectAttempts;
use crate::config::Config;
use crate::mcp::legacy::McpSessions;
use crate::metrics::Metrics;
use crate::pool::{Pool, PoolLimits};
use crate::ratelimit::RateLimits;
use crate::sessions::{Owner, Sessions};

/// Everything a request handler may touch.
#[derive(Debug)]
pub struct App {
    /// Configuration.
    pub config: Config,
    /// Metrics.
    pub metrics: Metrics,
    /// SSH connection pool.
    pub pool: Pool,
    /// SSH sessions handed to clients.
    pub sessions: Sessions,
    /// 2025-era MCP sessions.
    pub mcp_sessions: McpSessions,
    /// Rate limits.
    pub rate_limits: RateLimits,
    /// ssh_connect calls in flight, per client and per address.
    pub connect_attempts: ConnectAttempts,
    /// known_hosts file for host-key checks.
    pub known_hosts: PathBuf,
    /// When the server started.
    pub started: Instant,
    /// Cancelled when the server stops: the shutdown grace is over, and commands still running
    /// are stopped.
    pub stopping: CancellationToken,
}

impl App {
    /// Build the state.
    pub fn new(config: Config) -> Arc<Self> {
        crate::budget::SERVER.set_max(config.limits.max_output_memory);
        let metrics = Metrics::new();
        let l = &config.limits;
        let pool = Pool::new(
            PoolLimits {
                max_per_target: l.pool_max_per_target,
                max_total: l.max_connections,
                wait: l.pool_wait,
                idle_timeout: l.pool_idle_timeout,
                health_timeout: Duration::from_secs(5),
                revalidate_after: Duration::from_secs(1),
            },
            metrics.clone(),
        );
        let known_hosts = config.known_hosts.clone().unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".ssh/known_hosts")
        });
        Arc::new(Self {
            sessions: Sessions::new(metrics.clone()),
            mcp_sessions: McpSessions::new(
                l.session_timeout,
                l.max_mcp_sessions,
                l.max_mcp_sessions_per_address,
            ),
            rate_limits: RateLimits::new(
                l.rate_per_min,
                l.address_rate_per_min,
                l.global_rate_per_min,
            ),
            connect_attempts: ConnectAttempts::new(
                l.connect_attempts_per_client,
                l.connect_attempts_per_address,
            ),
            pool,
            metrics,
            known_hosts,
            started: Instant::now(),
            stopping: CancellationToken::new(),
            config,
        })
    }

    /// One pass of housekeeping: expire idle MCP sessions and stateless clients' idle SSH
    /// sessions, forget idle rate-limit buckets.
    pub fn expire_sessions(&self) {
        for sid in self.mcp_sessions.expire() {
            let n = self
                .sessions
                .remove_owned_by(&Owner::McpSession(sid.clone()));
            tracing::info!(session = %sid, released = n, "MCP session expired");
        }
        self.metrics
            .mcp_sessions_active
            .set(self.mcp_sessions.len() as i64);
        let n = self
            .sessions
            .remove_idle(self.config.limits.session_timeout);
        if n > 0 {
            tracing::info!(released = n, "idle SSH sessions closed");
        }
        let n = self.sessions.end_closed();
        if n > 0 {
            tracing::info!(ended = n, "SSH sessions whose connection closed were ended");
        }
        self.rate_limits.forget_idle();
    }

    /// Probe the connection of every SSH session in use (idle pooled ones are the pool's to
    /// probe) with a keepalive request; a session whose connection does not answer within the
    /// health timeout is ended and its connection closed, so a frozen target (a pause, a
    /// partition) costs its clients one probe interval instead of the session timeout.
    pub async fn probe_sessions(&self) {
        let timeout = self.pool.limits().health_timeout;
        let mut probes = tokio::task::JoinSet::new();
        for s in self.sessions.all() {
            probes.spawn(async move {
                let alive = s.lease().conn().check_alive(timeout).await;
                (s, alive)
            });
        }
        while let Some(r) = probes.join_next().await {
            let Ok((s, false)) = r else {
                continue;
            };
            let reason = format!(
                "connection to {} lost: it did not answer a keepalive within {} s",
                s.lease().conn().target().addr(),
                timeout.as_secs()
            );
            if self.sessions.end(&s.id, &reason) {
                self.metrics.pool_health_fails.inc();
                tracing::info!(session = %s.id, "{reason}");
                let conn = s.lease().conn().clone();
                tokio::spawn(async move { conn.close().await });
            }
        }
    }

    /// Run housekeeping until the task is aborted.
    pub async fn maintain(self: Arc<Self>) {
        let health = self.config.limits.health_check_interval;
        let sweep = Duration::from_secs(5).min(health);
        let mut last_health = Instant::now();
        let mut tick = tokio::time::interval(sweep);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.expire_sessions();
            if last_health.elapsed() >= health {
                last_health = Instant::now();
                tokio::join!(self.pool.maintain(), self.probe_sessions());
            }
        }
    }

    /// Release everything at shutdown, after the HTTP side has drained: anything still running
    /// is stopped ([`App::stopping`]), every SSH session ends and its connection is closed
    /// (politely, all at once), then every idle pooled connection is.
    pub async fn shutdown(&self) {
        self.stopping.cancel();
        let sessions = self.sessions.all();
        let n = self.sessions.clear();
        let mut closing = tokio::task::JoinSet::new();
        for s in sessions {
            let conn = s.lease().conn().clone();
            closing.spawn(async move { conn.close().await });
        }
        closing.join_all().await;
        self.pool.close_idle().await;
        tracing::info!(sessions = n, "SSH sessions and pooled connections closed");
    }
}
