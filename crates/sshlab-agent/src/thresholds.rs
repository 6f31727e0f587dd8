//! Pass/fail thresholds: `--threshold 'ssh_run_command.p99<200ms'`.
//!
//! Grammar: `[<op>.]<metric> <cmp> <number>[<unit>]`, whitespace ignored around the parts.
//!
//! - `<cmp>`: `<`, `<=`, `>`, `>=`, `==`, `!=`.
//! - latency metrics (corrected, from the intended start): `p50` `p90` `p95` `p99` `p999`
//!   (or `p99.9`) `min` `max` `mean` (`avg`, `med`); with the suffix `_uncorrected`, the
//!   latency from the actual send. Units `ms` (the default), `s`, `us`/`µs`. They are judged
//!   on every completed operation, failures included (as k6 and Locust do): a call that timed
//!   out after 30 s is a 30 s call, so timeouts cannot hide behind fast successes.
//! - `errors`: with `%` the error rate in percent, without a unit the failure count;
//!   `error_rate` is always percent; `success_rate` percent.
//! - `rps` (average operations per second, unit optional `/s`), `rps_peak` (whole run only),
//!   `requests` / `count`, `successes`, `late_starts` (whole run only): plain numbers.
//! - `capacity` (whole run only): the rate a capacity search found, arrivals per second (unit
//!   optional `/s`); a run that was no search, or found none, has no value: it fails.
//! - faults (the prefix, when given, is a fault kind, not an operation): `recovery` is the
//!   longest recovery time of the run's faults (`recovery<30s`, `sshd-kill.recovery<5s`; unit
//!   `s` (the default) or `ms`), a fault that never recovered counting as no value, so the
//!   threshold fails; `fault_errors` the failures from the faults' starts until their
//!   recovery (a plain number). A run without such faults has no value for them: they fail.
//!
//! Metric names are checked when parsing ([`Threshold::validate`]), so a typo fails before a
//! run starts. Operation names are free-form: one that never ran evaluates to no value and
//! fails. The reported `actual` is in the threshold's own unit (seconds for `p95<1.5s`).

use std::fmt;
use std::str::FromStr;

use sshlab_core::faults::FaultKind;
use sshlab_core::results::{GroupSummary, LatencyStats, Summary, ThresholdResult, Totals};

/// Why a threshold expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    /// Nothing given.
    #[error("empty threshold expression")]
    Empty,
    /// No comparison operator.
    #[error("threshold `{0}`: missing comparison operator (one of < <= > >= == !=)")]
    MissingOperator(String),
    /// Nothing before the operator.
    #[error("threshold `{0}`: missing metric before the operator")]
    MissingMetric(String),
    /// The metric (without an operation prefix) is not one we know.
    #[error(
        "threshold `{expr}`: unknown metric `{metric}` (known: errors, error_rate, success_rate, rps, rps_peak, requests, count, successes, late_starts, p50, p90, p95, p99, p999, min, max, mean, recovery, fault_errors, capacity, or <op>.<stat>)"
    )]
    UnknownMetric {
        /// The expression.
        expr: String,
        /// The metric named.
        metric: String,
    },
    /// The statistic after `<op>.` is not one we know.
    #[error(
        "threshold `{expr}`: unknown statistic `{stat}` for operation `{op}` (known: p50, p90, p95, p99, p999, min, max, mean, errors, error_rate, success_rate, rps, requests, count, successes; latency stats take an `_uncorrected` suffix)"
    )]
    UnknownStat {
        /// The expression.
        expr: String,
        /// The operation named.
        op: String,
        /// The statistic named.
        stat: String,
    },
    /// The value is not a number.
    #[error("threshold `{expr}`: bad number `{value}`")]
    BadNumber {
        /// The expression.
        expr: String,
        /// The text after the operator.
        value: String,
    },
    /// The unit does not fit the metric.
    #[error("threshold `{expr}`: unit `{unit}` does not fit `{metric}` (expected {expected})")]
    BadUnit {
        /// The expression.
        expr: String,
        /// The unit given.
        unit: String,
        /// The metric.
        metric: String,
        /// What would have fitted.
        expected: &'static str,
    },
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Cmp {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Eq => (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs()).max(1.0),
            Cmp::Ne => (a - b).abs() > f64::EPSILON * a.abs().max(b.abs()).max(1.0),
        }
    }
}

impl fmt::Display for Cmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        })
    }
}

/// What a threshold measures, resolved from its stat name and unit.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    /// A latency percentile (name for [`LatencyStats::get`]); `scale` ms per unit.
    Latency {
        stat: &'static str,
        uncorrected: bool,
        scale: f64,
    },
    ErrorRate,
    SuccessRate,
    Failures,
    Requests,
    Successes,
    Rps,
    RpsPeak,
    LateStarts,
    /// The longest recovery of the faults (of the kind the prefix names); `scale` s per unit.
    Recovery {
        scale: f64,
    },
    FaultErrors,
    Capacity,
}

const LATENCY_STATS: [(&str, &str); 11] = [
    ("p50", "p50"),
    ("med", "p50"),
    ("p90", "p90"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("p999", "p999"),
    ("p99.9", "p999"),
    ("min", "min"),
    ("max", "max"),
    ("mean", "mean"),
    ("avg", "mean"),
];

/// Every statistic name, longest first (so `p99.9` wins over `9`-less prefixes).
const STAT_NAMES: [&str; 25] = [
    "fault_errors",
    "p99.9_uncorrected",
    "p999_uncorrected",
    "mean_uncorrected",
    "p50_uncorrected",
    "med_uncorrected",
    "p90_uncorrected",
    "p95_uncorrected",
    "p99_uncorrected",
    "min_uncorrected",
    "max_uncorrected",
    "avg_uncorrected",
    "success_rate",
    "late_starts",
    "capacity",
    "error_rate",
    "successes",
    "rps_peak",
    "recovery",
    "requests",
    "errors",
    "count",
    "p99.9",
    "p999",
    "rps",
];

/// The calls a bound allows to break it (see [`Threshold::budget`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// At most `allowed` calls slower than `ms` (corrected).
    SlowerThan {
        /// The bound, ms.
        ms: f64,
        /// Calls allowed above it.
        allowed: f64,
    },
    /// At most `allowed` failed calls.
    Failures {
        /// Failures allowed.
        allowed: f64,
    },
}

/// A parsed threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// As given (trimmed).
    pub expr: String,
    /// Operation prefix, when given.
    pub op: Option<String>,
    /// Statistic name as given (`p99`, `errors`, `p99_uncorrected`, ...).
    pub stat: String,
    /// Comparison.
    pub cmp: Cmp,
    /// The bound, in `unit`.
    pub value: f64,
    /// The unit as given (`ms`, `s`, `%`, or empty).
    pub unit: String,
}

impl FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expr: String = s.split_whitespace().collect();
        if expr.is_empty() {
            return Err(ThresholdError::Empty);
        }
        let pos = expr
            .find(['<', '>', '=', '!'])
            .ok_or_else(|| ThresholdError::MissingOperator(expr.clone()))?;
        let (left, rest) = expr.split_at(pos);
        let (cmp, right) = if let Some(r) = rest.strip_prefix("<=") {
            (Cmp::Le, r)
        } else if let Some(r) = rest.strip_prefix(">=") {
            (Cmp::Ge, r)
        } else if let Some(r) = rest.strip_prefix("==") {
            (Cmp::Eq, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (Cmp::Ne, r)
        } else if let Some(r) = rest.strip_prefix('<') {
            (Cmp::Lt, r)
        } else if let Some(r) = rest.strip_prefix('>') {
            (Cmp::Gt, r)
        } else {
            // A lone `=` or `!`.
            return Err(ThresholdError::MissingOperator(expr.clone()));
        };
        if left.is_empty() {
            return Err(ThresholdError::MissingMetric(expr.clone()));
        }
        let (op, stat) = split_metric(left);
        let num_end = right
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
            .unwrap_or(right.len());
        // `e` may start a unit rather than an exponent; back off until the number parses.
        let mut end = num_end;
        let value = loop {
            match right[..end].parse::<f64>() {
                Ok(v) if v.is_finite() => break v,
                _ if end > 0 => end -= 1,
                _ => {
                    return Err(ThresholdError::BadNumber {
                        expr: expr.clone(),
                        value: right.to_owned(),
                    });
                }
            }
        };
        let t = Threshold {
            expr: expr.clone(),
            op,
            stat,
            cmp,
            value,
            unit: right[end..].to_owned(),
        };
        t.validate()?;
        Ok(t)
    }
}

/// Split `left` into an optional operation and a statistic: the statistic is the longest
/// known name after a `.` (so `op.p99.9` works), else whatever follows the last `.`.
fn split_metric(left: &str) -> (Option<String>, String) {
    for name in STAT_NAMES
        .iter()
        .copied()
        .chain(LATENCY_STATS.iter().map(|(n, _)| *n))
    {
        if left == name {
            return (None, left.to_owned());
        }
        if let Some(op) = left.strip_suffix(name).and_then(|p| p.strip_suffix('.'))
            && !op.is_empty()
        {
            return (Some(op.to_owned()), name.to_owned());
        }
    }
    match left.rsplit_once('.') {
        Some((op, stat)) if !op.is_empty() => (Some(op.to_owned()), stat.to_owned()),
        _ => (None, left.to_owned()),
    }
}

impl Threshold {
    /// Check the statistic name and unit; an unknown metric is an error before any run.
    pub fn validate(&self) -> Result<(), ThresholdError> {
        self.metric().map(|_| ())
    }

    fn metric(&self) -> Result<Metric, ThresholdError> {
        let stat = self.stat.as_str();
        let unit = self.unit.as_str();
        let bad_unit = |expected| ThresholdError::BadUnit {
            expr: self.expr.clone(),
            unit: unit.to_owned(),
            metric: stat.to_owned(),
            expected,
        };
        let (base, uncorrected) = match stat.strip_suffix("_uncorrected") {
            Some(b) => (b, true),
            None => (stat, false),
        };
        if let Some((_, canonical)) = LATENCY_STATS.iter().find(|(n, _)| *n == base) {
            let scale = match unit {
                "" | "ms" => 1.0,
                "s" => 1000.0,
                "us" | "µs" => 0.001,
                _ => return Err(bad_unit("ms, s or us")),
            };
            return Ok(Metric::Latency {
                stat: canonical,
                uncorrected,
                scale,
            });
        }
        let whole_run_only = |m| {
            if self.op.is_some() {
                Err(self.unknown(stat))
            } else {
                Ok(m)
            }
        };
        let plain = |m| {
            if unit.is_empty() {
                Ok(m)
            } else {
                Err(bad_unit("a plain number"))
            }
        };
        let percent = |m| {
            if unit.is_empty() || unit == "%" {
                Ok(m)
            } else {
                Err(bad_unit("% or a plain number"))
            }
        };
        match (stat, uncorrected) {
            ("errors", false) => match unit {
                "%" => Ok(Metric::ErrorRate),
                "" => Ok(Metric::Failures),
                _ => Err(bad_unit("% (rate) or a plain number (count)")),
            },
            ("error_rate", false) => percent(Metric::ErrorRate),
            ("success_rate", false) => percent(Metric::SuccessRate),
            ("requests" | "count", false) => plain(Metric::Requests),
            ("successes", false) => plain(Metric::Successes),
            ("rps", false) => match unit {
                "" | "/s" => Ok(Metric::Rps),
                _ => Err(bad_unit("a plain number or /s")),
            },
            ("rps_peak", false) => match unit {
                "" | "/s" => whole_run_only(Metric::RpsPeak),
                _ => Err(bad_unit("a plain number or /s")),
            },
            ("late_starts", false) => plain(Metric::LateStarts).and_then(whole_run_only),
            ("recovery", false) => {
                self.fault_kind()?;
                match unit {
                    "" | "s" => Ok(Metric::Recovery { scale: 1.0 }),
                    "ms" => Ok(Metric::Recovery { scale: 0.001 }),
                    _ => Err(bad_unit("s or ms")),
                }
            }
            ("capacity", false) => match unit {
                "" | "/s" => whole_run_only(Metric::Capacity),
                _ => Err(bad_unit("a plain number or /s")),
            },
            ("fault_errors", false) => {
                self.fault_kind()?;
                plain(Metric::FaultErrors)
            }
            _ => Err(self.unknown(stat)),
        }
    }

    /// Whether this bound can judge one capacity step on its own records: not the whole-run
    /// figures (`rps_peak`, `late_starts`, faults' `recovery` and `fault_errors`, `capacity`).
    pub fn judges_a_step(&self) -> bool {
        !matches!(
            self.metric(),
            Ok(Metric::RpsPeak
                | Metric::LateStarts
                | Metric::Recovery { .. }
                | Metric::FaultErrors
                | Metric::Capacity)
        )
    }

    /// The error rate this bound caps, percent, when it is a whole-run upper bound on the error
    /// rate (`errors<1%`, `error_rate<=0.5`).
    pub fn error_rate_cap(&self) -> Option<f64> {
        if self.op.is_some() || !matches!(self.cmp, Cmp::Lt | Cmp::Le) {
            return None;
        }
        (self.metric().ok()? == Metric::ErrorRate).then_some(self.value)
    }

    /// What breaks this bound beyond doubt before a run ends, when it is a whole-run upper
    /// bound on a corrected latency percentile or on failures: the calls allowed to be slower
    /// than its latency (or to fail) among `expected` calls. A capacity step stops as soon as
    /// more than that have been seen, whatever the rest of the step would bring.
    pub fn budget(&self, expected: f64) -> Option<Budget> {
        if self.op.is_some() || !matches!(self.cmp, Cmp::Lt | Cmp::Le) {
            return None;
        }
        match self.metric().ok()? {
            Metric::Latency {
                stat,
                uncorrected: false,
                scale,
            } => {
                let q = match stat {
                    "p50" => 0.50,
                    "p90" => 0.90,
                    "p95" => 0.95,
                    "p99" => 0.99,
                    "p999" => 0.999,
                    "max" => 1.0,
                    _ => return None,
                };
                Some(Budget::SlowerThan {
                    ms: self.value * scale,
                    allowed: (expected * (1.0 - q)).floor(),
                })
            }
            Metric::ErrorRate => Some(Budget::Failures {
                allowed: (expected * self.value / 100.0).floor(),
            }),
            Metric::Failures => Some(Budget::Failures {
                allowed: self.value.floor(),
            }),
            _ => None,
        }
    }

    /// The fault kind a fault metric's prefix names (`None`: every fault); an unknown one is
    /// refused up front.
    fn fault_kind(&self) -> Result<Option<FaultKind>, ThresholdError> {
        match &self.op {
            None => Ok(None),
            Some(k) => {
                FaultKind::from_name(k)
                    .map(Some)
                    .ok_or_else(|| ThresholdError::UnknownStat {
                        expr: self.expr.clone(),
                        op: k.clone(),
                        stat: format!(
                            "{} (a fault metric's prefix is a fault kind: {})",
                            self.stat,
                            FaultKind::ALL.map(FaultKind::name).join(", ")
                        ),
                    })
            }
        }
    }

    /// A fault metric's value: the worst recovery (seconds, `None` when a fault never
    /// recovered or none ran), or the failures until recovery, over the faults of the kind.
    fn fault_actual(&self, metric: &Metric, s: &Summary) -> Option<f64> {
        let kind = self.fault_kind().ok()?;
        let judged: Vec<_> = s
            .faults
            .iter()
            .filter(|f| kind.is_none_or(|k| f.spec.kind == k))
            .map(|f| f.analysis.as_ref())
            .collect();
        if judged.is_empty() {
            return None;
        }
        match metric {
            Metric::Recovery { scale } => judged
                .iter()
                .map(|a| a.and_then(|a| a.recovery_s))
                .try_fold(0.0f64, |worst, r| r.map(|r| worst.max(r)))
                .map(|v| v / scale),
            _ => Some(
                judged
                    .iter()
                    .map(|a| a.map_or(0, |a| a.failures_until_recovered))
                    .sum::<u64>() as f64,
            ),
        }
    }

    fn unknown(&self, stat: &str) -> ThresholdError {
        match &self.op {
            Some(op) => ThresholdError::UnknownStat {
                expr: self.expr.clone(),
                op: op.clone(),
                stat: stat.to_owned(),
            },
            None => ThresholdError::UnknownMetric {
                expr: self.expr.clone(),
                metric: stat.to_owned(),
            },
        }
    }

    /// The measured value in the threshold's unit, or `None` when it was not measured
    /// (an operation that never ran, a latency with no completed operation).
    pub fn actual(&self, s: &Summary) -> Option<f64> {
        let metric = self.metric().ok()?;
        if matches!(metric, Metric::Recovery { .. } | Metric::FaultErrors) {
            return self.fault_actual(&metric, s);
        }
        if metric == Metric::Capacity {
            return s.capacity.as_ref().and_then(|c| c.rate_per_s);
        }
        let group: Option<(&Totals, &LatencyStats, &LatencyStats)> = match &self.op {
            Some(op) => s
                .op(op)
                .map(|g: &GroupSummary| (&g.totals, &g.latency_all, &g.latency_all_uncorrected)),
            None => Some((&s.totals, &s.latency_all, &s.latency_all_uncorrected)),
        };
        let (totals, corrected, uncorrected) = group?;
        let rate =
            |n: u64| (totals.requests > 0).then(|| n as f64 * 100.0 / totals.requests as f64);
        match metric {
            Metric::Latency {
                stat,
                uncorrected: u,
                scale,
            } => {
                let l = if u { uncorrected } else { corrected };
                if l.count == 0 {
                    return None;
                }
                l.get(stat).map(|v| v / scale)
            }
            Metric::ErrorRate => rate(totals.failures),
            Metric::SuccessRate => rate(totals.successes),
            Metric::Failures => Some(totals.failures as f64),
            Metric::Requests => Some(totals.requests as f64),
            Metric::Successes => Some(totals.successes as f64),
            Metric::Rps => Some(totals.rps_avg),
            Metric::RpsPeak => Some(totals.rps_peak),
            Metric::LateStarts => Some(s.run.late_starts as f64),
            Metric::Recovery { .. } | Metric::FaultErrors | Metric::Capacity => None,
        }
    }

    /// Check the threshold against a run; not measured means failed.
    pub fn evaluate(&self, s: &Summary) -> ThresholdResult {
        let actual = self.actual(s).filter(|v| v.is_finite());
        ThresholdResult {
            expr: self.expr.clone(),
            actual,
            passed: actual.is_some_and(|a| self.cmp.holds(a, self.value)),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

/// Evaluate every threshold; the second value is whether all passed.
pub fn evaluate_all(thresholds: &[Threshold], s: &Summary) -> (Vec<ThresholdResult>, bool) {
    let results: Vec<ThresholdResult> = thresholds.iter().map(|t| t.evaluate(s)).collect();
    let ok = results.iter().all(|r| r.passed);
    (results, ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sshlab_core::results::RunInfo;

    fn t(s: &str) -> Threshold {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> ThresholdError {
        s.parse::<Threshold>().expect_err(s)
    }

    #[test]
    fn parses_the_documented_forms() {
        let a = t("ssh_run_command.p99<200ms");
        assert_eq!(
            (
                a.op.as_deref(),
                a.stat.as_str(),
                a.cmp,
                a.value,
                a.unit.as_str()
            ),
            (Some("ssh_run_command"), "p99", Cmp::Lt, 200.0, "ms")
        );
        let b = t(" p95 <= 1.5s ");
        assert_eq!(
            (b.op, b.cmp, b.value, b.unit.as_str()),
            (None, Cmp::Le, 1.5, "s")
        );
        assert_eq!(b.expr, "p95<=1.5s");
        assert_eq!(t("errors<1%").unit, "%");
        assert_eq!(t("error_rate<0.5%").value, 0.5);
        assert_eq!(t("rps>100").cmp, Cmp::Gt);
        let c = t("ssh_connect.count>=10");
        assert_eq!((c.op.as_deref(), c.cmp), (Some("ssh_connect"), Cmp::Ge));
        assert_eq!(t("late_starts==0").cmp, Cmp::Eq);
        let d = t("my.dotted.op.p99.9<1e3ms");
        assert_eq!(
            (d.op.as_deref(), d.stat.as_str(), d.value),
            (Some("my.dotted.op"), "p99.9", 1000.0)
        );
        assert_eq!(
            t("ssh_run_command.p99_uncorrected<50ms").stat,
            "p99_uncorrected"
        );
        assert_eq!(t("p50!=0").cmp, Cmp::Ne);
        assert_eq!(t("rps>=10/s").unit, "/s");
        assert_eq!(t("p99<250us").unit, "us");
    }

    #[test]
    fn errors_name_what_is_wrong() {
        assert_eq!(err("  "), ThresholdError::Empty);
        assert!(matches!(
            err("p99 200ms"),
            ThresholdError::MissingOperator(_)
        ));
        assert!(matches!(err("p99=200"), ThresholdError::MissingOperator(_)));
        assert!(matches!(err("<5"), ThresholdError::MissingMetric(_)));
        match err("latency<5ms") {
            ThresholdError::UnknownMetric { metric, .. } => assert_eq!(metric, "latency"),
            e => panic!("{e:?}"),
        }
        match err("ssh_run_command.p98<5ms") {
            ThresholdError::UnknownStat { op, stat, .. } => {
                assert_eq!((op.as_str(), stat.as_str()), ("ssh_run_command", "p98"));
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(err("p99<abc"), ThresholdError::BadNumber { .. }));
        assert!(matches!(err("p99<"), ThresholdError::BadNumber { .. }));
        match err("p99<5kg") {
            ThresholdError::BadUnit { unit, .. } => assert_eq!(unit, "kg"),
            e => panic!("{e:?}"),
        }
        assert!(matches!(err("errors<5ms"), ThresholdError::BadUnit { .. }));
        assert!(matches!(err("rps>5%"), ThresholdError::BadUnit { .. }));
        assert!(matches!(
            err("op.late_starts==0"),
            ThresholdError::UnknownStat { .. }
        ));
        assert!(matches!(
            err("errors_uncorrected<1"),
            ThresholdError::UnknownMetric { .. }
        ));
        let msg = err("ssh_run_command.p98<5ms").to_string();
        assert!(msg.contains("unknown statistic `p98`"), "{msg}");
    }

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

    fn summary() -> Summary {
        let totals = |req: u64, fail: u64, rps: f64| Totals {
            requests: req,
            successes: req - fail,
            failures: fail,
            error_rate_percent: fail as f64 * 100.0 / req as f64,
            rps_avg: rps,
            rps_peak: rps * 1.5,
        };
        Summary {
            run: RunInfo {
                late_starts: 3,
                ..RunInfo::default()
            },
            totals: totals(1000, 5, 120.0),
            latency_all: lat(180.0),
            latency_all_uncorrected: lat(40.0),
            ops: vec![
                GroupSummary {
                    name: "ssh_run_command".into(),
                    totals: totals(900, 5, 100.0),
                    latency_all: lat(150.0),
                    latency_all_uncorrected: lat(45.0),
                    ..GroupSummary::default()
                },
                GroupSummary {
                    name: "ssh_connect".into(),
                    totals: totals(8, 0, 1.0),
                    ..GroupSummary::default()
                },
            ],
            ..Summary::default()
        }
    }

    fn eval(expr: &str) -> ThresholdResult {
        t(expr).evaluate(&summary())
    }

    #[test]
    fn fault_thresholds_judge_recovery_by_kind() {
        use sshlab_core::faults::FaultRecord;
        use sshlab_core::faults::recovery::FaultAnalysis;
        let fault = |spec: &str, recovery: Option<f64>, failures: u64| FaultRecord {
            index: 0,
            spec: spec.parse().expect("spec"),
            started_at: Some(1.0),
            ended_at: Some(2.0),
            error: None,
            analysis: Some(FaultAnalysis {
                recovery_s: recovery,
                failures_until_recovered: failures,
                ..FaultAnalysis::default()
            }),
        };
        let mut s = summary();
        s.faults = vec![
            fault("sshd-kill:2222@1s+1s", Some(1.5), 12),
            fault("mcp-pause@5s+1s", Some(0.4), 3),
        ];
        let ev = |e: &str| t(e).evaluate(&s);
        assert_eq!(ev("recovery<30s").actual, Some(1.5));
        assert!(ev("recovery<2").passed);
        assert!(!ev("recovery<1s").passed);
        assert_eq!(ev("recovery<1000ms").actual, Some(1500.0));
        assert_eq!(ev("mcp-pause.recovery<1s").actual, Some(0.4));
        assert!(ev("mcp-pause.recovery<1s").passed);
        assert_eq!(ev("fault_errors<20").actual, Some(15.0));
        assert_eq!(ev("sshd-kill.fault_errors<20").actual, Some(12.0));
        // A kind that did not run, and a fault that never recovered: no value, so it fails.
        assert_eq!(ev("partition.recovery<30s").actual, None);
        s.faults.push(fault("partition:target@9s+1s", None, 40));
        let r = t("recovery<30s").evaluate(&s);
        assert_eq!((r.actual, r.passed), (None, false));
        assert!(
            !t("fault_errors<20").evaluate(&summary()).passed,
            "no faults ran"
        );
        // Capacity: the rate a search found.
        s.capacity = Some(sshlab_core::results::capacity::Capacity {
            rate_per_s: Some(412.0),
            ..Default::default()
        });
        assert_eq!(t("capacity>300/s").evaluate(&s).actual, Some(412.0));
        assert!(t("capacity>300").evaluate(&s).passed);
        assert!(
            !t("capacity>500/s").evaluate(&summary()).passed,
            "no search ran"
        );
        assert!("ssh_connect.capacity>1".parse::<Threshold>().is_err());
        // A prefix that is no fault kind is refused before any run.
        let e = "kill-all.recovery<1s"
            .parse::<Threshold>()
            .expect_err("unknown kind");
        assert!(e.to_string().contains("fault kind"), "{e}");
        assert!("recovery<5%".parse::<Threshold>().is_err());
    }

    #[test]
    fn evaluates_against_a_summary() {
        let r = eval("ssh_run_command.p99<200ms");
        assert_eq!((r.actual, r.passed), (Some(150.0), true));
        assert_eq!(r.expr, "ssh_run_command.p99<200ms");
        let r = eval("p95<=0.05s");
        assert_eq!(r.actual, Some(0.09));
        assert!(!r.passed);
        assert!(eval("p99<=180").passed);
        assert!(eval("errors<1%").passed);
        assert_eq!(eval("errors<1%").actual, Some(0.5));
        assert!(!eval("error_rate<0.5%").passed);
        assert!(eval("errors<=5").passed);
        assert!(eval("rps>100").passed);
        assert!(!eval("ssh_run_command.rps>100").passed);
        assert!(!eval("ssh_connect.count>=10").passed);
        assert_eq!(eval("ssh_connect.count>=10").actual, Some(8.0));
        assert!(!eval("late_starts==0").passed);
        assert!(eval("late_starts!=0").passed);
        assert!(eval("ssh_run_command.p99_uncorrected<50ms").passed);
        assert!(eval("success_rate>=99.5%").passed);
        assert!(eval("rps_peak>=180").passed);
        assert_eq!(eval("p99<200000us").actual, Some(180_000.0));
    }

    #[test]
    fn unmeasured_values_fail() {
        // An operation that never ran.
        let r = eval("ssh_exec.p99<1s");
        assert_eq!((r.actual, r.passed), (None, false));
        // An operation with no successes has no latency.
        let r = eval("ssh_connect.p50<1000ms");
        assert_eq!((r.actual, r.passed), (None, false));
        // An empty run: no error rate.
        let r = t("errors<1%").evaluate(&Summary::default());
        assert_eq!((r.actual, r.passed), (None, false));
        let ts = [t("rps>100"), t("ssh_exec.p50<1ms")];
        let (results, ok) = evaluate_all(&ts, &summary());
        assert_eq!(results.len(), 2);
        assert!(!ok);
    }

    /// 95 fast successes and 5 calls that timed out after 30 s: the successes' p99 is fast,
    /// but a latency threshold judges every operation, so the timeouts fail it. Before,
    /// failures never entered a latency histogram and `p99<200ms` passed.
    #[test]
    fn timeouts_count_in_latency_thresholds() {
        use sshlab_core::results::{Aggregate, Record, RunInfo, Status};
        let mut agg = Aggregate::new(0.0);
        for i in 0..100u32 {
            let failed = i % 20 == 0;
            let ms = if failed { 30_000.0 } else { 12.0 };
            let ts = f64::from(i) * 0.5 + ms / 1000.0;
            agg.add(&Record {
                ts,
                intended_ts: f64::from(i) * 0.5,
                worker: "w0".into(),
                op: "ssh_run_command".into(),
                latency_ms: ms,
                service_ms: ms,
                status: if failed {
                    Status::Error
                } else {
                    Status::Success
                },
                error_kind: failed.then(|| "timeout".into()),
                error: failed.then(|| "request timed out".into()),
                port: None,
                phase: None,
                segment: None,
            });
        }
        agg.finish();
        let s = Summary::build(RunInfo::default(), &agg);
        assert!(
            s.op("ssh_run_command")
                .is_some_and(|g| g.latency.p99 < 20.0)
        );
        let r = t("ssh_run_command.p99<200ms").evaluate(&s);
        assert!(!r.passed, "{r:?}");
        assert!(r.actual.is_some_and(|a| a > 29_000.0), "{r:?}");
        assert!(!t("p99<200ms").evaluate(&s).passed);
        assert!(
            t("p90<200ms").evaluate(&s).passed,
            "the 5% of timeouts are above p90"
        );
    }
}
