//! The capacity search, a load model of its own: after an unjudged warm-up phase at the first
//! rate (the workers open their sessions, the server fills its pool), open-model steps at
//! rates the search picks
//! ([`sshlab_core::results::capacity::Search`]), each a phase of the run (labelled
//! `step K: R/s`), each judged on its own records after a warm-up ([`StepJudge`]) against the
//! SLO, never on the run's cumulative histogram. A step stops early once its SLO is broken
//! beyond doubt: more calls slower than a latency bound (or failed) than the whole step
//! could allow, or calls in flight running away from the schedule (the server has stopped
//! keeping up). A step passes when every SLO bound holds and the server completed at least
//! [`MIN_ACHIEVED`] of the offered rate.
//!
//! An error-rate bound (`errors<1%`) must be shown, not merely not contradicted: a step passes
//! it only when the upper end of the 95% confidence interval of its error rate (Wilson score,
//! one-sided) is within the bound. So a step needs enough calls to show it (about 270 without a
//! failure for 1%), and lasts as long as its rate needs to make them ([`Plan::step_duration`]);
//! a server that fails 1% of its calls never passes `errors<0.5%`, however few calls a step
//! happens to see fail.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sshlab_core::results::capacity::{Capacity, CapacityStep, Search};
use sshlab_core::results::{Aggregate, Record, RunInfo, Summary};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pacer::RateShape;
use super::{Phase, Runner};
use crate::mcp::McpError;
use crate::thresholds::{Budget, Threshold};

/// The share of the offered rate a step must complete to pass.
pub const MIN_ACHIEVED: f64 = 0.9;
/// How far completions may fall behind the schedule, in seconds of arrivals (at least
/// [`MIN_BACKLOG`] calls), before a step counts as running away.
pub const BACKLOG_S: f64 = 2.0;
/// The smallest backlog that counts as running away.
pub const MIN_BACKLOG: f64 = 20.0;
/// The unjudged phase before the first step, at its rate.
pub const WARMUP_PHASE: Duration = Duration::from_secs(5);
/// The pause between steps, so that a step does not start on what the last one left in the
/// server (calls a stopped step abandoned, connections being given back).
pub const SETTLE: Duration = Duration::from_secs(1);

/// The one-sided 95% normal quantile of the Wilson bound.
const Z95: f64 = 1.645;
/// The longest a step may be stretched to make enough calls, seconds.
const MAX_STEP_S: f64 = 600.0;

/// The upper end of the one-sided 95% Wilson score interval of `k` failures in `n` calls,
/// as a fraction (1.0 without calls).
pub fn wilson_upper(k: u64, n: u64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = Z95 * Z95;
    let centre = p + z2 / (2.0 * n);
    let spread = Z95 * ((p * (1.0 - p) + z2 / (4.0 * n)) / n).sqrt();
    ((centre + spread) / (1.0 + z2 / n)).min(1.0)
}

/// The fewest calls that can show an error rate under `cap` (a fraction) when none fail.
pub fn calls_to_show(cap: f64) -> f64 {
    if cap <= 0.0 {
        return f64::INFINITY;
    }
    // wilson_upper(0, n) = z²/(n + z²) ≤ cap  ⇔  n ≥ z²(1 − cap)/cap
    (Z95 * Z95 * (1.0 - cap) / cap).ceil()
}

/// A capacity search's settings.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The SLO: every bound must hold for a step to pass.
    pub slo: Vec<Threshold>,
    /// The first step's rate, arrivals per second.
    pub start_rate: f64,
    /// The most steps.
    pub max_steps: usize,
    /// Done once the highest pass and the lowest fail are this close (0.05: 5%).
    pub precision: f64,
    /// The start of each step that is not judged.
    pub warmup: Duration,
}

impl Plan {
    /// The calls a step must judge for its error-rate bounds to be shown (0 without any).
    pub fn min_calls(&self) -> f64 {
        self.slo
            .iter()
            .filter_map(Threshold::error_rate_cap)
            .map(|cap| calls_to_show(cap / 100.0) * 1.25)
            .fold(0.0, f64::max)
    }

    /// How long a step at `rate` lasts: `base`, or longer when the rate needs longer to make
    /// [`Plan::min_calls`] judged calls (at most 10 minutes).
    pub fn step_duration(&self, rate: f64, base: Duration) -> Duration {
        let needed = self.warmup.as_secs_f64() + self.min_calls() / rate.max(1e-9);
        base.max(Duration::from_secs_f64(needed.min(MAX_STEP_S)))
    }
}

/// Judges one step from its workers' records.
#[derive(Debug)]
pub struct StepJudge {
    rate: f64,
    warmup: Duration,
    duration: Duration,
    slo: Vec<Threshold>,
    state: Mutex<StepState>,
}

#[derive(Debug)]
struct StepState {
    agg: Option<Aggregate>,
    /// Unix time from which records are judged.
    judged_from: f64,
    /// Every record of the step, warm-up included (for the backlog).
    completed: u64,
    /// Per SLO bound with a budget: (expr, budget, calls used).
    budgets: Vec<(String, Budget, u64)>,
    stopped: Option<String>,
    /// Unix time it was stopped.
    stopped_at: Option<f64>,
    stop: Option<CancellationToken>,
}

impl StepJudge {
    fn new(rate: f64, duration: Duration, plan: &Plan) -> Self {
        let warmup = plan.warmup.min(duration / 2);
        let expected = rate * (duration - warmup).as_secs_f64();
        Self {
            rate,
            warmup,
            duration,
            slo: plan.slo.clone(),
            state: Mutex::new(StepState {
                agg: None,
                judged_from: f64::INFINITY,
                completed: 0,
                budgets: plan
                    .slo
                    .iter()
                    .filter_map(|t| Some((t.expr.clone(), t.budget(expected)?, 0)))
                    .collect(),
                stopped: None,
                stopped_at: None,
                stop: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StepState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The step starts at unix time `start`; `stop` ends it early.
    pub fn begin(&self, start: f64, stop: CancellationToken) {
        let mut st = self.lock();
        st.judged_from = start + self.warmup.as_secs_f64();
        st.agg = Some(Aggregate::new(st.judged_from));
        st.stop = Some(stop);
    }

    /// One of the step's records (a worker hands over each).
    pub fn add(&self, r: &Record) {
        let mut st = self.lock();
        st.completed += 1;
        if r.intended_ts < st.judged_from {
            return;
        }
        if let Some(agg) = st.agg.as_mut() {
            let _ = agg.add(r);
        }
        let mut broken = None;
        for (expr, budget, used) in &mut st.budgets {
            let counts = match budget {
                Budget::SlowerThan { ms, .. } => r.latency_ms > *ms,
                Budget::Failures { .. } => !r.ok(),
            };
            if counts {
                *used += 1;
            }
            let allowed = match budget {
                Budget::SlowerThan { allowed, .. } | Budget::Failures { allowed } => *allowed,
            };
            if *used as f64 > allowed && broken.is_none() {
                broken = Some(format!(
                    "{expr} broken beyond doubt: {used} calls against it, {allowed:.0} allowed in the step"
                ));
            }
        }
        if let Some(why) = broken {
            Self::stop(&mut st, why);
        }
    }

    fn stop(st: &mut StepState, why: String) {
        if st.stopped.is_none() {
            tracing::info!(%why, "capacity step stopped early");
            st.stopped = Some(why);
            st.stopped_at = Some(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
            if let Some(s) = &st.stop {
                s.cancel();
            }
        }
    }

    /// Watches the backlog until `deadline`: a step whose completions fall behind the schedule
    /// by more than [`BACKLOG_S`] of arrivals stops.
    pub async fn watch(self: Arc<Self>, deadline: Instant) {
        let started = Instant::now();
        let limit = (self.rate * BACKLOG_S).max(MIN_BACKLOG);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while Instant::now() < deadline {
            tick.tick().await;
            let due = self.rate * started.elapsed().as_secs_f64();
            let mut st = self.lock();
            let behind = due - st.completed as f64;
            if behind > limit {
                Self::stop(
                    &mut st,
                    format!(
                        "the calls in flight ran away: {behind:.0} due and not completed \
                         ({limit:.0} allowed)"
                    ),
                );
                return;
            }
        }
    }

    /// The step's verdict.
    fn finish(&self, label: &str) -> CapacityStep {
        let st = self.lock();
        let summary = st
            .agg
            .as_ref()
            .map(|agg| Summary::build(RunInfo::default(), agg))
            .unwrap_or_default();
        // Judged until its end, or until it was stopped.
        let planned = (self.duration - self.warmup).as_secs_f64();
        let judged_s = st
            .stopped_at
            .map_or(planned, |at| (at - st.judged_from).clamp(0.0, planned))
            .max(1e-3);
        let achieved = summary.totals.requests as f64 / judged_s;
        let (n, k) = (summary.totals.requests, summary.totals.failures);
        let mut broken: Vec<String> = Vec::new();
        for t in &self.slo {
            if let Some(cap) = t.error_rate_cap() {
                if st.stopped.is_some() {
                    // Cut short by another bound: too few calls to show anything.
                    continue;
                }
                let upper = wilson_upper(k, n) * 100.0;
                if upper > cap {
                    broken.push(format!(
                        "{} not shown: {k} of {n} calls failed, so up to {upper:.2}% at 95% \
                         confidence",
                        t.expr
                    ));
                }
                continue;
            }
            let r = t.evaluate(&summary);
            if !r.passed {
                broken.push(format!(
                    "{} ({})",
                    r.expr,
                    r.actual.map_or("n/a".into(), |a| format!("{a:.1}"))
                ));
            }
        }
        if st.stopped.is_none() && achieved < MIN_ACHIEVED * self.rate {
            broken.push(format!(
                "served only {achieved:.1}/s of the {:.1}/s offered",
                self.rate
            ));
        }
        CapacityStep {
            phase: label.to_owned(),
            rate_per_s: self.rate,
            achieved_per_s: achieved,
            requests: summary.totals.requests,
            failures: summary.totals.failures,
            p50_ms: summary.latency_all.p50,
            p99_ms: summary.latency_all.p99,
            server_cpu_percent: None,
            passed: broken.is_empty() && st.stopped.is_none(),
            broken,
            stopped_early: st.stopped.clone(),
        }
    }
}

/// A search's result so far, shared with whoever shows it while it runs (the live page).
#[derive(Debug, Clone, Default)]
pub struct SoFar(Arc<Mutex<Option<Capacity>>>);

impl SoFar {
    fn set(&self, c: Capacity) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(c);
    }

    /// The result after the steps judged so far (`None` before the first).
    pub fn get(&self) -> Option<Capacity> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Runs the search: one step per rate the search picks, each a phase like `template` at that
/// rate; returns its result.
pub(super) async fn search(
    runner: &Runner<'_>,
    plan: &Plan,
    template: &Phase,
) -> Result<Capacity, McpError> {
    // Unjudged: the workers open their sessions and the server fills its pool, so the first
    // step is not judged on connection setup (which would fail a rate the server can serve).
    let warmup = Phase {
        label: Some("warm-up".to_owned()),
        rate: Some(RateShape::Constant(plan.start_rate)),
        duration: WARMUP_PHASE.max(plan.warmup),
        ..template.clone()
    };
    if runner.phase(&warmup, None, None).await? == super::PhaseEnd::Cancelled {
        return Ok(Search::new(plan.start_rate, 0, plan.precision).result(Vec::new(), Vec::new()));
    }
    let mut search = Search::new(plan.start_rate, plan.max_steps, plan.precision);
    let mut steps = Vec::new();
    while let Some(rate) = search.next_rate() {
        if runner.cancel.is_cancelled() {
            break;
        }
        let label = format!("step {}: {rate:.1}/s", steps.len() + 1);
        let phase = Phase {
            label: Some(label.clone()),
            rate: Some(RateShape::Constant(rate)),
            duration: plan.step_duration(rate, template.duration),
            ..template.clone()
        };
        let judge = Arc::new(StepJudge::new(rate, phase.duration, plan));
        let end = runner.phase(&phase, None, Some(judge.clone())).await?;
        if end == super::PhaseEnd::Cancelled {
            break;
        }
        let step = judge.finish(&label);
        tracing::info!(rate, passed = step.passed, broken = ?step.broken, "capacity step");
        search.record(rate, step.passed);
        steps.push(step);
        if let Some(so_far) = &runner.sinks.capacity {
            let mut c = search.result(slo(plan), steps.clone());
            c.verdict = format!("searching, after step {}: {}", steps.len(), c.verdict);
            c.searching = true;
            so_far.set(c);
        }
        tokio::select! {
            () = tokio::time::sleep(SETTLE) => {}
            () = runner.cancel.cancelled() => break,
        }
    }
    Ok(search.result(slo(plan), steps))
}

/// The SLO as written.
fn slo(plan: &Plan) -> Vec<String> {
    plan.slo.iter().map(|t| t.expr.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rates_must_be_shown_by_enough_calls() {
        // Without failures, 1% needs about 270 calls and 0.5% about 540.
        assert_eq!(calls_to_show(0.01), 268.0);
        assert_eq!(calls_to_show(0.005), 539.0);
        assert!(wilson_upper(0, 268) <= 0.01 && wilson_upper(0, 200) > 0.01);
        // 1% failing in 1,000 calls is never shown to be under 0.5%.
        assert!(wilson_upper(10, 1000) > 0.005);
        assert_eq!(wilson_upper(0, 0), 1.0);
        let plan = Plan {
            slo: vec![
                "p99<200ms".parse().expect("ok"),
                "errors<1%".parse().expect("ok"),
            ],
            start_rate: 10.0,
            max_steps: 10,
            precision: 0.05,
            warmup: Duration::from_secs(2),
        };
        assert_eq!(plan.min_calls(), 335.0);
        let base = Duration::from_secs(10);
        assert_eq!(
            plan.step_duration(100.0, base),
            base,
            "100/s makes them in 10 s"
        );
        let slow = plan.step_duration(10.0, base).as_secs_f64();
        assert!((slow - 35.5).abs() < 0.01, "{slow}");
    }
}
