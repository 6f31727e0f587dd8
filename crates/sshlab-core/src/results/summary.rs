//! `summary.json`: the versioned, documented result of one run.
//!
//! Schema version 1. Every duration is in milliseconds unless the name says seconds (`_s`);
//! times are unix seconds. `complete` is false while a run is in progress and when it ended
//! early (Ctrl-C, crash, timeout); `incomplete_reason` then says why, and everything measured
//! until then is still in the file. Readers should check `schema_version` first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::aggregate::{Aggregate, Group, IntervalStats};
use super::messages::ErrorMessage;
use super::stats::LatencyStats;

/// The schema version this crate writes.
pub const SCHEMA_VERSION: u32 = 1;

/// What the run was.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// `loadtest_YYYYMMDD_HHMMSS` (plus a suffix when needed).
    pub test_id: String,
    /// Scenario name.
    pub scenario: String,
    /// `closed` (workers and think time) or `open` (arrival rate).
    pub model: String,
    /// Workers (the largest of all phases).
    pub workers: usize,
    /// Target arrivals per second (open model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_rate: Option<f64>,
    /// The MCP endpoint.
    pub mcp_url: String,
    /// The protocol revision used.
    pub protocol: String,
    /// Unix time the run started.
    pub started_at: f64,
    /// Unix time it ended (or of the last update while running).
    pub ended_at: f64,
    /// Whether the run finished as planned.
    pub complete: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete_reason: Option<String>,
    /// Open model: scheduled starts that no worker was free to make on time.
    pub late_starts: u64,
    /// Open model: arrivals due within a phase that were never sent, because the phase ended
    /// first (nothing starts after a phase's end; k6's `dropped_iterations`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// Seconds a call in flight at a phase's end could still take before it was cut off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_s: Option<f64>,
    /// Handles (SSH sessions) the workers could not release on the server at the end.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreleased: u64,
    /// This agent's share of a test split across agents (`1/3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<crate::scenario::segment::Segment>,
    /// The runs a merged result was made of (`sshlab-agent merge`): their test ids and
    /// segments, as `test_id` or `test_id segment I/N`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
}

/// Totals of a run or group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Operations.
    pub requests: u64,
    /// Successes.
    pub successes: u64,
    /// Failures.
    pub failures: u64,
    /// Failures / operations, percent.
    pub error_rate_percent: f64,
    /// Operations per second over the group's span.
    pub rps_avg: f64,
    /// Highest one-second operation count (whole run only; 0 for groups).
    pub rps_peak: f64,
}

/// Figures of one group (an operation, a port, a phase).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// Label (operation name, `2322`, `workers=5`).
    pub name: String,
    /// Counts and rates.
    pub totals: Totals,
    /// Corrected latency of successes.
    pub latency: LatencyStats,
    /// Uncorrected latency of successes.
    pub latency_uncorrected: LatencyStats,
    /// Corrected latency of every operation, failures included (what thresholds judge).
    #[serde(default)]
    pub latency_all: LatencyStats,
    /// Uncorrected latency of every operation, failures included.
    #[serde(default)]
    pub latency_all_uncorrected: LatencyStats,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
}

/// A histogram's (or summary's) observations during the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Observations (Δ`_count`).
    pub count: f64,
    /// Their mean, in the metric's unit (Δ`_sum` / Δ`_count`); `None` without observations.
    pub mean: Option<f64>,
}

/// The MCP server's side, from its /metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerReport {
    /// Successful scrapes.
    pub scrapes: u32,
    /// Counter deltas over the run, by series (`name{labels}`).
    pub deltas: BTreeMap<String, f64>,
    /// Histograms and summaries over the run, by series without the `_count`/`_sum` suffix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub observed: BTreeMap<String, Observed>,
    /// Pool hits / (hits + misses), percent.
    pub pool_hit_rate_percent: Option<f64>,
    /// Largest `mcp_pool_connections{state="active"}` seen.
    pub peak_active_connections: Option<f64>,
    /// `mcp_rate_limited_total` delta.
    pub rate_limited: Option<f64>,
    /// Server CPU seconds / (wall seconds × vCPUs), percent.
    pub cpu_utilisation_percent: Option<f64>,
    /// vCPUs of the server's machine used for the utilisation (0: unknown).
    pub vcpus: u32,
    /// Where `vcpus` came from (`--server-vcpus`, the lab's topology).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus_source: Option<String>,
    /// Whether `vcpus` are the host's cores, shared with the load generator and the target
    /// (the netns backend), rather than the server's own.
    #[serde(default)]
    pub vcpus_shared: bool,
    /// Resident memory over time: (seconds since start, MiB).
    pub rss_mib: Vec<(f64, f64)>,
    /// Least-squares slope of RSS, MiB per minute.
    pub rss_slope_mib_per_min: Option<f64>,
    /// Whether RSS rose steadily enough to suspect a leak.
    pub leak_warning: bool,
    /// Why scraping failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Scrapes that failed (each one a gap in the figures above).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub scrape_failures: u32,
    /// Times the server restarted during the run (its `process_start_time_seconds` changed);
    /// the deltas above add up the counts from before and after each restart.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub restarts: u32,
    /// The server's side of each phase, from scrapes at its start and end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseServer>,
}

/// The server's side of one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseServer {
    /// The phase's label (`all` for a run of one phase).
    pub phase: String,
    /// SSH connections the server established (Δ`mcp_pool_creates_total`).
    pub new_connections: Option<f64>,
    /// Connects served from the pool (Δ`mcp_pool_hits_total`).
    pub pool_hits: Option<f64>,
    /// SSH sessions the server still held when the phase's workers had stopped
    /// (`mcp_ssh_sessions_active`): anything but 0 is a leak between phases.
    pub sessions_at_end: Option<f64>,
    /// The server's CPU over the phase, percent of its vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
}

impl ServerReport {
    /// What the CPU figures are relative to, for people: `4 vCPUs`, or `2 host cores, shared
    /// with the load generator and the target` when the server had no machine of its own.
    pub fn cpus_label(&self) -> String {
        let n = self.vcpus;
        if self.vcpus_shared {
            format!(
                "{n} host core{}, shared with the load generator and the target",
                if n == 1 { "" } else { "s" }
            )
        } else {
            format!("{n} vCPU{}", if n == 1 { "" } else { "s" })
        }
    }
}

/// One checked threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// As given, e.g. `ssh_run_command.p99<200ms`.
    pub expr: String,
    /// The measured value, in the threshold's unit.
    pub actual: Option<f64>,
    /// Whether it held.
    pub passed: bool,
}

/// `summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// What the run was.
    pub run: RunInfo,
    /// Seconds between the first start and the last completion.
    pub duration_s: f64,
    /// Whole-run totals.
    pub totals: Totals,
    /// Whole-run corrected latency.
    pub latency: LatencyStats,
    /// Whole-run uncorrected latency.
    pub latency_uncorrected: LatencyStats,
    /// Whole-run corrected latency, failures included (what thresholds judge).
    #[serde(default)]
    pub latency_all: LatencyStats,
    /// Whole-run uncorrected latency, failures included.
    #[serde(default)]
    pub latency_all_uncorrected: LatencyStats,
    /// Per operation, by name.
    pub ops: Vec<GroupSummary>,
    /// Per target port (latency_test), in run order: the baseline first.
    pub ports: Vec<GroupSummary>,
    /// Per phase, in run order.
    pub phases: Vec<GroupSummary>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// What the failures said: the distinct messages, most frequent first (bounded; see
    /// [`crate::results::messages`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_messages: Vec<ErrorMessage>,
    /// Failures whose message did not fit in `error_messages`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub error_messages_unlisted: u64,
    /// One entry per second.
    pub timeline: Vec<IntervalStats>,
    /// The server's metrics, when scraped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerReport>,
    /// Thresholds, when given.
    #[serde(default)]
    pub thresholds: Vec<ThresholdResult>,
    /// This run set against a baseline run, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<super::compare::Baseline>,
    /// A capacity search's result, when the run was one ([`super::capacity`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<super::capacity::Capacity>,
    /// Faults the host executed during the run, as executed, each with its judgement
    /// ([`crate::faults`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<crate::faults::FaultRecord>,
    /// What the lab knew about the run that the records do not say (e.g. the server still
    /// held sessions of an earlier run when it started), one sentence each, shown in every
    /// report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

fn group_summary(name: String, g: &Group) -> GroupSummary {
    let secs = g.seconds();
    let all = g.all_latency();
    GroupSummary {
        name,
        totals: Totals {
            requests: g.total(),
            successes: g.ok,
            failures: g.err,
            error_rate_percent: percent(g.err, g.total()),
            rps_avg: if secs > 0.0 {
                g.total() as f64 / secs
            } else {
                0.0
            },
            rps_peak: 0.0,
        },
        latency: LatencyStats::of(&g.corrected),
        latency_uncorrected: LatencyStats::of(&g.service),
        latency_all: LatencyStats::of(&all.0),
        latency_all_uncorrected: LatencyStats::of(&all.1),
        errors: g.errors.clone(),
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

impl Summary {
    /// Build the summary of `agg` for `run`.
    pub fn build(run: RunInfo, agg: &Aggregate) -> Self {
        let all = group_summary("all".into(), &agg.all);
        let peak = agg
            .timeline()
            .iter()
            .map(|i| (i.ok + i.err) as f64)
            .fold(0.0, f64::max);
        let mut totals = all.totals;
        totals.rps_peak = peak;
        Self {
            schema_version: SCHEMA_VERSION,
            duration_s: agg.all.seconds(),
            totals,
            latency: all.latency,
            latency_uncorrected: all.latency_uncorrected,
            latency_all: all.latency_all,
            latency_all_uncorrected: all.latency_all_uncorrected,
            ops: agg
                .ops
                .iter()
                .map(|(k, g)| group_summary(k.clone(), g))
                .collect(),
            ports: agg
                .ports
                .iter()
                .map(|(k, g)| group_summary(k.to_string(), g))
                .collect(),
            phases: agg
                .phases
                .iter()
                .map(|(k, g)| group_summary(k.clone(), g))
                .collect(),
            errors: agg.all.errors.clone(),
            error_messages: agg.messages.sorted(),
            error_messages_unlisted: agg.messages.unlisted,
            timeline: agg.timeline().to_vec(),
            server: None,
            thresholds: Vec::new(),
            baseline: None,
            capacity: None,
            faults: Vec::new(),
            notes: Vec::new(),
            run,
        }
    }

    /// An operation's figures by name.
    pub fn op(&self, name: &str) -> Option<&GroupSummary> {
        self.ops.iter().find(|g| g.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::record::{Record, Status};

    #[test]
    fn build_fills_totals_and_groups_and_round_trips() {
        let mut agg = Aggregate::new(0.0);
        for i in 0..20 {
            agg.add(&Record {
                ts: f64::from(i) * 0.25,
                intended_ts: f64::from(i) * 0.25 - 0.01,
                worker: "w1".into(),
                op: "ssh_run_command".into(),
                latency_ms: 10.0,
                service_ms: 8.0,
                status: if i == 3 {
                    Status::Error
                } else {
                    Status::Success
                },
                error_kind: (i == 3).then(|| "tool_error".into()),
                error: (i == 3).then(|| "pool exhausted for u@h:2222 (20/20)".into()),
                port: Some(2222),
                phase: None,
                segment: None,
            });
        }
        agg.finish();
        let s = Summary::build(
            RunInfo {
                test_id: "t".into(),
                complete: true,
                ..RunInfo::default()
            },
            &agg,
        );
        assert_eq!(s.schema_version, 1);
        assert_eq!((s.totals.requests, s.totals.failures), (20, 1));
        assert!((s.totals.error_rate_percent - 5.0).abs() < 1e-9);
        assert_eq!(s.totals.rps_peak, 4.0);
        assert_eq!(s.error_messages.len(), 1);
        assert_eq!(
            s.error_messages[0].example,
            "pool exhausted for u@h:2222 (20/20)"
        );
        assert_eq!(
            (s.error_messages[0].count, s.error_messages[0].first_s),
            (1, 0.75)
        );
        assert_eq!(s.op("ssh_run_command").expect("op").errors["tool_error"], 1);
        assert_eq!(s.ports[0].name, "2222");
        let json = serde_json::to_string(&s).expect("json");
        let back: Summary = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, s);
    }
}
