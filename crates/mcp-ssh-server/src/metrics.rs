//! Prometheus metrics: one registry, every metric the load-testing guide names, all updated
//! by the code paths they describe (pool, SSH commands, HTTP, rate limits), plus the process's
//! CPU seconds and resident memory ([`crate::process_metrics`]).
//!
//! Uses the `prometheus` crate: its text encoder writes `# HELP`/`# TYPE` lines and escapes
//! labels. Every label takes values from a fixed set (an HTTP method outside the standard
//! ones is `other`), so no client can grow the registry.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All of the server's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// ssh_connect served from an idle pooled connection.
    pub pool_hits: IntCounter,
    /// ssh_connect that found no idle connection.
    pub pool_misses: IntCounter,
    /// SSH connections established.
    pub pool_creates: IntCounter,
    /// Idle connections evicted by a failed health check.
    pub pool_health_fails: IntCounter,
    /// Idle connections closed for being idle too long.
    pub pool_expires: IntCounter,
    /// ssh_connect refused because a pool limit was reached.
    pub pool_exhausted: IntCounter,
    /// Pooled connections by state (idle, active).
    pub pool_connections: IntGaugeVec,
    /// SSH sessions handed out to MCP clients.
    pub ssh_sessions_active: IntGauge,
    /// Commands run, by status (success, failure, error, timeout).
    pub ssh_commands: IntCounterVec,
    /// Commands refused by the allowlist.
    pub ssh_commands_blocked: IntCounter,
    /// Command durations.
    pub ssh_command_duration: Histogram,
    /// HTTP requests by method and status code.
    pub http_requests: IntCounterVec,
    /// HTTP connections closed on arrival: every regular and overflow slot was taken.
    pub http_connections_refused: IntCounter,
    /// HTTP request durations by route.
    pub http_request_duration: HistogramVec,
    /// Requests refused by a rate limit.
    pub rate_limited: IntCounter,
    /// MCP sessions open (2025 era).
    pub mcp_sessions_active: IntGauge,
    /// Bytes charged to the output budget (set at each scrape).
    output_memory: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Register a statically defined metric; its definition can only fail by a programming error.
fn register<M: prometheus::core::Collector + Clone + 'static>(
    reg: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let m = metric.expect("static metric definition is valid");
    reg.register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    register(reg, IntCounter::new(name, help))
}

impl Metrics {
    /// Create and register every metric.
    ///
    /// Panics only on a programming error (an invalid or duplicate static metric name).
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = &registry;
        let pool_connections = register(
            reg,
            IntGaugeVec::new(
                Opts::new("mcp_pool_connections", "Pooled SSH connections by state"),
                &["state"],
            ),
        );
        let ssh_sessions_active = register(
            reg,
            IntGauge::new(
                "mcp_ssh_sessions_active",
                "SSH sessions currently handed out to MCP clients",
            ),
        );
        let mcp_sessions_active = register(
            reg,
            IntGauge::new(
                "mcp_sessions_active",
                "Open MCP sessions (2025 protocol era)",
            ),
        );
        let ssh_commands = register(
            reg,
            IntCounterVec::new(
                Opts::new("mcp_ssh_commands_total", "SSH commands run, by status"),
                &["status"],
            ),
        );
        let ssh_command_duration = register(
            reg,
            Histogram::with_opts(
                HistogramOpts::new(
                    "mcp_ssh_command_duration_seconds",
                    "Duration of SSH commands, from channel open to exit",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            ),
        );
        let http_requests = register(
            reg,
            IntCounterVec::new(
                Opts::new(
                    "mcp_http_requests_total",
                    "HTTP requests by method and status",
                ),
                &["method", "status"],
            ),
        );
        let http_request_duration = register(
            reg,
            HistogramVec::new(
                HistogramOpts::new(
                    "mcp_http_request_duration_seconds",
                    "HTTP request durations by route",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            ),
        );
        let output_memory = register(
            reg,
            IntGauge::new(
                "mcp_output_memory_bytes",
                "Command output and large responses held now, as charged to \
                 --max-output-memory-mb",
            ),
        );
        reg.register(Box::new(crate::process_metrics::ProcessMetrics::new()))
            .expect("unique");
        Self {
            pool_hits: counter(
                reg,
                "mcp_pool_hits_total",
                "ssh_connect served from an idle pooled connection",
            ),
            pool_misses: counter(
                reg,
                "mcp_pool_misses_total",
                "ssh_connect that found no idle pooled connection",
            ),
            pool_creates: counter(reg, "mcp_pool_creates_total", "SSH connections established"),
            pool_health_fails: counter(
                reg,
                "mcp_pool_health_fails_total",
                "Idle pooled connections evicted by a failed health check",
            ),
            pool_expires: counter(
                reg,
                "mcp_pool_expires_total",
                "Idle pooled connections closed after the idle timeout",
            ),
            pool_exhausted: counter(
                reg,
                "mcp_pool_exhausted_total",
                "ssh_connect refused because a pool limit was reached",
            ),
            ssh_commands_blocked: counter(
                reg,
                "mcp_ssh_commands_blocked_total",
                "Commands refused by the allowlist",
            ),
            rate_limited: counter(
                reg,
                "mcp_rate_limited_total",
                "Requests refused by a rate limit",
            ),
            pool_connections,
            ssh_sessions_active,
            ssh_commands,
            ssh_command_duration,
            http_requests,
            http_connections_refused: counter(
                reg,
                "mcp_http_connections_refused_total",
                "HTTP connections closed on arrival because every connection slot was taken",
            ),
            http_request_duration,
            mcp_sessions_active,
            output_memory,
            registry,
        }
    }

    /// Render the Prometheus text exposition.
    pub fn render(&self) -> String {
        self.output_memory
            .set(i64::try_from(crate::budget::SERVER.used()).unwrap_or(i64::MAX));
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_metric_is_exposed_with_help_and_type() {
        let m = Metrics::new();
        m.pool_connections.with_label_values(&["idle"]).set(0);
        m.pool_connections.with_label_values(&["active"]).set(0);
        m.ssh_commands.with_label_values(&["success"]).inc();
        m.http_requests.with_label_values(&["POST", "200"]).inc();
        m.http_request_duration
            .with_label_values(&["mcp"])
            .observe(0.01);
        m.ssh_command_duration.observe(0.02);
        let text = m.render();
        for name in [
            "mcp_pool_hits_total",
            "mcp_pool_misses_total",
            "mcp_pool_creates_total",
            "mcp_pool_health_fails_total",
            "mcp_pool_connections",
            "mcp_ssh_sessions_active",
            "mcp_ssh_commands_total",
            "mcp_ssh_commands_blocked_total",
            "mcp_ssh_command_duration_seconds",
            "mcp_http_requests_total",
            "mcp_http_request_duration_seconds",
            "mcp_rate_limited_total",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "no TYPE for {name}"
            );
        }
        assert!(text.contains("mcp_ssh_commands_total{status=\"success\"} 1"));
    }
}
