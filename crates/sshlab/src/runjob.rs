//! `sshlab run <scenario> [duration] [workers]`: boots the lab if it is not up (and stops what
//! it started unless `--keep`), POSTs the job to the agent's control API, polls it with
//! progress, then prints the agent's report.txt from the results directory and exits with the
//! agent's threshold code (0 passed, 99 failed). Agent death or timeout: says so, keeps the
//! partial results, exits 1. Ctrl-C: DELETEs the job, waits briefly for the partial results,
//! tears down what it started, exits 130.
//!
//! The scenario name is checked against the built-ins (sshlab-core's [`scenario`] catalog,
//! the same the agent runs) before anything is booted. Scenarios whose built-in ports are
//! `baseline+netem` ([`Scenario::covers_netem_ports`]: latency_test) get explicit ports in
//! the job: the agent cannot see whether the lab's netem ports are shaped, and would otherwise
//! measure them unshaped and report them as degraded. With netem not applied (the lab's state
//! says why), the job covers the baseline only, and the skipped ports and the reason are
//! printed and written to `lab.json` beside the agent's results, where `sshlab report` finds
//! them again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sshlab_core::Topology;
use sshlab_core::job::{
    ApiError, JOBS_PATH, Job, JobAccepted, JobState, JobStatus, faults_path, job_path,
};
use sshlab_core::scenario::{self, Scenario};

use crate::agent_clock::AgentClock;
use crate::http;
use crate::vm::{self, Endpoints, LabNetem, VmConfig, faults};

pub use sshlab_core::results::verdict::{EXIT_INTERRUPTED, EXIT_RUN_ERROR, EXIT_THRESHOLDS};

/// How long `run` waits, before a scenario, for the server to let go of sessions an earlier
/// one left (it ends sessions whose connection closed within its 5 s sweep).
const LEFTOVER_WAIT: Duration = Duration::from_secs(12);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Scenario name (`quick`, `full` = the five guide scenarios in order ([`scenario::FULL`]),
    /// or one built-in name).
    pub scenario: String,
    /// Seconds per phase.
    pub duration: Option<u64>,
    /// Workers.
    pub workers: Option<usize>,
    /// Open-model arrival rate (the agent's `--rate`).
    pub rate: Option<f64>,
    /// Threshold expressions.
    pub thresholds: Vec<String>,
    /// The target port the scenario runs against (`--port`; default: the baseline).
    pub port: Option<u16>,
    /// A capacity search's SLO (`--slo`; default: the scenario's).
    pub slo: Vec<String>,
    /// Keep the lab up when this run booted it.
    pub keep: bool,
    /// Overall timeout per job.
    pub timeout: Duration,
    /// Faults to execute during each scenario's run (`--fault`), on top of the scenario's own
    /// `[[fault]]`s.
    pub faults: Vec<sshlab_core::faults::FaultSpec>,
}

impl RunSpec {
    /// Why `--port` cannot run in a lab whose netem is `netem`: it is a netem port that is not
    /// shaped there (no `sch_netem`, `--no-netem`), so it would be measured as a plain sshd.
    pub fn port_unshaped(&self, topology: &Topology, netem: &LabNetem) -> Option<String> {
        let port = self.port?;
        let is_netem = topology.target_ports().iter().any(|t| t.netem == port);
        let shaped = netem.applied && netem.ports.contains(&port);
        (is_netem && !shaped).then(|| {
            format!(
                "--port {port}: its netem profile is not applied in this lab ({}), so it would \
                 be measured unshaped",
                netem.why()
            )
        })
    }

    /// Refuses an `--slo` given to a scenario that is no capacity search (its syntax is the
    /// agent's to judge, as the thresholds' are: a bad one is refused with the job).
    pub fn check_slo(&self, scenarios: &[Scenario]) -> anyhow::Result<()> {
        if !self.slo.is_empty()
            && let Some(sc) = scenarios.iter().find(|s| s.capacity.is_none())
        {
            bail!(
                "--slo: {} is no capacity search (the `capacity` scenario is one)",
                sc.name
            );
        }
        Ok(())
    }

    /// Refuses a `--port` the lab does not have, one whose sshd refuses the scenarios'
    /// password login, or one given to a scenario that chooses its own ports.
    pub fn check_port(&self, topology: &Topology, scenarios: &[Scenario]) -> anyhow::Result<()> {
        let Some(port) = self.port else {
            return Ok(());
        };
        let ports = topology.target_ports();
        let Some(t) = ports.iter().find(|t| t.base == port || t.netem == port) else {
            let known: Vec<String> = ports
                .iter()
                .flat_map(|t| [t.base, t.netem])
                .map(|p| p.to_string())
                .collect();
            bail!(
                "--port {port}: not one of the lab's target ports ({})",
                known.join(", ")
            );
        };
        if !vm::target::accepts_password_login(t.role) {
            bail!(
                "--port {port}: its sshd ({}) refuses the password login the scenarios use",
                t.role
            );
        }
        for sc in scenarios {
            let own = sc.ports.is_some() || sc.phases.iter().any(|p| p.port.is_some());
            if own {
                bail!(
                    "--port {port}: {} chooses its own ports; --port is for scenarios that run \
                     on one",
                    sc.name
                );
            }
        }
        Ok(())
    }

    /// The faults of `scenario`'s run: its own, then `--fault`'s.
    fn faults_of(&self, scenario: &Scenario) -> Vec<sshlab_core::faults::FaultSpec> {
        scenario
            .faults
            .iter()
            .chain(&self.faults)
            .cloned()
            .collect()
    }

    /// How long `scenario`'s phases take in all, seconds (one phase per port when `ports`
    /// says which).
    fn run_seconds(&self, scenario: &Scenario, ports: Option<&[u16]>) -> f64 {
        let per = self.duration.unwrap_or(scenario.duration_s) as f64;
        if let Some(ports) = ports {
            return per * ports.len().max(1) as f64;
        }
        if scenario.phases.is_empty() {
            return per;
        }
        scenario
            .phases
            .iter()
            .map(|p| p.duration_s.map_or(per, |d| d as f64))
            .sum()
    }
}

/// The built-in scenarios `name` runs, in order: [`scenario::FULL`] for `full`, else the one.
/// An unknown name is an error here, before a lab is booted for a job the agent would refuse.
pub fn scenarios(name: &str) -> anyhow::Result<Vec<&str>> {
    let names = if name == "full" {
        scenario::FULL.to_vec()
    } else {
        vec![name]
    };
    for n in &names {
        Scenario::builtin(n)?;
    }
    Ok(names)
}

/// What `run` knows about a job that the agent's summary does not, kept as `lab.json` in the
/// job's results directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LabNote {
    /// The scenario.
    pub scenario: String,
    /// The netem state of the lab the job ran in.
    pub netem: LabNetem,
    /// Ports the job was told to cover (`None`: the scenario's own).
    pub ports: Option<Vec<u16>>,
    /// `netem ports 2322..2328 skipped: <reason>`, when they were.
    pub skipped: Option<String>,
    /// The backend the lab ran on.
    pub backend: Option<vm::Backend>,
    /// qemu backend: the guests' accelerator.
    pub accel: Option<vm::accel::Accel>,
    /// qemu backend, and microvm runners of `sshlab vm runners`: each guest's report (its own
    /// kernel release and CPUs).
    pub guests: Vec<vm::guest::GuestReport>,
    /// The CPUs the MCP server really has (the MCP guest's own count on qemu, the host's
    /// cores the namespaces share on netns), handed to the agent for its throughput figures.
    pub server_vcpus: Option<u32>,
    /// Whether those are the host's cores, shared with the agent and the target (netns).
    pub server_cpus_shared: bool,
    /// What the server still held of an earlier run when the job started, if anything.
    pub leftovers: Option<String>,
}

impl LabNote {
    /// The note's file in a results directory.
    pub const FILE: &str = "lab.json";

    /// The job's ports and, when ports are left out, the line saying which and why: all netem
    /// ports when they are not shaped, and those whose sshd refuses the scenario's password
    /// login (key-only, deny-all: measuring them would only measure refusals, as the original
    /// tool's latency_test did on 2323). `baseline` is the target's clean port
    /// ([`Endpoints::baseline`]). Only a built-in whose ports are `baseline+netem`
    /// ([`Scenario::covers_netem_ports`]) gets explicit ports; any other name, an unknown one
    /// included ([`scenarios`] refuses those first), keeps the scenario's own.
    pub fn new(scenario: &str, netem: &LabNetem, topology: &Topology, baseline: u16) -> Self {
        let covers_netem = Scenario::builtin(scenario).is_ok_and(|s| s.covers_netem_ports());
        let (ports, skipped) = if covers_netem {
            let (mut ports, unshaped) = netem.scenario_ports(baseline);
            let refusing: Vec<(u16, &str)> = topology
                .target_ports()
                .into_iter()
                .filter(|t| !vm::target::accepts_password_login(t.role) && ports.contains(&t.netem))
                .map(|t| (t.netem, t.role))
                .collect();
            ports.retain(|p| refusing.iter().all(|(r, _)| r != p));
            let refusing: Vec<String> = refusing
                .iter()
                .map(|(port, role)| format!("{port} ({role})"))
                .collect();
            let refused = (!refusing.is_empty()).then(|| {
                format!(
                    "{} skipped: their sshd refuses the password login this scenario uses",
                    refusing.join(", ")
                )
            });
            let skipped: Vec<String> = unshaped.into_iter().chain(refused).collect();
            (
                Some(ports),
                (!skipped.is_empty()).then(|| skipped.join("; ")),
            )
        } else {
            (None, None)
        };
        Self {
            scenario: scenario.to_owned(),
            netem: netem.clone(),
            ports,
            skipped,
            ..Self::default()
        }
    }

    /// The line to print (`run: latency_test: netem ports ... skipped: ...`), if any.
    pub fn line(&self) -> Option<String> {
        self.skipped
            .as_ref()
            .map(|s| format!("run: {}: {s}", self.scenario))
    }
}

/// Runs it; returns the process exit code. `dashboard`: a listener (opened in the user's
/// namespace) to forward the Agent VM's live dashboard to, for the whole run.
pub fn run(
    spec: &RunSpec,
    cfg: &VmConfig,
    topology: &Topology,
    outer: Option<&str>,
    dashboard: Option<std::net::TcpListener>,
) -> anyhow::Result<u8> {
    let scenarios = scenarios(&spec.scenario)?;
    let builtins = scenarios
        .iter()
        .map(|s| Scenario::builtin(s))
        .collect::<Result<Vec<_>, _>>()?;
    spec.check_port(topology, &builtins)?;
    spec.check_slo(&builtins)?;
    // Faults naming a port or VM the lab does not have, or ending after their run, are refused
    // before anything is booted.
    for s in &scenarios {
        let sc = Scenario::builtin(s)?;
        let faults = spec.faults_of(&sc);
        sshlab_core::faults::check_overlaps(&faults, topology)?;
        // How many ports latency_test covers is known only once the lab is up (its netem
        // state): its faults' timing is checked then, their targets now.
        let run_s = if sc.covers_netem_ports() {
            f64::INFINITY
        } else {
            spec.run_seconds(&sc, None)
        };
        for f in &faults {
            f.resolve(topology, run_s)
                .map_err(|e| anyhow::anyhow!("{s}: {e}"))?;
        }
    }
    crate::interrupt::install();
    let ep = Endpoints::new(topology)?;
    let _forwarding = match dashboard {
        Some(listener) => Some(forward_dashboard(listener, &ep)?),
        None => None,
    };
    let started = if vm::State::load(cfg)?.is_none() {
        println!("run: lab {} is not up; booting it", cfg.lab);
        vm::up(cfg, topology, outer)?;
        true
    } else {
        false
    };
    let state = vm::State::load(cfg)?;
    let results = state
        .as_ref()
        .map_or_else(|| cfg.results.clone(), |s| s.results.clone());
    let state = state.unwrap_or_default();
    let mut outcomes: Vec<(&str, Result<Outcome, anyhow::Error>)> = Vec::new();
    let unshaped = spec.port_unshaped(topology, &state.netem);
    if let (Some(why), Some(first)) = (&unshaped, scenarios.first()) {
        outcomes.push((first, Err(anyhow::anyhow!("{why}"))));
    }
    for s in scenarios.iter().filter(|_| unshaped.is_none()) {
        let mut note = LabNote::new(s, &state.netem, topology, ep.baseline);
        note.backend = Some(state.backend);
        note.accel = state.accel;
        note.guests.clone_from(&state.guests);
        note.server_vcpus = server_vcpus(&state);
        note.server_cpus_shared = state.backend == vm::Backend::Netns;
        note.leftovers = leftovers(&ep);
        let sc = Scenario::builtin(s)?;
        let run_s = spec.run_seconds(&sc, note.ports.as_deref());
        let planned =
            match faults::plan(&spec.faults_of(&sc), topology, &state, &cfg.runtime, run_s) {
                Ok(p) => p,
                Err(e) => {
                    outcomes.push((s, Err(e.context(format!("{s}: faults")))));
                    break;
                }
            };
        let injector = faults::Injector::new(cfg, topology, planned);
        let outcome = one(spec, s, &ep, &results, &note, injector);
        // A scenario that failed its thresholds, or in which nothing succeeded, does not stop
        // the others; Ctrl-C, a dead agent or a timeout does.
        let go_on = matches!(&outcome, Ok(o) if matches!(o.code, 0 | EXIT_THRESHOLDS | EXIT_RUN_ERROR) && o.finished);
        outcomes.push((s, outcome));
        if !go_on {
            break;
        }
    }
    if scenarios.len() > 1 {
        print_suite(&outcomes, scenarios.len());
    }
    if started && !spec.keep {
        for line in vm::down(cfg)? {
            println!("run: vm down: {line}");
        }
    }
    suite_code(outcomes)
}

/// Forwards the Agent VM's dashboard to `listener` until dropped, and says where to look.
fn forward_dashboard(
    listener: std::net::TcpListener,
    ep: &Endpoints,
) -> anyhow::Result<crate::dashboard::Forwarder> {
    let agent = ep.dashboard.context(
        "--dashboard: the topology gives the agent VM no `dashboard` service to forward",
    )?;
    let f = crate::dashboard::Forwarder::start(listener, agent)
        .context("cannot start forwarding the dashboard")?;
    println!(
        "run: dashboard on {} (the Agent VM's {agent}; reload it for each scenario of a suite)",
        f.url
    );
    Ok(f)
}

/// How one job ended.
#[derive(Debug, Clone)]
struct Outcome {
    /// Its exit code.
    code: u8,
    /// Whether the agent finished it (a verdict), rather than it being cut short here.
    finished: bool,
    /// Why it is not a pass, when it is not.
    problem: Option<String>,
    /// Requests and failures.
    totals: Option<(u64, u64)>,
    /// How long the job took, seconds.
    took: f64,
}

/// The suite's exit code: an error or interruption first, then a run in which nothing
/// succeeded, then failed thresholds; 0 when every scenario passed.
fn suite_code(outcomes: Vec<(&str, anyhow::Result<Outcome>)>) -> anyhow::Result<u8> {
    let mut worst = 0;
    for (_, o) in outcomes {
        let code = o?.code;
        worst = match (worst, code) {
            (EXIT_INTERRUPTED, _) | (_, EXIT_INTERRUPTED) => EXIT_INTERRUPTED,
            (EXIT_RUN_ERROR, _) | (_, EXIT_RUN_ERROR) => EXIT_RUN_ERROR,
            (0, c) => c,
            (w, _) => w,
        };
    }
    Ok(worst)
}

/// One line per scenario of the suite, after the reports.
fn print_suite(outcomes: &[(&str, anyhow::Result<Outcome>)], planned: usize) {
    println!("run: suite of {planned} scenarios:");
    for (name, o) in outcomes {
        match o {
            Ok(o) => {
                let totals = o.totals.map_or(String::new(), |(r, f)| {
                    format!("{r} requests, {f} failed, ")
                });
                println!(
                    "run:   {name:<20} exit {:<3} {totals}{:.0} s{}",
                    o.code,
                    o.took,
                    o.problem
                        .as_ref()
                        .map_or(String::new(), |p| format!(": {p}"))
                );
            }
            Err(e) => println!("run:   {name:<20} error: {e:#}"),
        }
    }
    if outcomes.len() < planned {
        println!("run:   ({} not run)", planned - outcomes.len());
    }
}

/// What the server still holds before a scenario starts: waits up to [`LEFTOVER_WAIT`] for its
/// SSH sessions to reach 0, and says how many remain when they do not (`None`: none, or the
/// server's metrics cannot tell).
fn leftovers(ep: &Endpoints) -> Option<String> {
    let deadline = Instant::now() + LEFTOVER_WAIT;
    loop {
        let held = server_sessions(ep)?;
        if held <= 0.0 {
            return None;
        }
        if Instant::now() >= deadline {
            let line = format!(
                "the MCP server still held {held:.0} SSH session(s) of an earlier run when this \
                 one started (their pool slots count against this run's connections until their \
                 owners disconnect them or the server's session timeout ends them)"
            );
            eprintln!("run: {line}");
            return Some(line);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `mcp_ssh_sessions_active` from the server's /metrics.
fn server_sessions(ep: &Endpoints) -> Option<f64> {
    let r = http::request("GET", ep.mcp, "/metrics", None, Duration::from_secs(5)).ok()?;
    if r.status != 200 {
        return None;
    }
    sshlab_core::results::server_metrics::Sample::parse(&r.body).sum("mcp_ssh_sessions_active", &[])
}

/// The MCP server's real CPUs: what its guest reported (qemu, and the runners of `sshlab vm
/// runners`), the host's cores (netns: the namespaces share them), or `None` (a Nix microvm
/// runner: the topology's vCPUs, which the runner gives it).
fn server_vcpus(state: &vm::State) -> Option<u32> {
    if state.backend == vm::Backend::Netns {
        return std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok());
    }
    state
        .guests
        .iter()
        .find(|g| g.vm == "mcp")
        .and_then(|g| u32::try_from(g.cpus).ok())
        .filter(|n| *n > 0)
}

/// One job: submitted to the agent, watched (with its faults executed on time), concluded
/// from the agent's verdict.
fn one(
    spec: &RunSpec,
    scenario: &str,
    ep: &Endpoints,
    results: &Path,
    note: &LabNote,
    mut injector: faults::Injector,
) -> anyhow::Result<Outcome> {
    let began = Instant::now();
    if let Some(line) = note.line() {
        println!("{line}");
    }
    // The agent's clock, read before the job (and its first fault) starts, then at every poll.
    let mut clock = AgentClock::default();
    for _ in 0..5 {
        clock.sample(ep, Duration::from_millis(500));
    }
    if let Some(o) = clock.offset().filter(|o| o.abs() >= 0.05) {
        println!(
            "run: the agent's clock is {:.0} ms {} this host's; fault times are reported on \
             the agent's",
            o.abs() * 1000.0,
            if o > 0.0 { "ahead of" } else { "behind" }
        );
    }
    let id = submit(spec, scenario, ep, note)?;
    let dir = results.join(&id);
    println!("run: {scenario}: job {id}, results {}", dir.display());
    // Best effort: the results stand without it, the printed lines already said it.
    let written = serde_json::to_vec_pretty(note)
        .map_err(anyhow::Error::from)
        .and_then(|b| write_atomic(&dir.join(LabNote::FILE), &b));
    if let Err(e) = written {
        eprintln!("run: cannot write {}: {e:#}", LabNote::FILE);
    }
    let watched = watch(spec, scenario, ep, &id, &mut injector, &mut clock);
    // Whatever ended the watch, no fault stays in effect.
    let late = injector.revert_all();
    if !late.is_empty() {
        eprintln!(
            "run: {} fault(s) were still in effect when the job ended; reverted (not in the \
             results)",
            late.len()
        );
    }
    let cut_short = |code: u8, why: String| Outcome {
        code,
        finished: false,
        problem: Some(why),
        totals: None,
        took: began.elapsed().as_secs_f64(),
    };
    let (status, cancelled) = match watched {
        Watched::Ended { status, cancelled } => (status, cancelled),
        Watched::CutShort(why) => {
            eprintln!("run: {why}; partial results in {}", dir.display());
            return Ok(cut_short(EXIT_RUN_ERROR, why));
        }
    };
    match std::fs::read_to_string(dir.join("report.txt")) {
        Ok(text) => println!("{text}"),
        Err(_) => eprintln!("run: no report.txt in {}", dir.display()),
    }
    if let Some(line) = note.line() {
        // Again under the report, where a reader looks for the ports it covers.
        println!("{line}");
    }
    let totals = status
        .summary
        .as_ref()
        .map(|s| (s.totals.requests, s.totals.failures));
    let (code, problem) = match (&status.verdict, status.state) {
        _ if cancelled => (EXIT_INTERRUPTED, Some("interrupted".to_owned())),
        // The agent's verdict, so `sshlab run` exits as `sshlab-agent run` does.
        (Some(v), _) => (v.exit_code(), v.problem()),
        (None, JobState::Failed) => (
            EXIT_RUN_ERROR,
            Some(
                status
                    .error
                    .clone()
                    .unwrap_or_else(|| "the run failed".into()),
            ),
        ),
        (None, _) => (EXIT_RUN_ERROR, Some("the agent gave no verdict".into())),
    };
    if let Some(p) = &problem {
        eprintln!("run: {scenario}: {p}");
    }
    Ok(Outcome {
        code,
        finished: !cancelled,
        problem,
        totals,
        took: began.elapsed().as_secs_f64(),
    })
}

/// The HTTP timeout of one control-API request.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Posts the job; its id (checked to be one plain directory name).
fn submit(
    spec: &RunSpec,
    scenario: &str,
    ep: &Endpoints,
    note: &LabNote,
) -> anyhow::Result<String> {
    let job = Job {
        scenario: scenario.to_owned(),
        duration: spec.duration,
        workers: spec.workers,
        rate: spec.rate,
        mcp_url: Some(format!("http://{}/mcp", ep.mcp)),
        target_host: Some(ep.target.to_string()),
        target_port: Some(spec.port.unwrap_or(ep.baseline)),
        thresholds: spec.thresholds.clone(),
        slo: spec.slo.clone(),
        ports: note.ports.clone(),
        server_vcpus: note.server_vcpus,
        server_cpus_shared: note.server_cpus_shared,
        notes: note
            .skipped
            .iter()
            .chain(&note.leftovers)
            .cloned()
            .collect(),
        ..Job::default()
    };
    let body = serde_json::to_string(&job)?;
    let r = http::request("POST", ep.agent, JOBS_PATH, Some(&body), API_TIMEOUT)
        .context("cannot reach the agent's control API")?;
    if r.status != 202 {
        let why = serde_json::from_str::<ApiError>(&r.body).map_or(r.body, |e| e.error);
        bail!("the agent refused the job ({}): {why}", r.status);
    }
    let accepted: JobAccepted =
        serde_json::from_str(&r.body).context("the agent's answer to the job")?;
    let id = accepted.test_id;
    if id.is_empty()
        || id.starts_with('.')
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        let _ = http::request("DELETE", ep.agent, &job_path(&id), None, API_TIMEOUT);
        bail!("the agent named its job {id:?}, which is not a plain directory name");
    }
    Ok(id)
}

/// How long the agent may stay out of reach, once no fault is pending, before `run` gives up.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(30);

/// Adds `changed` to the records the agent has yet to take. A record holds everything known of
/// its fault (its start and its end), and the agent keeps the last it takes for each fault, so
/// a newer record replaces an unsent older one: sent after it, the older would undo the end.
fn queue(
    unsent: &mut Vec<sshlab_core::faults::FaultRecord>,
    changed: Vec<sshlab_core::faults::FaultRecord>,
) {
    for rec in changed {
        unsent.retain(|old| old.index != rec.index);
        unsent.push(rec);
    }
}

/// Hands the agent the fault records in `unsent`, keeping those it did not take (out of reach)
/// for the next try.
/// Their times go on the agent's clock (`clock`), which judges them.
fn deliver(
    ep: &Endpoints,
    id: &str,
    unsent: &mut Vec<sshlab_core::faults::FaultRecord>,
    clock: &AgentClock,
    t: Duration,
) {
    unsent.retain(|rec| {
        let Ok(body) = serde_json::to_string(&clock.to_agent(rec)) else {
            return false;
        };
        match http::request("POST", ep.agent, &faults_path(id), Some(&body), t) {
            Ok(r) if r.status == 204 => false,
            Ok(r) => {
                eprintln!(
                    "run: the agent refused fault {} ({}): {}",
                    rec.spec, r.status, r.body
                );
                false
            }
            Err(_) => true,
        }
    });
}

/// How watching a job ended.
enum Watched {
    /// The agent finished it (`cancelled`: after Ctrl-C here).
    Ended { status: JobStatus, cancelled: bool },
    /// It ended here without the agent's verdict (the agent died, timed out, talked nonsense).
    CutShort(String),
}

/// Polls job `id` until it is no longer running, showing progress, executing `injector`'s
/// faults on time and reporting each to the agent; cancels it on Ctrl-C (reverting the faults
/// first) and on timeout.
fn watch(
    spec: &RunSpec,
    scenario: &str,
    ep: &Endpoints,
    id: &str,
    injector: &mut faults::Injector,
    clock: &mut AgentClock,
) -> Watched {
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let mut cancelled = false;
    let mut progress = Progress::new();
    let mut next_poll = started;
    // Fault records the agent has not taken yet (a partition of the agent's VM cuts the
    // control API too): sent again at every step until it takes them.
    let mut unsent: Vec<sshlab_core::faults::FaultRecord> = Vec::new();
    // The agent may be out of reach while a fault lasts; only this long without an answer,
    // after the faults are over, means it stopped answering.
    let mut unreachable_since: Option<Instant> = None;
    let status = loop {
        // Faults are due to the tenth of a second; the job is polled every half second.
        std::thread::sleep(if injector.pending() {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(100)
        });
        if crate::interrupt::requested() && !cancelled {
            eprintln!(
                "run: interrupted; reverting faults, cancelling job {id} (partial results are kept)"
            );
            queue(&mut unsent, injector.revert_all());
            deliver(ep, id, &mut unsent, clock, API_TIMEOUT);
            let _ = http::request("DELETE", ep.agent, &job_path(id), None, API_TIMEOUT);
            cancelled = true;
        }
        if !cancelled {
            queue(&mut unsent, injector.tick(started.elapsed().as_secs_f64()));
        }
        if Instant::now() < next_poll {
            continue;
        }
        next_poll = Instant::now() + Duration::from_millis(500);
        // Short timeouts while faults are due: an agent out of reach must not hold them up.
        let timeout = if injector.pending() {
            Duration::from_millis(300)
        } else {
            API_TIMEOUT
        };
        deliver(ep, id, &mut unsent, clock, timeout);
        let r = match http::request("GET", ep.agent, &job_path(id), None, timeout) {
            Ok(r) => {
                unreachable_since = None;
                // Only an agent that answers is read: one out of reach (a partition) would
                // hold up the faults that are due by the read's timeout.
                clock.sample(ep, timeout);
                r
            }
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if injector.pending() || since.elapsed() < UNREACHABLE_GRACE {
                    continue;
                }
                return Watched::CutShort(format!("the agent stopped answering ({e:#})"));
            }
        };
        let status = match job_status(&r) {
            Ok(s) => s,
            Err(why) => {
                let _ = http::request("DELETE", ep.agent, &job_path(id), None, API_TIMEOUT);
                return Watched::CutShort(format!(
                    "the agent's status for job {id} ({}) is not one: {why}",
                    r.status
                ));
            }
        };
        if status.state != JobState::Running {
            if let Some(e) = &status.error {
                eprintln!("run: job failed: {e}");
            }
            if !unsent.is_empty() {
                eprintln!(
                    "run: {} fault record(s) never reached the agent (not in the results)",
                    unsent.len()
                );
            }
            break status;
        }
        if let Some(s) = &status.summary {
            progress.show(&format!(
                "run: {scenario}: {} requests so far",
                s.totals.requests
            ));
        }
        if Instant::now() >= deadline {
            let _ = http::request("DELETE", ep.agent, &job_path(id), None, API_TIMEOUT);
            return Watched::CutShort(format!("timed out after {} s", spec.timeout.as_secs()));
        }
    };
    progress.finish();
    Watched::Ended { status, cancelled }
}

/// The progress line: rewritten in place on a terminal; in a log (CI, a test's captured
/// stderr) one line when it changes, at most every [`Progress::LOG_EVERY`].
#[derive(Debug)]
struct Progress {
    tty: bool,
    last: String,
    shown_at: Option<Instant>,
}

impl Progress {
    const LOG_EVERY: Duration = Duration::from_secs(5);

    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            tty: std::io::stderr().is_terminal(),
            last: String::new(),
            shown_at: None,
        }
    }

    fn show(&mut self, line: &str) {
        if line == self.last {
            return;
        }
        if self.tty {
            eprint!("\r{line}");
        } else if self.shown_at.is_none_or(|t| t.elapsed() >= Self::LOG_EVERY) {
            eprintln!("{line}");
            self.shown_at = Some(Instant::now());
        } else {
            return;
        }
        line.clone_into(&mut self.last);
    }

    fn finish(&self) {
        if self.tty && !self.last.is_empty() {
            eprintln!();
        }
    }
}

/// `sshlab metrics`: the server's Prometheus text.
pub fn metrics(topology: &Topology) -> anyhow::Result<String> {
    let ep = Endpoints::new(topology)?;
    let r = http::request("GET", ep.mcp, "/metrics", None, Duration::from_secs(10))?;
    if r.status != 200 {
        bail!("/metrics answered {}", r.status);
    }
    Ok(r.body)
}

/// `sshlab report DIR`: what it rendered and wrote.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// report.txt's text.
    pub text: String,
    /// `note: ...` from the run's `lab.json` (skipped netem ports), if any.
    pub note: Option<String>,
    /// The files written.
    pub written: Vec<PathBuf>,
    /// A regression bound against the baseline was crossed.
    pub regressed: bool,
}

/// Re-renders report.txt, report.html and junit.xml in `dir` from its summary.json, with the
/// same renderers the agent uses, so a summary edited or copied elsewhere gets all three back.
/// With `baseline`, the run is set against that run (kept in its summary.json, shown in every
/// report), and `bounds` are checked.
pub fn report(
    dir: &Path,
    baseline: Option<&Path>,
    bounds: &[sshlab_core::results::compare::Bound],
) -> anyhow::Result<Rendered> {
    use sshlab_core::report::{html, junit, text};
    use sshlab_core::results::compare::Baseline;
    let read = |dir: &Path| -> anyhow::Result<sshlab_core::results::Summary> {
        let path = dir.join("summary.json");
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a summary", path.display()))
    };
    let mut summary = read(dir)?;
    let mut regressed = false;
    if let Some(base) = baseline {
        let b = Baseline::of(&read(base)?, &summary, bounds);
        regressed = !b.passed();
        summary.baseline = Some(b);
        let json = serde_json::to_vec_pretty(&summary)?;
        write_atomic(&dir.join("summary.json"), &json)?;
    }
    let txt = text::render(&summary);
    let mut written = Vec::new();
    for (name, body) in [
        ("report.txt", txt.clone()),
        ("report.html", html::render(&summary)),
        ("junit.xml", junit::render(&summary)),
    ] {
        let p = dir.join(name);
        write_atomic(&p, body.as_bytes())?;
        written.push(p);
    }
    let note = std::fs::read(dir.join(LabNote::FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<LabNote>(&b).ok())
        .and_then(|n| n.skipped.map(|s| format!("note: {}: {s}", n.scenario)));
    Ok(Rendered {
        text: txt,
        note,
        written,
        regressed,
    })
}

/// Writes through a temporary file and a rename, so a reader never sees half a file. The
/// directory may be writable by the agent (a shared results folder): the temporary file is
/// created new (`O_EXCL`, never through a link another party planted), then renamed over.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    if let Err(e) = f.write_all(bytes) {
        // Ours (created above): remove it.
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The agent's answer to `GET /jobs/<id>` as a [`JobStatus`], or why it is not one: a status
/// other than 200 (with the agent's [`ApiError`] message when it sent one), or a body that does
/// not parse (its first 200 characters).
fn job_status(r: &http::Response) -> Result<JobStatus, String> {
    let parsed = (r.status == 200)
        .then(|| serde_json::from_str::<JobStatus>(&r.body))
        .transpose();
    match parsed {
        Ok(Some(s)) => Ok(s),
        Err(e) => Err(format!(
            "{e}: {}",
            r.body.chars().take(200).collect::<String>()
        )),
        Ok(None) => Err(serde_json::from_str::<ApiError>(&r.body)
            .map_or_else(|_| r.body.chars().take(200).collect(), |e| e.error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> http::Response {
        http::Response {
            status,
            body: body.to_owned(),
        }
    }

    #[test]
    fn only_a_200_with_a_status_body_is_a_job_status() {
        let ok = job_status(&resp(200, r#"{"test_id":"t1","state":"running"}"#)).unwrap();
        assert_eq!((ok.test_id.as_str(), ok.state), ("t1", JobState::Running));
        // The agent forgot the job (restarted): its own message, not a parse error.
        let e = job_status(&resp(404, r#"{"error":"no job t1"}"#)).unwrap_err();
        assert_eq!(e, "no job t1");
        // A proxy's page or a truncated body: shown, cut at 200 characters.
        let e = job_status(&resp(502, &"x".repeat(500))).unwrap_err();
        assert_eq!(e.len(), 200);
        let e = job_status(&resp(200, "{\"test_id\":")).unwrap_err();
        assert!(e.contains("EOF") && e.ends_with("{\"test_id\":"), "{e}");
        // A summary of another schema does not make the status unreadable.
        let other = job_status(&resp(
            200,
            r#"{"test_id":"t1","state":"done","thresholds_passed":true,"summary":{"v":9}}"#,
        ))
        .unwrap();
        assert!(other.summary.is_none() && other.thresholds_passed == Some(true));
    }

    #[test]
    fn lab_json_is_never_written_through_a_planted_link() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let target = d.path().join(LabNote::FILE);
        let tmp = d
            .path()
            .join(format!(".{}.{}.tmp", LabNote::FILE, std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        assert!(write_atomic(&target, b"{}").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        std::fs::remove_file(&tmp).unwrap();
        write_atomic(&target, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}");
    }

    fn unshaped() -> LabNetem {
        LabNetem::off(
            "sshtap2",
            (2322..=2328).collect(),
            "kernel module sch_netem missing",
        )
    }

    fn topology() -> Topology {
        Topology::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../vms/topology.toml"
        ))
        .expect("the repository's topology")
    }

    /// The baseline port, read from the topology as `run` does.
    fn baseline() -> u16 {
        let b = Endpoints::new(&topology()).expect("endpoints").baseline;
        assert_eq!(b, 2222, "the standard sshd's port in vms/topology.toml");
        b
    }

    /// `sshlab run capacity` with `--port` and `--slo` as given.
    fn capacity_spec(port: Option<u16>, slo: &[&str]) -> RunSpec {
        RunSpec {
            scenario: "capacity".into(),
            duration: None,
            workers: None,
            rate: None,
            thresholds: Vec::new(),
            port,
            slo: slo.iter().map(|s| (*s).to_owned()).collect(),
            keep: false,
            timeout: Duration::from_secs(1),
            faults: Vec::new(),
        }
    }

    #[test]
    fn port_is_checked_against_the_lab_and_the_scenarios() {
        let spec = |port| capacity_spec(port, &[]);
        let t = topology();
        let on = |names: &[&str]| -> Vec<Scenario> {
            names
                .iter()
                .map(|n| Scenario::builtin(n).unwrap())
                .collect()
        };
        let one = on(&["capacity"]);
        assert!(spec(None).check_port(&t, &on(&["latency_test"])).is_ok());
        // The baseline sshd, alone and behind netem.
        assert!(spec(Some(2222)).check_port(&t, &one).is_ok());
        assert!(spec(Some(2322)).check_port(&t, &one).is_ok());
        let e = spec(Some(2400))
            .check_port(&t, &one)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not one of the lab's target ports (2222, 2322,"),
            "{e}"
        );
        let e = spec(Some(2323))
            .check_port(&t, &one)
            .unwrap_err()
            .to_string();
        assert!(e.contains("key-only) refuses the password login"), "{e}");
        let names = scenarios("full").unwrap();
        let e = spec(Some(2322))
            .check_port(&t, &on(&names))
            .unwrap_err()
            .to_string();
        assert!(e.contains("latency_test chooses its own ports"), "{e}");
        // A netem port is measured only where its profile is applied.
        let e = spec(Some(2322))
            .port_unshaped(&t, &unshaped())
            .expect("refused");
        assert!(
            e.contains(
                "--port 2322: its netem profile is not applied in this lab (kernel module \
                 sch_netem missing)"
            ),
            "{e}"
        );
        let shaped = LabNetem::on("sshtap2", (2322..=2328).collect());
        assert_eq!(spec(Some(2322)).port_unshaped(&t, &shaped), None);
        assert_eq!(spec(Some(2222)).port_unshaped(&t, &unshaped()), None);
        assert_eq!(spec(None).port_unshaped(&t, &unshaped()), None);
    }

    #[test]
    fn slo_is_for_capacity_searches() {
        let spec = |slo: &[&str]| capacity_spec(None, slo);
        let on = |n: &str| vec![Scenario::builtin(n).unwrap()];
        assert!(
            spec(&["p99<1s", "errors<1%"])
                .check_slo(&on("capacity"))
                .is_ok()
        );
        assert!(spec(&[]).check_slo(&on("quick")).is_ok());
        let e = spec(&["p99<1s"])
            .check_slo(&on("quick"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("quick is no capacity search"), "{e}");
    }

    #[test]
    fn latency_test_gets_explicit_ports_and_a_skip_line() {
        let n = LabNote::new("latency_test", &unshaped(), &topology(), baseline());
        assert_eq!(n.ports.as_deref(), Some(&[2222][..]));
        assert_eq!(
            n.line().as_deref(),
            Some(
                "run: latency_test: netem ports 2322..2328 skipped: kernel module sch_netem missing"
            )
        );
        let mut shaped = unshaped();
        shaped.applied = true;
        shaped.reason = None;
        let n = LabNote::new("latency_test", &shaped, &topology(), baseline());
        assert_eq!(
            n.ports.as_deref(),
            Some(&[2222, 2322, 2324, 2325, 2327, 2328][..])
        );
        assert_eq!(
            n.line().as_deref(),
            Some(
                "run: latency_test: 2323 (key-only), 2326 (deny-all) skipped: their sshd refuses \
                 the password login this scenario uses"
            )
        );
    }

    #[test]
    fn other_scenarios_keep_their_own_ports() {
        for s in ["quick", "exhaustion_test", "no_such_scenario"] {
            let n = LabNote::new(s, &unshaped(), &topology(), baseline());
            assert!(n.ports.is_none() && n.line().is_none(), "{s}");
        }
    }

    #[test]
    fn full_runs_the_guides_five_in_order_and_unknown_names_are_refused() {
        // The order itself is sshlab-core's (its scenario tests pin it).
        assert_eq!(scenarios("full").expect("full"), scenario::FULL);
        assert_eq!(scenarios("quick").expect("quick"), ["quick"]);
        let err = scenarios("latency")
            .expect_err("not a built-in")
            .to_string();
        assert!(err.contains("unknown scenario `latency`"), "{err}");
    }

    #[test]
    fn report_writes_all_three_and_the_note() {
        let dir = std::env::temp_dir().join(format!("sshlab-report-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(report(&dir, None, &[]).is_err(), "no summary.json");
        let summary = sshlab_core::results::Summary {
            schema_version: sshlab_core::results::SCHEMA_VERSION,
            run: sshlab_core::results::RunInfo {
                test_id: "t".into(),
                scenario: "latency_test".into(),
                complete: true,
                ..Default::default()
            },
            ..Default::default()
        };
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_vec(&summary).unwrap(),
        )
        .unwrap();
        let note = LabNote::new("latency_test", &unshaped(), &topology(), baseline());
        std::fs::write(dir.join(LabNote::FILE), serde_json::to_vec(&note).unwrap()).unwrap();
        let r = report(&dir, None, &[]).unwrap();
        assert_eq!(r.written.len(), 3);
        for f in ["report.txt", "report.html", "junit.xml"] {
            assert!(std::fs::metadata(dir.join(f)).unwrap().len() > 0, "{f}");
        }
        assert!(
            std::fs::read_to_string(dir.join("report.html"))
                .unwrap()
                .contains("<html")
        );
        assert!(
            std::fs::read_to_string(dir.join("junit.xml"))
                .unwrap()
                .contains("<testsuite")
        );
        assert_eq!(
            r.note.as_deref(),
            Some(
                "note: latency_test: netem ports 2322..2328 skipped: kernel module sch_netem missing"
            )
        );
        // Against a baseline (itself here): the comparison is kept in summary.json and shown;
        // an unchanged run holds a +0% bound; a bound that does not parse is an error.
        let r = report(&dir, Some(&dir), &["rps=+0%".parse().unwrap()]).unwrap();
        assert!(!r.regressed, "an unchanged run holds +0%");
        assert!(r.text.contains("AGAINST BASELINE t"), "{}", r.text);
        assert!(
            std::fs::read_to_string(dir.join("summary.json"))
                .unwrap()
                .contains("\"baseline\"")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_newer_fault_record_replaces_an_unsent_older_one() {
        let rec = |index: usize, ended: Option<f64>| sshlab_core::faults::FaultRecord {
            started_at: Some(1.0),
            ended_at: ended,
            ..sshlab_core::faults::FaultRecord::planned(
                index,
                "sshd-kill:2222@1s+1s".parse().unwrap(),
            )
        };
        // The start of fault 0 not taken (the agent out of reach), then its end and fault 1's
        // start: only the end goes for fault 0, so a late start cannot undo it.
        let mut unsent = Vec::new();
        queue(&mut unsent, vec![rec(0, None)]);
        queue(&mut unsent, vec![rec(0, Some(2.0)), rec(1, None)]);
        let got: Vec<(usize, Option<f64>)> = unsent.iter().map(|r| (r.index, r.ended_at)).collect();
        assert_eq!(got, vec![(0, Some(2.0)), (1, None)]);
    }
}
