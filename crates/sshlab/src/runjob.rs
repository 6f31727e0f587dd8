//! `sshlab run <scenario> [duration] [workers]`: boots the lab if it is not up (and stops what
//! it started unless `--keep`), POSTs the job to the agent's control API, polls it with
//! progress, then prints the agent's report.txt from the results directory and exits with the
//! agent's threshold code (0 passed, 99 failed). Agent death or timeout: says so, keeps the
//! partial results, exits 1. Ctrl-C: DELETEs the job, waits briefly for the partial results,
//! tears down what it started, exits 130.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sshlab_core::Topology;

use crate::http;
use crate::vm::{self, Endpoints, VmConfig};

/// Exit code when thresholds failed (the agent's).
pub const EXIT_THRESHOLDS: u8 = 99;
/// Exit code after Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Scenario name (`quick`, `full` = the five guide scenarios in order, or one name).
    pub scenario: String,
    /// Seconds per phase.
    pub duration: Option<u64>,
    /// Workers.
    pub workers: Option<usize>,
    /// Threshold expressions.
    pub thresholds: Vec<String>,
    /// Keep the lab up when this run booted it.
    pub keep: bool,
    /// Overall timeout per job.
    pub timeout: Duration,
}

/// The guide's five scenarios, in the order `full` runs them.
pub const FULL: [&str; 5] = [
    "connection_rate",
    "command_throughput",
    "sustained_load",
    "exhaustion_test",
    "latency_test",
];

/// Runs it; returns the process exit code.
pub fn run(
    spec: &RunSpec,
    cfg: &VmConfig,
    topology: &Topology,
    outer: Option<&str>,
) -> anyhow::Result<u8> {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    let ep = Endpoints::new(topology)?;
    let started = if vm::State::load(cfg)?.is_none() {
        println!("run: lab {} is not up; booting it", cfg.lab);
        vm::up(cfg, topology, outer)?;
        true
    } else {
        false
    };
    let results = vm::State::load(cfg)?.map_or_else(|| cfg.results.clone(), |s| s.results);
    let scenarios: Vec<String> = if spec.scenario == "full" {
        FULL.iter().map(|s| (*s).to_owned()).collect()
    } else {
        vec![spec.scenario.clone()]
    };
    let mut code = Ok(0);
    for s in &scenarios {
        code = one(spec, s, &ep, &results);
        match &code {
            Ok(0) => {}
            _ => break,
        }
    }
    if started && !spec.keep {
        for line in vm::down(cfg)? {
            println!("run: vm down: {line}");
        }
    }
    code
}

fn one(
    spec: &RunSpec,
    scenario: &str,
    ep: &Endpoints,
    results: &std::path::Path,
) -> anyhow::Result<u8> {
    let target_port = 2222;
    let job = json!({
        "scenario": scenario,
        "duration": spec.duration,
        "workers": spec.workers,
        "mcp_url": format!("http://{}/mcp", ep.mcp),
        "target_host": ep.target.to_string(),
        "target_port": target_port,
        "thresholds": spec.thresholds,
    });
    let t = Duration::from_secs(10);
    let r = http::request("POST", ep.agent, "/jobs", Some(&job.to_string()), t)
        .context("cannot reach the agent's control API")?;
    if r.status != 202 {
        bail!("the agent refused the job ({}): {}", r.status, r.body);
    }
    let v: Value = serde_json::from_str(&r.body)?;
    let id = v["test_id"].as_str().context("no test_id")?.to_owned();
    let dir = results.join(&id);
    println!("run: {scenario}: job {id}, results {}", dir.display());
    let deadline = Instant::now() + spec.timeout;
    let mut cancelled = false;
    let (state, passed) = loop {
        std::thread::sleep(Duration::from_millis(500));
        if INTERRUPTED.load(Ordering::SeqCst) && !cancelled {
            eprintln!("run: interrupted; cancelling job {id} (partial results are kept)");
            let _ = http::request("DELETE", ep.agent, &format!("/jobs/{id}"), None, t);
            cancelled = true;
        }
        let r = match http::request("GET", ep.agent, &format!("/jobs/{id}"), None, t) {
            Ok(r) => r,
            Err(e) => {
                eprintln!(
                    "run: the agent stopped answering ({e:#}); partial results in {}",
                    dir.display()
                );
                return Ok(1);
            }
        };
        let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        let state = v["state"].as_str().unwrap_or("?").to_owned();
        if state != "running" {
            if state == "failed" {
                eprintln!("run: job failed: {}", v["error"]);
            }
            break (state, v["thresholds_passed"].as_bool());
        }
        let ops = v["summary"]["totals"]["requests"]
            .as_u64()
            .or_else(|| v["summary"]["totals"]["ops"].as_u64());
        if let Some(n) = ops {
            eprint!("\rrun: {scenario}: {n} requests so far");
        }
        if Instant::now() >= deadline {
            eprintln!(
                "\nrun: timed out after {} s; cancelling, partial results in {}",
                spec.timeout.as_secs(),
                dir.display()
            );
            let _ = http::request("DELETE", ep.agent, &format!("/jobs/{id}"), None, t);
            return Ok(1);
        }
    };
    eprintln!();
    match std::fs::read_to_string(dir.join("report.txt")) {
        Ok(text) => println!("{text}"),
        Err(_) => eprintln!("run: no report.txt in {}", dir.display()),
    }
    Ok(match (state.as_str(), passed) {
        _ if cancelled => EXIT_INTERRUPTED,
        ("done", Some(true)) => 0,
        ("done", Some(false)) => EXIT_THRESHOLDS,
        _ => 1,
    })
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
