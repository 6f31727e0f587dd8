//! The load engine: turns a scenario and the run's settings into phases, runs each phase's
//! workers, and streams every operation's [`Record`] to the
//! collector. It measures; it does not summarise (that is the collector's and the reports'
//! job), so the same records can be summarised again later from the saved files.

pub mod capacity;
pub mod in_flight;
pub mod pacer;
pub mod shards;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sshlab_core::results::Record;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::mcp::{ClientOptions, InputResponses, McpClient, McpError, Protocol};
use crate::scenario::segment::Segment;
use crate::scenario::{Ports, Scenario};
use crate::scrape::{Marks, PhaseMark};
use in_flight::InFlight;
use pacer::{RateShape, Schedule};
use shards::Shards;
use worker::{Counters, Target, Worker};

/// Maps monotonic instants to unix time, fixed once per run so records never jump.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    unix: f64,
}

impl Clock {
    /// Now.
    pub fn start() -> Self {
        Self {
            instant: Instant::now(),
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    /// Unix seconds of `i`.
    pub fn wall(&self, i: Instant) -> f64 {
        if i >= self.instant {
            self.unix + (i - self.instant).as_secs_f64()
        } else {
            self.unix - (self.instant - i).as_secs_f64()
        }
    }

    /// Unix seconds at the start.
    pub fn unix_start(&self) -> f64 {
        self.unix
    }

    /// The start, as an instant.
    pub fn start_instant(&self) -> Instant {
        self.instant
    }

    /// The instant of unix time `unix` (the inverse of [`Clock::wall`]).
    pub fn instant_at(&self, unix: f64) -> Instant {
        let d = Duration::try_from_secs_f64((unix - self.unix).abs()).unwrap_or(Duration::ZERO);
        if unix >= self.unix {
            self.instant + d
        } else {
            self.instant.checked_sub(d).unwrap_or(self.instant)
        }
    }
}

/// Settings of a run besides the scenario (command line or a job).
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// MCP endpoint.
    pub mcp_url: String,
    /// Protocol to speak.
    pub protocol: Protocol,
    /// SSH target.
    pub target_host: String,
    /// Baseline SSH port.
    pub target_port: u16,
    /// SSH user.
    pub user: String,
    /// SSH password.
    pub password: String,
    /// Seconds per phase (overrides the scenario).
    pub duration_s: Option<u64>,
    /// Workers (overrides every phase).
    pub workers: Option<usize>,
    /// Open-model rate (overrides the scenario; turns a closed scenario open).
    pub rate: Option<f64>,
    /// Timeout of one MCP exchange.
    pub request_timeout: Duration,
    /// How long after a phase's end a call in flight may still finish (and the workers give
    /// their handles back); a call still running then is cut off.
    pub grace: Duration,
    /// Bearer token for every worker; `None`: each worker sends its own synthetic token so a
    /// stateless server can tell them apart (`sshlab-agent-w<N>`).
    pub bearer: Option<String>,
    /// Netem ports, for `ports = "baseline+netem"`.
    pub netem_ports: Vec<u16>,
    /// Closed model: calls per worker (overrides the scenario).
    pub iterations: Option<u64>,
    /// Answers to a server's input requests (the scenario's `input_responses`).
    pub inputs: InputResponses,
    /// This agent's share of a test split across agents (`Segment::WHOLE`: all of it).
    pub segment: Segment,
    /// Threads running the workers ([`Shards`]); `None`: one per core.
    pub threads: Option<usize>,
    /// A capacity search instead of the scenario's phases ([`capacity`]).
    pub capacity: Option<capacity::Plan>,
    /// Phases on a fixed timetable (the agents of a split test, started together with
    /// `--start-at`): phase k starts at the run's start + the phases before + (k+1) ×
    /// [`PHASE_GAP`], whatever this agent's share of it.
    pub timetable: bool,
}

/// The time each phase allows for connecting its workers, on a timetable
/// ([`RunSettings::timetable`]).
pub const PHASE_GAP: Duration = Duration::from_secs(3);

/// When phases start, for the agents of one split test to stay in step. Without it each agent
/// starts a phase as soon as its own workers are connected, and ends an empty share at once, so
/// one agent could be in phase 2 while another still ran phase 1, and the server saw load no
/// phase label described. On the timetable, phase `k` starts at
/// `run start + Σ(duration of phases before k) + (k+1) × PHASE_GAP`, whatever this agent's share
/// of it, where the run's start is its clock's (right after `--start-at`, the same for every
/// agent; prewarming happens in phase 0's gap). Connecting happens in the gap before each
/// phase; an agent that is ready early waits, one that is late starts late but still ends on
/// time (logged; in the open model, arrivals already due count as late starts), and an agent
/// with no worker in a phase waits it out.
#[derive(Debug, Clone, Copy)]
struct Timetable {
    next: Instant,
}

impl Timetable {
    fn new(start: Instant) -> Self {
        Self { next: start }
    }

    /// The start of the next phase, of length `duration`.
    fn phase(&mut self, duration: Duration) -> Instant {
        let start = self.next + PHASE_GAP;
        self.next = start + duration;
        start
    }
}

/// One phase, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// Label for reports (`workers=5`, `port=2322`), when there are several phases.
    pub label: Option<String>,
    /// Workers.
    pub workers: usize,
    /// Length.
    pub duration: Duration,
    /// Open model: the arrival rate.
    pub rate: Option<RateShape>,
    /// Target port.
    pub port: u16,
}

/// Resolve a scenario and settings into phases.
pub fn plan(s: &Scenario, cfg: &RunSettings) -> Vec<Phase> {
    let duration = Duration::from_secs(cfg.duration_s.unwrap_or(s.duration_s));
    // A --rate on the command line wins and is constant; otherwise the scenario's stages
    // (starting from its rate), otherwise its (or the phase's) constant rate.
    let shape = |phase_rate: Option<f64>| -> Option<RateShape> {
        if let Some(r) = cfg.rate {
            return Some(RateShape::Constant(r));
        }
        if !s.stages.is_empty() {
            return Some(RateShape::Ramp {
                start: phase_rate.or(s.rate).unwrap_or(0.0),
                stages: s.stages.clone(),
            });
        }
        phase_rate.or(s.rate).map(RateShape::Constant)
    };
    let ports: Vec<u16> = if s.covers_netem_ports() {
        std::iter::once(cfg.target_port)
            .chain(cfg.netem_ports.iter().copied())
            .collect()
    } else if let Some(Ports::List(p)) = &s.ports {
        p.clone()
    } else {
        Vec::new()
    };
    let mut phases = Vec::new();
    if !ports.is_empty() {
        for p in ports {
            phases.push(Phase {
                label: Some(format!("port={p}")),
                workers: cfg.workers.unwrap_or(s.workers),
                duration,
                rate: shape(None),
                port: p,
            });
        }
    } else if s.phases.is_empty() {
        phases.push(Phase {
            label: None,
            workers: cfg.workers.unwrap_or(s.workers),
            duration,
            rate: shape(None),
            port: cfg.target_port,
        });
    } else {
        for ph in &s.phases {
            let workers = cfg.workers.or(ph.workers).unwrap_or(s.workers);
            let port = ph.port.unwrap_or(cfg.target_port);
            let mut label = vec![format!("workers={workers}")];
            if ph.port.is_some() {
                label.push(format!("port={port}"));
            }
            phases.push(Phase {
                label: Some(label.join(",")),
                workers,
                duration: ph.duration_s.map_or(duration, Duration::from_secs),
                rate: shape(ph.rate),
                port,
            });
        }
    }
    // One agent of N: its share of every phase's workers (an open-model phase keeps at least
    // one: its workers only carry the arrivals, which the schedule splits).
    for p in &mut phases {
        let share = cfg.segment.workers(p.workers);
        p.workers = if p.rate.is_some() {
            share.max(1)
        } else {
            share
        };
    }
    phases
}

/// The default [`RunSettings::grace`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// What running the phases produced besides the records.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Open-model starts that were late.
    pub late_starts: u64,
    /// Open-model arrivals due within a phase that were never sent (the phase ended first).
    pub dropped: u64,
    /// Handles the workers could not release on the server at the end.
    pub unreleased: u64,
    /// Whether it was cancelled.
    pub cancelled: bool,
    /// A capacity search's result.
    pub capacity: Option<sshlab_core::results::capacity::Capacity>,
    /// Why the run could not finish although nobody cancelled it (a split capacity search
    /// whose agents lost each other).
    pub incomplete: Option<String>,
}

impl Outcome {
    fn of(counters: &Counters, cancelled: bool) -> Self {
        Self {
            late_starts: counters.late.load(Ordering::Relaxed),
            dropped: counters.dropped.load(Ordering::Relaxed),
            unreleased: counters.unreleased.load(Ordering::Relaxed),
            cancelled,
            capacity: None,
            incomplete: None,
        }
    }
}

fn client_options(cfg: &RunSettings, index: usize) -> ClientOptions {
    ClientOptions {
        url: cfg.mcp_url.clone(),
        protocol: cfg.protocol.clone(),
        request_timeout: cfg.request_timeout,
        bearer: Some(
            cfg.bearer
                .clone()
                .unwrap_or_else(|| format!("sshlab-agent-w{index}")),
        ),
        client_name: "sshlab-agent".into(),
        inputs: cfg.inputs.clone(),
    }
}

/// Connect one client, as worker `index` would.
pub async fn connect(cfg: &RunSettings, index: usize) -> Result<McpClient, McpError> {
    McpClient::connect(client_options(cfg, index)).await
}

/// Open and close `n` SSH sessions (unmeasured) so the server's pool starts warm.
async fn prewarm(s: &Scenario, cfg: &RunSettings, n: usize) -> Result<(), McpError> {
    let (Some(provider), Some(consumer)) = (
        s.ops.iter().find(|o| o.provides.is_some()),
        s.ops.iter().find(|o| o.consumes.is_some()),
    ) else {
        return Ok(());
    };
    let client = connect(cfg, usize::MAX).await?;
    fn ctx<'a>(
        cfg: &'a RunSettings,
        s: &'a Scenario,
        session: Option<&'a str>,
        i: usize,
    ) -> crate::scenario::template::Context<'a> {
        crate::scenario::template::Context {
            target_host: &cfg.target_host,
            target_port: cfg.target_port,
            user: &cfg.user,
            password: &cfg.password,
            session,
            worker: i,
            vars: &s.vars,
            counter: i as u64,
        }
    }
    let mut handles = Vec::new();
    for i in 0..n {
        let r = client
            .call_tool(
                &provider.tool,
                crate::scenario::render_args(provider, &ctx(cfg, s, None, i)),
            )
            .await?;
        let field = provider.provides_field.as_deref().unwrap_or("session_id");
        if let Some(h) = r
            .structured
            .as_ref()
            .and_then(|v| v.get(field))
            .and_then(|v| v.as_str())
        {
            handles.push(h.to_owned());
        }
    }
    for (i, h) in handles.iter().enumerate() {
        client
            .call_tool(
                &consumer.tool,
                crate::scenario::render_args(consumer, &ctx(cfg, s, Some(h), i)),
            )
            .await?;
    }
    client.close().await
}

/// Where a run's measurements go.
#[derive(Debug, Clone)]
pub struct Sinks {
    /// Every operation's record (the collector).
    pub records: mpsc::Sender<Record>,
    /// Each phase's start and end (the server-metrics scraper).
    pub marks: Marks,
    /// The calls in flight, counted by the workers.
    pub in_flight: Arc<InFlight>,
    /// A capacity search's result so far, updated after each step (for the live page).
    pub capacity: Option<capacity::SoFar>,
    /// A capacity search's step files (each step's part judged here; in a split search, also
    /// where the other agents' parts are read).
    pub step_files: Option<capacity::exchange::StepFiles>,
}

/// Run every phase into `sinks` (or, for a capacity search, the steps it decides on). Each
/// worker, with its connection, runs on shard `index mod shards`. Fails only when no worker
/// can reach the server.
pub async fn run(
    s: Arc<Scenario>,
    cfg: &RunSettings,
    shards: &Shards,
    phases: &[Phase],
    clock: Clock,
    sinks: Sinks,
    cancel: CancellationToken,
) -> Result<Outcome, McpError> {
    let runner = Runner {
        target: Arc::new(Target {
            host: cfg.target_host.clone(),
            user: cfg.user.clone(),
            password: cfg.password.clone(),
            secrets: crate::secrets::Secrets::of(cfg, &s),
        }),
        s,
        cfg,
        shards,
        clock,
        sinks,
        cancel,
        counters: Arc::new(Counters::default()),
    };
    // Taken before prewarming, so that every agent's timetable starts at its clock's start.
    let mut timetable = cfg.timetable.then(|| Timetable::new(clock.start_instant()));
    if runner.s.prewarm > 0 {
        prewarm(&runner.s, cfg, runner.s.prewarm).await?;
    }
    if let Some(plan) = &cfg.capacity {
        let template = phases.first().cloned().unwrap_or_else(|| Phase {
            label: None,
            workers: 1,
            duration: Duration::from_secs(10),
            rate: None,
            port: cfg.target_port,
        });
        let files = runner.sinks.step_files.clone();
        let found = capacity::search(&runner, plan, &template, timetable, files.as_ref()).await?;
        let mut outcome = runner.outcome();
        outcome.capacity = Some(found.capacity);
        outcome.incomplete = found.incomplete;
        return Ok(outcome);
    }
    for phase in phases {
        if runner.cancel.is_cancelled() {
            break;
        }
        let scheduled = timetable.as_mut().map(|t| t.phase(phase.duration));
        if runner.phase(phase, scheduled, None).await? == PhaseEnd::Cancelled {
            break;
        }
    }
    Ok(runner.outcome())
}

/// How a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhaseEnd {
    /// At its deadline (or stopped early by its judge).
    Done,
    /// The run was cancelled.
    Cancelled,
}

/// What every phase of a run shares.
struct Runner<'a> {
    s: Arc<Scenario>,
    cfg: &'a RunSettings,
    shards: &'a Shards,
    clock: Clock,
    sinks: Sinks,
    cancel: CancellationToken,
    counters: Arc<Counters>,
    target: Arc<Target>,
}

impl Runner<'_> {
    fn outcome(&self) -> Outcome {
        Outcome::of(&self.counters, self.cancel.is_cancelled())
    }

    /// Runs one phase: connects its workers, marks its start, runs them until its deadline
    /// (`scheduled`: its start on a timetable), marks its end. With a `judge`, the workers also
    /// hand it their records, and it may stop the phase early.
    async fn phase(
        &self,
        phase: &Phase,
        scheduled: Option<Instant>,
        judge: Option<Arc<capacity::judge::StepJudge>>,
    ) -> Result<PhaseEnd, McpError> {
        let cfg = self.cfg;
        tracing::info!(phase = ?phase.label, workers = phase.workers, port = phase.port, "phase starts");
        // Connect every worker before the clock starts: the handshake is not the load. Each
        // connection is made on the shard that will run its worker.
        let mut clients = Vec::with_capacity(phase.workers);
        for i in 0..phase.workers {
            let connecting = self
                .shards
                .handle(i)
                .spawn(McpClient::connect(client_options(cfg, i)));
            tokio::select! {
                c = connecting => match c {
                    Ok(c) => clients.push(c?),
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    // The shards stopped (they outlive this loop, so only when the run ends).
                    Err(_) => return Ok(PhaseEnd::Cancelled),
                },
                () = self.cancel.cancelled() => return Ok(PhaseEnd::Cancelled),
            }
        }
        // The server's counters as the phase starts: after its workers connected (the MCP
        // handshake is not the load), before any of them makes a call.
        self.sinks
            .marks
            .mark(PhaseMark::Start(phase.label.clone()))
            .await;
        let start = match scheduled {
            Some(at) => {
                let now = Instant::now();
                if now > at {
                    tracing::warn!(
                        phase = ?phase.label,
                        late_ms = (now - at).as_millis() as u64,
                        "connecting this phase's workers took longer than the gap before it; \
                         it starts late and still ends on the timetable"
                    );
                } else {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.cancel.cancelled() => return Ok(PhaseEnd::Cancelled),
                    }
                }
                at
            }
            None => Instant::now(),
        };
        let deadline = start + phase.duration;
        if clients.is_empty() && scheduled.is_some() {
            // No share of this phase: wait it out with the others.
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = self.cancel.cancelled() => return Ok(PhaseEnd::Cancelled),
            }
            return Ok(PhaseEnd::Done);
        }
        let schedule = phase.rate.as_ref().map(|shape| {
            (
                Arc::new(Mutex::new(
                    Schedule::new(shape, phase.duration.as_secs_f64())
                        .striped(cfg.segment.first_arrival(), u64::from(cfg.segment.count)),
                )),
                start,
            )
        });
        // A judge may stop the phase early: its workers stop as at Ctrl-C, the run goes on.
        let stop = self.cancel.child_token();
        if let Some(j) = &judge {
            j.begin(self.clock.wall(start), stop.clone());
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (index, client) in clients.into_iter().enumerate() {
            let w = Worker {
                index,
                client,
                scenario: self.s.clone(),
                target: self.target.clone(),
                port: phase.port,
                phase: phase.label.clone(),
                tx: self.sinks.records.clone(),
                deadline,
                grace: cfg.grace,
                cancel: stop.clone(),
                schedule: schedule.clone(),
                counters: self.counters.clone(),
                clock: self.clock,
                iterations: cfg.iterations.filter(|_| schedule.is_none()),
                label: format!("w{index}"),
                segment: (cfg.segment != Segment::WHOLE).then_some(cfg.segment),
                judge: judge.clone(),
                in_flight: self.sinks.in_flight.slot(index),
            };
            tasks.spawn_on(w.run(), self.shards.handle(index));
        }
        let watching = judge.clone().map(|j| tokio::spawn(j.watch(deadline)));
        while tasks.join_next().await.is_some() {}
        if let Some(w) = watching {
            w.abort();
        }
        if let Some((schedule, _)) = &schedule
            && !stop.is_cancelled()
        {
            // Arrivals of this phase that no worker took before it ended: never sent.
            let rest = schedule.lock().await.drop_rest();
            self.counters.dropped.fetch_add(rest, Ordering::Relaxed);
        }
        self.sinks
            .marks
            .mark(PhaseMark::End(phase.label.clone()))
            .await;
        Ok(if self.cancel.is_cancelled() {
            PhaseEnd::Cancelled
        } else {
            PhaseEnd::Done
        })
    }
}

/// Settings for unit tests: an MCP URL nobody serves, `password`, `bearer`.
#[cfg(test)]
pub(crate) fn test_settings(password: &str, bearer: Option<&str>) -> RunSettings {
    RunSettings {
        mcp_url: "http://x/mcp".into(),
        protocol: Protocol::Auto,
        target_host: "h".into(),
        target_port: 2222,
        user: "u".into(),
        password: password.into(),
        duration_s: None,
        workers: None,
        rate: None,
        request_timeout: Duration::from_secs(5),
        grace: DEFAULT_GRACE,
        bearer: bearer.map(Into::into),
        netem_ports: vec![2322, 2323],
        iterations: None,
        inputs: InputResponses::default(),
        segment: Segment::WHOLE,
        threads: None,
        capacity: None,
        timetable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RunSettings {
        test_settings("p", None)
    }

    #[test]
    fn plans_follow_the_scenarios() {
        let cfg = settings();
        let cr = plan(&Scenario::builtin("connection_rate").expect("ok"), &cfg);
        assert_eq!(
            cr.iter().map(|p| p.workers).collect::<Vec<_>>(),
            [1, 2, 5, 10]
        );
        assert_eq!(cr[2].label.as_deref(), Some("workers=5"));
        let lt = plan(&Scenario::builtin("latency_test").expect("ok"), &cfg);
        assert_eq!(
            lt.iter().map(|p| p.port).collect::<Vec<_>>(),
            [2222, 2322, 2323]
        );
        assert_eq!(lt[0].rate, Some(RateShape::Constant(10.0)));
        let mut short = cfg.clone();
        short.duration_s = Some(3);
        short.workers = Some(2);
        short.rate = Some(50.0);
        let q = plan(&Scenario::builtin("quick").expect("ok"), &short);
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].workers, q[0].duration), (2, Duration::from_secs(3)));
        assert_eq!(q[0].rate, Some(RateShape::Constant(50.0)));
    }
}
