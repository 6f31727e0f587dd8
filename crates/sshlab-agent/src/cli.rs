//! The command line: `run`, `list`, `report`, `serve`. Flags only describe what the user
//! typed; [`RunArgs::request`] resolves them (scenario, lab defaults, thresholds) into a
//! [`RunRequest`], failing before anything runs when something is wrong.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sshlab_core::{Lab, NetemProfiles, Topology};
use tokio_util::sync::CancellationToken;

use crate::collector::Progress;
use crate::engine::RunSettings;
use crate::mcp::{InputResponses, Protocol};
use crate::run::{self, RunRequest};
use crate::scenario::{self, Scenario};
use crate::thresholds::Threshold;

/// Exit code when every threshold held.
pub const EXIT_OK: u8 = 0;
/// A run error: the server unreachable, results not writable, or a run in which no operation
/// succeeded (whatever the thresholds say: a run that measured only failures is no pass).
pub const EXIT_RUN_ERROR: u8 = 1;
/// Bad flags, scenario or threshold: nothing ran.
pub const EXIT_USAGE: u8 = 2;
/// Thresholds failed.
pub const EXIT_THRESHOLDS: u8 = 99;
/// Interrupted (Ctrl-C / SIGTERM); partial results were written.
pub const EXIT_INTERRUPTED: u8 = 130;

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
    /// Re-render reports from a results directory's saved records.
    Report {
        /// `<results-dir>/<test_id>`.
        dir: PathBuf,
    },
    /// The Agent VM's control API for the host's jobs.
    Serve(crate::serve::ServeArgs),
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
    /// Closed model: calls per worker, then the worker stops (the duration still bounds it).
    #[arg(long, conflicts_with = "rate")]
    pub iterations: Option<u64>,
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
                bearer: self.bearer.clone(),
                netem_ports: netem
                    .map(|n| n.profiles.iter().map(|p| p.port).collect())
                    .unwrap_or_default(),
                iterations,
                inputs,
            },
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
        })
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

/// Why a finished run is a run error although it ran: no operation succeeded. Names the most
/// frequent failure, so the terminal says what the server answered.
pub fn nothing_succeeded(s: &sshlab_core::results::Summary) -> Option<String> {
    if s.totals.successes > 0 {
        return None;
    }
    if s.totals.requests == 0 {
        return Some("no operation completed in the run's duration".into());
    }
    let top = s.error_messages.first().map_or(String::new(), |m| {
        format!("; most frequent ({}x, {}): {}", m.count, m.kind, m.example)
    });
    Some(format!(
        "no operation succeeded ({} failed){top}",
        s.totals.failures
    ))
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
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    let mut code = EXIT_OK;
    for req in requests {
        let name = req.scenario.name.clone();
        match run::run(req, cancel.clone()).await {
            Ok(done) => {
                print!("{}", sshlab_core::report::text::render(&done.summary));
                println!("results: {}", done.dir.display());
                if !done.summary.run.complete {
                    code = EXIT_INTERRUPTED;
                    break;
                }
                if let Some(why) = nothing_succeeded(&done.summary) {
                    eprintln!("sshlab-agent: {name}: {why}");
                    code = EXIT_RUN_ERROR;
                } else if !done.thresholds_passed() && code == EXIT_OK {
                    code = EXIT_THRESHOLDS;
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

fn report(dir: PathBuf) -> ExitCode {
    match crate::results::rebuild(&dir) {
        Ok(r) => {
            if r.skipped_lines > 0 {
                eprintln!(
                    "sshlab-agent: skipped {} unreadable line(s) (e.g. cut short by a crash)",
                    r.skipped_lines
                );
            }
            if let Err(e) = crate::results::write_all(&dir, &r.summary) {
                eprintln!("sshlab-agent: {e}");
                return ExitCode::from(EXIT_RUN_ERROR);
            }
            print!("{}", sshlab_core::report::text::render(&r.summary));
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            eprintln!("sshlab-agent: {e}");
            ExitCode::from(EXIT_RUN_ERROR)
        }
    }
}

/// Run the parsed command line.
pub async fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(args) => run_cmd(*args).await,
        Command::List => list(),
        Command::Report { dir } => report(dir),
        Command::Serve(args) => crate::serve::main(args).await,
    }
}
