//! The agent's own Prometheus metrics, served at `/metrics` of its live dashboard while a run
//! goes on, so that a long run can be scraped into Prometheus or Grafana as k6's outputs are.
//!
//! Their names are defined here, once, next to the [`Record`] they count, and nowhere else:
//! the agent fills a [`Snapshot`] from its collector and renders it with [`render`]; tests and
//! readers look the names up here. Everything is derived from the same records the reports are
//! made of: a request is a [`Record`], an error a record with `status = error`, and the latency
//! histogram is read off the [`Aggregate`]'s HDR histograms (corrected latency, every completed
//! request, failures included, as the thresholds judge it).
//!
//! Memory is bounded by the scenario, not the run: one series per (operation, port) pair and
//! error kind seen, one histogram per operation.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::aggregate::Aggregate;
use super::record::Record;

/// Counter: completed requests, by `operation` and `port`.
pub const REQUESTS_TOTAL: &str = "sshlab_agent_requests_total";
/// Counter: failed requests, by `operation`, `port` and `kind` (the record's `error_kind`).
pub const ERRORS_TOTAL: &str = "sshlab_agent_errors_total";
/// Histogram: corrected latency (from the intended start) of every completed request,
/// failures included, by `operation`; seconds.
pub const REQUEST_DURATION: &str = "sshlab_agent_request_duration_seconds";
/// Gauge: requests sent and not yet answered.
pub const IN_FLIGHT: &str = "sshlab_agent_requests_in_flight";
/// Gauge: 1 for the phase running now, by `phase` (its label, `all` for a run of one phase).
pub const PHASE: &str = "sshlab_agent_phase";
/// Gauge: 1 while a run goes on, 0 once it has ended (or before one starts).
pub const RUNNING: &str = "sshlab_agent_running";
/// Gauge: seconds since the run started.
pub const ELAPSED: &str = "sshlab_agent_elapsed_seconds";
/// Gauge: dashboard pages connected (their event streams open).
pub const DASHBOARD_STREAMS: &str = "sshlab_agent_dashboard_streams";

/// The latency histogram's upper bounds, seconds (`+Inf` is added).
pub const BUCKETS_S: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The label of a run of one phase.
pub const ONE_PHASE: &str = "all";

/// Requests and errors of one (operation, port) pair.
#[derive(Debug, Clone, Default, PartialEq)]
struct Pair {
    op: String,
    port: Option<u16>,
    requests: u64,
    errors: BTreeMap<String, u64>,
}

/// Requests and errors by operation and port, counted record by record (the [`Aggregate`]
/// keeps operations and ports apart; these are the pairs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveCounts {
    pairs: Vec<Pair>,
}

impl LiveCounts {
    /// Count one record.
    pub fn add(&mut self, r: &Record) {
        // Few pairs (a scenario's operations × its ports): a scan beats hashing the name.
        let i = match self
            .pairs
            .iter()
            .position(|p| p.port == r.port && p.op == r.op)
        {
            Some(i) => i,
            None => {
                self.pairs.push(Pair {
                    op: r.op.clone(),
                    port: r.port,
                    ..Pair::default()
                });
                self.pairs.len() - 1
            }
        };
        let p = &mut self.pairs[i];
        p.requests += 1;
        if !r.ok() {
            let kind = r.error_kind.as_deref().unwrap_or("error");
            match p.errors.get_mut(kind) {
                Some(n) => *n += 1,
                None => {
                    p.errors.insert(kind.to_owned(), 1);
                }
            }
        }
    }

    /// Requests counted.
    pub fn requests(&self) -> u64 {
        self.pairs.iter().map(|p| p.requests).sum()
    }
}

/// One operation's latency histogram in Prometheus' cumulative buckets.
#[derive(Debug, Clone, Default, PartialEq)]
struct Latency {
    op: String,
    /// Requests at or below each of [`BUCKETS_S`].
    cumulative: Vec<u64>,
    count: u64,
    sum_s: f64,
}

/// What the counters and histograms say at one moment (taken by the collector, which owns the
/// aggregate, about once a second).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    counts: LiveCounts,
    latency: Vec<Latency>,
}

impl Snapshot {
    /// The figures of `counts` and `agg` now.
    pub fn take(counts: &LiveCounts, agg: &Aggregate) -> Self {
        let latency = agg
            .ops
            .iter()
            .map(|(op, g)| {
                let mut l = Latency {
                    op: op.clone(),
                    cumulative: vec![0; BUCKETS_S.len()],
                    count: 0,
                    sum_s: 0.0,
                };
                // One walk over the recorded buckets of each histogram (no copy of them; this
                // runs every second): HDR's buckets hold 3 significant digits, so a bucket
                // bound is exact to 0.1%.
                for h in [&g.corrected, &g.failed] {
                    for v in h.iter_recorded() {
                        let (value, n) = (v.value_iterated_to(), v.count_at_value());
                        let low = h.lowest_equivalent(value);
                        for (b, c) in BUCKETS_S.iter().zip(&mut l.cumulative) {
                            if low <= (b * 1e6) as u64 {
                                *c += n;
                            }
                        }
                        l.count += n;
                        l.sum_s += h.median_equivalent(value) as f64 * n as f64 / 1e6;
                    }
                }
                l
            })
            .collect();
        Self {
            counts: counts.clone(),
            latency,
        }
    }
}

/// What the agent knows at the moment of the scrape, besides the snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges<'a> {
    /// Requests in flight.
    pub in_flight: u64,
    /// The phase running now (`None`: between phases, or no run).
    pub phase: Option<&'a str>,
    /// Whether a run goes on.
    pub running: bool,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Dashboard pages connected.
    pub streams: usize,
}

/// A label value, escaped as the text format asks (`\\`, `\"`, `\n`).
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn port_label(p: Option<u16>) -> String {
    p.map_or_else(String::new, |p| p.to_string())
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The Prometheus text exposition (format 0.0.4) of `s` and `g`.
pub fn render(s: &Snapshot, g: &Gauges<'_>) -> String {
    let mut out = String::with_capacity(4096);
    head(
        &mut out,
        REQUESTS_TOTAL,
        "counter",
        "Completed requests, by operation and target port.",
    );
    for p in &s.counts.pairs {
        let _ = writeln!(
            out,
            "{REQUESTS_TOTAL}{{operation=\"{}\",port=\"{}\"}} {}",
            label(&p.op),
            port_label(p.port),
            p.requests
        );
    }
    head(
        &mut out,
        ERRORS_TOTAL,
        "counter",
        "Failed requests, by operation, target port and error kind.",
    );
    for p in &s.counts.pairs {
        for (kind, n) in &p.errors {
            let _ = writeln!(
                out,
                "{ERRORS_TOTAL}{{operation=\"{}\",port=\"{}\",kind=\"{}\"}} {n}",
                label(&p.op),
                port_label(p.port),
                label(kind)
            );
        }
    }
    head(
        &mut out,
        REQUEST_DURATION,
        "histogram",
        "Latency from the intended start (corrected for coordinated omission) of every completed request, failures included.",
    );
    for l in &s.latency {
        let op = label(&l.op);
        for (b, n) in BUCKETS_S.iter().zip(&l.cumulative) {
            let _ = writeln!(
                out,
                "{REQUEST_DURATION}_bucket{{operation=\"{op}\",le=\"{b}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "{REQUEST_DURATION}_bucket{{operation=\"{op}\",le=\"+Inf\"}} {}\n{REQUEST_DURATION}_sum{{operation=\"{op}\"}} {}\n{REQUEST_DURATION}_count{{operation=\"{op}\"}} {}",
            l.count,
            if l.sum_s.is_finite() { l.sum_s } else { 0.0 },
            l.count
        );
    }
    head(
        &mut out,
        IN_FLIGHT,
        "gauge",
        "Requests sent and not answered yet.",
    );
    let _ = writeln!(out, "{IN_FLIGHT} {}", g.in_flight);
    head(&mut out, PHASE, "gauge", "1 for the phase running now.");
    if let Some(p) = g.phase {
        let _ = writeln!(out, "{PHASE}{{phase=\"{}\"}} 1", label(p));
    }
    head(&mut out, RUNNING, "gauge", "1 while a run goes on.");
    let _ = writeln!(out, "{RUNNING} {}", u8::from(g.running));
    head(&mut out, ELAPSED, "gauge", "Seconds since the run started.");
    let elapsed = if g.elapsed_s.is_finite() {
        g.elapsed_s
    } else {
        0.0
    };
    let _ = writeln!(out, "{ELAPSED} {elapsed:.3}");
    head(
        &mut out,
        DASHBOARD_STREAMS,
        "gauge",
        "Dashboard pages connected (their event streams open).",
    );
    let _ = writeln!(out, "{DASHBOARD_STREAMS} {}", g.streams);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::record::Status;
    use crate::results::server_metrics::Sample;

    fn rec(op: &str, port: u16, ms: f64, kind: Option<&str>) -> Record {
        Record {
            ts: 100.5,
            intended_ts: 100.5 - ms / 1000.0,
            worker: "w0".into(),
            op: op.into(),
            latency_ms: ms,
            service_ms: ms,
            status: if kind.is_some() {
                Status::Error
            } else {
                Status::Success
            },
            error_kind: kind.map(Into::into),
            error: kind.map(|k| format!("{k} happened")),
            port: Some(port),
            phase: None,
            segment: None,
        }
    }

    #[test]
    fn counts_by_pair_and_renders_parseable_text() {
        let mut counts = LiveCounts::default();
        let mut agg = Aggregate::new(100.0);
        for r in [
            rec("ssh_run_command", 2222, 3.0, None),
            rec("ssh_run_command", 2222, 30.0, None),
            rec("ssh_run_command", 2322, 300.0, Some("timeout")),
            rec("ssh_connect", 2222, 2000.0, None),
            rec("we\"ird\\op", 2222, 1.0, Some("tool_error")),
        ] {
            counts.add(&r);
            agg.add(&r);
        }
        assert_eq!(counts.requests(), 5);
        let text = render(
            &Snapshot::take(&counts, &agg),
            &Gauges {
                in_flight: 3,
                phase: Some("workers=5"),
                running: true,
                elapsed_s: 12.5,
                streams: 2,
            },
        );
        let s = Sample::parse(&text);
        let get = |series: &str| s.get(series).unwrap_or_else(|| panic!("{series}\n{text}"));
        assert_eq!(
            get(r#"sshlab_agent_requests_total{operation="ssh_run_command",port="2222"}"#),
            2.0
        );
        assert_eq!(
            get(
                r#"sshlab_agent_errors_total{operation="ssh_run_command",port="2322",kind="timeout"}"#
            ),
            1.0
        );
        assert_eq!(s.sum(REQUESTS_TOTAL, &[]), Some(5.0));
        assert_eq!(s.sum(ERRORS_TOTAL, &[]), Some(2.0));
        // The histogram: cumulative, failures included, +Inf equals the count.
        let bucket = |le: &str| {
            get(&format!(
                "sshlab_agent_request_duration_seconds_bucket{{operation=\"ssh_run_command\",le=\"{le}\"}}"
            ))
        };
        assert_eq!(bucket("0.005"), 1.0);
        assert_eq!(bucket("0.05"), 2.0);
        assert_eq!(bucket("0.5"), 3.0);
        assert_eq!(bucket("+Inf"), 3.0);
        let sum = get(r#"sshlab_agent_request_duration_seconds_sum{operation="ssh_run_command"}"#);
        assert!((sum - 0.333).abs() < 0.001, "{sum}");
        assert_eq!(get(IN_FLIGHT), 3.0);
        assert_eq!(get(r#"sshlab_agent_phase{phase="workers=5"}"#), 1.0);
        assert_eq!(get(RUNNING), 1.0);
        assert_eq!(get(ELAPSED), 12.5);
        assert_eq!(get(DASHBOARD_STREAMS), 2.0);
        // A label value with a quote and a backslash is escaped, and reads back.
        assert!(
            text.contains(r#"operation="we\"ird\\op""#),
            "escaped label in:\n{text}"
        );
        for name in [
            REQUESTS_TOTAL,
            ERRORS_TOTAL,
            REQUEST_DURATION,
            IN_FLIGHT,
            PHASE,
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }

    #[test]
    fn nothing_yet_is_still_valid_text() {
        let text = render(&Snapshot::default(), &Gauges::default());
        assert!(text.contains("sshlab_agent_running 0"));
        assert!(!text.contains("sshlab_agent_phase{"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(line.split(' ').count(), 2, "{line}");
        }
    }
}
