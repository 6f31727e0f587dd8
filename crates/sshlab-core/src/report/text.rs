//! `report.txt`: the load-testing guide's layout (THROUGHPUT, LATENCY, POOL STATISTICS, the
//! per-port table, LIMIT BEHAVIOR, MCP SERVER METRICS DELTA, EXTRAPOLATION), plus what the
//! guide lacked: corrected and uncorrected latency side by side, per-operation figures,
//! errors by kind, and thresholds.

use std::fmt::Write;

use super::format::thousands;
use crate::results::capacity::Capacity;
use crate::results::{GroupSummary, LatencyStats, ServerReport, Summary};

const WIDTH: usize = 70;

/// The extrapolation target of the guide: 8 CPUs.
pub const EXTRAPOLATION_CPUS: u32 = 8;

/// The guide's confidence levels, from the server's measured CPU utilisation.
pub fn confidence(cpu_percent: Option<f64>) -> &'static str {
    match cpu_percent {
        None => "UNKNOWN",
        Some(u) if u > 80.0 => "HIGH",
        Some(u) if u >= CPU_BOUND_PERCENT => "MEDIUM",
        Some(_) => "LOW",
    }
}

/// The server's CPU (percent of its own vCPUs) below which they were not what limited a
/// capacity search. The guide's MEDIUM confidence starts here too.
pub const CPU_BOUND_PERCENT: f64 = 50.0;

/// Why a measured capacity is not scaled by CPUs, when it is not: the server has CPUs of its
/// own (not the host's, shared with the agent and the target), the search found where the SLO
/// breaks, and the server used under [`CPU_BOUND_PERCENT`] of them both at the capacity and at
/// the lowest failing rate. Its CPUs then did not limit it, and more would not raise it.
pub fn not_cpu_bound(c: &Capacity, server: &ServerReport) -> Option<String> {
    if server.vcpus_shared {
        return None;
    }
    let (rate, failed) = (c.rate_per_s?, c.failed_at_per_s?);
    let cpu_at = |r: f64| {
        c.steps
            .iter()
            .find(|st| st.rate_per_s == r)
            .and_then(|st| st.server_cpu_percent)
    };
    let (at, broke) = (cpu_at(rate)?, cpu_at(failed)?);
    (at.max(broke) < CPU_BOUND_PERCENT).then(|| {
        format!(
            "the server used {at:.0}% of its CPUs at that rate and {broke:.0}% at {failed:.1}/s, \
             where the SLO broke, so its CPUs did not limit it and more would not raise it (the \
             limit lies elsewhere: the target, the network, the hypervisor, or the server's own \
             limits such as its pool or a rate limit)"
        )
    })
}

/// The guide's formula: measured × (target CPUs / test CPUs) × 0.85.
pub fn extrapolate(rps: f64, test_cpus: u32, target_cpus: u32) -> f64 {
    if test_cpus == 0 {
        return 0.0;
    }
    rps * f64::from(target_cpus) / f64::from(test_cpus) * 0.85
}

fn rule(out: &mut String, c: char) {
    out.push_str(&c.to_string().repeat(WIDTH));
    out.push('\n');
}

fn section(out: &mut String, title: &str) {
    out.push('\n');
    rule(out, '-');
    out.push_str(title);
    out.push('\n');
    rule(out, '-');
}

fn latency_rows(out: &mut String, c: &LatencyStats, u: &LatencyStats) {
    let _ = writeln!(out, "  {:<8}{:>12}{:>14}", "", "corrected", "uncorrected");
    for name in ["min", "p50", "p90", "p95", "p99", "p999", "max"] {
        let label = match name {
            "min" => "Min:",
            "max" => "Max:",
            "p999" => "p99.9:",
            other => other,
        };
        let label = if label.ends_with(':') {
            label.to_owned()
        } else {
            format!("{label}:")
        };
        let _ = writeln!(
            out,
            "  {label:<8}{:>12.1}{:>14.1}",
            c.get(name).unwrap_or(0.0),
            u.get(name).unwrap_or(0.0)
        );
    }
}

fn group_table(out: &mut String, first: &str, groups: &[GroupSummary], baseline: Option<f64>) {
    let _ = writeln!(
        out,
        "  {first:<22}{:>9}{:>8}{:>8}{:>9}{:>9}{:>9}{}",
        "requests",
        "errors",
        "rps",
        "p50",
        "p95",
        "p99",
        if baseline.is_some() {
            "   Δp50 vs base"
        } else {
            ""
        }
    );
    for g in groups {
        let delta = baseline
            .map(|b| format!("{:>+14.1}", g.latency.p50 - b))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<22}{:>9}{:>8}{:>8.1}{:>9.1}{:>9.1}{:>9.1}{delta}",
            g.name,
            thousands(g.totals.requests),
            thousands(g.totals.failures),
            g.totals.rps_avg,
            g.latency.p50,
            g.latency.p95,
            g.latency.p99,
        );
    }
}

/// The most frequent distinct error messages, verbatim (all of them are in summary.json).
fn error_messages(out: &mut String, s: &Summary) {
    const SHOWN: usize = 10;
    if s.error_messages.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n  What failed (most frequent first; count, first and last at, operation):"
    );
    for m in s.error_messages.iter().take(SHOWN) {
        let _ = writeln!(
            out,
            "  {:>10}  {:>7.1}s to {:.1}s  {} [{}]\n              {}",
            thousands(m.count),
            m.first_s,
            m.last_s.max(m.first_s),
            m.op,
            m.kind,
            m.example.replace(['\n', '\r'], " ")
        );
    }
    let more = s.error_messages.len().saturating_sub(SHOWN);
    if more > 0 {
        let _ = writeln!(out, "  ... {more} more distinct messages in summary.json");
    }
    if s.error_messages_unlisted > 0 {
        let _ = writeln!(
            out,
            "  ... {} failures with other messages (only {} distinct messages are kept)",
            thousands(s.error_messages_unlisted),
            crate::results::messages::MAX_DISTINCT
        );
    }
}

/// A figure as counted: whole numbers without decimals, fractions with three.
fn figure(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Render `report.txt`: its sections in order, each from the summary alone.
pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    header(&mut out, s);
    notes(&mut out, s);
    section(
        &mut out,
        &format!("{} TEST", s.run.scenario.replace('_', " ").to_uppercase()),
    );
    throughput_and_latency(&mut out, s);
    groups(&mut out, s);
    capacity(&mut out, s);
    faults(&mut out, s);
    errors(&mut out, s);
    pool(&mut out, s);
    limits(&mut out, s);
    server_metrics(&mut out, s);
    extrapolation(&mut out, s);
    if let Some(b) = &s.baseline {
        section(
            &mut out,
            &format!(
                "AGAINST BASELINE {} (baseline, this run, change)",
                b.test_id
            ),
        );
        out.push_str(&b.render_rows());
    }
    thresholds(&mut out, s);
    timeline(&mut out, s);
    rule(&mut out, '=');
    out
}

/// Each fault as executed, what completed while it lasted, and how the run recovered.
fn faults(out: &mut String, s: &Summary) {
    if s.faults.is_empty() {
        return;
    }
    section(
        out,
        &format!(
            "FAULTS (recovery: back within the pre-fault error rate and p99 for {:.0} s)",
            crate::faults::recovery::HOLD_S
        ),
    );
    let t0 = s.run.started_at;
    for f in &s.faults {
        let when = match (f.started_at, f.ended_at) {
            (Some(a), Some(b)) => format!("{:.1} s to {:.1} s", a - t0, b - t0),
            (Some(a), None) => format!("from {:.1} s, never reverted", a - t0),
            _ => format!("planned at {:.1} s, never started", f.spec.start_s),
        };
        let _ = writeln!(out, "  {:<24}{when}", f.label());
        if let Some(e) = &f.error {
            let _ = writeln!(out, "  {:<24}error: {e}", "");
        }
        if let Some(a) = &f.analysis {
            let d = &a.during;
            let _ = writeln!(
                out,
                "  {:<24}while it lasted: {} calls, {} failed, p50 {:.1} ms, p99 {:.1} ms",
                "",
                thousands(d.requests),
                thousands(d.failures),
                d.p50_ms,
                d.p99_ms
            );
            let _ = writeln!(
                out,
                "  {:<24}{}; {} failures until then",
                "",
                a.verdict,
                thousands(a.failures_until_recovered)
            );
        }
    }
    if let Some(b) = s
        .faults
        .iter()
        .find_map(|f| f.analysis.as_ref()?.baseline.as_ref())
    {
        let _ = writeln!(
            out,
            "  baseline (before the first fault): {} calls, {:.2}% failed, p99 {:.1} ms, {:.1}/s",
            thousands(b.requests),
            b.error_rate_percent,
            b.p99_ms,
            b.rate_per_s
        );
    }
}

/// One line per second: completions, failures and the corrected percentiles, with the
/// seconds a fault was in effect marked; a second in which nothing completed is shown as such.
fn timeline(out: &mut String, s: &Summary) {
    let Some(last) = s.timeline.iter().map(|i| i.t).max() else {
        return;
    };
    section(
        out,
        "TIMELINE (per second since the start; corrected latency of successes, ms)",
    );
    let _ = writeln!(
        out,
        "  {:>6}{:>9}{:>8}{:>10}{:>10}{:>10}  fault",
        "t", "ok", "failed", "p50", "p99", "max"
    );
    let t0 = s.run.started_at;
    let active = |t: u64| -> String {
        s.faults
            .iter()
            .filter(|f| {
                let (Some(a), end) = (f.started_at, f.ended_at) else {
                    return false;
                };
                let (a, b) = (a - t0, end.map_or(f64::INFINITY, |e| e - t0));
                (t as f64) < b && (t as f64 + 1.0) > a
            })
            .map(|f| f.label())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let by_t: std::collections::BTreeMap<u64, &crate::results::IntervalStats> =
        s.timeline.iter().map(|i| (i.t, i)).collect();
    for t in 0..=last {
        let f = active(t);
        match by_t.get(&t) {
            Some(i) if i.ok > 0 => {
                let _ = writeln!(
                    out,
                    "  {t:>6}{:>9}{:>8}{:>10.1}{:>10.1}{:>10.1}  {f}",
                    thousands(i.ok),
                    thousands(i.err),
                    i.p50,
                    i.p99,
                    i.max
                );
            }
            Some(i) => {
                let _ = writeln!(
                    out,
                    "  {t:>6}{:>9}{:>8}{:>30}  {f}",
                    0,
                    thousands(i.err),
                    "(no success)"
                );
            }
            None => {
                let _ = writeln!(out, "  {t:>6}{:>47}  {f}", "(nothing completed)");
            }
        }
    }
}

fn header(out: &mut String, s: &Summary) {
    rule(out, '=');
    let _ = writeln!(out, "{:^WIDTH$}", "LOAD TEST RESULTS");
    rule(out, '=');
    let r = &s.run;
    let _ = writeln!(out, "\nTest ID:    {}", r.test_id);
    let _ = writeln!(out, "Scenario:   {}", r.scenario);
    let _ = writeln!(out, "Duration:   {:.1}s", s.duration_s);
    let status = if r.complete {
        "complete".to_owned()
    } else {
        format!(
            "INCOMPLETE ({})",
            r.incomplete_reason.as_deref().unwrap_or("still running")
        )
    };
    let _ = writeln!(out, "Status:     {status}");
    let model = match r.target_rate {
        Some(rate) => format!(
            "open, {rate:.1}/s target, {} workers, {} late starts, {} dropped (never sent: the \
             phase ended first)",
            r.workers,
            thousands(r.late_starts),
            thousands(r.dropped)
        ),
        None => format!("{}, {} workers", r.model, r.workers),
    };
    let _ = writeln!(out, "Model:      {model}");
    let _ = writeln!(out, "Endpoint:   {} ({})", r.mcp_url, r.protocol);
    if r.unreleased > 0 {
        let _ = writeln!(
            out,
            "Leftovers:  {} SSH session(s) the workers could not release on the server",
            thousands(r.unreleased)
        );
    }
}

fn notes(out: &mut String, s: &Summary) {
    for n in &s.notes {
        let _ = writeln!(out, "Note:       {n}");
    }
}

fn throughput_and_latency(out: &mut String, s: &Summary) {
    let t = &s.totals;
    let _ = writeln!(out, "\nTHROUGHPUT");
    let _ = writeln!(out, "  Total Requests:     {}", thousands(t.requests));
    let _ = writeln!(
        out,
        "  Successful:         {} ({:.1}%)",
        thousands(t.successes),
        100.0 - t.error_rate_percent
    );
    let _ = writeln!(out, "  Failed:             {}", thousands(t.failures));
    let _ = writeln!(
        out,
        "  Requests/Second:    {:.1} avg, {:.1} peak",
        t.rps_avg, t.rps_peak
    );
    let _ = writeln!(
        out,
        "\nLATENCY (milliseconds; corrected = from the intended start)"
    );
    latency_rows(out, &s.latency, &s.latency_uncorrected);
    if t.failures > 0 && s.latency_all.count > 0 {
        let a = &s.latency_all;
        let _ = writeln!(
            out,
            "  (successes only; with the {} failures, as thresholds judge: p50 {:.2}, p99 {:.2}, \
             max {:.2})",
            thousands(t.failures),
            a.p50,
            a.p99,
            a.max
        );
    }
}

fn groups(out: &mut String, s: &Summary) {
    let _ = writeln!(out, "\nPER OPERATION");
    group_table(out, "operation", &s.ops, None);
    // One port is the endpoint's only target: the table would repeat PER OPERATION.
    if s.ports.len() > 1 {
        let _ = writeln!(out, "\nPER PORT (milliseconds)");
        let base = s.ports.first().map(|g| g.latency.p50);
        group_table(out, "port", &s.ports, base);
    }
    if s.phases.len() > 1 {
        let _ = writeln!(out, "\nPHASES");
        group_table(out, "phase", &s.phases, None);
    }
}

fn errors(out: &mut String, s: &Summary) {
    if s.errors.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nERRORS");
    for (kind, n) in &s.errors {
        let _ = writeln!(out, "  {kind:<28}{:>10}", thousands(*n));
    }
    error_messages(out, s);
}

/// The server's pool, over the run and per phase, when it exports pool metrics.
fn pool(out: &mut String, s: &Summary) {
    let Some(sv) = s.server.as_ref().filter(|sv| sv.scrapes > 0) else {
        return;
    };
    let whole = sv.pool_hit_rate_percent.is_some() || sv.peak_active_connections.is_some();
    let phases: Vec<_> = sv
        .phases
        .iter()
        .filter(|p| p.new_connections.is_some() || p.pool_hits.is_some())
        .collect();
    if !whole && phases.is_empty() {
        return;
    }
    section(out, "POOL STATISTICS (server metrics)");
    let pct = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.0}%"));
    let num = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.0}"));
    if whole {
        let _ = writeln!(
            out,
            "  Hit Rate:           {}",
            pct(sv.pool_hit_rate_percent)
        );
        let _ = writeln!(
            out,
            "  Peak Active:        {}",
            num(sv.peak_active_connections)
        );
    }
    if !phases.is_empty() {
        let _ = writeln!(
            out,
            "\n  {:<22}{:>16}{:>12}{:>16}",
            "phase", "new SSH conns", "pool hits", "sessions left"
        );
        for p in phases {
            let _ = writeln!(
                out,
                "  {:<22}{:>16}{:>12}{:>16}",
                p.phase,
                num(p.new_connections),
                num(p.pool_hits),
                num(p.sessions_at_end)
            );
        }
    }
}

fn limits(out: &mut String, s: &Summary) {
    let count = |k: &str| s.errors.get(k).copied().unwrap_or(0);
    let limits = [
        ("Rate limited (HTTP 429):", count("rate_limited")),
        ("Pool exhausted:", count("pool_exhausted")),
        ("Blocked commands:", count("blocked")),
        ("Timeouts:", count("timeout")),
        ("Cut off after the grace:", count("cut_off")),
    ];
    let server_429 = s
        .server
        .as_ref()
        .and_then(|sv| sv.rate_limited)
        .filter(|n| *n > 0.0);
    if limits.iter().all(|(_, n)| *n == 0) && server_429.is_none() {
        return;
    }
    section(
        out,
        "LIMIT BEHAVIOR (failures by kind, as the agent saw them)",
    );
    for (label, n) in limits {
        let _ = writeln!(out, "  {label:<27}{}", thousands(n));
    }
    if let Some(n) = server_429 {
        let _ = writeln!(out, "  Server-counted 429s:       {n:.0}");
    }
}

fn server_metrics(out: &mut String, s: &Summary) {
    let Some(sv) = &s.server else {
        return;
    };
    if sv.scrapes == 0 {
        section(out, "MCP SERVER METRICS");
        let _ = writeln!(
            out,
            "  scraping failed: {}",
            sv.error.as_deref().unwrap_or("?")
        );
        return;
    }
    section(
        out,
        "MCP SERVER METRICS DELTA (its /metrics, first to last scrape)",
    );
    if sv.scrape_failures > 0 {
        let _ = writeln!(
            out,
            "  {} scrape(s) failed, so these figures have gaps: {}",
            sv.scrape_failures,
            sv.error.as_deref().unwrap_or("?")
        );
    }
    if sv.restarts > 0 {
        let _ = writeln!(
            out,
            "  The server restarted {} time(s) during the run (its process_start_time_seconds \
             changed); each counter adds up what was counted before and after.",
            sv.restarts
        );
    }
    for (k, v) in &sv.deltas {
        let _ = writeln!(out, "  {k:<60}{:>14}", figure(*v));
    }
    for (k, o) in &sv.observed {
        let mean = match o.mean {
            Some(m) if k.contains("_seconds") => format!("mean {:.3} ms", m * 1000.0),
            Some(m) => format!("mean {}", figure(m)),
            None => "no observations".to_owned(),
        };
        let _ = writeln!(out, "  {k:<60}{:>14} observed, {mean}", figure(o.count));
    }
    if let Some(slope) = sv.rss_slope_mib_per_min {
        let _ = writeln!(
            out,
            "  RSS slope: {slope:+.2} MiB/min{}",
            if sv.leak_warning {
                "   WARNING: steady growth, possible leak"
            } else {
                ""
            }
        );
    }
}

/// What the run says about the server's capacity, shared by report.txt and report.html:
/// measured by a capacity search, or, for any other run, only that the offered load was served
/// (an offered rate is no capacity).
#[derive(Debug, Clone, PartialEq)]
pub enum CapacityClaim {
    /// A capacity search found `rate`/s on `cpus`; `estimate` is the guide's extrapolation of
    /// it to [`EXTRAPOLATION_CPUS`], with the confidence from the CPU used at that rate, or why
    /// it is not scaled: the server's CPUs were not the limit ([`not_cpu_bound`]).
    Measured {
        /// Arrivals per second.
        rate: f64,
        /// To 8 CPUs, or why not.
        estimate: Result<f64, String>,
        /// The guide's confidence word.
        confidence: &'static str,
        /// The server's CPU at the capacity step, percent.
        cpu: Option<f64>,
    },
    /// A capacity search that found no rate meeting the SLO.
    NoneFound,
    /// A capacity search still running (the live page): nothing to claim yet.
    Searching,
    /// Not a capacity search: the rate served and the CPU it took.
    NotSearched {
        /// Calls per second served.
        rps: f64,
        /// The server's CPU over the run, percent.
        cpu: Option<f64>,
    },
}

/// The run's [`CapacityClaim`] (`None`: the server's vCPUs are unknown, nothing to scale).
pub fn capacity_claim(s: &Summary) -> Option<CapacityClaim> {
    let sv = s.server.as_ref()?;
    if sv.vcpus == 0 {
        return None;
    }
    Some(match &s.capacity {
        Some(c) if c.searching => CapacityClaim::Searching,
        Some(c) => match c.rate_per_s {
            Some(rate) => {
                let cpu = c
                    .steps
                    .iter()
                    .find(|st| st.passed && st.rate_per_s == rate)
                    .and_then(|st| st.server_cpu_percent);
                CapacityClaim::Measured {
                    rate,
                    estimate: match not_cpu_bound(c, sv) {
                        Some(why) => Err(why),
                        None => Ok(extrapolate(rate, sv.vcpus, EXTRAPOLATION_CPUS)),
                    },
                    confidence: confidence(cpu),
                    cpu,
                }
            }
            None => CapacityClaim::NoneFound,
        },
        None => CapacityClaim::NotSearched {
            rps: s.totals.rps_avg,
            cpu: sv.cpu_utilisation_percent,
        },
    })
}

fn extrapolation(out: &mut String, s: &Summary) {
    let server = s.server.as_ref();
    let cpus_label = server.map(ServerReport::cpus_label).unwrap_or_default();
    section(
        out,
        &format!("EXTRAPOLATION (to {EXTRAPOLATION_CPUS} CPU / 16GB RAM)"),
    );
    let source = server
        .and_then(|sv| sv.vcpus_source.as_deref())
        .map_or(String::new(), |from| format!("; the count from {from}"));
    let cpu = |c: Option<f64>| c.map_or("not measured".to_owned(), |u| format!("{u:.0}%"));
    match capacity_claim(s) {
        None => {
            let _ = writeln!(
                out,
                "  (needs the server's vCPU count: --server-vcpus N; the lab's is known only when \
                 the run targets the lab's MCP VM)"
            );
        }
        Some(CapacityClaim::Measured {
            rate,
            estimate,
            confidence,
            cpu: used,
        }) => {
            let cpus = server.map_or(1, |sv| sv.vcpus);
            let _ = writeln!(
                out,
                "  Measured capacity: {rate:.1}/s (capacity search, on {cpus_label}{source})"
            );
            match estimate {
                Ok(estimate) => {
                    let _ = writeln!(
                        out,
                        "  Estimated:         {estimate:.1}/s (on {EXTRAPOLATION_CPUS} cores)"
                    );
                    let _ = writeln!(
                        out,
                        "  Scaling factor:    {:.2}x",
                        f64::from(EXTRAPOLATION_CPUS) / f64::from(cpus) * 0.85
                    );
                }
                Err(why) => {
                    let _ = writeln!(out, "  Not extrapolated:  {why}.");
                }
            }
            let _ = writeln!(
                out,
                "  Confidence:        {confidence} (server CPU at that rate: {})",
                cpu(used)
            );
        }
        Some(CapacityClaim::NoneFound) => {
            let _ = writeln!(
                out,
                "  No capacity to extrapolate: no rate the search tried met the SLO."
            );
        }
        Some(CapacityClaim::Searching) => {
            let _ = writeln!(
                out,
                "  A capacity search is running: its capacity is extrapolated when it ends."
            );
        }
        Some(CapacityClaim::NotSearched { rps, cpu: used }) => {
            let saturated = used.is_some_and(|u| u > 80.0);
            let _ = writeln!(
                out,
                "  Served {rps:.1}/s, the offered load: that is no capacity. The server used {} \
                 of {cpus_label}{source}{}.",
                cpu(used),
                if saturated {
                    " (near saturation)"
                } else {
                    ", so it was not saturated"
                }
            );
            let _ = writeln!(
                out,
                "  Measure capacity with a capacity search: `sshlab-agent run --find-capacity \
                 --slo 'p99<200ms'`, or `sshlab run capacity`."
            );
        }
    }
}

/// A capacity search's steps and verdict.
fn capacity(out: &mut String, s: &Summary) {
    let Some(c) = &s.capacity else {
        return;
    };
    section(
        out,
        &format!("CAPACITY (highest rate meeting {})", c.slo.join(", ")),
    );
    let _ = writeln!(out, "  {}", c.verdict);
    if !c.limited_by.is_empty() {
        let _ = writeln!(out, "  Limited by: {}", c.limited_by.join("; "));
    }
    let _ = writeln!(
        out,
        "\n  {:>5}{:>11}{:>11}{:>10}{:>10}{:>9}{:>9}  verdict",
        "step", "offered/s", "served/s", "p50 ms", "p99 ms", "errors", "cpu %"
    );
    for (i, st) in c.steps.iter().enumerate() {
        let verdict = if st.passed {
            st.verdict()
        } else {
            format!("FAIL: {}", st.verdict())
        };
        let (p50, p99) = st
            .latency_ms()
            .map_or(("n/a".to_owned(), "n/a".to_owned()), |l| {
                (format!("{:.1}", l.0), format!("{:.1}", l.1))
            });
        let _ = writeln!(
            out,
            "  {:>5}{:>11.1}{:>11.1}{p50:>10}{p99:>10}{:>9}{:>9}  {verdict}",
            i + 1,
            st.rate_per_s,
            st.achieved_per_s,
            thousands(st.failures),
            st.server_cpu_percent
                .map_or("n/a".to_owned(), |u| format!("{u:.0}"))
        );
    }
}

fn thresholds(out: &mut String, s: &Summary) {
    if s.thresholds.is_empty() {
        return;
    }
    section(out, "THRESHOLDS");
    for th in &s.thresholds {
        let actual = th.actual.map_or("n/a".to_owned(), |a| format!("{a:.2}"));
        let _ = writeln!(
            out,
            "  {} {:<40} actual {actual}",
            if th.passed { "PASS" } else { "FAIL" },
            th.expr
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{RunInfo, Totals};
    use std::collections::BTreeMap;

    #[test]
    fn formula_and_confidence_match_the_guide() {
        assert!((extrapolate(37.7, 4, 8) - 64.09).abs() < 0.01);
        assert_eq!(confidence(Some(30.0)), "LOW");
        assert_eq!(confidence(Some(65.0)), "MEDIUM");
        assert_eq!(confidence(Some(90.0)), "HIGH");
        assert_eq!(confidence(None), "UNKNOWN");
    }

    #[test]
    fn report_has_the_guides_sections() {
        let s = Summary {
            run: RunInfo {
                test_id: "loadtest_x".into(),
                scenario: "command_throughput".into(),
                model: "closed".into(),
                workers: 10,
                complete: false,
                incomplete_reason: Some("interrupted (Ctrl-C)".into()),
                ..RunInfo::default()
            },
            totals: Totals {
                requests: 4523,
                successes: 4515,
                failures: 8,
                rps_avg: 37.7,
                ..Totals::default()
            },
            server: Some(ServerReport {
                scrapes: 12,
                vcpus: 4,
                cpu_utilisation_percent: Some(63.0),
                pool_hit_rate_percent: Some(87.0),
                ..ServerReport::default()
            }),
            errors: BTreeMap::from([("timeout".to_owned(), 8)]),
            ..Summary::default()
        };
        let text = render(&s);
        for needle in [
            "LOAD TEST RESULTS",
            "COMMAND THROUGHPUT TEST",
            "THROUGHPUT",
            "Total Requests:     4,523",
            "LATENCY (milliseconds",
            "POOL STATISTICS",
            "Hit Rate:           87%",
            "LIMIT BEHAVIOR",
            "MCP SERVER METRICS DELTA",
            "EXTRAPOLATION (to 8 CPU",
            "Served 37.7/s, the offered load: that is no capacity",
            "The server used 63% of 4 vCPUs, so it was not saturated",
            "INCOMPLETE (interrupted (Ctrl-C))",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(
            !text.contains("Estimated"),
            "an offered rate is no capacity:\n{text}"
        );
        // A capacity search's rate is what gets extrapolated, with the CPU it took.
        let mut searched = s.clone();
        searched.capacity = Some(crate::results::capacity::Capacity {
            rate_per_s: Some(100.0),
            steps: vec![crate::results::capacity::CapacityStep {
                rate_per_s: 100.0,
                passed: true,
                server_cpu_percent: Some(85.0),
                ..Default::default()
            }],
            verdict: "capacity 100.0/s".into(),
            ..Default::default()
        });
        let text = render(&searched);
        for needle in [
            "CAPACITY (highest rate meeting",
            "Measured capacity: 100.0/s (capacity search, on 4 vCPUs)",
            "Estimated:         170.0/s (on 8 cores)",
            "Confidence:        HIGH (server CPU at that rate: 85%)",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        // A step that judged no call has no latency: n/a, in the text and in the page's table.
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("1 ") && l.matches("n/a").count() == 2),
            "{text}"
        );
        let html = crate::report::html::render(&searched);
        assert!(
            html.contains("<td>0.0</td><td>n/a</td><td>n/a</td>"),
            "the capacity table's latency cells"
        );
        // A capacity the server's own CPUs did not limit, at the capacity nor where the SLO
        // broke, is not scaled by CPUs.
        let mut idle = searched.clone();
        if let Some(c) = idle.capacity.as_mut() {
            c.failed_at_per_s = Some(110.0);
            c.steps[0].server_cpu_percent = Some(2.0);
            c.steps.push(crate::results::capacity::CapacityStep {
                rate_per_s: 110.0,
                server_cpu_percent: Some(3.0),
                ..Default::default()
            });
        }
        let text = render(&idle);
        assert!(!text.contains("Estimated"), "{text}");
        assert!(
            text.contains(
                "Not extrapolated:  the server used 2% of its CPUs at that rate and 3% at 110.0/s"
            ),
            "{text}"
        );
        assert!(
            text.contains("Confidence:        LOW (server CPU at that rate: 2%)"),
            "{text}"
        );
        // ... but it is when the failing rate took the CPUs, when nothing failed, or when the
        // CPUs are the host's, shared with the agent and the target.
        let scaled = |s: &Summary| render(s).contains("Estimated:");
        let mut busy = idle.clone();
        if let Some(c) = busy.capacity.as_mut() {
            c.steps[1].server_cpu_percent = Some(95.0);
        }
        assert!(scaled(&busy));
        let mut unbracketed = idle.clone();
        if let Some(c) = unbracketed.capacity.as_mut() {
            c.failed_at_per_s = None;
        }
        assert!(scaled(&unbracketed));
        let mut shared = idle.clone();
        if let Some(sv) = shared.server.as_mut() {
            sv.vcpus_shared = true;
        }
        assert!(scaled(&shared));
        // While the search runs (the live page) nothing is claimed.
        let mut running = idle.clone();
        if let Some(c) = running.capacity.as_mut() {
            c.searching = true;
        }
        let text = render(&running);
        assert!(
            text.contains("A capacity search is running") && !text.contains("Not extrapolated"),
            "{text}"
        );
    }

    #[test]
    fn shared_host_cores_are_not_called_the_server_s_own() {
        let mut s = Summary {
            totals: Totals {
                rps_avg: 10.0,
                ..Totals::default()
            },
            server: Some(ServerReport {
                vcpus: 2,
                vcpus_shared: true,
                cpu_utilisation_percent: Some(40.0),
                ..ServerReport::default()
            }),
            ..Summary::default()
        };
        let text = render(&s);
        assert!(
            text.contains(
                "used 40% of 2 host cores, shared with the load generator and the target"
            ),
            "{text}"
        );
        assert!(
            !text.contains("on 2 cores") && !text.contains("vCPU"),
            "{text}"
        );
        if let Some(sv) = s.server.as_mut() {
            sv.vcpus_shared = false;
        }
        assert!(render(&s).contains("used 40% of 2 vCPUs, so it was not saturated"));
    }

    /// Against a server that is not the lab's: one port, no pool metrics, no failures, vCPUs
    /// unknown. The lab's sections stay out instead of printing `n/a`, one-port tables or a
    /// core count taken from the lab's topology; the server's histograms read as observations.
    #[test]
    fn sections_without_data_are_left_out() {
        let s = Summary {
            totals: Totals {
                requests: 10,
                successes: 10,
                rps_avg: 5.0,
                ..Totals::default()
            },
            ports: vec![GroupSummary {
                name: "2222".into(),
                ..GroupSummary::default()
            }],
            server: Some(ServerReport {
                scrapes: 3,
                deltas: BTreeMap::from([
                    ("process_cpu_seconds_total".to_owned(), 0.25),
                    ("mcp_requests_total".to_owned(), 10.0),
                ]),
                observed: BTreeMap::from([(
                    "mcp_ssh_command_duration_seconds".to_owned(),
                    crate::results::Observed {
                        count: 10.0,
                        mean: Some(0.0123),
                    },
                )]),
                ..ServerReport::default()
            }),
            ..Summary::default()
        };
        let text = render(&s);
        for absent in [
            "PER PORT",
            "POOL STATISTICS",
            "LIMIT BEHAVIOR",
            "n/a",
            "cores)",
        ] {
            assert!(!text.contains(absent), "{absent:?} in\n{text}");
        }
        for present in [
            "process_cpu_seconds_total",
            "0.250",
            "mcp_ssh_command_duration_seconds",
            "mean 12.300 ms",
            "--server-vcpus",
        ] {
            assert!(text.contains(present), "missing {present:?} in\n{text}");
        }
        assert!(!text.contains("_count") && !text.contains("_sum"), "{text}");
    }
}
