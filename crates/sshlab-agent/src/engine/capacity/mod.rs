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

pub mod exchange;
pub mod judge;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sshlab_core::results::capacity::{Capacity, Search};

use super::pacer::RateShape;
use super::{PHASE_GAP, Phase, Runner, Timetable};
use crate::mcp::McpError;
use crate::thresholds::Threshold;
use exchange::{ExchangeError, StepFiles};
use judge::{SearchPlan, StepJudge, StepShare};

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
/// How long the agents of a split search wait for each other's part of a step, beyond the
/// grace every agent gives its calls in flight at the step's end.
pub const PEER_WAIT: Duration = Duration::from_secs(20);

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

/// What a search produced.
#[derive(Debug)]
pub struct Searched {
    /// The result.
    pub capacity: Capacity,
    /// Why the search could not finish, when the agents of a split search lost each other.
    pub incomplete: Option<String>,
}

impl Plan {
    fn facts(&self) -> SearchPlan {
        SearchPlan {
            slo: slo(self),
            start_rate: self.start_rate,
            max_steps: self.max_steps,
            precision: self.precision,
        }
    }
}

/// Runs the search: one step per rate the search picks, each a phase like `template` at that
/// rate; returns its result. The agents of a split search (`files` with peers) start the
/// warm-up and the first step on the `timetable` (`--start-at`), then judge each step together
/// and start the next one at the moment they agree on.
pub(super) async fn search(
    runner: &Runner<'_>,
    plan: &Plan,
    template: &Phase,
    mut timetable: Option<Timetable>,
    files: Option<&StepFiles>,
) -> Result<Searched, McpError> {
    let done = |capacity| Searched {
        capacity,
        incomplete: None,
    };
    // Unjudged: the workers open their sessions and the server fills its pool, so the first
    // step is not judged on connection setup (which would fail a rate the server can serve).
    let warmup = Phase {
        label: Some("warm-up".to_owned()),
        rate: Some(RateShape::Constant(plan.start_rate)),
        duration: WARMUP_PHASE.max(plan.warmup),
        ..template.clone()
    };
    // Only a split search keeps to a timetable: its agents start the warm-up and the first
    // step together, then agree on each next start. A single search starts each step once
    // its workers are connected, whatever --start-at (as it always has).
    let split = files.filter(|f| f.split());
    if split.is_none() {
        timetable = None;
    }
    let at = timetable.as_mut().map(|t| t.phase(warmup.duration));
    if runner.phase(&warmup, at, None).await? == super::PhaseEnd::Cancelled {
        return Ok(done(
            Search::new(plan.start_rate, 0, plan.precision).result(Vec::new(), Vec::new()),
        ));
    }
    let share = 1.0 / f64::from(runner.cfg.segment.count);
    let mut search = Search::new(plan.start_rate, plan.max_steps, plan.precision);
    let mut steps = Vec::new();
    // A split search's next start, agreed by its agents.
    let mut agreed: Option<tokio::time::Instant> = None;
    let mut incomplete = None;
    while let Some(rate) = search.next_rate() {
        if runner.cancel.is_cancelled() {
            break;
        }
        let number = steps.len() + 1;
        let label = format!("step {number}: {rate:.1}/s");
        let phase = Phase {
            label: Some(label.clone()),
            rate: Some(RateShape::Constant(rate)),
            duration: plan.step_duration(rate, template.duration),
            ..template.clone()
        };
        let at = agreed.or_else(|| timetable.as_mut().map(|t| t.phase(phase.duration)));
        let mut judge = StepJudge::new(rate, phase.duration, plan, share);
        if let Some(f) = split {
            judge = judge.telling(f.clone(), number);
        }
        let judge = Arc::new(judge);
        let following = split.map(|f| tokio::spawn(follow_stops(f.clone(), number, judge.clone())));
        let end = runner.phase(&phase, at, Some(judge.clone())).await;
        if let Some(f) = following {
            f.abort();
        }
        if end? == super::PhaseEnd::Cancelled {
            break;
        }
        let ours = judge.share(
            number,
            &label,
            runner.cfg.segment,
            files.map_or(0.0, StepFiles::run_started_at),
            plan.facts(),
        );
        let shares = match judge_together(files, split, ours, runner).await {
            Ok(shares) => shares,
            Err(ExchangeError::Cancelled) => break,
            Err(e) => {
                tracing::error!(error = %e, "the split search stops");
                incomplete = Some(format!("the capacity search stopped: {e}"));
                break;
            }
        };
        let step = judge::verdict(&plan.slo, &shares);
        tracing::info!(rate, passed = step.passed, broken = ?step.broken, "capacity step");
        search.record(rate, step.passed);
        steps.push(step);
        if let Some(so_far) = &runner.sinks.capacity {
            let mut c = search.result(slo(plan), steps.clone());
            c.verdict = format!("searching, after step {}: {}", steps.len(), c.verdict);
            c.searching = true;
            so_far.set(c);
        }
        if split.is_some() {
            // The next step starts a settling pause and a connecting gap after the last
            // agent had judged its part: the same moment for every agent.
            let last = shares
                .iter()
                .map(|s| s.published_at)
                .fold(f64::MIN, f64::max);
            agreed = Some(
                runner
                    .clock
                    .instant_at(last + (SETTLE + PHASE_GAP).as_secs_f64()),
            );
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(SETTLE) => {}
            () = runner.cancel.cancelled() => break,
        }
    }
    let mut capacity = search.result(slo(plan), steps);
    if let Some(why) = &incomplete {
        capacity.verdict = format!("{} ({why})", capacity.verdict);
    }
    Ok(Searched {
        capacity,
        incomplete,
    })
}

/// Writes this agent's part of a step (when it has step files) and, in a split search, waits
/// for the others': every part, in segment order, as read from the files.
async fn judge_together(
    files: Option<&StepFiles>,
    split: Option<&StepFiles>,
    ours: StepShare,
    runner: &Runner<'_>,
) -> Result<Vec<StepShare>, ExchangeError> {
    let Some(files) = files else {
        return Ok(vec![ours]);
    };
    let ours = match files.publish(&ours) {
        Ok(read) => read,
        // A single agent does without its step files (only `merge` reads them).
        Err(e) if split.is_none() => {
            tracing::warn!(error = %e, "cannot write the capacity step file");
            return Ok(vec![ours]);
        }
        Err(e) => return Err(e),
    };
    let Some(split) = split else {
        return Ok(vec![ours]);
    };
    let mut all = split
        .gather(&ours, runner.cfg.grace + PEER_WAIT, &runner.cancel)
        .await?;
    all.push(ours);
    all.sort_by_key(|s| s.segment.index);
    Ok(all)
}

/// While step `step` runs: stops it when another agent of the split search did.
async fn follow_stops(files: StepFiles, step: usize, judge: Arc<StepJudge>) {
    let mut tick = tokio::time::interval(exchange::POLL);
    while judge.stopped().is_none() {
        tick.tick().await;
        if let Some(theirs) = files.peer_stop(step) {
            judge.follow(theirs);
        }
    }
}

/// Judges a search again from its step files (every agent's, as `merge` reads them): each
/// step's verdict from the sum of its parts, and the rates in the order the search must have
/// picked them. Errors say what keeps it from being one search.
pub fn replay(shares: Vec<StepShare>) -> Result<Capacity, String> {
    let mut by_step: std::collections::BTreeMap<usize, Vec<StepShare>> = Default::default();
    for s in shares {
        by_step.entry(s.step).or_default().push(s);
    }
    let Some(first) = by_step.values().next().and_then(|v| v.first()).cloned() else {
        return Err("no capacity step files".into());
    };
    let facts = first.search.clone();
    let parsed: Vec<Threshold> = facts
        .slo
        .iter()
        .map(|t| t.parse().map_err(|e| format!("SLO `{t}`: {e}")))
        .collect::<Result<_, String>>()?;
    let count = first.segment.count;
    let mut search = Search::new(facts.start_rate, facts.max_steps, facts.precision);
    let mut steps = Vec::new();
    for (number, mut parts) in by_step {
        if number != steps.len() + 1 {
            return Err(format!("step {} missing", steps.len() + 1));
        }
        parts.sort_by_key(|s| s.segment.index);
        let have: Vec<u32> = parts.iter().map(|s| s.segment.index).collect();
        let each_once = have.len() == count as usize
            && have.iter().zip(0u32..).all(|(have, want)| *have == want);
        if !each_once {
            return Err(format!(
                "step {number}: the parts of segments {have:?} of {count}, not each once"
            ));
        }
        if let Some(odd) = parts
            .iter()
            .find(|s| s.search != facts || s.segment.count != count)
        {
            return Err(format!(
                "step {number}: segment {} was not part of the same search",
                odd.segment
            ));
        }
        let rate = parts[0].rate_per_s;
        match search.next_rate() {
            Some(next) if (next - rate).abs() <= 1e-9 * rate.max(1.0) => {}
            next => {
                return Err(format!(
                    "step {number} ran at {rate}/s where the search picks {}",
                    next.map_or("no further step".into(), |n| format!("{n}/s"))
                ));
            }
        }
        let step = judge::verdict(&parsed, &parts);
        search.record(rate, step.passed);
        steps.push(step);
    }
    Ok(search.result(facts.slo, steps))
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

    fn part(segment: u32, step: usize, rate: f64, calls: usize) -> StepShare {
        use sshlab_core::results::Aggregate;
        let mut agg = Aggregate::new(1000.0);
        for i in 0..calls {
            let ts = 1000.0 + i as f64 / calls as f64;
            let _ = agg.add(&judge::tests::record(ts - 0.01, ts));
        }
        StepShare {
            segment: sshlab_core::scenario::segment::Segment {
                index: segment,
                count: 2,
            },
            run_started_at: 990.0,
            step,
            label: format!("step {step}: {rate:.1}/s"),
            rate_per_s: rate,
            planned_s: 1.0,
            judged_from: 1000.0,
            stopped: None,
            published_at: 1001.0,
            served: Some(calls as u64),
            search: SearchPlan {
                slo: vec!["p99<200ms".into()],
                start_rate: 100.0,
                max_steps: 10,
                precision: 0.05,
            },
            all: agg.all.clone(),
            ops: agg.ops.clone(),
        }
    }

    /// `merge` judges a split search again from its parts: each step from the sum of both
    /// agents' parts (half the calls each), in the order the search picks its rates; a missing
    /// part or a rate the search would not have picked is refused, saying which step.
    #[test]
    fn a_split_search_is_judged_again_from_its_parts() {
        // 100/s for 1 s: 50 + 50 calls serve it; 200/s: 100 calls serve only half.
        let parts = || {
            vec![
                part(0, 1, 100.0, 50),
                part(1, 1, 100.0, 50),
                part(1, 2, 200.0, 50),
                part(0, 2, 200.0, 50),
            ]
        };
        let c = replay(parts()).expect("one search");
        assert_eq!(c.steps.len(), 2);
        assert_eq!((c.steps[0].requests, c.steps[0].passed), (100, true));
        assert!(!c.steps[1].passed, "{:?}", c.steps[1]);
        assert!(
            c.steps[1].broken[0].starts_with("served only 100.0/s of the 200.0/s"),
            "{:?}",
            c.steps[1].broken
        );
        assert_eq!(c.rate_per_s, Some(100.0));
        // A JSON round trip (the step files) changes nothing.
        let read: Vec<StepShare> = parts()
            .iter()
            .map(|p| serde_json::from_slice(&serde_json::to_vec(p).expect("json")).expect("read"))
            .collect();
        assert_eq!(replay(read), Ok(c));

        let mut missing = parts();
        missing.pop();
        let e = replay(missing).expect_err("a part is missing");
        assert!(
            e.starts_with("step 2: the parts of segments [1] of 2"),
            "{e}"
        );

        let mut off = parts();
        off[2] = part(1, 2, 300.0, 50);
        off[3] = part(0, 2, 300.0, 50);
        let e = replay(off).expect_err("the search picks 200/s");
        assert!(e.contains("where the search picks 200/s"), "{e}");
    }
}
