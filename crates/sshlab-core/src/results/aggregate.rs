//! The accumulator: records in, histograms and counts out. Used live by the agent's
//! collector and, on saved `w<N>.jsonl` files, by `report` (attack and report are separate
//! consumers of the same record stream).
//!
//! Memory is constant in the number of records: histograms per operation, per port and per
//! phase, plus one small [`IntervalStats`] per second of the run.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::messages::ErrorMessages;
use super::record::Record;
use super::stats::{LatencyStats, histogram, record_ms};

/// Counts and histograms of one group of records (an operation, a port, a phase, or all).
/// In JSON (a capacity step's share, exchanged between the agents of a split search), the
/// histograms are HdrHistogram's own encoding ([`super::stats::wire`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    /// Successes.
    pub ok: u64,
    /// Failures.
    pub err: u64,
    /// Latency from the intended start (corrected), successes only.
    #[serde(with = "super::stats::wire")]
    pub corrected: Histogram<u64>,
    /// Latency from the actual send (uncorrected), successes only.
    #[serde(with = "super::stats::wire")]
    pub service: Histogram<u64>,
    /// Corrected latency of failures (a timeout at 30 s is a 30 s operation).
    #[serde(with = "super::stats::wire")]
    pub failed: Histogram<u64>,
    /// Uncorrected latency of failures.
    #[serde(with = "super::stats::wire")]
    pub failed_service: Histogram<u64>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// First intended start and last completion (unix s).
    pub span: Option<(f64, f64)>,
}

impl Default for Group {
    fn default() -> Self {
        Self {
            ok: 0,
            err: 0,
            corrected: histogram(),
            service: histogram(),
            failed: histogram(),
            failed_service: histogram(),
            errors: BTreeMap::new(),
            span: None,
        }
    }
}

impl Group {
    fn add(&mut self, r: &Record) {
        if r.ok() {
            self.ok += 1;
            record_ms(&mut self.corrected, r.latency_ms);
            record_ms(&mut self.service, r.service_ms);
        } else {
            self.err += 1;
            record_ms(&mut self.failed, r.latency_ms);
            record_ms(&mut self.failed_service, r.service_ms);
            let kind = r.error_kind.clone().unwrap_or_else(|| "error".into());
            *self.errors.entry(kind).or_default() += 1;
        }
        let (lo, hi) = self.span.unwrap_or((r.intended_ts, r.ts));
        self.span = Some((lo.min(r.intended_ts), hi.max(r.ts)));
    }

    /// Add another group's counts and histograms.
    pub fn merge(&mut self, o: &Group) {
        self.ok += o.ok;
        self.err += o.err;
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.corrected.add(&o.corrected);
        let _ = self.service.add(&o.service);
        let _ = self.failed.add(&o.failed);
        let _ = self.failed_service.add(&o.failed_service);
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.span = match (self.span, o.span) {
            (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
            (a, b) => a.or(b),
        };
    }

    /// Corrected and uncorrected latency of every operation, successes and failures.
    pub fn all_latency(&self) -> (Histogram<u64>, Histogram<u64>) {
        let mut corrected = self.corrected.clone();
        let mut service = self.service.clone();
        // Same bounds everywhere, so adding cannot fail.
        let _ = corrected.add(&self.failed);
        let _ = service.add(&self.failed_service);
        (corrected, service)
    }

    /// Operations in the group.
    pub fn total(&self) -> u64 {
        self.ok + self.err
    }

    /// Seconds between the first start and the last completion.
    pub fn seconds(&self) -> f64 {
        self.span.map_or(0.0, |(a, b)| (b - a).max(0.0))
    }
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IntervalStats {
    /// Seconds since the run started (start of this interval).
    pub t: u64,
    /// Successes completed in the interval.
    pub ok: u64,
    /// Failures completed in the interval.
    pub err: u64,
    /// Corrected latency percentiles of the interval's successes (ms).
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// Max.
    pub max: f64,
}

/// The accumulator.
#[derive(Debug, Clone)]
pub struct Aggregate {
    start: f64,
    /// All records.
    pub all: Group,
    /// By operation.
    pub ops: BTreeMap<String, Group>,
    /// By target port, in first-seen order (the baseline port comes first in a latency test).
    pub ports: Vec<(u16, Group)>,
    /// By phase label, in first-seen order.
    pub phases: Vec<(String, Group)>,
    /// The distinct error messages (bounded).
    pub messages: ErrorMessages,
    timeline: Vec<IntervalStats>,
    current: Histogram<u64>,
    current_t: u64,
    current_counts: (u64, u64),
}

impl Aggregate {
    /// An empty accumulator for a run that started at unix time `start`.
    pub fn new(start: f64) -> Self {
        Self {
            start,
            all: Group::default(),
            ops: BTreeMap::new(),
            ports: Vec::new(),
            phases: Vec::new(),
            messages: ErrorMessages::default(),
            timeline: Vec::new(),
            current: histogram(),
            current_t: 0,
            current_counts: (0, 0),
        }
    }

    /// When the run started.
    pub fn start(&self) -> f64 {
        self.start
    }

    /// Add one record. Records should come roughly in completion order; one that completed
    /// in an interval already closed is counted in the current one.
    ///
    /// Returns the intervals this record closed (each with its histogram), for interval
    /// logs; usually none, one per second of the run otherwise.
    pub fn add(&mut self, r: &Record) -> Vec<(IntervalStats, Histogram<u64>)> {
        let t = ((r.ts - self.start).max(0.0)) as u64;
        let closed = self.roll_to(t);
        self.all.add(r);
        // Look up before inserting: no allocation per record for an op already seen.
        match self.ops.get_mut(&r.op) {
            Some(g) => g.add(r),
            None => self.ops.entry(r.op.clone()).or_default().add(r),
        }
        if let Some(p) = r.port {
            match self.ports.iter_mut().find(|(port, _)| *port == p) {
                Some((_, g)) => g.add(r),
                None => {
                    let mut g = Group::default();
                    g.add(r);
                    self.ports.push((p, g));
                }
            }
        }
        if let Some(ph) = &r.phase {
            match self.phases.iter_mut().find(|(name, _)| name == ph) {
                Some((_, g)) => g.add(r),
                None => {
                    let mut g = Group::default();
                    g.add(r);
                    self.phases.push((ph.clone(), g));
                }
            }
        }
        if r.ok() {
            record_ms(&mut self.current, r.latency_ms);
            self.current_counts.0 += 1;
        } else {
            self.current_counts.1 += 1;
            self.messages.add(
                r.error_kind.as_deref().unwrap_or("error"),
                r.error.as_deref().unwrap_or(""),
                &r.op,
                (r.ts - self.start).max(0.0),
            );
        }
        closed
    }

    /// Close intervals up to (not including) second `t`.
    fn roll_to(&mut self, t: u64) -> Vec<(IntervalStats, Histogram<u64>)> {
        let mut closed = Vec::new();
        while self.current_t < t {
            let h = std::mem::replace(&mut self.current, histogram());
            let s = LatencyStats::of(&h);
            let stats = IntervalStats {
                t: self.current_t,
                ok: self.current_counts.0,
                err: self.current_counts.1,
                p50: s.p50,
                p90: s.p90,
                p99: s.p99,
                max: s.max,
            };
            self.timeline.push(stats.clone());
            closed.push((stats, h));
            self.current_counts = (0, 0);
            self.current_t += 1;
        }
        closed
    }

    /// Close the interval in progress (at the end of a run).
    pub fn finish(&mut self) -> Vec<(IntervalStats, Histogram<u64>)> {
        if self.current_counts == (0, 0) {
            return Vec::new();
        }
        self.roll_to(self.current_t + 1)
    }

    /// The per-second timeline so far.
    pub fn timeline(&self) -> &[IntervalStats] {
        &self.timeline
    }

    /// Merge another accumulator (e.g. another phase or file) by adding.
    pub fn merge(&mut self, o: &Aggregate) {
        self.all.merge(&o.all);
        self.messages.merge(&o.messages);
        for (k, g) in &o.ops {
            self.ops.entry(k.clone()).or_default().merge(g);
        }
        for (k, g) in &o.ports {
            match self.ports.iter_mut().find(|(p, _)| p == k) {
                Some((_, mine)) => mine.merge(g),
                None => self.ports.push((*k, g.clone())),
            }
        }
        for (name, g) in &o.phases {
            match self.phases.iter_mut().find(|(n, _)| n == name) {
                Some((_, mine)) => mine.merge(g),
                None => self.phases.push((name.clone(), g.clone())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::record::Status;

    fn rec(ts: f64, op: &str, ok: bool, ms: f64, port: Option<u16>) -> Record {
        Record {
            ts,
            intended_ts: ts - ms / 1000.0,
            worker: "w0".into(),
            op: op.into(),
            latency_ms: ms,
            service_ms: ms / 2.0,
            status: if ok { Status::Success } else { Status::Error },
            error_kind: (!ok).then(|| "timeout".into()),
            error: (!ok).then(|| format!("timed out after {ms} ms")),
            port,
            phase: port.map(|p| format!("port={p}")),
            segment: None,
        }
    }

    #[test]
    fn groups_intervals_and_merge() {
        let mut a = Aggregate::new(100.0);
        let mut closed = 0;
        for i in 0..30 {
            let ts = 100.0 + f64::from(i) * 0.1;
            closed += a
                .add(&rec(ts, "ssh_run_command", i % 10 != 0, 10.0, Some(2222)))
                .len();
        }
        closed += a
            .add(&rec(103.5, "ssh_connect", true, 50.0, Some(2322)))
            .len();
        closed += a.finish().len();
        assert_eq!(closed, 4, "seconds 0..=3");
        assert_eq!(a.timeline().len(), 4);
        assert_eq!(a.timeline()[0].ok + a.timeline()[0].err, 10);
        assert_eq!(a.all.total(), 31);
        assert_eq!(a.ops["ssh_run_command"].err, 3);
        assert_eq!(a.ops["ssh_run_command"].errors["timeout"], 3);
        assert_eq!(
            a.ports.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            [2222, 2322]
        );
        assert_eq!(a.ports[1].1.ok, 1);
        assert_eq!(a.phases.len(), 2);
        let uncorrected = LatencyStats::of(&a.ops["ssh_run_command"].service);
        let corrected = LatencyStats::of(&a.ops["ssh_run_command"].corrected);
        assert!(uncorrected.p50 < corrected.p50);

        let mut b = Aggregate::new(100.0);
        b.add(&rec(101.0, "ssh_connect", false, 5.0, None));
        a.merge(&b);
        assert_eq!(a.all.total(), 32);
        assert_eq!(a.ops["ssh_connect"].total(), 2);
    }
}
