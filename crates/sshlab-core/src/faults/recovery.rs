//! How a run fared under its faults, from its records and the faults' executed windows: for
//! each fault, the calls that completed while it lasted, and the **recovery time**, from the
//! fault's end until the error rate and the p99 latency are back within the run's pre-fault
//! baseline and stay there for [`HOLD_S`].
//!
//! The baseline is every call completed before the first fault: its error rate and its p99
//! (corrected latency). "Within the baseline" is judged on sliding windows (long enough to hold
//! about 10 calls at the baseline's rate, 2 to 5 s), stepped every [`STEP_S`]: a window is
//! healthy when something completed in it, its error rate is at most the baseline's plus
//! [`ERROR_TOLERANCE`], and at most 2% of its calls (at least two) took longer than the slow
//! bound, `max(1.5 × baseline p99, baseline p99 + 20 ms)`. (One slow call in a short window
//! is what the baseline itself has now and then; a degraded state, a backlog draining, has most
//! of its calls slow.) The recovery point is the first
//! step after the fault's end from which every window up to [`HOLD_S`] later is healthy;
//! when the run (or the next fault) leaves less than that, at least [`MIN_HOLD_S`] of healthy
//! windows are needed, and the analysis says how long it held. No recovery point: a verdict
//! that says so. A fault that ends while another is still in effect (a pause inside a
//! partition) cannot recover before that one ends: its recovery is counted from the end of the
//! faults in effect at its end ([`FaultAnalysis::counted_from`]), not charged with their damage.
//!
//! Records arrive in two passes ([`Analyser::first_pass`], then [`Analyser::second_pass`]),
//! so nothing per call is kept in memory: histograms, and for each fault 100 ms counters up to
//! the next fault or the run's end.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::FaultRecord;
use crate::results::Record;
use crate::results::stats::{histogram, record_ms};

/// How long the system must stay within its baseline to count as recovered, seconds.
pub const HOLD_S: f64 = 10.0;
/// The shortest hold that counts when the run leaves less than [`HOLD_S`], seconds.
pub const MIN_HOLD_S: f64 = 3.0;
/// The step of the recovery scan, seconds.
pub const STEP_S: f64 = 0.1;
/// Error rate above the baseline's still counted as normal (1 percentage point).
pub const ERROR_TOLERANCE: f64 = 0.01;
/// The shortest and longest judging window, seconds (one that holds about 10 calls at the
/// baseline's rate, within these).
pub const WINDOW_S: (f64, f64) = (2.0, 5.0);
/// The least time a run must leave after a fault for its recovery to be judged at all: one
/// window (up to [`WINDOW_S`]'s longest, at low rates) and [`MIN_HOLD_S`], whichever is longer.
pub const JUDGE_AFTER_S: f64 = if MIN_HOLD_S > WINDOW_S.1 {
    MIN_HOLD_S
} else {
    WINDOW_S.1
};
/// Fewest calls before the first fault that make a baseline.
pub const MIN_BASELINE_CALLS: u64 = 20;

/// Calls that completed in a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    /// Calls completed.
    pub requests: u64,
    /// Of which failed.
    pub failures: u64,
    /// Corrected latency of all of them, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

impl WindowStats {
    fn of(requests: u64, failures: u64, h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            requests,
            failures,
            p50_ms: if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(0.5))
            },
            p99_ms: if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(0.99))
            },
            max_ms: if h.is_empty() { 0.0 } else { ms(h.max()) },
        }
    }
}

/// The run before its first fault.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Calls completed.
    pub requests: u64,
    /// Error rate, percent.
    pub error_rate_percent: f64,
    /// p99 corrected latency, ms.
    pub p99_ms: f64,
    /// Calls per second.
    pub rate_per_s: f64,
}

/// One fault's judgement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultAnalysis {
    /// Calls that completed while it lasted.
    pub during: WindowStats,
    /// The baseline it was judged against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// Seconds from its end until the run was back within the baseline (and stayed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_s: Option<f64>,
    /// Seconds the run stayed within the baseline from the recovery point (at most [`HOLD_S`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_s: Option<f64>,
    /// Failures from its start until the recovery point (or the end of what was judged).
    pub failures_until_recovered: u64,
    /// The fault whose end its recovery is counted from, when another fault was still in
    /// effect at its own end (`partition:target`); `recovery_s` is then from that end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_from: Option<String>,
    /// One sentence for people.
    pub verdict: String,
}

impl FaultAnalysis {
    /// Whether the run recovered from it.
    pub fn recovered(&self) -> bool {
        self.recovery_s.is_some()
    }
}

#[derive(Debug)]
struct Window {
    start: f64,
    end: f64,
    /// Where the recovery scan starts: its end, or the end of the faults still in effect then.
    scan_from: f64,
    /// The fault whose end `scan_from` is, when not its own.
    counted_from: Option<String>,
    /// Where the recovery scan stops: the next fault's start or the run's end.
    horizon: f64,
    /// Whether the horizon is another fault (else the run's end).
    next_fault: bool,
    requests: u64,
    failures: u64,
    latency: Histogram<u64>,
    /// Failures from its end until `scan_from` (while the faults in effect at its end lasted).
    failures_between: u64,
    /// Failures from the start until each 100 ms bucket after the end, for the count until
    /// recovery: (ok, failed, slow) per bucket.
    buckets: Vec<[u32; 3]>,
    failures_after: Vec<u32>,
}

/// Two passes over a run's records give every fault its [`FaultAnalysis`].
#[derive(Debug)]
pub struct Analyser {
    windows: Vec<Option<Window>>,
    first_fault: f64,
    base_requests: u64,
    base_failures: u64,
    base_latency: Histogram<u64>,
    base_span: (f64, f64),
    slow_ms: f64,
}

impl Analyser {
    /// For `faults` of a run that ended at `run_end` (unix seconds). Faults that never took
    /// effect (no start) get no analysis.
    pub fn new(faults: &[FaultRecord], run_end: f64) -> Self {
        let executed: Vec<(f64, f64, String)> = faults
            .iter()
            .filter_map(|f| Some((f.started_at?, f.ended_at.unwrap_or(run_end), f.label())))
            .collect();
        let first_fault = executed.iter().map(|w| w.0).fold(f64::INFINITY, f64::min);
        let windows = faults
            .iter()
            .map(|f| {
                let start = f.started_at?;
                let end = f.ended_at.unwrap_or(run_end).max(start);
                // The faults in effect at its end, and those in effect at theirs, in turn.
                let (mut scan_from, mut counted_from) = (end, None);
                while let Some((_, e, label)) = executed
                    .iter()
                    .filter(|(s, e, _)| *s < scan_from && *e > scan_from)
                    .max_by(|x, y| x.1.total_cmp(&y.1))
                {
                    scan_from = *e;
                    counted_from = Some(label.clone());
                }
                let scan_from = scan_from.min(run_end.max(end));
                let next = executed
                    .iter()
                    .map(|w| w.0)
                    .filter(|s| *s >= scan_from)
                    .fold(f64::INFINITY, f64::min);
                let (horizon, next_fault) = if next < run_end {
                    (next, true)
                } else {
                    (run_end, false)
                };
                let n = (((horizon - scan_from) / STEP_S).ceil().max(0.0) as usize).min(1 << 20);
                Some(Window {
                    start,
                    end,
                    scan_from,
                    counted_from,
                    horizon,
                    next_fault,
                    requests: 0,
                    failures: 0,
                    latency: histogram(),
                    failures_between: 0,
                    buckets: vec![[0; 3]; n],
                    failures_after: vec![0; n],
                })
            })
            .collect();
        Self {
            windows,
            first_fault,
            base_requests: 0,
            base_failures: 0,
            base_latency: histogram(),
            base_span: (f64::INFINITY, f64::NEG_INFINITY),
            slow_ms: f64::INFINITY,
        }
    }

    /// The first pass: the baseline and what completed during each fault.
    pub fn first_pass(&mut self, r: &Record) {
        if r.ts < self.first_fault {
            self.base_requests += 1;
            self.base_failures += u64::from(!r.ok());
            record_ms(&mut self.base_latency, r.latency_ms);
            self.base_span = (self.base_span.0.min(r.ts), self.base_span.1.max(r.ts));
        }
        for w in self.windows.iter_mut().flatten() {
            if r.ts >= w.start && r.ts < w.end {
                w.requests += 1;
                w.failures += u64::from(!r.ok());
                record_ms(&mut w.latency, r.latency_ms);
            } else if r.ts >= w.end && r.ts < w.scan_from {
                w.failures_between += u64::from(!r.ok());
            }
        }
    }

    fn baseline(&self) -> Option<Baseline> {
        if self.base_requests < MIN_BASELINE_CALLS {
            return None;
        }
        let span = (self.base_span.1 - self.base_span.0).max(1.0);
        Some(Baseline {
            requests: self.base_requests,
            error_rate_percent: self.base_failures as f64 * 100.0 / self.base_requests as f64,
            p99_ms: self.base_latency.value_at_quantile(0.99) as f64 / 1000.0,
            rate_per_s: self.base_requests as f64 / span,
        })
    }

    /// The second pass: 100 ms counters after each fault, against the baseline's slow bound.
    pub fn second_pass(&mut self, r: &Record) {
        if self.slow_ms.is_infinite()
            && let Some(b) = self.baseline()
        {
            self.slow_ms = (b.p99_ms * 1.5).max(b.p99_ms + 20.0);
        }
        for w in self.windows.iter_mut().flatten() {
            if r.ts >= w.scan_from && r.ts < w.horizon {
                let i = ((r.ts - w.scan_from) / STEP_S) as usize;
                if let Some(b) = w.buckets.get_mut(i) {
                    if r.ok() {
                        b[0] += 1;
                    } else {
                        b[1] += 1;
                        if let Some(f) = w.failures_after.get_mut(i) {
                            *f += 1;
                        }
                    }
                    if r.latency_ms > self.slow_ms {
                        b[2] += 1;
                    }
                }
            }
        }
    }

    /// Every fault's analysis, in the order given to [`Analyser::new`].
    pub fn finish(self) -> Vec<Option<FaultAnalysis>> {
        let baseline = self.baseline();
        self.windows
            .iter()
            .map(|w| {
                let w = w.as_ref()?;
                Some(judge(w, baseline.as_ref(), self.base_requests))
            })
            .collect()
    }
}

/// The window length (in buckets) that holds about 10 calls at the baseline's rate.
fn window_buckets(b: &Baseline) -> usize {
    let secs = (10.0 / b.rate_per_s.max(1e-9)).clamp(WINDOW_S.0, WINDOW_S.1);
    (secs / STEP_S).round() as usize
}

fn judge(w: &Window, baseline: Option<&Baseline>, base_requests: u64) -> FaultAnalysis {
    let during = WindowStats::of(w.requests, w.failures, &w.latency);
    let Some(b) = baseline else {
        return FaultAnalysis {
            during,
            failures_until_recovered: w.failures,
            verdict: format!(
                "no baseline to judge recovery: {base_requests} call(s) completed before the \
                 first fault (at least {MIN_BASELINE_CALLS} needed); start it later"
            ),
            ..FaultAnalysis::default()
        };
    };
    let span = window_buckets(b);
    let max_error = b.error_rate_percent / 100.0 + ERROR_TOLERANCE;
    let n = w.buckets.len();
    // Healthy window starting at each bucket (windows that do not fit are not judged).
    let healthy: Vec<bool> = (0..n.saturating_sub(span - 1))
        .map(|k| {
            let (ok, err, slow) = w.buckets[k..k + span]
                .iter()
                .fold((0u64, 0u64, 0u64), |a, c| {
                    (
                        a.0 + u64::from(c[0]),
                        a.1 + u64::from(c[1]),
                        a.2 + u64::from(c[2]),
                    )
                });
            let total = ok + err;
            total > 0 && err as f64 <= max_error * total as f64 && slow <= (total / 50).max(2)
        })
        .collect();
    let hold = (HOLD_S / STEP_S).round() as usize;
    let min_hold = (MIN_HOLD_S / STEP_S).round() as usize;
    let mut found = None;
    for k in 0..healthy.len() {
        // Windows from k whose end stays before the horizon, at most a hold's worth.
        let left = n - k;
        let held = left.min(hold);
        if held < min_hold.max(span) {
            break;
        }
        let last = k + held - span;
        if healthy[k..=last].iter().all(|h| *h) {
            found = Some((k, held));
            break;
        }
    }
    let available = w.horizon - w.scan_from;
    // What its recovery is counted from: its own end, or that of the faults in effect then.
    let after = match &w.counted_from {
        Some(label) => format!(
            "after `{label}` ended (in effect at its end, until {:.1} s later)",
            w.scan_from - w.end
        ),
        None => "after it ended".to_owned(),
    };
    match found {
        Some((k, held)) => {
            let recovery_s = k as f64 * STEP_S;
            let failures_until_recovered = w.failures
                + w.failures_between
                + w.failures_after[..k]
                    .iter()
                    .map(|f| u64::from(*f))
                    .sum::<u64>();
            let held_s = held as f64 * STEP_S;
            FaultAnalysis {
                during,
                baseline: Some(b.clone()),
                recovery_s: Some(recovery_s),
                held_s: Some(held_s),
                failures_until_recovered,
                counted_from: w.counted_from.clone(),
                verdict: if held < hold {
                    format!(
                        "recovered {recovery_s:.1} s {after} (held {held_s:.1} s, until the {})",
                        if w.next_fault {
                            "next fault"
                        } else {
                            "run ended"
                        }
                    )
                } else {
                    format!("recovered {recovery_s:.1} s {after}")
                },
            }
        }
        None => FaultAnalysis {
            during,
            baseline: Some(b.clone()),
            failures_until_recovered: w.failures
                + w.failures_between
                + w.failures_after.iter().map(|f| u64::from(*f)).sum::<u64>(),
            counted_from: w.counted_from.clone(),
            verdict: if w.next_fault {
                format!("NOT RECOVERED before the next fault began ({available:.1} s {after})")
            } else {
                format!("NOT RECOVERED within the run ({available:.1} s {after})")
            },
            ..FaultAnalysis::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::FaultSpec;
    use crate::results::Status;

    fn rec(ts: f64, ok: bool, latency_ms: f64) -> Record {
        Record {
            ts,
            intended_ts: ts - latency_ms / 1000.0,
            worker: "w0".into(),
            op: "op".into(),
            latency_ms,
            service_ms: latency_ms,
            status: if ok { Status::Success } else { Status::Error },
            error_kind: None,
            error: None,
            port: None,
            phase: None,
            segment: None,
        }
    }

    fn fault(start: f64, end: f64) -> FaultRecord {
        FaultRecord {
            index: 0,
            spec: "sshd-kill:2222@1s+1s".parse::<FaultSpec>().expect("spec"),
            started_at: Some(start),
            ended_at: Some(end),
            error: None,
            analysis: None,
        }
    }

    /// 20 calls a second from 0 to 60 s: 10 ms each, except failures and slow ones where
    /// `bad(t)` says so.
    fn run(
        faults: &[FaultRecord],
        bad: impl Fn(f64) -> Option<bool>,
    ) -> Vec<Option<FaultAnalysis>> {
        let records: Vec<Record> = (0..1200)
            .map(|i| {
                let t = f64::from(i) * 0.05;
                match bad(t) {
                    Some(true) => rec(t, false, 5.0),
                    Some(false) => rec(t, true, 900.0),
                    None => rec(t, true, 10.0),
                }
            })
            .collect();
        let mut a = Analyser::new(faults, 60.0);
        records.iter().for_each(|r| a.first_pass(r));
        records.iter().for_each(|r| a.second_pass(r));
        a.finish()
    }

    #[test]
    fn errors_that_stop_when_the_fault_ends_recover_at_once() {
        let r = run(&[fault(20.0, 25.0)], |t| {
            (20.0..25.0).contains(&t).then_some(true)
        });
        let a = r[0].as_ref().expect("analysed");
        assert_eq!(a.during.requests, 100);
        assert_eq!(a.during.failures, 100);
        assert_eq!(a.recovery_s, Some(0.0), "{a:?}");
        assert_eq!(a.failures_until_recovered, 100);
        assert_eq!(a.held_s, Some(HOLD_S));
        let b = a.baseline.as_ref().expect("baseline");
        assert_eq!((b.requests, b.error_rate_percent), (400, 0.0));
        assert!((b.rate_per_s - 20.0).abs() < 0.1, "{b:?}");
    }

    #[test]
    fn slow_calls_after_the_fault_delay_recovery_by_as_long() {
        // Errors during, then 3 s of slow successes (a backlog draining).
        let r = run(&[fault(20.0, 25.0)], |t| {
            if (20.0..25.0).contains(&t) {
                Some(true)
            } else if (25.0..28.0).contains(&t) {
                Some(false)
            } else {
                None
            }
        });
        let a = r[0].as_ref().expect("analysed");
        let rec_s = a.recovery_s.expect("recovered");
        assert!((rec_s - 3.0).abs() <= 0.15, "{rec_s}");
        assert!(
            a.verdict.starts_with(&format!("recovered {rec_s:.1} s")),
            "{}",
            a.verdict
        );
    }

    #[test]
    fn errors_that_never_stop_never_recover_and_say_so() {
        let r = run(&[fault(20.0, 25.0)], |t| (t >= 20.0).then_some(true));
        let a = r[0].as_ref().expect("analysed");
        assert_eq!(a.recovery_s, None);
        assert!(
            a.verdict
                .starts_with("NOT RECOVERED within the run (35.0 s"),
            "{}",
            a.verdict
        );
        assert_eq!(a.failures_until_recovered, 800);
    }

    #[test]
    fn a_fault_without_a_baseline_or_a_start_is_not_judged() {
        let r = run(&[fault(0.5, 5.0)], |_| None);
        let a = r[0].as_ref().expect("analysed");
        assert!(a.verdict.starts_with("no baseline"), "{}", a.verdict);
        let mut never = fault(10.0, 12.0);
        never.started_at = None;
        assert_eq!(run(&[never], |_| None)[0], None);
    }

    #[test]
    fn the_next_fault_bounds_the_recovery_scan() {
        // Errors from 20 s to the end; a second fault at 27 s.
        let r = run(&[fault(20.0, 25.0), fault(27.0, 30.0)], |t| {
            (t >= 20.0).then_some(true)
        });
        let a = r[0].as_ref().expect("analysed");
        assert!(
            a.verdict
                .starts_with("NOT RECOVERED before the next fault began (2.0 s"),
            "{}",
            a.verdict
        );
        // A short tail still counts when healthy for at least MIN_HOLD_S.
        let r = run(&[fault(50.0, 55.0)], |t| {
            (50.0..55.0).contains(&t).then_some(true)
        });
        let a = r[0].as_ref().expect("analysed");
        assert_eq!(a.recovery_s, Some(0.0));
        assert!(a.held_s.expect("held") < HOLD_S);
        assert!(a.verdict.contains("until the run ended"), "{}", a.verdict);
    }

    #[test]
    fn a_fault_ending_inside_another_counts_its_recovery_from_the_others_end() {
        // A partition from 20 to 40 s fails every call; a pause from 25 to 28 s inside it.
        let mut partition = fault(20.0, 40.0);
        partition.spec = "partition:target@20s+20s".parse().expect("spec");
        let mut pause = fault(25.0, 28.0);
        pause.index = 1;
        pause.spec = "mcp-pause@25s+3s".parse().expect("spec");
        let r = run(&[partition, pause], |t| {
            (20.0..40.0).contains(&t).then_some(true)
        });
        let p = r[0].as_ref().expect("partition analysed");
        assert_eq!(p.recovery_s, Some(0.0), "{p:?}");
        assert_eq!(p.counted_from, None);
        let a = r[1].as_ref().expect("pause analysed");
        // Not charged with the partition's 12 s after its end: counted from 40 s.
        assert_eq!(a.recovery_s, Some(0.0), "{a:?}");
        assert_eq!(a.counted_from.as_deref(), Some("partition:target"));
        assert!(
            a.verdict.starts_with(
                "recovered 0.0 s after `partition:target` ended (in effect at its \
                              end, until 12.0 s later)"
            ),
            "{}",
            a.verdict
        );
        // Its own 3 s and the partition's 12 s after them, 20 calls a second.
        assert_eq!(a.failures_until_recovered, 300);
    }
}
