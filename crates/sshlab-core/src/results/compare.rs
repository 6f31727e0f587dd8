//! A candidate run against a baseline: per operation and per port, throughput, error rate and
//! the latency percentiles side by side with their differences, and regression bounds that a
//! CI job can fail on (`ssh_run_command.p99=+10%`: the candidate's p99 may be at most 10%
//! above the baseline's).
//!
//! Latency is every completed operation's, failures included (`latency_all`), as thresholds
//! judge it. Runs with faults also compare each fault's recovery time (matched by its position
//! and kind), and `recovery` bounds the worst of them (`sshd-kill.recovery=+1s`: at most a
//! second slower to recover from sshd-kill faults; a fault that never recovered fails it).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::stats::LatencyStats;
use super::summary::{GroupSummary, Summary};

/// The metrics compared, in display order.
pub const METRICS: [&str; 6] = ["rps", "error_rate", "p50", "p95", "p99", "max"];

/// One group's figures in both runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `all`, `op <name>` or `port <n>`.
    pub group: String,
    /// Per metric of [`METRICS`]: (baseline, candidate); `None` where a run lacks the group.
    pub values: Vec<(Option<f64>, Option<f64>)>,
}

/// A bound's limit on the change from baseline to candidate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Relative, percent: `+10%` may rise at most 10%, `-10%` may fall at most 10%.
    Percent(f64),
    /// Absolute, in the metric's unit (ms, percentage points, requests/s).
    Absolute(f64),
}

/// `[op.]metric=±N[%|ms|s]`, e.g. `ssh_run_command.p99=+10%`, `error_rate=+0.5`, `rps=-5%`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bound {
    /// As given.
    pub expr: String,
    /// The operation, or the whole run.
    pub op: Option<String>,
    /// One of [`METRICS`].
    pub metric: String,
    /// The limit.
    pub limit: Limit,
    /// Whether a rise is the regression (`+`), or a fall (`-`); from the sign as written, so
    /// `-0%` bounds a fall.
    #[serde(default = "rise")]
    pub rise: bool,
}

fn rise() -> bool {
    true
}

/// Why a bound does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "regression bound `{0}`: expected [op.]metric=+N% or =+N (ms for latency), metric one of rps, error_rate, p50, p95, p99, max, capacity (e.g. capacity=-10%), or [fault-kind.]recovery with a unit (recovery=+1s, +500ms, +10%); + bounds a rise, - a fall"
)]
pub struct BoundError(pub String);

impl std::str::FromStr for Bound {
    type Err = BoundError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BoundError(s.to_owned());
        let (lhs, rhs) = s.split_once('=').ok_or_else(bad)?;
        let lhs = lhs.trim();
        let (op, metric) = match lhs.rsplit_once('.') {
            Some((op, m)) if !op.is_empty() => (Some(op.to_owned()), m),
            _ => (None, lhs),
        };
        if !METRICS.contains(&metric) && metric != "recovery" && metric != "capacity" {
            return Err(bad());
        }
        if metric == "capacity" && op.is_some() {
            return Err(bad());
        }
        if metric == "recovery"
            && op
                .as_deref()
                .is_some_and(|k| crate::faults::FaultKind::from_name(k).is_none())
        {
            return Err(bad());
        }
        let rhs = rhs.trim();
        if !(rhs.starts_with('+') || rhs.starts_with('-')) {
            return Err(bad());
        }
        let (num, limit): (&str, fn(f64) -> Limit) = if let Some(n) = rhs.strip_suffix('%') {
            (n, Limit::Percent)
        } else if let Some(n) = rhs.strip_suffix("ms") {
            (n, Limit::Absolute)
        } else if let Some(n) = rhs.strip_suffix('s') {
            (n, |v| Limit::Absolute(v * 1000.0))
        } else if metric == "recovery" {
            // Thresholds read a bare `recovery<30` as seconds, latency bounds a bare number as
            // ms: a recovery bound says which.
            return Err(bad());
        } else {
            (rhs, Limit::Absolute)
        };
        let v: f64 = num.trim().parse().map_err(|_| bad())?;
        if !v.is_finite() {
            return Err(bad());
        }
        Ok(Self {
            expr: s.to_owned(),
            op,
            metric: metric.to_owned(),
            limit: limit(v),
            rise: rhs.starts_with('+'),
        })
    }
}

/// A bound checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The bound.
    pub bound: Bound,
    /// The baseline's value.
    pub baseline: Option<f64>,
    /// The candidate's value.
    pub candidate: Option<f64>,
    /// Whether the change stays within the bound (a value missing from either run fails).
    pub passed: bool,
}

fn latency(l: &LatencyStats, metric: &str) -> Option<f64> {
    (l.count > 0).then(|| l.get(metric)).flatten()
}

fn value(g: &GroupSummary, metric: &str) -> Option<f64> {
    match metric {
        "rps" => Some(g.totals.rps_avg),
        "error_rate" => Some(g.totals.error_rate_percent),
        // A summary written before failures were timed has successes' latency only.
        m => latency(&g.latency_all, m).or_else(|| latency(&g.latency, m)),
    }
}

fn whole(s: &Summary) -> GroupSummary {
    GroupSummary {
        name: "all".into(),
        totals: s.totals.clone(),
        latency: s.latency.clone(),
        latency_uncorrected: s.latency_uncorrected.clone(),
        latency_all: s.latency_all.clone(),
        latency_all_uncorrected: s.latency_all_uncorrected.clone(),
        errors: s.errors.clone(),
    }
}

fn group<'a>(s: &'a [GroupSummary], name: &str) -> Option<&'a GroupSummary> {
    s.iter().find(|g| g.name == name)
}

/// The figures of both runs: the whole run, each operation, each port.
pub fn rows(base: &Summary, cand: &Summary) -> Vec<Row> {
    let mut out = Vec::new();
    let row = |label: String, b: Option<&GroupSummary>, c: Option<&GroupSummary>| Row {
        group: label,
        values: METRICS
            .iter()
            .map(|m| (b.and_then(|g| value(g, m)), c.and_then(|g| value(g, m))))
            .collect(),
    };
    out.push(row("all".into(), Some(&whole(base)), Some(&whole(cand))));
    let mut names: Vec<&str> = base.ops.iter().map(|g| g.name.as_str()).collect();
    for g in &cand.ops {
        if !names.contains(&g.name.as_str()) {
            names.push(&g.name);
        }
    }
    for n in names {
        out.push(row(
            format!("op {n}"),
            group(&base.ops, n),
            group(&cand.ops, n),
        ));
    }
    let mut ports: Vec<&str> = base.ports.iter().map(|g| g.name.as_str()).collect();
    for g in &cand.ports {
        if !ports.contains(&g.name.as_str()) {
            ports.push(&g.name);
        }
    }
    if ports.len() > 1 {
        for p in ports {
            out.push(row(
                format!("port {p}"),
                group(&base.ports, p),
                group(&cand.ports, p),
            ));
        }
    }
    out
}

/// The worst recovery of `s`'s faults (of kind `kind`), ms; `None` when one never recovered
/// or none ran.
fn worst_recovery_ms(s: &Summary, kind: Option<&str>) -> Option<f64> {
    let judged: Vec<Option<f64>> = s
        .faults
        .iter()
        .filter(|f| kind.is_none_or(|k| f.spec.kind.name() == k))
        .map(|f| f.analysis.as_ref().and_then(|a| a.recovery_s))
        .collect();
    if judged.is_empty() {
        return None;
    }
    judged
        .into_iter()
        // Whole ms: recoveries are steps of 0.1 s, and 0.3 s is not 300.0 ms in floats.
        .try_fold(0.0f64, |w, r| r.map(|r| w.max((r * 1000.0).round())))
}

/// One fault's recovery in both runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryRow {
    /// `#1 sshd-kill:2222`.
    pub fault: String,
    /// Seconds, baseline (`None`: not run there, or never recovered).
    pub baseline: Option<f64>,
    /// Seconds, candidate.
    pub candidate: Option<f64>,
}

/// Each fault's recovery in both runs, matched by position and kind.
pub fn recovery_rows(base: &Summary, cand: &Summary) -> Vec<RecoveryRow> {
    let n = base.faults.len().max(cand.faults.len());
    let rec = |s: &Summary, i: usize, kind: Option<crate::faults::FaultKind>| {
        s.faults
            .get(i)
            .filter(|f| kind.is_none_or(|k| f.spec.kind == k))
            .and_then(|f| f.analysis.as_ref()?.recovery_s)
    };
    (0..n)
        .map(|i| {
            let f = cand.faults.get(i).or_else(|| base.faults.get(i));
            let kind = f.map(|f| f.spec.kind);
            RecoveryRow {
                fault: format!("#{} {}", i + 1, f.map(|f| f.label()).unwrap_or_default()),
                baseline: rec(base, i, kind),
                candidate: rec(cand, i, kind),
            }
        })
        .collect()
}

/// Check `bounds` against the two runs.
pub fn verdicts(base: &Summary, cand: &Summary, bounds: &[Bound]) -> Vec<Verdict> {
    bounds
        .iter()
        .map(|b| {
            let pick = |s: &Summary| match &b.op {
                _ if b.metric == "recovery" => worst_recovery_ms(s, b.op.as_deref()),
                _ if b.metric == "capacity" => s.capacity.as_ref().and_then(|c| c.rate_per_s),
                Some(op) => group(&s.ops, op).and_then(|g| value(g, &b.metric)),
                None => value(&whole(s), &b.metric),
            };
            let (baseline, candidate) = (pick(base), pick(cand));
            let passed = match (baseline, candidate) {
                (Some(x), Some(y)) => {
                    let allowed = match b.limit {
                        // A recovery is measured in steps of 100 ms and is often 0 s: a
                        // relative bound allows at least one step of change.
                        Limit::Percent(p) if b.metric == "recovery" => {
                            let step = crate::faults::recovery::STEP_S * 1000.0;
                            let relative = x * (1.0 + p / 100.0);
                            if b.rise {
                                relative.max(x + step)
                            } else {
                                relative.min(x - step)
                            }
                        }
                        Limit::Percent(p) => x * (1.0 + p / 100.0),
                        Limit::Absolute(a) => x + a,
                    };
                    if b.rise { y <= allowed } else { y >= allowed }
                }
                _ => false,
            };
            Verdict {
                bound: b.clone(),
                baseline,
                candidate,
                passed,
            }
        })
        .collect()
}

/// A run set against its baseline, kept in the candidate's summary so that every report of
/// it shows the comparison (`sshlab-agent report DIR --baseline BASE`, `sshlab report`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The baseline's test id.
    pub test_id: String,
    /// The figures of both runs.
    pub rows: Vec<Row>,
    /// The regression bounds, checked.
    #[serde(default)]
    pub verdicts: Vec<Verdict>,
    /// Each fault's recovery in both runs (runs with faults).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery: Vec<RecoveryRow>,
    /// The capacity each run's search found, arrivals/s (capacity searches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<(Option<f64>, Option<f64>)>,
}

/// The capacity both runs' searches found, when either was a search.
fn capacities(base: &Summary, cand: &Summary) -> Option<(Option<f64>, Option<f64>)> {
    let of = |s: &Summary| s.capacity.as_ref().and_then(|c| c.rate_per_s);
    (base.capacity.is_some() || cand.capacity.is_some()).then(|| (of(base), of(cand)))
}

impl Baseline {
    /// `cand` against `base`, with `bounds`.
    pub fn of(base: &Summary, cand: &Summary, bounds: &[Bound]) -> Self {
        Self {
            test_id: base.run.test_id.clone(),
            rows: rows(base, cand),
            verdicts: verdicts(base, cand, bounds),
            recovery: recovery_rows(base, cand),
            capacity: capacities(base, cand),
        }
    }

    /// Whether every bound held.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.passed)
    }

    /// The rows and bounds as text, for report.txt.
    pub fn render_rows(&self) -> String {
        let mut out = String::new();
        for r in &self.rows {
            let _ = writeln!(out, "  {}", r.group);
            for (m, (b, c)) in METRICS.iter().zip(&r.values) {
                let _ = writeln!(
                    out,
                    "    {m:<11}{:>14}{:>14}{:>11}",
                    fmt(*b),
                    fmt(*c),
                    change(*b, *c)
                );
            }
        }
        if let Some((b, c)) = self.capacity {
            let _ = writeln!(
                out,
                "  capacity/s   {:>14}{:>14}{:>11}",
                fmt(b),
                fmt(c),
                change(b, c)
            );
        }
        if !self.recovery.is_empty() {
            let _ = writeln!(
                out,
                "  recovery after each fault, s (n/a: never recovered or not run)"
            );
            for r in &self.recovery {
                let _ = writeln!(
                    out,
                    "    {:<24}{:>14}{:>14}{:>11}",
                    r.fault,
                    fmt(r.baseline),
                    fmt(r.candidate),
                    change(r.baseline, r.candidate)
                );
            }
        }
        for v in &self.verdicts {
            let _ = writeln!(
                out,
                "  {} {:<36} baseline {} candidate {} ({})",
                if v.passed { "PASS" } else { "FAIL" },
                v.bound.expr,
                fmt(v.baseline),
                fmt(v.candidate),
                change(v.baseline, v.candidate)
            );
        }
        out
    }
}

/// A figure for people: two decimals, `n/a` when missing.
pub fn fmt(v: Option<f64>) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:.2}"))
}

/// The change from `b` to `c`: percent, or the difference when `b` is 0.
pub fn change(b: Option<f64>, c: Option<f64>) -> String {
    match (b, c) {
        (Some(b), Some(c)) if b.abs() > 0.0 => format!("{:+.1}%", (c - b) / b * 100.0),
        (Some(b), Some(c)) => format!("{:+.2}", c - b),
        _ => "n/a".to_owned(),
    }
}

/// The comparison as text: one block per group, then the bounds.
pub fn render(base: &Summary, cand: &Summary, verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "BASELINE  {} ({}, {} requests)\nCANDIDATE {} ({}, {} requests)\n(latency in ms, every operation incl. failures; error_rate in %; rps per second)\n",
        base.run.test_id,
        base.run.scenario,
        base.totals.requests,
        cand.run.test_id,
        cand.run.scenario,
        cand.totals.requests
    );
    let b = Baseline {
        test_id: base.run.test_id.clone(),
        rows: rows(base, cand),
        verdicts: verdicts.to_vec(),
        recovery: recovery_rows(base, cand),
        capacity: capacities(base, cand),
    };
    out.push_str(&b.render_rows());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Totals;

    fn lat(p99: f64) -> LatencyStats {
        LatencyStats {
            count: 100,
            p50: p99 / 4.0,
            p95: p99 / 2.0,
            p99,
            max: p99 * 2.0,
            ..LatencyStats::default()
        }
    }

    fn run(p99: f64, rps: f64) -> Summary {
        Summary {
            totals: Totals {
                requests: 100,
                rps_avg: rps,
                ..Totals::default()
            },
            latency_all: lat(p99),
            ops: vec![GroupSummary {
                name: "ssh_run_command".into(),
                totals: Totals {
                    rps_avg: rps,
                    ..Totals::default()
                },
                latency_all: lat(p99),
                ..GroupSummary::default()
            }],
            ..Summary::default()
        }
    }

    #[test]
    fn recovery_is_compared_and_bounded() {
        use crate::faults::FaultRecord;
        use crate::faults::recovery::FaultAnalysis;
        let with = |recovery: Option<f64>| {
            let mut s = run(100.0, 50.0);
            s.faults = vec![FaultRecord {
                index: 0,
                spec: "sshd-kill:2222@5s+5s".parse().expect("spec"),
                started_at: Some(5.0),
                ended_at: Some(10.0),
                error: None,
                analysis: Some(FaultAnalysis {
                    recovery_s: recovery,
                    ..FaultAnalysis::default()
                }),
            }];
            s
        };
        let (base, slower) = (with(Some(1.0)), with(Some(2.5)));
        let rows = recovery_rows(&base, &slower);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].baseline, rows[0].candidate),
            (Some(1.0), Some(2.5))
        );
        assert_eq!(rows[0].fault, "#1 sshd-kill:2222");
        let b: Bound = "sshd-kill.recovery=+1s".parse().expect("bound");
        let v = verdicts(&base, &slower, std::slice::from_ref(&b));
        assert!(!v[0].passed, "{v:?}");
        assert_eq!(v[0].candidate, Some(2500.0));
        assert!(verdicts(&base, &with(Some(1.5)), std::slice::from_ref(&b))[0].passed);
        assert!(
            !verdicts(&base, &with(None), &[b])[0].passed,
            "never recovered"
        );
        assert!("explode.recovery=+1s".parse::<Bound>().is_err());
        // Without a unit it could be read as ms or as s: refused, saying so.
        let e = "recovery=+2".parse::<Bound>().expect_err("no unit");
        assert!(e.to_string().contains("recovery with a unit"), "{e}");
        // +10% of a recovery of 0 s still allows one 100 ms step, not nothing.
        let (instant, step) = (with(Some(0.0)), with(Some(0.1)));
        let pct: Bound = "recovery=+10%".parse().expect("bound");
        assert!(verdicts(&instant, &step, std::slice::from_ref(&pct))[0].passed);
        assert!(!verdicts(&instant, &with(Some(0.3)), std::slice::from_ref(&pct))[0].passed);
        // One step on any recovery (0.3 s is 300.00000000000006 ms as a float product).
        for k in 0..100 {
            let (from, to) = (f64::from(k) * 0.1, f64::from(k + 1) * 0.1);
            assert!(
                verdicts(
                    &with(Some(from)),
                    &with(Some(to)),
                    std::slice::from_ref(&pct)
                )[0]
                .passed,
                "{from} s -> {to} s"
            );
        }
        let text = Baseline::of(&base, &slower, &[]).render_rows();
        assert!(
            text.contains("#1 sshd-kill:2222") && text.contains("+150.0%"),
            "{text}"
        );
    }

    #[test]
    fn capacity_is_compared_and_a_fall_bounded() {
        let with = |rate: Option<f64>| {
            let mut s = run(100.0, 50.0);
            s.capacity = Some(crate::results::capacity::Capacity {
                rate_per_s: rate,
                ..Default::default()
            });
            s
        };
        let b: Bound = "capacity=-10%".parse().expect("bound");
        assert!(!b.rise);
        let one = std::slice::from_ref(&b);
        assert!(
            !verdicts(&with(Some(400.0)), &with(Some(350.0)), one)[0].passed,
            "fell 12.5%"
        );
        assert!(verdicts(&with(Some(400.0)), &with(Some(380.0)), one)[0].passed);
        assert!(!verdicts(&with(Some(400.0)), &with(None), one)[0].passed);
        let text = Baseline::of(&with(Some(400.0)), &with(Some(350.0)), &[]).render_rows();
        assert!(
            text.contains("capacity/s") && text.contains("-12.5%"),
            "{text}"
        );
        assert!("ssh_connect.capacity=-10%".parse::<Bound>().is_err());
    }

    #[test]
    fn bounds_parse_and_refuse() {
        let b: Bound = "ssh_run_command.p99=+10%".parse().expect("parses");
        assert_eq!(b.op.as_deref(), Some("ssh_run_command"));
        assert_eq!(b.limit, Limit::Percent(10.0));
        assert_eq!(
            "p99=+0.5s".parse::<Bound>().map(|b| b.limit),
            Ok(Limit::Absolute(500.0))
        );
        assert!(
            !"rps=-0%".parse::<Bound>().expect("parses").rise,
            "-0% bounds a fall"
        );
        for bad in ["p99<10%", "p42=+1%", "p99=10%", "p99=+x%", "=+1%"] {
            assert!(bad.parse::<Bound>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_slower_candidate_crosses_a_rise_bound_a_slower_rate_a_fall_bound() {
        let base = run(100.0, 500.0);
        let bounds: Vec<Bound> = ["ssh_run_command.p99=+10%", "rps=-10%", "p99=+50ms"]
            .iter()
            .map(|b| b.parse().expect("parses"))
            .collect();
        let same = verdicts(&base, &run(105.0, 480.0), &bounds);
        assert!(same.iter().all(|v| v.passed), "{same:?}");
        let worse = verdicts(&base, &run(180.0, 400.0), &bounds);
        assert!(worse.iter().all(|v| !v.passed), "{worse:?}");
        let text = render(&base, &run(180.0, 400.0), &worse);
        assert!(text.contains("FAIL ssh_run_command.p99=+10%") && text.contains("+80.0%"));
        // A bound on an operation one run lacks fails.
        let missing = verdicts(&base, &Summary::default(), &bounds[..1]);
        assert!(!missing[0].passed);
    }
}
