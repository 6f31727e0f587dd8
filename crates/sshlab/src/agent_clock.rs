//! The agent's clock, as the host sees it. The host executes a run's faults and records when,
//! by its own clock; the agent judges them against its records, by its own. In a VM the two
//! can differ by a second or more (a guest's clock starts from the RTC's whole seconds, and an
//! emulated one drifts), which would move every fault against the calls it caused: failures
//! counted in the baseline, recovery measured from the wrong moment. So the host reads the
//! agent's clock (`GET /health`'s `time`, [`sshlab_core::job::Health`]) as NTP does: the
//! offset is the agent's time minus the middle of the request's round trip, whose half bounds
//! its error, and the sample with the shortest round trip among the latest ones is kept.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sshlab_core::faults::FaultRecord;
use sshlab_core::job::Health;

use crate::http;
use crate::vm::Endpoints;

/// Samples kept: at the host's poll rate (2/s), the last ten seconds or so.
const KEPT: usize = 20;

/// One reading: the round trip and the offset it gave, seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    rtt: f64,
    offset: f64,
}

/// The agent's clock relative to the host's.
#[derive(Debug, Default)]
pub struct AgentClock {
    samples: VecDeque<Sample>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl AgentClock {
    /// Reads the agent's clock once (nothing when it does not answer, or answers without it).
    pub fn sample(&mut self, ep: &Endpoints, timeout: Duration) {
        let sent = now();
        let Ok(r) = http::request("GET", ep.agent, "/health", None, timeout) else {
            return;
        };
        let back = now();
        if let Some(time) = serde_json::from_str::<Health>(&r.body)
            .ok()
            .and_then(|h| h.time)
        {
            self.record(sent, time, back);
        }
    }

    /// Adds the reading `agent` taken between the host's `sent` and `back`.
    fn record(&mut self, sent: f64, agent: f64, back: f64) {
        if !(sent.is_finite() && agent.is_finite() && back.is_finite()) || back < sent {
            return;
        }
        self.samples.push_back(Sample {
            rtt: back - sent,
            offset: agent - (sent + back) / 2.0,
        });
        while self.samples.len() > KEPT {
            self.samples.pop_front();
        }
    }

    /// The agent's clock minus the host's, seconds, from the tightest recent reading; `None`
    /// before any.
    pub fn offset(&self) -> Option<f64> {
        self.samples
            .iter()
            .min_by(|a, b| a.rtt.total_cmp(&b.rtt))
            .map(|s| s.offset)
    }

    /// `rec` with its times on the agent's clock (as it is when nothing was read).
    pub fn to_agent(&self, rec: &FaultRecord) -> FaultRecord {
        let offset = self.offset().unwrap_or(0.0);
        FaultRecord {
            started_at: rec.started_at.map(|t| t + offset),
            ended_at: rec.ended_at.map(|t| t + offset),
            ..rec.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tightest_recent_reading_sets_the_offset() {
        let mut c = AgentClock::default();
        assert_eq!(c.offset(), None);
        // The agent is 1.5 s behind; a slow answer (0.4 s round trip) errs by up to 0.2 s.
        c.record(100.0, 98.8, 100.4);
        c.record(101.0, 99.51, 101.02);
        c.record(102.0, 100.9, 102.3);
        assert!((c.offset().unwrap() + 1.5).abs() < 1e-9, "{:?}", c.offset());
        // Readings that make no sense are not kept.
        c.record(103.0, f64::NAN, 103.01);
        c.record(104.0, 102.5, 103.0);
        assert_eq!(c.samples.len(), 3);
        // Old readings age out, the tightest among the last ones counts.
        for i in 0..KEPT {
            let t = 200.0 + i as f64;
            c.record(t, t + 0.25 + 0.05, t + 0.1);
        }
        assert!((c.offset().unwrap() - 0.25).abs() < 1e-9);
        let rec = FaultRecord {
            index: 0,
            spec: "mcp-pause@1s+1s".parse().unwrap(),
            started_at: Some(1000.0),
            ended_at: Some(1001.0),
            error: None,
            analysis: None,
        };
        let moved = c.to_agent(&rec);
        assert_eq!(moved.started_at, Some(1000.25));
        assert_eq!(moved.ended_at, Some(1001.25));
        assert_eq!(moved.spec, rec.spec);
    }
}
