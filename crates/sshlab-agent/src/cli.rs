//! The command line: `run`, `list`, `report`, `serve`. Flags only describe what the user
//! typed; [`RunArgs::request`] resolves them (scenario, lab defaults, thresholds) into a
//! [`RunRequest`], failing before anything runs when something is wrong.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sshlab_core::{Lab, NetemProfiles, Topology};
use tokio_util::sync::CancellationToken;

use crate::collector::Progress;
use crate::engine::RunSettings;
use crate::mcp::{InputResponses, Protocol};
use crate::run::{self, RunRequest};
use crate::scenario::segment::Segment;
use crate::scenario::{self, Scenario};
use crate::thresholds::Threshold;
use sshlab_core::results::Verdict;
use sshlab_core::results::compare::Bound;

pub use sshlab_core::results::verdict::{
    EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_ERROR, EXIT_THRESHOLDS, EXIT_USAGE,
};

/// The lab's own topology and netem profiles, compiled in (the same files Nix reads).
fn lab() -> (Option<Topology>, Option<NetemProfiles>) {
    (
        Topology::from_toml_str(Lab::BUILTIN_TOPOLOGY, Lab::TOPOLOGY_FILE).ok(),
        NetemProfiles::from_toml_str(Lab::BUILTIN_NETEM, Lab::NETEM_FILE).ok(),
    )
}

/// `sshlab-agent`: load-test any MCP Streamable-HTTP server.
#[derive(Debug, Parser)]
#[command(name = "sshlab-agent", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// More logging.
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scenario against an MCP server.
    Run(Box<RunArgs>),
    /// List the built-in scenarios and their defaults.
    List,
    /// Re-render reports from a results directory's saved records, optionally against a
    /// baseline run (exit 99 when a regression bound is crossed).
    Report {
        /// `<results-dir>/<test_id>`.
        dir: PathBuf,
        /// A baseline run's results directory: the reports show this run against it.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// `[op.]metric=+N%` bound on the change from the baseline (repeatable).
        #[arg(long = "max-regression", requires = "baseline")]
        bounds: Vec<Bound>,
    },
    /// The Agent VM's control API for the host's jobs.
    Serve(crate::serve::ServeArgs),
    /// Combine results directories (the segments of one split test, or any runs) into one,
    /// exactly: records re-read, histograms added, thresholds evaluated again.
    Merge {
        /// Results directories (`<results-dir>/<test_id>`).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the merged results go (created; must be empty).
        #[arg(long)]
        out: PathBuf,
        /// Threshold to evaluate on the merged data (repeatable; the inputs' own are too).
        #[arg(long = "threshold")]
        thresholds: Vec<String>,
    },
    /// Print a Kubernetes Indexed Job that runs one test split across N agents (pod I runs
    /// `--segment I/N`); the flags after `--` go to every pod's `sshlab-agent run`.
    K8sJob(K8sJobArgs),
    /// A candidate run against a baseline: per operation and port, side by side; exit 99 when
    /// a regression bound is crossed.
    Compare {
        /// The baseline's results directory.
        baseline: PathBuf,
        /// The candidate's results directory.
        candidate: PathBuf,
        /// `[op.]metric=+N%` (or `=+Nms`, `=-N%` for rps), e.g. `ssh_run_command.p99=+10%`
        /// (repeatable).
        #[arg(long = "max-regression")]
        bounds: Vec<Bound>,
        /// JUnit XML of the bounds (default: `<candidate>/compare-junit.xml`).
        #[arg(long)]
        junit: Option<PathBuf>,
    },
}

/// `k8s-job` flags.
#[derive(Debug, Clone, Args)]
pub struct K8sJobArgs {
    /// Agents.
    #[arg(long)]
    pub segments: u32,
    /// Container image with `sshlab-agent` on its PATH.
    #[arg(long, default_value = "sshlab-agent:latest")]
    pub image: String,
    /// PersistentVolumeClaim mounted at /results.
    #[arg(long, default_value = "sshlab-results")]
    pub results_claim: String,
    /// Test id (default: `loadtest_<UTC time>`).
    #[arg(long)]
    pub test_id: Option<String>,
    /// Seconds from now until the pods start the test (room to schedule them all).
    #[arg(long, default_value_t = 120)]
    pub start_in_s: u64,
    /// `sshlab-agent run` flags for every pod (after `--`).
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

/// `run` flags.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// MCP endpoint (default: the lab's MCP VM, from vms/topology.toml).
    #[arg(long)]
    pub mcp_url: Option<String>,
    /// SSH target host (default: the lab's Target VM).
    #[arg(long)]
    pub target_host: Option<String>,
    /// Baseline SSH port.
    #[arg(long, default_value_t = 2222)]
    pub target_port: u16,
    /// SSH user.
    #[arg(long, default_value = "testuser")]
    pub user: String,
    /// SSH password.
    #[arg(long, default_value = "testpass", env = "SSHLAB_PASSWORD")]
    pub password: String,
    /// Built-in scenario (`list` shows them), or `full` for the five in order.
    #[arg(long, short, default_value = "quick", conflicts_with = "scenario_file")]
    pub scenario: String,
    /// A scenario TOML file instead.
    #[arg(long)]
    pub scenario_file: Option<PathBuf>,
    /// Seconds (per phase).
    #[arg(long, short)]
    pub duration: Option<u64>,
    /// Workers.
    #[arg(long, short)]
    pub workers: Option<usize>,
    /// Open model: arrivals per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Threads that run the workers (default: one per core). Each owns its share of the
    /// workers and their connections, as wrk's `-t` does.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Closed model: turns per worker, then the worker stops (the duration still bounds it).
    /// A turn is one op; one that must first open or give up a handle makes two calls.
    #[arg(long, conflicts_with = "rate")]
    pub iterations: Option<u64>,
    /// This agent's share of a test split across N agents, `I/N` (0-based): its share of the
    /// workers and every N-th arrival of the open model's schedule. Give every agent the same
    /// --test-id and --start-at; `sshlab-agent merge` combines their results.
    #[arg(long)]
    pub segment: Option<String>,
    /// The test's id (default: `loadtest_<UTC time>`); a segment's results dir is
    /// `<id>-s<I>of<N>`.
    #[arg(long)]
    pub test_id: Option<String>,
    /// Unix time (seconds) to start at, so that the agents of a split test start together.
    /// Phases then follow a fixed timetable, each after a 3 s gap for connecting its workers,
    /// so the agents stay in step through every phase.
    #[arg(long)]
    pub start_at: Option<f64>,
    /// Where `<test_id>/` goes.
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
    /// Threshold, e.g. `ssh_run_command.p99<200ms`, `errors<1%`, `rps>100` (repeatable).
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// auto | 2026-07-28 | 2025-11-25 | 2025-06-18 | 2025-03-26.
    #[arg(long, default_value = "auto")]
    pub protocol: String,
    /// Bearer token for every worker (default: a distinct synthetic token per worker).
    #[arg(long, env = "SSHLAB_BEARER")]
    pub bearer: Option<String>,
    /// Timeout of one MCP request, ms.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Seconds a call in flight at a phase's end may still take (and the workers have to give
    /// their handles back); a call still running then is cut off and counted as such. Nothing
    /// starts after a phase's end: open-model arrivals not sent by then are counted as dropped.
    #[arg(long, default_value_t = crate::engine::DEFAULT_GRACE.as_secs_f64())]
    pub grace: f64,
    /// The server's Prometheus endpoint (default: /metrics next to the MCP URL).
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// vCPUs of the server's machine (default: the MCP VM's, from vms/topology.toml).
    #[arg(long)]
    pub server_vcpus: Option<u32>,
    /// Those vCPUs are the host's, shared with the agent and the target (the netns backend):
    /// the report says so instead of calling them the server's own.
    #[arg(long)]
    pub server_cpus_shared: bool,
    /// netem/profiles.toml to take latency_test's ports from (default: the compiled-in one).
    #[arg(long)]
    pub netem_profiles: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Search for the highest rate that meets the SLO (`--slo`) instead of running the
    /// scenario's phases: open-model steps of `--duration` seconds each, starting at `--rate`
    /// (or the scenario's). A scenario with a `[capacity]` table is a search already.
    #[arg(long)]
    pub find_capacity: bool,
    /// An SLO bound of the capacity search, in threshold syntax (`p99<200ms`, `errors<1%`,
    /// `ssh_run_command.p95<100ms`; repeatable; default: the scenario's `[capacity] slo`).
    #[arg(long = "slo")]
    pub slo: Vec<String>,
    /// The capacity search's most steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// The capacity search stops once the highest passing and the lowest failing rate are
    /// within this, percent.
    #[arg(long)]
    pub precision: Option<f64>,
    /// The live dashboard.
    #[command(flatten)]
    pub dashboard: crate::dashboard::DashboardArgs,
}

/// A usage problem: nothing ran.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl RunArgs {
    /// Scenarios this run covers (`full` expands to five).
    pub fn scenarios(&self) -> Result<Vec<Scenario>, UsageError> {
        if let Some(f) = &self.scenario_file {
            return Ok(vec![
                Scenario::load(f).map_err(|e| UsageError(e.to_string()))?,
            ]);
        }
        let names: Vec<&str> = if self.scenario == "full" {
            scenario::FULL.to_vec()
        } else {
            vec![self.scenario.as_str()]
        };
        names
            .into_iter()
            .map(|n| Scenario::builtin(n).map_err(|e| UsageError(e.to_string())))
            .collect()
    }

    /// Resolve into a request for `scenario`.
    pub fn request(&self, scenario: Scenario) -> Result<RunRequest, UsageError> {
        let (topology, netem) = lab();
        let netem = match &self.netem_profiles {
            Some(p) => Some(NetemProfiles::load(p).map_err(|e| UsageError(e.to_string()))?),
            None => netem,
        };
        let mcp_vm = topology.as_ref().and_then(|t| t.vm("mcp"));
        let target_vm = topology.as_ref().and_then(|t| t.vm("target"));
        let lab_url = mcp_vm.map(|vm| {
            format!(
                "http://{}:{}/mcp",
                vm.ip,
                vm.services
                    .iter()
                    .find(|s| s.name == "mcp")
                    .map_or(3000, |s| s.port)
            )
        });
        let mcp_url = match (&self.mcp_url, &lab_url) {
            (Some(u), _) => u.clone(),
            (None, Some(lab)) => lab.clone(),
            (None, None) => return Err(UsageError("--mcp-url is required".into())),
        };
        // The MCP VM's vCPUs describe the server only when the server is the lab's.
        let server_vcpus = match (self.server_vcpus, mcp_vm) {
            (Some(n), _) => Some((n, "--server-vcpus".to_owned())),
            (None, Some(vm)) if lab_url.as_deref() == Some(mcp_url.as_str()) => {
                Some((vm.vcpus, "the lab's MCP VM in vms/topology.toml".to_owned()))
            }
            _ => None,
        };
        let target_host = match (&self.target_host, target_vm) {
            (Some(h), _) => h.clone(),
            (None, Some(vm)) => vm.ip.to_string(),
            (None, None) => return Err(UsageError("--target-host is required".into())),
        };
        let protocol: Protocol = self
            .protocol
            .parse()
            .map_err(|e| UsageError(format!("--protocol: {e}")))?;
        let mut thresholds = Vec::new();
        for t in &self.thresholds {
            let th: Threshold = t
                .parse()
                .and_then(|th: Threshold| th.validate().map(|()| th))
                .map_err(|e| UsageError(format!("--threshold `{t}`: {e}")))?;
            thresholds.push(th);
        }
        if self.workers == Some(0) {
            return Err(UsageError("--workers must be at least 1".into()));
        }
        if self.threads == Some(0) {
            return Err(UsageError("--threads must be at least 1".into()));
        }
        if self.iterations == Some(0) {
            return Err(UsageError("--iterations must be at least 1".into()));
        }
        if self.iterations.is_some() && scenario.is_open() {
            return Err(UsageError(format!(
                "--iterations counts a closed-model worker's calls; scenario {} is open-model",
                scenario.name
            )));
        }
        if self.duration == Some(0) {
            return Err(UsageError("--duration must be at least 1".into()));
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            return Err(UsageError("--rate must be a positive number".into()));
        }
        let segment = match &self.segment {
            Some(s) => s
                .parse::<Segment>()
                .map_err(|e| UsageError(format!("--segment: {e}")))?,
            None => Segment::WHOLE,
        };
        if let Some(id) = &self.test_id
            && (id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                || id.starts_with('.'))
        {
            return Err(UsageError(format!(
                "--test-id `{id}`: use letters, digits, `_`, `-` and `.` (it names a directory)"
            )));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if let Some(t) = self.start_at
            && !(t.is_finite() && t > 0.0 && t < now + 86_400.0)
        {
            return Err(UsageError(
                "--start-at: a unix time in seconds, within a day from now".into(),
            ));
        }
        if !scenario.is_open() && self.rate.is_none() {
            // An agent may have no share of some phases (it waits them out with the others),
            // but not of every one.
            let per_phase: Vec<usize> = match self.workers {
                Some(w) => vec![w],
                None if scenario.phases.is_empty() => vec![scenario.workers],
                None => scenario
                    .phases
                    .iter()
                    .map(|p| p.workers.unwrap_or(scenario.workers))
                    .collect(),
            };
            let most = per_phase.iter().copied().max().unwrap_or(0);
            if per_phase.iter().all(|w| segment.workers(*w) == 0) {
                return Err(UsageError(format!(
                    "--segment {segment}: {most} workers split {} ways leave this agent none; \
                     give at least {} workers",
                    segment.count, segment.count
                )));
            }
        }
        let grace = Duration::try_from_secs_f64(self.grace)
            .ok()
            .filter(|g| *g <= Duration::from_secs(3600))
            .ok_or_else(|| UsageError("--grace: seconds, from 0 to 3600".into()))?;
        let capacity = self.capacity_plan(&scenario)?;
        let iterations = self.iterations.or(scenario.iterations);
        let inputs = InputResponses(scenario.input_responses_json());
        Ok(RunRequest {
            scenario,
            settings: RunSettings {
                mcp_url,
                protocol,
                target_host,
                target_port: self.target_port,
                user: self.user.clone(),
                password: self.password.clone(),
                duration_s: self.duration,
                workers: self.workers,
                rate: self.rate,
                request_timeout: Duration::from_millis(self.timeout_ms.max(1)),
                grace,
                bearer: self.bearer.clone(),
                netem_ports: netem
                    .map(|n| n.profiles.iter().map(|p| p.port).collect())
                    .unwrap_or_default(),
                iterations,
                inputs,
                segment,
                threads: self.threads,
                capacity,
                timetable: self.start_at.is_some(),
            },
            test_id: self.test_id.clone(),
            start_at: self.start_at,
            results_root: self.results_dir.clone(),
            thresholds,
            progress: if self.quiet {
                Progress::Quiet
            } else {
                Progress::detect()
            },
            metrics_url: self.metrics_url.clone(),
            server_vcpus,
            server_cpus_shared: self.server_cpus_shared,
            dir: None,
            notes: Vec::new(),
            faults: Default::default(),
            live: None,
        })
    }
}

impl RunArgs {
    /// The capacity search this run is, if any: `--find-capacity`, or a scenario with a
    /// `[capacity]` table; the SLO from `--slo`, else the scenario's.
    fn capacity_plan(
        &self,
        scenario: &Scenario,
    ) -> Result<Option<crate::engine::capacity::Plan>, UsageError> {
        let spec = scenario.capacity.as_ref();
        if !self.find_capacity && spec.is_none() {
            if !self.slo.is_empty() || self.max_steps.is_some() || self.precision.is_some() {
                return Err(UsageError(
                    "--slo, --max-steps and --precision belong to a capacity search: add \
                     --find-capacity"
                        .into(),
                ));
            }
            return Ok(None);
        }
        if let Some(seg) = self
            .segment
            .as_deref()
            .and_then(|s| s.parse::<Segment>().ok())
            && seg.count > 1
        {
            let workers = self.workers.unwrap_or(scenario.workers);
            if workers < seg.count as usize {
                return Err(UsageError(format!(
                    "a capacity search split {} ways needs at least {} workers (one per agent, \
                     to carry its share of every step's arrivals), not {workers}",
                    seg.count, seg.count
                )));
            }
        }
        if self.segment.is_some() && (self.test_id.is_none() || self.start_at.is_none()) {
            return Err(UsageError(
                "a split capacity search needs --test-id and --start-at, the same for every \
                 agent, and one --results-dir they all share: after each step the agents read \
                 each other's part of it there (<results-dir>/<test-id>-s<I>of<N>/capacity/), \
                 so all judge the same step and pick the same next rate"
                    .into(),
            ));
        }
        let texts: Vec<String> = if self.slo.is_empty() {
            spec.map(|c| c.slo.clone()).unwrap_or_default()
        } else {
            self.slo.clone()
        };
        if texts.is_empty() {
            return Err(UsageError(
                "--find-capacity needs an SLO: --slo 'p99<200ms' (repeatable)".into(),
            ));
        }
        let slo = texts
            .iter()
            .map(|t| {
                t.parse::<Threshold>()
                    .map_err(|e| UsageError(format!("--slo: {e}")))
                    .and_then(|t| match t.judges_a_step() {
                        true => Ok(t),
                        false => Err(UsageError(format!(
                            "--slo `{}`: a whole-run figure cannot judge one step of a search \
                             (use latency percentiles, errors, rps or requests)",
                            t.expr
                        ))),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let start_rate = self.rate.or(scenario.rate).unwrap_or(10.0);
        let max_steps = self
            .max_steps
            .or(spec.and_then(|c| c.max_steps))
            .unwrap_or(10);
        let precision = self
            .precision
            .or(spec.and_then(|c| c.precision_percent))
            .unwrap_or(5.0);
        if max_steps == 0 || !(precision > 0.0 && precision <= 100.0) || start_rate <= 0.0 {
            return Err(UsageError(
                "a capacity search needs --max-steps ≥ 1, --precision in (0, 100] and a rate > 0"
                    .into(),
            ));
        }
        let warmup = spec.and_then(|c| c.warmup_s).unwrap_or(2.0);
        Ok(Some(crate::engine::capacity::Plan {
            slo,
            start_rate,
            max_steps,
            precision: precision / 100.0,
            warmup: Duration::try_from_secs_f64(warmup)
                .map_err(|_| UsageError("capacity warmup_s: seconds ≥ 0".into()))?,
        }))
    }
}

/// Cancel `token` on SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
        eprintln!("\nsshlab-agent: interrupted; stopping workers and writing partial results");
        token.cancel();
    });
}

/// Why a finished run is a run error although it ran: no operation succeeded (see
/// [`Verdict`]).
pub fn nothing_succeeded(s: &sshlab_core::results::Summary) -> Option<String> {
    match Verdict::of(s) {
        Verdict::NothingSucceeded(why) => Some(why),
        _ if s.totals.successes == 0 => Some("no operation succeeded".into()),
        _ => None,
    }
}

async fn run_cmd(args: RunArgs) -> ExitCode {
    let scenarios = match args.scenarios() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sshlab-agent: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut requests = Vec::new();
    for s in scenarios {
        match args.request(s) {
            Ok(r) => requests.push(r),
            Err(e) => {
                eprintln!("sshlab-agent: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let dashboard = match start_dashboard(&args.dashboard).await {
        Ok(d) => d,
        Err(code) => return ExitCode::from(code),
    };
    if let Some(d) = &dashboard {
        for r in &mut requests {
            r.live = Some(d.live());
        }
    }
    let code = run_all(requests).await;
    if let Some(d) = dashboard {
        d.close(DASHBOARD_LINGER).await;
    }
    code
}

/// How long a run's end waits for open dashboard pages to receive its report.
const DASHBOARD_LINGER: Duration = Duration::from_secs(3);

/// The dashboard `args` ask for, listening (and its URL printed), before anything runs; the
/// exit code when it cannot be: 2 for an address that may not be used, 1 for one that is taken.
pub async fn start_dashboard(
    args: &crate::dashboard::DashboardArgs,
) -> Result<Option<crate::dashboard::Dashboard>, u8> {
    let addr = match args.addr() {
        Ok(Some(a)) => a,
        Ok(None) => return Ok(None),
        Err(e) => {
            eprintln!("sshlab-agent: {e}");
            return Err(EXIT_USAGE);
        }
    };
    match crate::dashboard::Dashboard::bind(addr).await {
        Ok(d) => {
            eprintln!("sshlab-agent: dashboard on {}", d.url());
            Ok(Some(d))
        }
        Err(e) => {
            eprintln!("sshlab-agent: {e}");
            Err(EXIT_RUN_ERROR)
        }
    }
}

async fn run_all(requests: Vec<RunRequest>) -> ExitCode {
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    let mut code = EXIT_OK;
    for req in &requests {
        if !req.scenario.faults.is_empty() {
            eprintln!(
                "sshlab-agent: {}: its {} [[fault]](s) are executed by the lab's host \
                 (`sshlab run`), which controls the VMs; this run has none",
                req.scenario.name,
                req.scenario.faults.len()
            );
        }
    }
    for req in requests {
        let name = req.scenario.name.clone();
        match run::run(req, cancel.clone()).await {
            Ok(done) => {
                print!("{}", sshlab_core::report::text::render(&done.summary));
                println!("results: {}", done.dir.display());
                let verdict = Verdict::of(&done.summary);
                match &verdict {
                    Verdict::Interrupted(_) => {
                        code = EXIT_INTERRUPTED;
                        break;
                    }
                    Verdict::NothingSucceeded(why) => {
                        eprintln!("sshlab-agent: {name}: {why}");
                        code = EXIT_RUN_ERROR;
                    }
                    Verdict::ThresholdsFailed if code == EXIT_OK => code = EXIT_THRESHOLDS,
                    _ => {}
                }
            }
            Err(e) => {
                eprintln!("sshlab-agent: {name}: {e:#}");
                return ExitCode::from(EXIT_RUN_ERROR);
            }
        }
    }
    ExitCode::from(code)
}

fn list() -> ExitCode {
    println!(
        "{:<20} {:>9} {:>8} {:>7}  description",
        "scenario", "duration", "workers", "phases"
    );
    for name in scenario::builtin_names() {
        match Scenario::builtin(name) {
            Ok(s) => {
                let phases = s.phases.len().max(1);
                let rate = s.rate.map(|r| format!(", {r}/s")).unwrap_or_default();
                println!(
                    "{:<20} {:>8}s {:>8} {:>7}  {}{rate}",
                    s.name, s.duration_s, s.workers, phases, s.description
                );
            }
            Err(e) => println!("{name:<20} (broken: {e})"),
        }
    }
    println!(
        "{:<20} {:>9} {:>8} {:>7}  the five guide scenarios in order",
        "full", "", "", ""
    );
    ExitCode::from(EXIT_OK)
}

fn report(dir: PathBuf, baseline: Option<PathBuf>, bounds: &[Bound]) -> ExitCode {
    use sshlab_core::results::compare::Baseline;
    let base = match &baseline {
        Some(b) => match crate::results::read_summary(b) {
            Some(s) => Some(s),
            None => {
                eprintln!("sshlab-agent: {}: no readable summary.json", b.display());
                return ExitCode::from(EXIT_RUN_ERROR);
            }
        },
        None => None,
    };
    match crate::results::rebuild(&dir) {
        Ok(mut r) => {
            if r.skipped_lines > 0 {
                eprintln!(
                    "sshlab-agent: skipped {} unreadable line(s) (e.g. cut short by a crash)",
                    r.skipped_lines
                );
            }
            if let Some(base) = &base {
                r.summary.baseline = Some(Baseline::of(base, &r.summary, bounds));
            }
            if let Err(e) = crate::results::write_all(&dir, &r.summary) {
                eprintln!("sshlab-agent: {e}");
                return ExitCode::from(EXIT_RUN_ERROR);
            }
            print!("{}", sshlab_core::report::text::render(&r.summary));
            if r.summary.baseline.as_ref().is_some_and(|b| !b.passed()) {
                ExitCode::from(EXIT_THRESHOLDS)
            } else {
                ExitCode::from(EXIT_OK)
            }
        }
        Err(e) => {
            eprintln!("sshlab-agent: {e}");
            ExitCode::from(EXIT_RUN_ERROR)
        }
    }
}

fn merge(dirs: &[PathBuf], out: &Path, thresholds: &[String]) -> ExitCode {
    match crate::merge::merge(dirs, out, thresholds) {
        Ok(m) => {
            for w in &m.warnings {
                eprintln!("sshlab-agent: merge: {w}");
            }
            print!("{}", sshlab_core::report::text::render(&m.summary));
            println!("merged results: {}", out.display());
            if let Some(why) = nothing_succeeded(&m.summary) {
                eprintln!("sshlab-agent: merge: {why}");
                ExitCode::from(EXIT_RUN_ERROR)
            } else if !m.summary.run.complete {
                ExitCode::from(EXIT_INTERRUPTED)
            } else if m.summary.thresholds.iter().any(|t| !t.passed) {
                ExitCode::from(EXIT_THRESHOLDS)
            } else {
                ExitCode::from(EXIT_OK)
            }
        }
        Err(e @ crate::merge::MergeError::Threshold { .. }) => {
            eprintln!("sshlab-agent: merge: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("sshlab-agent: merge: {e}");
            ExitCode::from(EXIT_RUN_ERROR)
        }
    }
}

fn k8s_job(args: K8sJobArgs) -> ExitCode {
    let K8sJobArgs {
        segments,
        image,
        results_claim,
        test_id,
        start_in_s,
        run_args,
    } = args;
    if segments == 0 {
        eprintln!("sshlab-agent: k8s-job: --segments must be at least 1");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Some(bad) = run_args.iter().find(|a| {
        ["--segment", "--test-id", "--start-at", "--results-dir"]
            .iter()
            .any(|f| a.as_str() == *f || a.starts_with(&format!("{f}=")))
    }) {
        eprintln!("sshlab-agent: k8s-job: {bad} is set by the Job itself");
        return ExitCode::from(EXIT_USAGE);
    }
    // The flags must make a valid run (checked now, not in N pods later).
    let probe = ["sshlab-agent", "run"]
        .into_iter()
        .map(str::to_owned)
        .chain(run_args.iter().cloned());
    if let Err(e) = Cli::try_parse_from(probe) {
        eprintln!("sshlab-agent: k8s-job: the run flags do not parse: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let test_id = test_id.unwrap_or_else(|| crate::results::test_id(now as f64));
    print!(
        "{}",
        crate::k8s::manifest(&crate::k8s::JobSpec {
            segments,
            image,
            results_claim,
            test_id,
            start_at: now + start_in_s,
            run_args,
        })
    );
    ExitCode::from(EXIT_OK)
}

fn compare(
    baseline: &Path,
    candidate: &Path,
    bounds: &[Bound],
    junit: Option<PathBuf>,
) -> ExitCode {
    use sshlab_core::results::compare;
    let (Some(base), Some(cand)) = (
        crate::results::read_summary(baseline),
        crate::results::read_summary(candidate),
    ) else {
        eprintln!(
            "sshlab-agent: compare: {} and {} must both hold a summary.json",
            baseline.display(),
            candidate.display()
        );
        return ExitCode::from(EXIT_RUN_ERROR);
    };
    let verdicts = compare::verdicts(&base, &cand, bounds);
    print!("{}", compare::render(&base, &cand, &verdicts));
    // A candidate in which nothing succeeded is no comparison (its fast failures could pass
    // every latency and rate bound).
    if let Some(why) = nothing_succeeded(&cand) {
        eprintln!(
            "sshlab-agent: compare: candidate {}: {why}",
            candidate.display()
        );
        return ExitCode::from(EXIT_RUN_ERROR);
    }
    let junit = junit.unwrap_or_else(|| candidate.join("compare-junit.xml"));
    let xml = sshlab_core::report::junit::render_comparison(&base, &cand, &verdicts);
    if let Err(e) = crate::collector::write_atomic(&junit, xml.as_bytes()) {
        eprintln!("sshlab-agent: compare: {}: {e}", junit.display());
        return ExitCode::from(EXIT_RUN_ERROR);
    }
    if verdicts.iter().all(|v| v.passed) {
        ExitCode::from(EXIT_OK)
    } else {
        ExitCode::from(EXIT_THRESHOLDS)
    }
}

/// Run the parsed command line.
pub async fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(args) => run_cmd(*args).await,
        Command::List => list(),
        Command::Report {
            dir,
            baseline,
            bounds,
        } => report(dir, baseline, &bounds),
        Command::Serve(args) => crate::serve::main(args).await,
        Command::Merge {
            dirs,
            out,
            thresholds,
        } => merge(&dirs, &out, &thresholds),
        Command::K8sJob(args) => k8s_job(args),
        Command::Compare {
            baseline,
            candidate,
            bounds,
            junit,
        } => compare(&baseline, &candidate, &bounds, junit),
    }
}
