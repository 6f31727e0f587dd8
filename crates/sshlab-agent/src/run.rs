//! One run, end to end: results dir, server metrics before/during/after, the engine feeding
//! the collector, then the summary, thresholds and every report file. Used by `run` on the
//! command line and by `serve` for the host's jobs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sshlab_core::faults::FaultRecord;
use sshlab_core::results::{RunInfo, ServerReport, Summary};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::collector::{self, CollectorConfig, Progress};
use crate::dashboard::Live;
use crate::dashboard::live::{RunView, current_phase};
use crate::engine::in_flight::InFlight;
use crate::engine::shards::Shards;
use crate::engine::{self, Clock, RunSettings, Sinks};
use crate::mcp::McpError;
use crate::results::{self, ResultsError};
use crate::scenario::Scenario;
use crate::scenario::segment::Segment;
use crate::scrape::{OnScrape, ScrapeLoop, Scraped, Scraper};
use crate::secrets::Secrets;
use crate::thresholds::Threshold;
use sshlab_core::results::server_metrics;

/// How often the server's /metrics is scraped during a run.
const SCRAPE_EVERY: Duration = Duration::from_secs(5);
/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// What the caller (the host, for a job) knows about the run that the records will not
    /// say: kept in the summary's `notes`.
    pub notes: Vec<String>,
    /// Faults the host executes during the run, as it reports them (`serve`'s job API).
    pub faults: FaultLog,
    /// Unix time to start at (the agents of a split test start together).
    pub start_at: Option<f64>,
    /// The live dashboard to show the run on.
    pub live: Option<Arc<Live>>,
}

/// The faults of a run as the host reports them while it runs.
pub type FaultLog = Arc<std::sync::Mutex<Vec<FaultRecord>>>;

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
    /// A split capacity search's results dir exists already (its peers would not find it).
    #[error(
        "{0}: exists; the agents of a split capacity search find each other's step files by \
         test id, so each search needs a --test-id of its own"
    )]
    SplitDirTaken(PathBuf),
    /// An agent of a split capacity search started after `--start-at`.
    #[error(
        "started {0:.1} s after --start-at: an agent of a split capacity search must start \
         with the others (its steps would not line up); start every agent before that time"
    )]
    LateStart(f64),
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

/// Run `req` until done or `cancel`; results are written whatever happens. A live dashboard
/// shows the run and then its report (or why it could not run).
pub async fn run(req: RunRequest, cancel: CancellationToken) -> Result<Finished, RunError> {
    let live = req.live.clone();
    let done = run_inner(req, cancel).await;
    if let Some(live) = live {
        match &done {
            Ok(f) => live.finish(&f.summary),
            Err(e) => live.fail(format!("{e:#}")),
        }
    }
    done
}

async fn run_inner(req: RunRequest, cancel: CancellationToken) -> Result<Finished, RunError> {
    let thresholds = thresholds(&req)?;
    let secrets = Secrets::of(&req.settings, &req.scenario);
    if let Some(at) = req.start_at {
        wait_until(at, &cancel).await;
        let late = unix_now() - at;
        if req.settings.capacity.is_some() && req.settings.segment != Segment::WHOLE && late > 1.0 {
            // Its warm-up and first step would not line up with the other agents'.
            return Err(RunError::LateStart(late));
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
    let (dir_name, dir) = results_dir(&req, &clock)?;
    let mut run_info = run_info(
        &req,
        &phases,
        req.test_id.clone().unwrap_or(dir_name),
        &clock,
    );
    run_info.mcp_url = secrets.mask_url(&run_info.mcp_url);
    // Fail fast, before anything is measured, when the server can't be reached.
    let probe = engine::connect(&req.settings, 0)
        .await
        .map_err(|source| RunError::Server {
            url: req.settings.mcp_url.clone(),
            source,
        })?;
    let protocol = probe.protocol_version().to_owned();
    let _ = probe.close().await;
    let in_flight = InFlight::new(shard_count);
    // A capacity search's steps so far, for the live page.
    let steps_so_far = (req.live.is_some() && req.settings.capacity.is_some())
        .then(engine::capacity::SoFar::default);
    if let Some(live) = &req.live {
        let mut info = run_info.clone();
        info.protocol.clone_from(&protocol);
        live.begin(RunView {
            info,
            planned: planned(&req, &phases),
            thresholds: thresholds.clone(),
            notes: req.notes.clone(),
            cancel: cancel.clone(),
            in_flight: in_flight.clone(),
            capacity: steps_so_far.clone(),
        });
    }
    let shards = Shards::start(shard_count).map_err(RunError::Threads)?;

    let metrics_url = req
        .metrics_url
        .clone()
        .unwrap_or_else(|| metrics_url_for(&req.settings.mcp_url));
    let cpus = (req.server_vcpus.clone(), req.server_cpus_shared);
    let on_scrape = req.live.clone().map(|live| {
        let (cpus, secrets) = (cpus.clone(), secrets.clone());
        Box::new(move |sc: &Scraped| {
            live.set_server(server_report(&cpus, sc, &secrets), current_phase(sc));
        }) as OnScrape
    });
    let scraping = ScrapeLoop::start(
        Scraper::new(metrics_url, SCRAPE_TIMEOUT),
        SCRAPE_EVERY,
        on_scrape,
    );
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
            planned: planned(&req, &phases),
            progress: req.progress,
            live: req.live.clone(),
        },
    ));
    let sinks = Sinks {
        records: tx,
        marks: scraping.marks(),
        in_flight,
        capacity: steps_so_far,
        step_files: req.settings.capacity.as_ref().map(|_| {
            engine::capacity::exchange::StepFiles::new(
                &dir,
                // The same for every agent of a split search (it needs --start-at).
                req.start_at.unwrap_or(run_info.started_at),
                peer_dirs(&req, &run_info.test_id),
            )
        }),
    };
    let scenario = Arc::new(req.scenario.clone());
    let outcome = engine::run(
        scenario,
        &req.settings,
        &shards,
        &phases,
        clock,
        sinks,
        cancel.clone(),
    )
    .await;
    drop(shards);
    let io = |source| ResultsError::Io {
        path: dir.clone(),
        source,
    };
    let agg = match collector.await {
        Ok(Ok(agg)) => agg,
        Ok(Err(e)) => return Err(io(e).into()),
        Err(e) => return Err(io(std::io::Error::other(e.to_string())).into()),
    };
    let scraped = scraping.finish().await;

    run_info.protocol = protocol;
    run_info.ended_at = clock.wall(tokio::time::Instant::now());
    finish_run_info(&mut run_info, &outcome);
    let mut summary = Summary::build(run_info, &agg);
    summary.server = Some(server_report(&cpus, &scraped, &secrets));
    summary.capacity = outcome.as_ref().ok().and_then(|o| o.capacity.clone());
    if let (Some(c), Some(sv)) = (summary.capacity.as_mut(), summary.server.as_ref()) {
        c.fill_server_cpu(sv);
    }
    summary.notes.clone_from(&req.notes);
    summary.faults = faults(&req.faults);
    results::analyse_faults(&dir, &mut summary.faults, summary.run.ended_at)?;
    summary.thresholds = thresholds.iter().map(|t| t.evaluate(&summary)).collect();
    results::write_all(&dir, &summary)?;
    Ok(Finished { dir, summary })
}

/// The faults reported so far, by their index.
fn faults(log: &FaultLog) -> Vec<FaultRecord> {
    let mut v = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    v.sort_by_key(|f| f.index);
    v
}

/// The request's thresholds and the scenario's own, parsed.
fn thresholds(req: &RunRequest) -> Result<Vec<Threshold>, RunError> {
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
    Ok(thresholds)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Sleeps until unix time `at` (a split test's agents start together), or until cancelled.
async fn wait_until(at: f64, cancel: &CancellationToken) {
    let wait = at - unix_now();
    if let Ok(wait) = Duration::try_from_secs_f64(wait) {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => {}
        }
    }
}

/// The run's results directory: the one `serve` made for the job, or a new one named after the
/// test (and the segment, for one agent of a split test).
fn results_dir(req: &RunRequest, clock: &Clock) -> Result<(String, PathBuf), RunError> {
    if let Some(d) = req.dir.clone() {
        return Ok(d);
    }
    let segment = req.settings.segment;
    let id = req
        .test_id
        .clone()
        .unwrap_or_else(|| results::test_id(clock.unix_start()));
    let name = if segment == Segment::WHOLE {
        id
    } else {
        segment_dir_name(&id, segment)
    };
    let (made, dir) = results::create_dir(&req.results_root, &name)?;
    if made != name && req.settings.capacity.is_some() && segment != Segment::WHOLE {
        // Its peers look for its step files under the exact name.
        let _ = std::fs::remove_dir(&dir);
        return Err(RunError::SplitDirTaken(req.results_root.join(&name)));
    }
    Ok((made, dir))
}

/// The results dir of segment `segment` of test `id`.
fn segment_dir_name(id: &str, segment: Segment) -> String {
    format!("{id}-s{}of{}", segment.index, segment.count)
}

/// Where the other agents of a split capacity search write their results (none otherwise).
fn peer_dirs(req: &RunRequest, test_id: &str) -> Vec<(Segment, PathBuf)> {
    let me = req.settings.segment;
    if me == Segment::WHOLE || req.dir.is_some() {
        return Vec::new();
    }
    (0..me.count)
        .filter(|i| *i != me.index)
        .map(|index| {
            let seg = Segment {
                index,
                count: me.count,
            };
            (seg, req.results_root.join(segment_dir_name(test_id, seg)))
        })
        .collect()
}

/// How long the phases take, with the timetable's gaps (a capacity search: its most steps).
fn planned(req: &RunRequest, phases: &[engine::Phase]) -> Duration {
    if let Some(c) = &req.settings.capacity {
        let step = phases
            .first()
            .map_or(Duration::from_secs(10), |p| p.duration);
        return step * u32::try_from(c.max_steps).unwrap_or(u32::MAX);
    }
    let gaps = if req.settings.timetable {
        engine::PHASE_GAP * u32::try_from(phases.len()).unwrap_or(u32::MAX)
    } else {
        Duration::ZERO
    };
    phases.iter().map(|p| p.duration).sum::<Duration>() + gaps
}

/// What the run is, before it starts (marked incomplete until [`finish_run_info`]).
fn run_info(req: &RunRequest, phases: &[engine::Phase], test_id: String, clock: &Clock) -> RunInfo {
    let segment = req.settings.segment;
    RunInfo {
        test_id,
        scenario: req.scenario.name.clone(),
        model: if phases.iter().any(|p| p.rate.is_some()) {
            "open"
        } else {
            "closed"
        }
        .into(),
        workers: phases.iter().map(|p| p.workers).max().unwrap_or(0),
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
        grace_s: Some(req.settings.grace.as_secs_f64()),
        segment: (segment != Segment::WHOLE).then_some(segment),
        ..RunInfo::default()
    }
}

/// What the engine's outcome says about the run: complete or why not, and its counters.
fn finish_run_info(info: &mut RunInfo, outcome: &Result<engine::Outcome, McpError>) {
    let (complete, reason) = match outcome {
        Ok(o) if o.cancelled => (false, Some("interrupted".to_owned())),
        Ok(o) if o.incomplete.is_some() => (false, o.incomplete.clone()),
        Ok(_) => (true, None),
        Err(e) => (false, Some(format!("run failed: {e}"))),
    };
    info.complete = complete;
    info.incomplete_reason = reason;
    if let Ok(o) = outcome {
        info.late_starts = o.late_starts;
        info.dropped = o.dropped;
        info.unreleased = o.unreleased;
    }
}

/// The server's side of the run, from what the scrapes gathered: `cpus` are the server's
/// vCPUs (with where that count came from) and whether they are shared; a scrape error's text
/// is masked (a metrics URL may carry credentials).
fn server_report(
    cpus: &(Option<(u32, String)>, bool),
    scraped: &Scraped,
    secrets: &Secrets,
) -> ServerReport {
    let (vcpus_of, shared) = cpus;
    let vcpus = vcpus_of.as_ref().map_or(0, |(n, _)| *n);
    let mut server = server_metrics::build_report(&scraped.samples, vcpus);
    server.vcpus_source = vcpus_of.as_ref().map(|(_, from)| from.clone());
    server.vcpus_shared = *shared;
    server.scrape_failures = scraped.failures;
    if scraped.samples.is_empty() || scraped.failures > 0 {
        server.error = scraped
            .last_error
            .as_deref()
            .map(|e| secrets.mask_url(e))
            .or_else(|| scraped.samples.is_empty().then(|| "no samples".into()));
    }
    server.phases = scraped
        .phases
        .iter()
        .map(|p| server_metrics::phase_report(p, vcpus))
        .collect();
    server
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
