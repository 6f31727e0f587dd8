//! A realistic latency_test summary (four ports, a stall at 100 s, errors, server metrics,
//! passing and failing thresholds) for the page's tests and for looking at the page.

use std::collections::BTreeMap;

use crate::results::{
    ErrorMessage, GroupSummary, IntervalStats, LatencyStats, Observed, RunInfo, ServerReport,
    Summary, ThresholdResult, Totals,
};

fn lat(p50: f64) -> LatencyStats {
    LatencyStats {
        count: 1000,
        min: p50 * 0.4,
        mean: p50 * 1.2,
        p50,
        p90: p50 * 1.8,
        p95: p50 * 2.3,
        p99: p50 * 4.0,
        p999: p50 * 7.0,
        max: p50 * 11.0,
    }
}

fn group(name: &str, p50: f64, n: u64, err: u64) -> GroupSummary {
    GroupSummary {
        name: name.into(),
        totals: Totals {
            requests: n,
            successes: n - err,
            failures: err,
            error_rate_percent: err as f64 * 100.0 / n as f64,
            rps_avg: n as f64 / 60.0,
            rps_peak: 0.0,
        },
        latency: lat(p50),
        latency_uncorrected: lat(p50 * 0.8),
        latency_all: lat(p50 * 1.1),
        latency_all_uncorrected: lat(p50 * 0.9),
        errors: BTreeMap::new(),
    }
}

/// A realistic latency_test summary, used by the tests and for looking at the page.
pub(super) fn sample() -> Summary {
    let timeline = (0..240u64)
        .map(|t| {
            let port_shift = (t / 60) as f64 * 12.0;
            let wave = ((t as f64) / 9.0).sin() * 1.5;
            let stall = if (100..104).contains(&t) { 60.0 } else { 0.0 };
            IntervalStats {
                t,
                ok: 28 + (t % 5) - u64::from(t % 37 == 0) * 6,
                err: u64::from(t % 23 == 0) * 2 + u64::from((100..104).contains(&t)) * 5,
                p50: 4.0 + port_shift + wave,
                p90: 7.5 + port_shift * 1.3 + wave + stall * 0.5,
                p99: 14.0 + port_shift * 1.6 + wave * 2.0 + stall,
                max: 30.0 + port_shift * 2.0 + stall * 1.5,
            }
        })
        .collect();
    let mut errors = BTreeMap::new();
    errors.insert("timeout".to_owned(), 20);
    errors.insert("tool_error".to_owned(), 22);
    errors.insert("rate_limited".to_owned(), 3);
    let mut ops = vec![
        group("ssh_run_command", 10.2, 6500, 40),
        group("ssh_connect", 85.0, 140, 3),
        group("ssh_disconnect", 1.9, 140, 2),
    ];
    ops[0].errors.insert("timeout".into(), 20);
    let rss: Vec<(f64, f64)> = (0..49)
        .map(|i| {
            let t = f64::from(i) * 5.0;
            (t, 38.0 + t / 60.0 * 0.4 + (f64::from(i) * 1.3).sin() * 0.6)
        })
        .collect();
    let mut deltas = BTreeMap::new();
    deltas.insert("mcp_pool_hits_total".to_owned(), 6360.0);
    deltas.insert("mcp_pool_misses_total".to_owned(), 142.0);
    deltas.insert("process_cpu_seconds_total".to_owned(), 41.7);
    Summary {
        schema_version: 1,
        run: RunInfo {
            test_id: "loadtest_20250301_142233".into(),
            scenario: "latency_test".into(),
            model: "closed".into(),
            workers: 3,
            target_rate: None,
            mcp_url: "http://10.0.1.2:8080/mcp".into(),
            protocol: "2025-11-25".into(),
            started_at: 1_740_838_953.0,
            ended_at: 1_740_839_193.0,
            complete: true,
            incomplete_reason: None,
            late_starts: 0,
            dropped: 12,
            grace_s: Some(10.0),
            unreleased: 0,
            segment: None,
            merged_from: Vec::new(),
        },
        duration_s: 240.3,
        totals: Totals {
            requests: 6780,
            successes: 6735,
            failures: 45,
            error_rate_percent: 45.0 * 100.0 / 6780.0,
            rps_avg: 28.2,
            rps_peak: 37.0,
        },
        latency: lat(10.4),
        latency_uncorrected: lat(8.1),
        latency_all: lat(11.0),
        latency_all_uncorrected: lat(8.6),
        ops,
        ports: vec![
            group("2222", 4.1, 1700, 5),
            group("2322", 16.3, 1690, 8),
            group("2323", 28.0, 1700, 12),
            group("2324", 40.2, 1690, 20),
        ],
        phases: vec![],
        errors,
        error_messages: vec![
            ErrorMessage {
                kind: "tool_error".into(),
                example: "pool exhausted for testuser@10.178.0.20:2324 (20/20)".into(),
                count: 22,
                first_s: 61.4,
                last_s: 190.2,
                op: "ssh_connect".into(),
            },
            ErrorMessage {
                kind: "timeout".into(),
                example: "request timed out".into(),
                count: 20,
                first_s: 130.2,
                last_s: 131.9,
                op: "ssh_run_command".into(),
            },
            ErrorMessage {
                kind: "rate_limited".into(),
                example: "rate limited (HTTP 429, retry after 1 s): Rate limit exceeded (client); retry after 1 s".into(),
                count: 3,
                first_s: 201.0,
                last_s: 201.0,
                op: "ssh_run_command".into(),
            },
        ],
        error_messages_unlisted: 0,
        timeline,
        server: Some(ServerReport {
            scrapes: 49,
            deltas,
            observed: BTreeMap::from([(
                "mcp_ssh_command_duration_seconds".to_owned(),
                Observed {
                    count: 6500.0,
                    mean: Some(0.0083),
                },
            )]),
            pool_hit_rate_percent: Some(97.8),
            peak_active_connections: Some(3.0),
            rate_limited: Some(3.0),
            cpu_utilisation_percent: Some(8.7),
            vcpus: 2,
            vcpus_source: Some("the lab's MCP VM in vms/topology.toml".into()),
            vcpus_shared: false,
            rss_mib: rss,
            rss_slope_mib_per_min: Some(0.41),
            leak_warning: false,
            error: None,
            scrape_failures: 0,
            restarts: 0,
            phases: Vec::new(),
        }),
        thresholds: vec![
            ThresholdResult {
                expr: "ssh_run_command.p99<200ms".into(),
                actual: Some(40.8),
                passed: true,
            },
            ThresholdResult {
                expr: "errors<0.5%".into(),
                actual: Some(0.664),
                passed: false,
            },
            ThresholdResult {
                expr: "ssh_exec.p95<1s".into(),
                actual: None,
                passed: false,
            },
        ],
        baseline: None,
        capacity: None,
        faults: vec![sample_fault()],
        notes: vec![
            "the server held 2 SSH sessions of an earlier run when this one started".into(),
        ],
    }
}

/// A fault as the sample run executed it, with its judgement.
fn sample_fault() -> crate::faults::FaultRecord {
    use crate::faults::recovery::{Baseline, FaultAnalysis, WindowStats};
    crate::faults::FaultRecord {
        index: 0,
        spec: "sshd-kill:2222@120s+10s".parse().expect("a valid spec"),
        started_at: Some(1_740_838_953.0 + 120.1),
        ended_at: Some(1_740_838_953.0 + 130.1),
        error: None,
        analysis: Some(FaultAnalysis {
            during: WindowStats {
                requests: 290,
                failures: 20,
                p50_ms: 9.0,
                p99_ms: 30_000.0,
                max_ms: 30_001.0,
            },
            baseline: Some(Baseline {
                requests: 3400,
                error_rate_percent: 0.1,
                p99_ms: 38.0,
                rate_per_s: 28.3,
            }),
            recovery_s: Some(1.3),
            held_s: Some(10.0),
            failures_until_recovered: 22,
            counted_from: None,
            verdict: "recovered 1.3 s after it ended".into(),
        }),
    }
}
