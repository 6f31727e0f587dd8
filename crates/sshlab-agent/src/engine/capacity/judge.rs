//! One capacity step, judged: live, a [`StepJudge`] takes the step's records from its workers,
//! spends the SLO's budgets and watches the backlog (either may stop the step early); at its
//! end it hands over what it judged as a [`StepShare`]. The verdict ([`verdict`]) is a pure
//! function of the shares: one for a single agent, one per agent for a split search, whose
//! agents all judge the same shares in the same order and so reach the same verdict (and so
//! does `merge`, from the step files).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sshlab_core::results::aggregate::Group;
use sshlab_core::results::capacity::CapacityStep;
use sshlab_core::results::{Aggregate, Record, RunInfo, Summary};
use sshlab_core::scenario::segment::Segment;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::exchange::StepFiles;
use super::{BACKLOG_S, MIN_ACHIEVED, MIN_BACKLOG, Plan, wilson_upper};
use crate::thresholds::{Budget, Threshold};

/// Why a step stopped before its end, and when (unix s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stopped {
    /// Unix time.
    pub at: f64,
    /// Why, in words.
    pub why: String,
}

/// What a step's verdict and the search's next rate depend on besides the step's records: the
/// same in every share of a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchPlan {
    /// The SLO, as written.
    pub slo: Vec<String>,
    /// The first step's rate.
    pub start_rate: f64,
    /// The most steps.
    pub max_steps: usize,
    /// The precision the search stops at (0.05: 5%).
    pub precision: f64,
}

/// One agent's part of one step, as judged: the records due after the step's warm-up, added
/// up, and the calls it served after it.
/// Written to `capacity/step-NNN.json` in the agent's results dir, where the other agents of a
/// split search read it, and `merge` after them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepShare {
    /// The agent's segment (`0/1` for a whole search).
    pub segment: Segment,
    /// The run's start (unix s): the same `--start-at` for every agent of one search, so a
    /// step file left by another run is told apart.
    pub run_started_at: f64,
    /// 1-based.
    pub step: usize,
    /// The step's phase label (`step 3: 80.0/s`).
    pub label: String,
    /// The whole step's rate (every agent's arrivals together), per second.
    pub rate_per_s: f64,
    /// How long the step was to be judged (its length less its warm-up), seconds.
    pub planned_s: f64,
    /// Unix time from which records are judged.
    pub judged_from: f64,
    /// Set when the step stopped early (this agent's judge, or another agent's, whose stop
    /// this agent followed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
    /// When this agent had judged its part (unix s); the next step starts after the last.
    pub published_at: f64,
    /// The search.
    pub search: SearchPlan,
    /// Calls that completed inside the judged window (from `judged_from` until the step's end,
    /// or its stop as this agent knew it when each call was handed over: a stop by another
    /// agent of a split search is learned up to a poll later), whatever their arrival: the
    /// step's throughput. Under a backlog they are mostly arrivals of the step's warm-up,
    /// which are not judged, so a step that never caught up served calls and judged none.
    /// Absent in step files of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<u64>,
    /// Every judged record: those due from `judged_from` on.
    pub all: Group,
    /// By operation (per-operation bounds).
    #[serde(default)]
    pub ops: BTreeMap<String, Group>,
}

/// Judges one step from its workers' records, live.
#[derive(Debug)]
pub struct StepJudge {
    rate: f64,
    /// This agent's part of the arrivals (1/N of a split search).
    share: f64,
    warmup: Duration,
    duration: Duration,
    /// A split search's step files, where an early stop is said at once for the other agents
    /// to follow (with the step's number).
    tell: Option<(StepFiles, usize)>,
    state: Mutex<StepState>,
}

#[derive(Debug)]
struct StepState {
    agg: Option<Aggregate>,
    /// Unix time from which records are judged.
    judged_from: f64,
    /// Every record of the step, warm-up included (for the backlog).
    completed: u64,
    /// Records that completed inside the judged window (before the stop, when there is one).
    served: u64,
    /// Per SLO bound with a budget: (expr, budget, calls used).
    budgets: Vec<(String, Budget, u64)>,
    stopped: Option<Stopped>,
    stop: Option<CancellationToken>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl StepJudge {
    /// A step at `rate` (the whole search's arrivals) lasting `duration`, of which this agent
    /// makes the part `share`. The SLO's budgets are the whole step's: any agent that sees
    /// more calls break a bound than the whole step allows has seen it broken beyond doubt.
    pub fn new(rate: f64, duration: Duration, plan: &Plan, share: f64) -> Self {
        let warmup = plan.warmup.min(duration / 2);
        let expected = rate * (duration - warmup).as_secs_f64();
        Self {
            rate,
            share,
            warmup,
            duration,
            tell: None,
            state: Mutex::new(StepState {
                agg: None,
                judged_from: f64::INFINITY,
                completed: 0,
                served: 0,
                budgets: plan
                    .slo
                    .iter()
                    .filter_map(|t| Some((t.expr.clone(), t.budget(expected)?, 0)))
                    .collect(),
                stopped: None,
                stop: None,
            }),
        }
    }

    /// Step `step` of a split search: an early stop is written to `files` at once.
    pub fn telling(mut self, files: StepFiles, step: usize) -> Self {
        self.tell = Some((files, step));
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StepState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The step starts at unix time `start`; `stop` ends it early.
    pub fn begin(&self, start: f64, stop: CancellationToken) {
        let mut st = self.lock();
        st.judged_from = start + self.warmup.as_secs_f64();
        st.agg = Some(Aggregate::new(st.judged_from));
        if st.stopped.is_some() {
            // Another agent stopped the step before this one had begun it.
            stop.cancel();
        }
        st.stop = Some(stop);
    }

    /// One of the step's records (a worker hands over each).
    pub fn add(&self, r: &Record) {
        let mut st = self.lock();
        st.completed += 1;
        // A call handed over after the stop (a worker releases a handle first) still counts
        // if it completed before it.
        let window_end = st.judged_from + (self.duration - self.warmup).as_secs_f64();
        let cut = st
            .stopped
            .as_ref()
            .map_or(window_end, |s| s.at.min(window_end));
        if r.ts >= st.judged_from && r.ts <= cut {
            st.served += 1;
        }
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
        let told = broken.and_then(|why| Self::stop(&mut st, why, unix_now()));
        drop(st);
        self.tell(told);
    }

    /// Stops the step, once; returns what stopped it when this call did.
    fn stop(st: &mut StepState, why: String, at: f64) -> Option<Stopped> {
        if st.stopped.is_some() {
            return None;
        }
        tracing::info!(%why, "capacity step stopped early");
        let stopped = Stopped { at, why };
        st.stopped = Some(stopped.clone());
        if let Some(s) = &st.stop {
            s.cancel();
        }
        Some(stopped)
    }

    /// Tells the other agents of a split search that this agent's judge stopped the step
    /// (outside the lock: the shared volume may be slow, and the workers wait on the lock).
    fn tell(&self, stopped: Option<Stopped>) {
        if let (Some(stopped), Some((files, step))) = (stopped, &self.tell)
            && let Err(e) = files.publish_stop(*step, &stopped)
        {
            tracing::warn!(error = %e, "cannot tell the other agents of an early stop");
        }
    }

    /// Stops the step because another agent of the search stopped it (as it says).
    pub fn follow(&self, stopped: Stopped) {
        let mut st = self.lock();
        let _ = Self::stop(&mut st, stopped.why, stopped.at);
    }

    /// Why and when the step stopped early, if it did.
    pub fn stopped(&self) -> Option<Stopped> {
        self.lock().stopped.clone()
    }

    /// Watches the backlog until `deadline`: a step whose completions fall behind this agent's
    /// schedule by more than [`BACKLOG_S`] of arrivals stops.
    pub async fn watch(self: Arc<Self>, deadline: Instant) {
        let started = Instant::now();
        let rate = self.rate * self.share;
        let limit = (rate * BACKLOG_S).max(MIN_BACKLOG * self.share);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while Instant::now() < deadline {
            tick.tick().await;
            let due = rate * started.elapsed().as_secs_f64();
            let mut st = self.lock();
            let behind = due - st.completed as f64;
            if behind > limit {
                let told = Self::stop(
                    &mut st,
                    format!(
                        "the calls in flight ran away: {behind:.0} due and not completed \
                         ({limit:.0} allowed)"
                    ),
                    unix_now(),
                );
                drop(st);
                self.tell(told);
                return;
            }
        }
    }

    /// What this agent judged of step `step`, now that it is over.
    pub fn share(
        &self,
        step: usize,
        label: &str,
        segment: Segment,
        run_started_at: f64,
        search: SearchPlan,
    ) -> StepShare {
        let st = self.lock();
        let (all, ops) = st
            .agg
            .as_ref()
            .map(|a| (a.all.clone(), a.ops.clone()))
            .unwrap_or_default();
        StepShare {
            segment,
            run_started_at,
            step,
            label: label.to_owned(),
            rate_per_s: self.rate,
            planned_s: (self.duration - self.warmup).as_secs_f64(),
            judged_from: if st.judged_from.is_finite() {
                st.judged_from
            } else {
                0.0
            },
            stopped: st.stopped.clone(),
            published_at: unix_now(),
            served: Some(st.served),
            search,
            all,
            ops,
        }
    }
}

/// The step's verdict against `slo`, from every agent's share of it (at least one; all of one
/// step). Pure: the same shares give the same verdict wherever it is judged.
pub fn verdict(slo: &[Threshold], shares: &[StepShare]) -> CapacityStep {
    // An agent that never began the step (no worker in it) judged nothing from no time.
    let judged_from = shares
        .iter()
        .map(|s| s.judged_from)
        .filter(|t| *t > 0.0)
        .reduce(f64::min)
        .unwrap_or(0.0);
    let mut agg = Aggregate::new(judged_from);
    for s in shares {
        agg.all.merge(&s.all);
        for (op, g) in &s.ops {
            agg.ops.entry(op.clone()).or_default().merge(g);
        }
    }
    let summary = Summary::build(RunInfo::default(), &agg);
    // The first stop, when any agent stopped the step: every agent's share ends there.
    let stopped = shares
        .iter()
        .filter_map(|s| s.stopped.as_ref())
        .min_by(|a, b| a.at.total_cmp(&b.at));
    let (rate, planned) = shares
        .first()
        .map_or((0.0, 0.0), |s| (s.rate_per_s, s.planned_s.max(0.0)));
    // Judged until its end, or until it was stopped.
    let judged_s = stopped
        .map_or(planned, |s| (s.at - judged_from).clamp(0.0, planned))
        .max(1e-3);
    // What the server completed in the judged window; a step file of an earlier version has
    // only its judged calls.
    let served: u64 = shares
        .iter()
        .map(|s| s.served.unwrap_or(s.all.ok + s.all.err))
        .sum();
    let achieved = served as f64 / judged_s;
    let (n, k) = (summary.totals.requests, summary.totals.failures);
    let mut broken: Vec<String> = Vec::new();
    for t in slo {
        if let Some(cap) = t.error_rate_cap() {
            if stopped.is_some() {
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
    if stopped.is_none() && n == 0 {
        broken.push(
            "no call due after the warm-up completed: the calls fell behind the schedule".into(),
        );
    }
    if stopped.is_none() && achieved < MIN_ACHIEVED * rate {
        broken.push(format!(
            "served only {achieved:.1}/s of the {rate:.1}/s offered"
        ));
    }
    CapacityStep {
        phase: shares.first().map(|s| s.label.clone()).unwrap_or_default(),
        rate_per_s: rate,
        achieved_per_s: achieved,
        requests: summary.totals.requests,
        failures: summary.totals.failures,
        p50_ms: summary.latency_all.p50,
        p99_ms: summary.latency_all.p99,
        server_cpu_percent: None,
        passed: broken.is_empty() && stopped.is_none(),
        broken,
        stopped_early: stopped.map(|s| s.why.clone()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Another agent's stop that arrives while this one still connects its workers stops the
    /// step the moment it begins (else this agent would run the whole step alone).
    #[test]
    fn a_stop_seen_before_the_step_began_stops_it_at_once() {
        let plan = Plan {
            slo: vec!["p99<200ms".parse().expect("slo")],
            start_rate: 10.0,
            max_steps: 3,
            precision: 0.05,
            warmup: Duration::from_secs(2),
        };
        let j = StepJudge::new(10.0, Duration::from_secs(10), &plan, 0.5);
        j.follow(Stopped {
            at: 5.0,
            why: "segment 1/2: the calls in flight ran away".into(),
        });
        let token = CancellationToken::new();
        j.begin(1.0, token.clone());
        assert!(token.is_cancelled());
        assert_eq!(j.stopped().map(|s| s.at), Some(5.0));
    }

    /// A successful call due at `intended_ts` that completed at `ts`.
    pub(in crate::engine::capacity) fn record(intended_ts: f64, ts: f64) -> Record {
        use sshlab_core::results::record::Status;
        Record {
            ts,
            intended_ts,
            worker: "w0".into(),
            op: "work".into(),
            latency_ms: (ts - intended_ts) * 1000.0,
            service_ms: 10.0,
            status: Status::Success,
            error_kind: None,
            error: None,
            port: None,
            phase: None,
            segment: None,
        }
    }

    /// A step whose calls fell behind its schedule, so that every call completing after its
    /// warm-up was an arrival of the warm-up: it judged none, yet the server served them, and
    /// the verdict says how many per second (it said "served only 0.0/s" of a step that served
    /// 300/s, and a step stopped early served what completed before the stop only).
    #[test]
    fn a_step_behind_its_schedule_is_said_to_serve_what_completed_not_what_it_judged() {
        let plan = Plan {
            slo: vec!["p99<500ms".parse().expect("slo")],
            start_rate: 800.0,
            max_steps: 3,
            precision: 0.05,
            warmup: Duration::from_secs(1),
        };
        // 800/s for 3 s: judged from 1001.0 until 1003.0.
        let j = StepJudge::new(800.0, Duration::from_secs(3), &plan, 1.0);
        j.begin(1000.0, CancellationToken::new());
        // 600 calls due in the warm-up complete over the judged 2 s: 300/s served, none judged.
        for i in 0..600 {
            let due = 1000.0 + f64::from(i) / 600.0;
            j.add(&record(due, 1001.0 + f64::from(i) / 300.0));
        }
        // One that completes in the grace after the step's end is not the step's throughput.
        j.add(&record(1000.9, 1003.5));
        let share = j.share(3, "step 3: 800.0/s", Segment::WHOLE, 990.0, plan.facts());
        assert_eq!(share.served, Some(600));
        let v = verdict(&plan.slo, std::slice::from_ref(&share));
        assert_eq!(v.requests, 0);
        assert!((v.achieved_per_s - 300.0).abs() < 1e-9, "{v:?}");
        assert!(!v.passed);
        assert_eq!(v.latency_ms(), None);
        assert!(
            v.broken
                .iter()
                .any(|b| b == "served only 300.0/s of the 800.0/s offered"),
            "{:?}",
            v.broken
        );

        // Serving 90% while judging none does not pass, whatever bound holds without calls.
        let counting = Plan {
            slo: vec!["errors<5".parse().expect("slo")],
            ..plan.clone()
        };
        let j = StepJudge::new(800.0, Duration::from_secs(3), &counting, 1.0);
        j.begin(1000.0, CancellationToken::new());
        for i in 0..1500 {
            j.add(&record(1000.0, 1001.0 + f64::from(i) / 750.0));
        }
        let share = j.share(
            2,
            "step 2: 800.0/s",
            Segment::WHOLE,
            990.0,
            counting.facts(),
        );
        let v = verdict(&counting.slo, &[share]);
        assert!(v.achieved_per_s >= MIN_ACHIEVED * 800.0, "{v:?}");
        assert!(!v.passed, "{v:?}");
        assert!(
            v.broken[0].starts_with("no call due after the warm-up completed"),
            "{v:?}"
        );

        // Stopped at 1002.0: what completes after the stop is not counted, what completed
        // before it and is handed over after it is.
        let j = StepJudge::new(800.0, Duration::from_secs(3), &plan, 1.0);
        j.begin(1000.0, CancellationToken::new());
        for i in 0..100 {
            j.add(&record(1001.0 + f64::from(i) / 800.0, 1001.5));
        }
        j.follow(Stopped {
            at: 1002.0,
            why: "test".into(),
        });
        j.add(&record(1001.2, 1002.2));
        j.add(&record(1001.3, 1001.9));
        let share = j.share(1, "step 1: 800.0/s", Segment::WHOLE, 990.0, plan.facts());
        assert_eq!(share.served, Some(101));
        let v = verdict(&plan.slo, &[share]);
        assert!((v.achieved_per_s - 101.0).abs() < 1e-9, "{v:?}");
    }
}
