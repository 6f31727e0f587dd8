//! The host↔agent job API, written once: `sshlab-agent serve` (the Agent VM's control API)
//! deserializes and answers with these types, and `sshlab run` (the host) builds and reads
//! them. JSON over HTTP:
//!
//! - `POST /jobs` with a [`Job`] → 202 [`JobAccepted`] (400/409/500: [`ApiError`])
//! - `GET /jobs/{test_id}` → 200 [`JobStatus`] (404: [`ApiError`])
//! - `DELETE /jobs/{test_id}` → 202 [`JobCancelling`]: partial results are written
//! - `POST /jobs/{test_id}/faults` with a [`FaultRecord`] → 204: what the host executed (sent at
//!   a fault's start and again at its end, the same `index` each time); the agent keeps the
//!   latest of each in the summary's `faults`, judged from the records at the run's end
//!   (409 when the job is no longer running)
//! - `GET /health` → 200 [`Health`]: `{"status": "healthy", "time": ...}`, the agent's clock,
//!   onto which the host maps the times of the faults it executes ([`Health::time`])

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::results::{Summary, Verdict};

/// Where jobs are posted.
pub const JOBS_PATH: &str = "/jobs";

/// The path of job `test_id`.
pub fn job_path(test_id: &str) -> String {
    format!("{JOBS_PATH}/{test_id}")
}

/// Where the host posts job `test_id`'s faults.
pub fn faults_path(test_id: &str) -> String {
    format!("{JOBS_PATH}/{test_id}/faults")
}

pub use crate::faults::FaultRecord;

/// A job: `sshlab-agent run`'s settings (all optional but `scenario`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Built-in scenario name.
    pub scenario: String,
    /// Seconds per phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    /// Workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Open-model rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// MCP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_url: Option<String>,
    /// SSH target host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_host: Option<String>,
    /// Baseline port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    /// SSH user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// SSH password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Thresholds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<String>,
    /// A capacity search's SLO bounds (the agent's `--slo`), instead of the scenario's
    /// `[capacity] slo`; only for a scenario that is a capacity search.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slo: Vec<String>,
    /// Protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Target ports, one phase each, instead of the scenario's own. The host sends it for
    /// latency_test (`ports = "baseline+netem"`) because only the host knows whether the netem
    /// ports are shaped: `[2222]` when they are not, so they are never measured unshaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    /// The CPUs the MCP server really has, for the report's throughput figures: a qemu guest's
    /// own count, or the host's cores that the netns backend's namespaces share. Absent: the
    /// topology's MCP VM vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_vcpus: Option<u32>,
    /// Whether those CPUs are the host's, shared by the server with the agent and the target
    /// (the netns backend, where the "VMs" are namespaces), so no report calls them its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub server_cpus_shared: bool,
    /// What the host knows about this run that the agent cannot see (e.g. the server still
    /// held sessions of an earlier run), one sentence each: kept in the summary's `notes` and
    /// shown in every report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// 200 to `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `healthy`.
    pub status: String,
    /// The agent's clock when it answered, unix seconds. The agent judges the faults against
    /// its own records' times; the host, whose clock a VM's may differ from by a second or
    /// more, maps the faults' times onto this clock before it reports them (absent from
    /// agents older than this field: the host's own times are used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
}

/// 202 to `POST /jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobAccepted {
    /// The job's id: also its results directory's name.
    pub test_id: String,
    /// Its results directory, as the agent sees it.
    pub dir: PathBuf,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Running.
    Running,
    /// Finished; its summary is complete.
    Done,
    /// Stopped early (cancelled): partial results, summary marked incomplete.
    Interrupted,
    /// The run failed (`error` says why).
    Failed,
}

/// 200 to `GET /jobs/{test_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job.
    pub test_id: String,
    /// Where it is.
    pub state: JobState,
    /// Done or interrupted: whether every threshold held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds_passed: Option<bool>,
    /// Done or interrupted: what the run means, and so the exit code every command that ran
    /// it gives ([`Verdict::exit_code`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Failed: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The summary so far (the agent rewrites it while the job runs). A summary the reader
    /// cannot parse (another build's schema) reads as `None`, not as a failed status.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_summary"
    )]
    pub summary: Option<Box<Summary>>,
}

fn lenient_summary<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Box<Summary>>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

/// 202 to `DELETE /jobs/{test_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobCancelling {
    /// The job.
    pub test_id: String,
    /// Always true: the job is being cancelled.
    pub cancelling: bool,
}

/// Any 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_round_trips_and_rejects_unknown_fields() {
        let job = Job {
            scenario: "latency_test".into(),
            duration: Some(5),
            ports: Some(vec![2222, 2322]),
            server_vcpus: Some(2),
            ..Job::default()
        };
        let text = serde_json::to_string(&job).unwrap();
        assert_eq!(
            text,
            r#"{"scenario":"latency_test","duration":5,"ports":[2222,2322],"server_vcpus":2}"#
        );
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), job);
        let e = serde_json::from_str::<Job>(r#"{"scenario":"quick","wrokers":2}"#).unwrap_err();
        assert!(e.to_string().contains("wrokers"), "{e}");
    }

    #[test]
    fn states_are_lowercase_words() {
        let s: JobStatus = serde_json::from_str(
            r#"{"test_id":"t","state":"interrupted","thresholds_passed":false}"#,
        )
        .unwrap();
        assert_eq!(s.state, JobState::Interrupted);
        assert_eq!(s.summary, None);
        assert!(serde_json::from_str::<JobStatus>(r#"{"test_id":"t","state":"paused"}"#).is_err());
        // A summary of another schema does not make the status unreadable.
        let s: JobStatus = serde_json::from_str(
            r#"{"test_id":"t","state":"running","summary":{"schema_version":"two"}}"#,
        )
        .unwrap();
        assert_eq!((s.state, s.summary), (JobState::Running, None));
        assert_eq!(job_path("loadtest_1"), "/jobs/loadtest_1");
    }
}
