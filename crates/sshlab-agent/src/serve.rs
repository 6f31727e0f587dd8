//! `serve`: the Agent VM's control API, so the host can trigger a run and collect its results
//! from the shared results directory.
//!
//! - `POST /jobs` with a JSON job (the `run` flags as fields) → 202 `{test_id, dir}`; 400 with
//!   the reason for a bad job; 409 while another job runs (one at a time).
//! - `GET /jobs/{test_id}` → `{state: running|done|failed|interrupted, ...}` and, when done,
//!   the summary and whether thresholds passed.
//! - `DELETE /jobs/{test_id}` → cancels it; partial results are written.
//! - `GET /health`.
//!
//! With `--dashboard ADDR`, every job shows on one live dashboard there as it runs
//! ([`crate::dashboard`]); the host's `sshlab run --dashboard` forwards it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use sshlab_core::job::{
    ApiError, FaultRecord, JOBS_PATH, Job, JobAccepted, JobCancelling, JobState, JobStatus,
    faults_path, job_path,
};
use sshlab_core::results::{Summary, Verdict};
use tokio_util::sync::CancellationToken;

use crate::cli::{RunArgs, cancel_on_signals};
use crate::run::RunRequest;
use crate::scenario::Ports;

/// `serve` flags.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (default: every address, on the agent VM's `control` port in
    /// vms/topology.toml).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Results directory (default: the share the host reads, `[results] guest` in
    /// vms/topology.toml).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// A live dashboard of each job as it runs (one listener for all of them).
    #[command(flatten)]
    pub dashboard: crate::dashboard::DashboardArgs,
}

impl ServeArgs {
    /// The listen address and results directory, defaults from the compiled-in topology.
    fn resolve(&self) -> Result<(SocketAddr, PathBuf), String> {
        let topology = || {
            sshlab_core::Lab::builtin()
                .map(|l| l.topology)
                .map_err(|e| format!("the compiled-in lab files: {e}"))
        };
        let listen = match self.listen {
            Some(a) => a,
            None => {
                let t = topology()?;
                let port = t
                    .vm("agent")
                    .and_then(|v| v.service("control"))
                    .map(|s| s.port)
                    .ok_or("vms/topology.toml has no agent VM with a `control` service")?;
                SocketAddr::from(([0, 0, 0, 0], port))
            }
        };
        let results = match &self.results {
            Some(r) => r.clone(),
            None => topology()?.results.guest,
        };
        Ok((listen, results))
    }
}

/// A job's state inside the agent (what [`JobStatus`] reports).
#[derive(Debug, Clone)]
enum Progress {
    Running,
    Done { passed: bool, verdict: Verdict },
    Failed(String),
}

#[derive(Debug)]
struct Current {
    test_id: String,
    dir: PathBuf,
    state: Progress,
    cancel: CancellationToken,
    faults: crate::run::FaultLog,
}

#[derive(Debug, Clone)]
struct Server {
    results: PathBuf,
    jobs: Arc<Mutex<Vec<Current>>>,
    live: Option<Arc<crate::dashboard::Live>>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: message.into(),
        }),
    )
        .into_response()
}

/// What a [`Job`] asks of `sshlab-agent run`.
trait JobRequest {
    fn to_args(&self, results: &std::path::Path) -> RunArgs;
    fn request(&self, results: &std::path::Path) -> Result<RunRequest, String>;
}

impl JobRequest for Job {
    fn to_args(&self, results: &std::path::Path) -> RunArgs {
        RunArgs {
            mcp_url: self.mcp_url.clone(),
            target_host: self.target_host.clone(),
            target_port: self.target_port.unwrap_or(2222),
            user: self.user.clone().unwrap_or_else(|| "testuser".into()),
            password: self.password.clone().unwrap_or_else(|| "testpass".into()),
            scenario: self.scenario.clone(),
            scenario_file: None,
            duration: self.duration,
            workers: self.workers,
            rate: self.rate,
            threads: None,
            iterations: None,
            segment: None,
            test_id: None,
            start_at: None,
            results_dir: results.to_owned(),
            thresholds: self.thresholds.clone(),
            protocol: self.protocol.clone().unwrap_or_else(|| "auto".into()),
            bearer: None,
            timeout_ms: 30_000,
            grace: crate::engine::DEFAULT_GRACE.as_secs_f64(),
            metrics_url: None,
            server_vcpus: self.server_vcpus,
            server_cpus_shared: self.server_cpus_shared,
            netem_profiles: None,
            quiet: true,
            find_capacity: false,
            slo: self.slo.clone(),
            max_steps: None,
            precision: None,
            dashboard: Default::default(),
        }
    }

    /// The run this job asks for, or why it is a bad job (400).
    fn request(&self, results: &std::path::Path) -> Result<RunRequest, String> {
        if self.scenario == "full" {
            return Err("post one scenario per job (full = five jobs in order)".into());
        }
        let args = self.to_args(results);
        let scenario = match args.scenarios() {
            Ok(mut s) if s.len() == 1 => s.remove(0),
            Ok(_) => return Err("one scenario per job".into()),
            Err(e) => return Err(e.to_string()),
        };
        let mut req = args.request(scenario).map_err(|e| e.to_string())?;
        if let Some(ports) = &self.ports {
            if ports.is_empty() || ports.contains(&0) {
                return Err("ports: give at least one port, none of them 0".into());
            }
            req.scenario.ports = Some(Ports::List(ports.clone()));
        }
        req.notes.clone_from(&self.notes);
        if let (Some(n), Some(cpus)) = (self.server_vcpus, req.server_vcpus.as_mut()) {
            cpus.1 = if self.server_cpus_shared {
                "the host's cores, counted by sshlab run (netns backend)".into()
            } else {
                format!("the MCP guest ({n} CPUs it reported to sshlab run)")
            };
        }
        Ok(req)
    }
}

async fn post_job(State(srv): State<Server>, body: axum::body::Bytes) -> Response {
    let job: Job = match serde_json::from_slice(&body) {
        Ok(j) => j,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad job: {e}")),
    };
    let mut req = match job.request(&srv.results) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let cancel = CancellationToken::new();
    let (test_id, dir) = {
        let mut jobs = srv.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = jobs.iter().find(|j| matches!(j.state, Progress::Running)) {
            return error(
                StatusCode::CONFLICT,
                format!("job {} is running", j.test_id),
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let (id, dir) =
            match crate::results::create_dir(&srv.results, &crate::results::test_id(now)) {
                Ok(d) => d,
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            };
        jobs.push(Current {
            test_id: id.clone(),
            dir: dir.clone(),
            state: Progress::Running,
            cancel: cancel.clone(),
            faults: req.faults.clone(),
        });
        (id, dir)
    };
    req.dir = Some((test_id.clone(), dir.clone()));
    req.live.clone_from(&srv.live);
    let jobs = srv.jobs.clone();
    let id = test_id.clone();
    tokio::spawn(async move {
        let state = match crate::run::run(req, cancel).await {
            Ok(done) => Progress::Done {
                passed: done.thresholds_passed(),
                verdict: Verdict::of(&done.summary),
            },
            Err(e) => Progress::Failed(format!("{e:#}")),
        };
        let mut jobs = jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = jobs.iter_mut().find(|j| j.test_id == id) {
            j.state = state;
        }
    });
    (StatusCode::ACCEPTED, Json(JobAccepted { test_id, dir })).into_response()
}

async fn get_job(State(srv): State<Server>, Path(id): Path<String>) -> Response {
    let (state, dir) = {
        let jobs = srv.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match jobs.iter().find(|j| j.test_id == id) {
            Some(j) => (j.state.clone(), j.dir.clone()),
            None => return error(StatusCode::NOT_FOUND, format!("no job {id}")),
        }
    };
    let summary: Option<Box<Summary>> = std::fs::read(dir.join("summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let status = match state {
        Progress::Running => JobStatus {
            test_id: id,
            state: JobState::Running,
            thresholds_passed: None,
            verdict: None,
            error: None,
            summary,
        },
        Progress::Done { passed, verdict } => JobStatus {
            test_id: id,
            state: if matches!(verdict, Verdict::Interrupted(_)) {
                JobState::Interrupted
            } else {
                JobState::Done
            },
            thresholds_passed: Some(passed),
            verdict: Some(verdict),
            error: None,
            summary,
        },
        Progress::Failed(e) => JobStatus {
            test_id: id,
            state: JobState::Failed,
            thresholds_passed: None,
            verdict: None,
            error: Some(e),
            summary,
        },
    };
    Json(status).into_response()
}

/// The host reports a fault it executed (at its start, and again at its end).
async fn post_fault(
    State(srv): State<Server>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let fault: FaultRecord = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad fault: {e}")),
    };
    let jobs = srv.jobs.lock().unwrap_or_else(|p| p.into_inner());
    let Some(job) = jobs.iter().find(|j| j.test_id == id) else {
        return error(StatusCode::NOT_FOUND, format!("no job {id}"));
    };
    if !matches!(job.state, Progress::Running) {
        return error(
            StatusCode::CONFLICT,
            format!("job {id} has finished; its faults are final"),
        );
    }
    let mut log = job.faults.lock().unwrap_or_else(|p| p.into_inner());
    match take_fault(&mut log, fault) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// The most faults one job records.
const MAX_FAULTS: usize = 1024;

/// Keeps `fault` in a job's `log`, in place of an earlier record of the same fault. A record
/// holds all the host knows of its fault, but one can arrive late (a start whose POST timed
/// out while the agent was out of reach, sent again after its end was taken): it does not take
/// a known end away.
fn take_fault(log: &mut Vec<FaultRecord>, fault: FaultRecord) -> Result<(), String> {
    let len = log.len();
    match log.iter_mut().find(|f| f.index == fault.index) {
        Some(f) if f.ended_at.is_some() && fault.ended_at.is_none() => Ok(()),
        Some(f) => {
            *f = fault;
            Ok(())
        }
        None if len < MAX_FAULTS => {
            log.push(fault);
            Ok(())
        }
        None => Err(format!("at most {MAX_FAULTS} faults per job")),
    }
}

async fn delete_job(State(srv): State<Server>, Path(id): Path<String>) -> Response {
    let jobs = srv.jobs.lock().unwrap_or_else(|p| p.into_inner());
    match jobs.iter().find(|j| j.test_id == id) {
        Some(j) => {
            j.cancel.cancel();
            (
                StatusCode::ACCEPTED,
                Json(JobCancelling {
                    test_id: id,
                    cancelling: true,
                }),
            )
                .into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no job {id}")),
    }
}

/// The router (for tests): jobs write into `results`, and show on `live` when given.
pub fn router(results: PathBuf, live: Option<Arc<crate::dashboard::Live>>) -> Router {
    let srv = Server {
        results,
        jobs: Arc::new(Mutex::new(Vec::new())),
        live,
    };
    Router::new()
        .route(
            "/health",
            get(|| async {
                Json(sshlab_core::job::Health {
                    status: "healthy".into(),
                    time: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_secs_f64()),
                })
            }),
        )
        .route(JOBS_PATH, axum::routing::post(post_job))
        .route(&job_path("{id}"), get(get_job).delete(delete_job))
        .route(&faults_path("{id}"), axum::routing::post(post_fault))
        .with_state(srv)
}

/// Serve until SIGINT/SIGTERM.
pub async fn main(args: ServeArgs) -> ExitCode {
    let (listen, results) = match args.resolve() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sshlab-agent: {e}");
            return ExitCode::from(crate::cli::EXIT_USAGE);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&results) {
        eprintln!("sshlab-agent: cannot create {}: {e}", results.display());
        return ExitCode::from(crate::cli::EXIT_RUN_ERROR);
    }
    let dashboard = match crate::cli::start_dashboard(&args.dashboard).await {
        Ok(d) => d,
        Err(code) => return ExitCode::from(code),
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sshlab-agent: cannot listen on {listen}: {e}");
            return ExitCode::from(crate::cli::EXIT_RUN_ERROR);
        }
    };
    eprintln!(
        "sshlab-agent: control API on http://{listen} (results in {})",
        results.display()
    );
    let stop = CancellationToken::new();
    cancel_on_signals(stop.clone());
    let live = dashboard.as_ref().map(crate::dashboard::Dashboard::live);
    let served = axum::serve(listener, router(results, live))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Some(d) = dashboard {
        d.close(std::time::Duration::from_secs(1)).await;
    }
    match served {
        Ok(()) => ExitCode::from(crate::cli::EXIT_OK),
        Err(e) => {
            eprintln!("sshlab-agent: {e}");
            ExitCode::from(crate::cli::EXIT_RUN_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan;

    fn job(body: &str) -> Job {
        serde_json::from_str(body).unwrap()
    }

    fn ports(body: &str) -> Result<Vec<u16>, String> {
        let req = job(body).request(std::path::Path::new("/nonexistent"))?;
        Ok(plan(&req.scenario, &req.settings)
            .iter()
            .map(|p| p.port)
            .collect())
    }

    #[test]
    fn without_ports_a_job_keeps_the_scenarios_own() {
        let all = ports(r#"{"scenario": "latency_test", "mcp_url": "http://127.0.0.1:1/mcp", "target_host": "127.0.0.1"}"#)
            .unwrap();
        assert_eq!(all[0], 2222);
        assert!(all.contains(&2322) && all.len() > 2, "{all:?}");
        let quick = ports(r#"{"scenario": "quick", "mcp_url": "http://127.0.0.1:1/mcp", "target_host": "127.0.0.1", "target_port": 2300}"#)
            .unwrap();
        assert_eq!(quick, [2300]);
    }

    #[test]
    fn explicit_ports_replace_baseline_plus_netem() {
        let base = r#""scenario": "latency_test", "mcp_url": "http://127.0.0.1:1/mcp", "target_host": "127.0.0.1""#;
        assert_eq!(
            ports(&format!("{{{base}, \"ports\": [2222]}}")).unwrap(),
            [2222]
        );
        assert_eq!(
            ports(&format!("{{{base}, \"ports\": [2222, 2322]}}")).unwrap(),
            [2222, 2322]
        );
        for bad in ["[]", "[0]"] {
            let e = ports(&format!("{{{base}, \"ports\": {bad}}}")).unwrap_err();
            assert!(e.starts_with("ports:"), "{e}");
        }
        assert!(serde_json::from_str::<Job>(&format!("{{{base}, \"ports\": \"x\"}}")).is_err());
    }

    #[test]
    fn a_jobs_slo_replaces_the_capacity_scenarios_own() {
        let base = r#""mcp_url": "http://127.0.0.1:1/mcp", "target_host": "127.0.0.1""#;
        let slo = |body: &str| -> Result<Vec<String>, String> {
            let req = job(body).request(std::path::Path::new("/nonexistent"))?;
            Ok(req
                .settings
                .capacity
                .map(|c| c.slo.iter().map(|t| t.expr.clone()).collect())
                .unwrap_or_default())
        };
        let own = slo(&format!("{{\"scenario\": \"capacity\", {base}}}")).unwrap();
        assert_eq!(own, ["p99<500ms", "errors<1%"]);
        let given = slo(&format!(
            "{{\"scenario\": \"capacity\", {base}, \"slo\": [\"p99<1s\"]}}"
        ))
        .unwrap();
        assert_eq!(given, ["p99<1s"]);
        let e = slo(&format!(
            "{{\"scenario\": \"quick\", {base}, \"slo\": [\"p99<1s\"]}}"
        ))
        .unwrap_err();
        assert!(e.contains("belong to a capacity search"), "{e}");
        let e = slo(&format!(
            "{{\"scenario\": \"capacity\", {base}, \"slo\": [\"p99 under 1s\"]}}"
        ))
        .unwrap_err();
        assert!(e.starts_with("--slo: "), "{e}");
    }

    #[test]
    fn a_late_start_record_does_not_take_a_known_end_away() {
        let rec = |index: usize, ended: Option<f64>| FaultRecord {
            started_at: Some(1.0),
            ended_at: ended,
            ..FaultRecord::planned(index, "sshd-kill:2222@1s+1s".parse().unwrap())
        };
        let mut log = Vec::new();
        take_fault(&mut log, rec(0, None)).unwrap();
        take_fault(&mut log, rec(0, Some(2.0))).unwrap();
        take_fault(&mut log, rec(0, None)).unwrap();
        take_fault(&mut log, rec(1, None)).unwrap();
        let got: Vec<(usize, Option<f64>)> = log.iter().map(|r| (r.index, r.ended_at)).collect();
        assert_eq!(got, vec![(0, Some(2.0)), (1, None)]);
        let mut full: Vec<FaultRecord> = (0..MAX_FAULTS).map(|i| rec(i, None)).collect();
        assert!(take_fault(&mut full, rec(MAX_FAULTS, None)).is_err());
    }
}
