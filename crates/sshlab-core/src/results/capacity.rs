//! Capacity, measured instead of extrapolated: the highest open-model arrival rate at which a
//! server still meets its SLO. The agent runs steady steps at chosen rates, judges each on its
//! own histogram (after a warm-up), and this module decides the next rate ([`Search`]: double
//! until a step fails, halve until one passes, then bisect geometrically between the highest
//! pass and the lowest fail until they are within the precision), and holds the result that
//! goes into summary.json ([`Capacity`]).

use serde::{Deserialize, Serialize};

/// One step of a search.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityStep {
    /// The step's phase label (`step 3: 80.0/s`).
    #[serde(default)]
    pub phase: String,
    /// Arrivals per second offered.
    pub rate_per_s: f64,
    /// Calls per second completed after the warm-up (until the step's end, or its stop),
    /// whatever their arrival.
    pub achieved_per_s: f64,
    /// Calls judged: those due after the warm-up. A step whose calls fell behind may judge
    /// none, its calls completing being arrivals of its warm-up.
    pub requests: u64,
    /// Of which failed.
    pub failures: u64,
    /// Corrected latency of the judged calls that succeeded, ms (0 without any: see
    /// [`CapacityStep::latency_ms`]).
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// The server's CPU over the step, percent of its vCPUs (when scraped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_percent: Option<f64>,
    /// Whether every SLO held, the step judged calls and served at least 90% of the rate.
    pub passed: bool,
    /// The SLO bounds that broke, as written, with the value measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broken: Vec<String>,
    /// Why the step was stopped before its end, when it was (broken beyond doubt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
}

impl CapacityStep {
    /// p50 and p99, when the step judged a call that succeeded (a step that fell behind its
    /// schedule, or failed every call, has no latency to show).
    pub fn latency_ms(&self) -> Option<(f64, f64)> {
        (self.requests > self.failures).then_some((self.p50_ms, self.p99_ms))
    }

    /// `pass`, or what failed it.
    pub fn verdict(&self) -> String {
        if self.passed {
            return "pass".to_owned();
        }
        let mut why = self.broken.clone();
        why.extend(self.stopped_early.clone());
        why.join("; ")
    }
}

/// The search's result: `capacity` in summary.json.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// The highest rate that met every SLO, arrivals per second; `None` when no rate did.
    pub rate_per_s: Option<f64>,
    /// The lowest rate that failed (the capacity lies between the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at_per_s: Option<f64>,
    /// How far apart the two are, relative to the passing rate, percent (`None`: not bracketed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision_percent: Option<f64>,
    /// The SLO, as written.
    pub slo: Vec<String>,
    /// What broke at the lowest failing rate (the bound that limits capacity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limited_by: Vec<String>,
    /// Every step, in the order run.
    pub steps: Vec<CapacityStep>,
    /// One sentence for people.
    pub verdict: String,
    /// The search is still running (the live page's result so far; never in summary.json).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub searching: bool,
}

impl Capacity {
    /// Each step's server CPU, from the scrapes at its start and end (`server.phases`, by the
    /// step's phase label).
    pub fn fill_server_cpu(&mut self, server: &super::ServerReport) {
        for step in &mut self.steps {
            step.server_cpu_percent = server
                .phases
                .iter()
                .find(|p| p.phase == step.phase)
                .and_then(|p| p.cpu_percent);
        }
    }
}

/// The rate search: which rate to try next, from the steps so far.
#[derive(Debug, Clone)]
pub struct Search {
    next: f64,
    lo: Option<f64>,
    hi: Option<f64>,
    steps: usize,
    max_steps: usize,
    precision: f64,
    min_rate: f64,
    max_rate: f64,
}

impl Search {
    /// The lowest rate tried when every step fails, arrivals per second.
    pub const MIN_RATE: f64 = 0.1;
    /// The highest rate tried when every step passes.
    pub const MAX_RATE: f64 = 1_000_000.0;

    /// A search from `start` arrivals/s, done after `max_steps` steps or once the highest
    /// pass and the lowest fail are within `precision` (0.05: 5%) of each other.
    pub fn new(start: f64, max_steps: usize, precision: f64) -> Self {
        Self {
            next: start.clamp(Self::MIN_RATE, Self::MAX_RATE),
            lo: None,
            hi: None,
            steps: 0,
            max_steps,
            precision: precision.max(0.001),
            min_rate: Self::MIN_RATE,
            max_rate: Self::MAX_RATE,
        }
    }

    /// The rate of the next step, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        if self.steps >= self.max_steps || self.bracketed_within_precision() {
            return None;
        }
        match (self.lo, self.hi) {
            (None, Some(hi)) if hi <= self.min_rate => None,
            (Some(lo), None) if lo >= self.max_rate => None,
            _ => Some(self.next),
        }
    }

    fn bracketed_within_precision(&self) -> bool {
        matches!((self.lo, self.hi), (Some(lo), Some(hi)) if hi <= lo * (1.0 + self.precision))
    }

    /// Records that a step at `rate` passed or failed, and picks the next rate.
    pub fn record(&mut self, rate: f64, passed: bool) {
        self.steps += 1;
        if passed {
            self.lo = Some(self.lo.map_or(rate, |l| l.max(rate)));
        } else {
            self.hi = Some(self.hi.map_or(rate, |h| h.min(rate)));
        }
        self.next = match (self.lo, self.hi) {
            (Some(lo), Some(hi)) => (lo * hi).sqrt(),
            (Some(lo), None) => (lo * 2.0).min(self.max_rate),
            (None, Some(hi)) => (hi / 2.0).max(self.min_rate),
            (None, None) => self.next,
        };
    }

    /// The result, with `steps` as run and the SLO as written.
    pub fn result(&self, slo: Vec<String>, steps: Vec<CapacityStep>) -> Capacity {
        let limited_by = self
            .hi
            .and_then(|hi| steps.iter().find(|s| s.rate_per_s == hi))
            .map(|s| {
                let mut why = s.broken.clone();
                why.extend(s.stopped_early.clone());
                why
            })
            .unwrap_or_default();
        let precision_percent = match (self.lo, self.hi) {
            (Some(lo), Some(hi)) => Some((hi / lo - 1.0) * 100.0),
            _ => None,
        };
        let verdict = match (self.lo, self.hi) {
            (Some(lo), Some(hi)) => format!(
                "capacity {lo:.1}/s: met the SLO at {lo:.1}/s, not at {hi:.1}/s ({:.1}% apart)",
                (hi / lo - 1.0) * 100.0
            ),
            (Some(lo), None) => format!(
                "at least {lo:.1}/s: every rate tried met the SLO (no limit found in {} steps)",
                steps.len()
            ),
            (None, Some(hi)) => {
                format!("no capacity: the SLO failed at every rate tried, down to {hi:.2}/s")
            }
            (None, None) => "no step ran".to_owned(),
        };
        Capacity {
            rate_per_s: self.lo,
            failed_at_per_s: self.hi,
            precision_percent,
            slo,
            limited_by,
            steps,
            verdict,
            searching: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a server that meets the SLO up to `capacity`.
    fn search(start: f64, capacity: f64, max_steps: usize) -> (Capacity, Vec<f64>) {
        let mut s = Search::new(start, max_steps, 0.05);
        let mut rates = Vec::new();
        let mut steps = Vec::new();
        while let Some(r) = s.next_rate() {
            let passed = r <= capacity;
            rates.push(r);
            steps.push(CapacityStep {
                rate_per_s: r,
                passed,
                broken: if passed {
                    vec![]
                } else {
                    vec!["p99<200ms (412.0)".into()]
                },
                ..CapacityStep::default()
            });
            s.record(r, passed);
        }
        (s.result(vec!["p99<200ms".into()], steps), rates)
    }

    #[test]
    fn brackets_then_bisects_to_within_five_percent_in_ten_steps() {
        for (start, capacity) in [(20.0, 400.0), (50.0, 400.0), (1000.0, 400.0), (10.0, 37.0)] {
            let (c, rates) = search(start, capacity, 10);
            let found = c.rate_per_s.expect("found");
            assert!(
                found <= capacity && found >= capacity * 0.95,
                "start {start}: {found} for {capacity} via {rates:?}"
            );
            assert!(rates.len() <= 10, "{rates:?}");
            assert!(c.precision_percent.expect("bracketed") <= 5.0);
            assert_eq!(c.limited_by, ["p99<200ms (412.0)"]);
            assert!(
                c.verdict.starts_with(&format!("capacity {found:.1}/s")),
                "{}",
                c.verdict
            );
        }
    }

    #[test]
    fn a_server_that_fails_everywhere_has_no_capacity() {
        let (c, rates) = search(50.0, 0.0, 30);
        assert_eq!(c.rate_per_s, None);
        assert!(rates.last().copied().unwrap_or(1.0) <= 0.2, "{rates:?}");
        assert!(c.verdict.starts_with("no capacity"), "{}", c.verdict);
    }

    #[test]
    fn out_of_steps_says_what_is_known() {
        let (c, _) = search(1.0, 1e9, 4);
        assert_eq!(c.rate_per_s, Some(8.0));
        assert_eq!(c.failed_at_per_s, None);
        assert!(c.verdict.starts_with("at least 8.0/s"), "{}", c.verdict);
    }
}
