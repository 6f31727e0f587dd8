//! One run, end to end: results dir, server metrics before/during/after, the engine feeding
//! the collector, then the summary, thresholds and every report file. Used by `run` on the
//! command line and by `serve` for the host's jobs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sshlab_core::results::{RunInfo, Summary};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::collector::{self, CollectorConfig, Progress};
use crate::engine::shards::Shards;
use crate::engine::{self, Clock, RunSettings};
use crate::mcp::McpError;
use crate::results::{self, ResultsError};
use crate::scenario::Scenario;
use crate::scenario::segment::Segment;
use crate::scrape::Scraper;
use crate::thresholds::Threshold;
use sshlab_core::results::server_metrics;

/// How often the server's /metrics is scraped during a run.
const SCRAPE_EVERY: Duration = Duration::from_secs(5);

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The scenario.
    pub scenario: Scenario,
    /// Endpoint, target, overrides.
    pub settings: RunSettings,
    /// Where `<test_id>/` is created.
    pub results_root: PathBuf,
    /// Thresholds (validated), on top of the scenario's own.
    pub thresholds: Vec<Threshold>,
    /// Progress display.
    pub progress: Progress,
    /// The server's /metrics (None: derived from the MCP URL; scrape failures are reported,
    /// never fatal).
    pub metrics_url: Option<String>,
    /// vCPUs of the server's machine, for CPU utilisation, and where that number came from;
    /// `None` when unknown (a server that is not the lab's, without `--server-vcpus`).
    pub server_vcpus: Option<(u32, String)>,
    /// Whether those are host cores the server shares with the agent and the target.
    pub server_cpus_shared: bool,
    /// A results dir already created for this run (`serve` names the job before it starts).
    pub dir: Option<(String, PathBuf)>,
    /// The test's id, shared by the agents of a split test (default: made from the time).
    pub test_id: Option<String>,
    /// Unix time to start at (the agents of a split test start together).
    pub start_at: Option<f64>,
}

/// Why a run could not produce results at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The results dir could not be created or written.
    #[error(transparent)]
    Results(#[from] ResultsError),
    /// No worker could talk to the MCP server.
    #[error("cannot use the MCP server at {url}: {source}")]
    Server {
        /// Endpoint.
        url: String,
        /// Cause.
        #[source]
        source: McpError,
    },
    /// The workers' connections and record files would not fit under the open-files limit.
    #[error(transparent)]
    OpenFiles(#[from] crate::open_files::TooFew),
    /// The worker threads could not be started.
    #[error("cannot start the worker threads: {0}")]
    Threads(#[source] std::io::Error),
    /// A scenario threshold does not parse.
    #[error("scenario threshold `{expr}`: {message}")]
    Threshold {
        /// The expression.
        expr: String,
        /// Why.
        message: String,
    },
}

/// The finished run.
#[derive(Debug)]
pub struct Finished {
    /// `<results_root>/<test_id>`.
    pub dir: PathBuf,
    /// The summary as written.
    pub summary: Summary,
}

impl Finished {
    /// Whether every threshold held.
    pub fn thresholds_passed(&self) -> bool {
        self.summary.thresholds.iter().all(|t| t.passed)
    }
}

/// The /metrics URL next to an MCP endpoint (`http://h:p/mcp` → `http://h:p/metrics`).
pub fn metrics_url_for(mcp_url: &str) -> String {
    let base = mcp_url
        .split_once("://")
        .map(|(scheme, rest)| {
            let host = rest.split('/').next().unwrap_or(rest);
            format!("{scheme}://{host}")
        })
        .unwrap_or_else(|| mcp_url.trim_end_matches('/').to_owned());
    format!("{base}/metrics")
}

/// Run `req` until done or `cancel`; results are written whatever happens.
pub async fn run(req: RunRequest, cancel: CancellationToken) -> Result<Finished, RunError> {
    let mut thresholds = req.thresholds.clone();
    for expr in &req.scenario.thresholds {
        let t: Threshold = expr
            .parse()
            .and_then(|t: Threshold| t.validate().map(|()| t))
            .map_err(|e: crate::thresholds::ThresholdError| RunError::Threshold {
                expr: expr.clone(),
                message: e.to_string(),
            })?;
        thresholds.push(t);
    }
    if let Some(at) = req.start_at {
        let wait = at
            - SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
        if let Ok(wait) = Duration::try_from_secs_f64(wait) {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => {}
            }
        }
    }
    let phases = engine::plan(&req.scenario, &req.settings);
    let workers = phases.iter().map(|p| p.workers).max().unwrap_or(0);
    // A connection and a record file per worker, and each shard runtime's epoll, waker and
    // signal descriptors, before anything is created.
    let shard_count = Shards::count(req.settings.threads, workers);
    crate::open_files::ensure(2 * workers as u64 + 3 * shard_count as u64, || {
        format!("{workers} workers on {shard_count} threads")
    })?;
    let clock = Clock::start();
    let segment = req.settings.segment;
    let split = segment != Segment::WHOLE;
    let (dir_name, dir) = match req.dir.clone() {
        Some(d) => d,
        None => {
            let id = req
                .test_id
                .clone()
                .unwrap_or_else(|| results::test_id(clock.unix_start()));
            let name = if split {
                format!("{id}-s{}of{}", segment.index, segment.count)
            } else {
                id
            };
            results::create_dir(&req.results_root, &name)?
        }
    };
    let test_id = req.test_id.clone().unwrap_or(dir_name);
    let gaps = if req.settings.timetable {
        engine::PHASE_GAP * u32::try_from(phases.len()).unwrap_or(u32::MAX)
    } else {
        Duration::ZERO
    };
    let planned: Duration = phases.iter().map(|p| p.duration).sum::<Duration>() + gaps;
    let run_info = RunInfo {
        test_id,
        scenario: req.scenario.name.clone(),
        model: if phases.iter().any(|p| p.rate.is_some()) {
            "open"
        } else {
            "closed"
        }
        .into(),
        workers,
        // This agent's share: a segment makes every N-th arrival of the whole test's rate.
        target_rate: req
            .settings
            .rate
            .or(req.scenario.rate)
            .map(|r| r / f64::from(segment.count)),
        mcp_url: req.settings.mcp_url.clone(),
        protocol: String::new(),
        // With --start-at, exactly that: the split test's agents share their interval bounds.
        started_at: req
            .start_at
            .filter(|at| (clock.unix_start() - at).abs() < 1.0)
            .unwrap_or(clock.unix_start()),
        ended_at: clock.unix_start(),
        complete: false,
        incomplete_reason: Some("still running".into()),
        late_starts: 0,
        segment: split.then_some(segment),
        merged_from: Vec::new(),
    };
    // Fail fast, before anything is measured, when the server can't be reached.
    let probe = engine::connect(&req.settings, 0)
        .await
        .map_err(|source| RunError::Server {
            url: req.settings.mcp_url.clone(),
            source,
        })?;
    let protocol = probe.protocol_version().to_owned();
    let _ = probe.close().await;
    let shards = Shards::start(shard_count).map_err(RunError::Threads)?;

    let scraper = Scraper::new(
        req.metrics_url
            .clone()
            .unwrap_or_else(|| metrics_url_for(&req.settings.mcp_url)),
        Duration::from_secs(5),
    )
    .ok();
    let scrape_stop = CancellationToken::new();
    let scrape_task = {
        let scraper = scraper.clone();
        let stop = scrape_stop.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut samples = Vec::new();
            let mut last_error = None;
            let Some(scraper) = scraper else {
                return (
                    samples,
                    Some("cannot build an HTTP client for /metrics".to_owned()),
                );
            };
            let mut tick = tokio::time::interval(SCRAPE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => break,
                }
                match scraper.scrape().await {
                    Ok(s) => samples.push((started.elapsed().as_secs_f64(), s)),
                    Err(e) => last_error = Some(e.to_string()),
                }
            }
            // The final sample, after the load.
            match scraper.scrape().await {
                Ok(s) => samples.push((started.elapsed().as_secs_f64(), s)),
                Err(e) => last_error = Some(e.to_string()),
            }
            (samples, last_error)
        })
    };

    // Bounded and small: a collector that falls behind slows the workers instead of letting
    // records pile up in memory (the channel is the only unbounded-looking buffer).
    let (tx, rx) = mpsc::channel(4096);
    let mut info = run_info.clone();
    info.protocol = protocol.clone();
    let collector = tokio::spawn(collector::collect(
        rx,
        CollectorConfig {
            dir: dir.clone(),
            run: info,
            planned,
            progress: req.progress,
        },
    ));
    let scenario = Arc::new(req.scenario.clone());
    let outcome = engine::run(
        scenario,
        &req.settings,
        &shards,
        &phases,
        clock,
        tx,
        cancel.clone(),
    )
    .await;
    drop(shards);
    let agg = match collector.await {
        Ok(Ok(agg)) => agg,
        Ok(Err(e)) => {
            return Err(ResultsError::Io {
                path: dir.clone(),
                source: e,
            }
            .into());
        }
        Err(e) => {
            return Err(ResultsError::Io {
                path: dir.clone(),
                source: std::io::Error::other(e.to_string()),
            }
            .into());
        }
    };
    scrape_stop.cancel();
    let (samples, scrape_error) = scrape_task.await.unwrap_or_default();

    let mut run_info = run_info;
    run_info.protocol = protocol;
    run_info.ended_at = clock.wall(tokio::time::Instant::now());
    let (complete, reason) = match &outcome {
        Ok(o) if o.cancelled => (false, Some("interrupted".to_owned())),
        Ok(_) => (true, None),
        Err(e) => (false, Some(format!("run failed: {e}"))),
    };
    run_info.complete = complete;
    run_info.incomplete_reason = reason;
    run_info.late_starts = outcome.as_ref().map_or(0, |o| o.late_starts);
    let mut summary = Summary::build(run_info, &agg);
    let vcpus = req.server_vcpus.as_ref().map_or(0, |(n, _)| *n);
    let mut server = server_metrics::build_report(&samples, vcpus);
    server.vcpus_source = req.server_vcpus.as_ref().map(|(_, from)| from.clone());
    server.vcpus_shared = req.server_cpus_shared;
    if samples.is_empty() {
        server.error = Some(scrape_error.unwrap_or_else(|| "no samples".into()));
    }
    summary.server = Some(server);
    summary.thresholds = thresholds.iter().map(|t| t.evaluate(&summary)).collect();
    results::write_all(&dir, &summary)?;
    Ok(Finished { dir, summary })
}

#[cfg(test)]
mod tests {
    use super::metrics_url_for;

    #[test]
    fn metrics_url_is_next_to_the_endpoint() {
        assert_eq!(
            metrics_url_for("http://10.178.0.10:3000/mcp"),
            "http://10.178.0.10:3000/metrics"
        );
        assert_eq!(metrics_url_for("http://h:1/"), "http://h:1/metrics");
    }
}
