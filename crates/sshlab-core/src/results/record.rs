//! One measured operation: a line of `w<N>.jsonl`, the contract between the load agent and
//! every report (vegeta's `Result` idea: flat data, errors as strings, nothing live).
//!
//! Fields `ts`, `worker`, `op`, `latency_ms` and `status` are the load-testing guide's;
//! `intended_ts`, `service_ms`, `error_kind`, `port` and `phase` are ours. `latency_ms` is
//! measured from the *intended* start (the schedule, in the open model), so a stalled server
//! shows in it even when the agent could not send on time; `service_ms` is measured from the
//! actual send, the figure tools with coordinated omission report.

use serde::{Deserialize, Serialize};

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The call succeeded (for a tool call: a result without `isError`).
    Success,
    /// Anything else; `error_kind` says what.
    Error,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unix time, seconds (ms precision), when the operation completed.
    pub ts: f64,
    /// Unix time it was due to start: the schedule in the open model, the real start in the
    /// closed model.
    pub intended_ts: f64,
    /// Worker label, `w<N>`.
    pub worker: String,
    /// Operation label (usually the tool name).
    pub op: String,
    /// Milliseconds from the intended start to completion (coordinated-omission corrected).
    pub latency_ms: f64,
    /// Milliseconds from the actual send to completion (uncorrected service time).
    pub service_ms: f64,
    /// Outcome.
    pub status: Status,
    /// Short stable label of the failure (`tool_error`, `rate_limited`, `timeout`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// What the server (or the transport) said, verbatim, cut at
    /// [`MAX_MESSAGE`](super::messages::MAX_MESSAGE) bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Target SSH port the operation concerned, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Phase label (e.g. `workers=5` in connection_rate, `port=2322` in latency_test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The agent's segment when a test is split across agents (`1/3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<crate::scenario::segment::Segment>,
}

impl Record {
    /// Whether the operation succeeded.
    pub fn ok(&self) -> bool {
        self.status == Status::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_fields_round_trip_and_options_are_omitted() {
        let r = Record {
            ts: 1_700_000_000.123,
            intended_ts: 1_700_000_000.1,
            worker: "w0".into(),
            op: "ssh_run_command".into(),
            latency_ms: 23.1,
            service_ms: 20.0,
            status: Status::Success,
            error_kind: None,
            error: None,
            segment: None,
            port: Some(2222),
            phase: None,
        };
        let line = serde_json::to_string(&r).expect("serialises");
        assert!(line.contains("\"status\":\"success\"") && !line.contains("error_kind"));
        let back: Record = serde_json::from_str(&line).expect("parses");
        assert_eq!(back, r);
    }
}
