//! The live state the dashboard shows: one [`Frame`] at a time, replaced about once a second.
//!
//! Who writes what: [`crate::run::run`] begins a run ([`Live::begin`]) and ends it
//! ([`Live::finish`] with the summary it wrote, or [`Live::fail`]); the collector, which owns
//! the run's aggregate, publishes a frame every second ([`Live::publish`]); the scrape loop
//! hands over the server's figures and the current phase ([`Live::set_server`]). Readers (the
//! page's event streams, `/metrics`) only ever see whole frames, through a `watch` channel that
//! keeps the latest one: a slow reader skips frames instead of queueing them.
//!
//! A frame carries the same [`Summary`] the reports are made of, built from the collector's
//! aggregate as `summary.json` is, and the page draws it with the report's own code
//! ([`sshlab_core::report::html`]). Building the summary costs a few histogram walks (about
//! half a millisecond a second; `examples/dashboard_cost.rs`), so every frame has one and a page
//! opened at any moment shows the run at once; the HTML is rendered only when a page needs it,
//! once per frame however many pages show it. The finished frame holds the very text of
//! `report.html`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use sshlab_core::report::html::{self, View};
use sshlab_core::results::live_metrics::{self, Gauges, LiveCounts, Snapshot};
use sshlab_core::results::{Aggregate, RunInfo, ServerReport, Summary};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::engine::in_flight::InFlight;
use crate::thresholds::Threshold;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// No run yet (`serve` before its first job).
    Waiting,
    /// Measuring.
    Running,
    /// Asked to stop (the page's button, Ctrl-C, the host): workers stopping, partial results
    /// being written.
    Stopping,
    /// Ended: the frame holds its report.
    Finished,
    /// Could not run (the server unreachable, ...): the frame says why.
    Failed,
}

/// What the dashboard knows of a run as it begins.
#[derive(Debug)]
pub struct RunView {
    /// The run, as the summary will describe it (secrets already masked).
    pub info: RunInfo,
    /// How long its phases take.
    pub planned: Duration,
    /// Its thresholds, evaluated on every frame as they will be at the end.
    pub thresholds: Vec<Threshold>,
    /// What the caller knows about it (the summary's notes).
    pub notes: Vec<String>,
    /// Cancels it: the stop button's way in, the same token Ctrl-C cancels.
    pub cancel: CancellationToken,
    /// Its calls in flight.
    pub in_flight: Arc<InFlight>,
    /// A capacity search's steps so far (its CAPACITY section and latency-against-load chart).
    pub capacity: Option<crate::engine::capacity::SoFar>,
}

/// One state of the page.
#[derive(Debug)]
pub struct Frame {
    /// Increases with every frame.
    pub seq: u64,
    /// Where the run stands.
    pub status: Status,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Seconds its phases still have (0 past the plan).
    pub remaining_s: f64,
    /// The phase running now (`all` in a run of one phase; `None` between phases).
    pub phase: Option<String>,
    /// The run's summary so far (`None` before a run, or once it has ended).
    pub summary: Option<Summary>,
    /// The counters and histograms `/metrics` shows.
    pub metrics: Snapshot,
    /// [`Status::Finished`]: the text of `report.html`.
    pub report: Option<Arc<str>>,
    /// [`Status::Failed`]: why.
    pub error: Option<String>,
    html: OnceLock<Arc<str>>,
}

impl Frame {
    fn waiting() -> Self {
        Self {
            seq: 0,
            status: Status::Waiting,
            elapsed_s: 0.0,
            remaining_s: 0.0,
            phase: None,
            summary: None,
            metrics: Snapshot::default(),
            report: None,
            error: None,
            html: OnceLock::new(),
        }
    }

    /// The page's `<main>` for this frame, rendered once by the report's code.
    pub fn main_html(&self) -> Option<Arc<str>> {
        let s = self.summary.as_ref()?;
        Some(
            self.html
                .get_or_init(|| html::main_content(s, View::Live).into())
                .clone(),
        )
    }
}

/// The run going on (or the last one).
#[derive(Debug)]
struct Current {
    view: RunView,
    started: Instant,
    ended: bool,
}

#[derive(Debug, Default)]
struct State {
    run: Option<Current>,
    server: Option<ServerReport>,
    phase: Option<String>,
}

/// The dashboard's live state, shared by the run and the dashboard's server.
#[derive(Debug)]
pub struct Live {
    frames: watch::Sender<Arc<Frame>>,
    state: Mutex<State>,
    seq: AtomicU64,
}

impl Live {
    /// Nothing running yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            frames: watch::Sender::new(Arc::new(Frame::waiting())),
            state: Mutex::new(State::default()),
            seq: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The frames, from the current one on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Frame>> {
        self.frames.subscribe()
    }

    /// The current frame.
    pub fn frame(&self) -> Arc<Frame> {
        self.frames.borrow().clone()
    }

    fn send(&self, mut f: Frame) {
        f.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.frames.send_replace(Arc::new(f));
    }

    /// A run begins.
    pub fn begin(&self, view: RunView) {
        let summary = Some(Summary::build(
            running(&view.info, 0.0),
            &Aggregate::new(view.info.started_at),
        ));
        let remaining_s = view.planned.as_secs_f64();
        *self.lock() = State {
            run: Some(Current {
                view,
                started: Instant::now(),
                ended: false,
            }),
            server: None,
            phase: None,
        };
        self.send(Frame {
            status: Status::Running,
            remaining_s,
            summary,
            ..Frame::waiting()
        });
    }

    /// The collector's figures, `elapsed` into the run (about once a second).
    pub fn publish(&self, agg: &Aggregate, counts: &LiveCounts, elapsed: Duration) {
        let st = self.lock();
        let Some(cur) = st.run.as_ref().filter(|c| !c.ended) else {
            return;
        };
        let elapsed_s = elapsed.as_secs_f64();
        let mut s = Summary::build(running(&cur.view.info, elapsed_s), agg);
        s.server.clone_from(&st.server);
        s.capacity = cur.view.capacity.as_ref().and_then(|c| c.get());
        if let (Some(c), Some(sv)) = (s.capacity.as_mut(), s.server.as_ref()) {
            c.fill_server_cpu(sv);
        }
        s.notes.clone_from(&cur.view.notes);
        s.thresholds = cur.view.thresholds.iter().map(|t| t.evaluate(&s)).collect();
        let frame = Frame {
            status: if cur.view.cancel.is_cancelled() {
                Status::Stopping
            } else {
                Status::Running
            },
            elapsed_s,
            remaining_s: cur.view.planned.saturating_sub(elapsed).as_secs_f64(),
            phase: st.phase.clone(),
            summary: Some(s),
            metrics: Snapshot::take(counts, agg),
            ..Frame::waiting()
        };
        drop(st);
        self.send(frame);
    }

    /// The server's figures so far and the phase running now (the scrape loop, after each
    /// scrape and phase mark).
    pub fn set_server(&self, report: ServerReport, phase: Option<String>) {
        let mut st = self.lock();
        st.server = Some(report);
        st.phase = phase;
    }

    /// Stops the run going on, as Ctrl-C does; `false` when none is.
    pub fn stop(&self) -> bool {
        let st = self.lock();
        match st.run.as_ref().filter(|c| !c.ended) {
            Some(cur) if !cur.view.cancel.is_cancelled() => {
                tracing::warn!("the dashboard's stop button: stopping the run");
                cur.view.cancel.cancel();
                drop(st);
                self.restate(Status::Stopping);
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// The current frame again with another status (shown at once, not at the next tick).
    fn restate(&self, status: Status) {
        let f = self.frame();
        self.send(Frame {
            status,
            elapsed_s: f.elapsed_s,
            remaining_s: f.remaining_s,
            phase: f.phase.clone(),
            summary: f.summary.clone(),
            metrics: f.metrics.clone(),
            ..Frame::waiting()
        });
    }

    /// The run ended and wrote `summary`: the page becomes its report.
    pub fn finish(&self, summary: &Summary) {
        let metrics = self.end();
        self.send(Frame {
            status: Status::Finished,
            elapsed_s: summary.run.ended_at - summary.run.started_at,
            report: Some(html::render(summary).into()),
            metrics,
            ..Frame::waiting()
        });
    }

    /// The run could not produce results.
    pub fn fail(&self, why: String) {
        let metrics = self.end();
        self.send(Frame {
            status: Status::Failed,
            error: Some(why),
            metrics,
            ..Frame::waiting()
        });
    }

    fn end(&self) -> Snapshot {
        if let Some(cur) = self.lock().run.as_mut() {
            cur.ended = true;
        }
        self.frame().metrics.clone()
    }

    /// What `/metrics` adds to the frame's counters at the moment of the scrape.
    pub fn metrics_text(&self) -> String {
        let f = self.frame();
        let st = self.lock();
        let cur = st.run.as_ref().filter(|c| !c.ended);
        let gauges = Gauges {
            in_flight: cur.map_or(0, |c| c.view.in_flight.now()),
            phase: cur.and(st.phase.as_deref()),
            running: cur.is_some(),
            elapsed_s: cur.map_or(f.elapsed_s, |c| c.started.elapsed().as_secs_f64()),
            streams: self.frames.receiver_count(),
        };
        live_metrics::render(&f.metrics, &gauges)
    }

    /// A summary to draw a page from before the first frame has one: the run's header and
    /// empty sections.
    pub fn placeholder(&self) -> Summary {
        let st = self.lock();
        let info = st
            .run
            .as_ref()
            .map(|c| running(&c.view.info, c.started.elapsed().as_secs_f64()))
            .unwrap_or_else(|| RunInfo {
                incomplete_reason: Some("waiting for a run".into()),
                ..RunInfo::default()
            });
        Summary::build(info, &Aggregate::new(0.0))
    }
}

/// `info` as a summary written `elapsed_s` into the run describes it.
fn running(info: &RunInfo, elapsed_s: f64) -> RunInfo {
    let mut run = info.clone();
    run.ended_at = run.started_at + elapsed_s;
    run.complete = false;
    run.incomplete_reason = Some("still running".into());
    run
}

/// The phase label the dashboard shows for a scrape loop's phase marks: the last phase that
/// started and has not ended (`all` when a run's one phase has no label).
pub fn current_phase(scraped: &crate::scrape::Scraped) -> Option<String> {
    scraped
        .phases
        .last()
        .filter(|p| p.end.is_none() && p.end_t <= p.start_t)
        .map(|p| {
            p.label
                .clone()
                .unwrap_or_else(|| live_metrics::ONE_PHASE.into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sshlab_core::results::{Record, Status as RecordStatus};

    fn view(cancel: &CancellationToken) -> RunView {
        RunView {
            info: RunInfo {
                test_id: "t".into(),
                scenario: "quick".into(),
                started_at: 100.0,
                ..RunInfo::default()
            },
            planned: Duration::from_secs(10),
            thresholds: vec!["errors<1%".parse().expect("threshold")],
            notes: vec!["a note".into()],
            cancel: cancel.clone(),
            in_flight: InFlight::new(1),
            capacity: None,
        }
    }

    #[test]
    fn frames_follow_the_run_and_end_with_its_report() {
        let live = Live::new();
        assert_eq!(live.frame().status, Status::Waiting);
        let cancel = CancellationToken::new();
        live.begin(view(&cancel));
        let mut agg = Aggregate::new(100.0);
        let mut counts = LiveCounts::default();
        let r = Record {
            ts: 100.5,
            intended_ts: 100.4,
            worker: "w0".into(),
            op: "ssh_run_command".into(),
            latency_ms: 100.0,
            service_ms: 90.0,
            status: RecordStatus::Success,
            error_kind: None,
            error: None,
            port: Some(2222),
            phase: None,
            segment: None,
        };
        agg.add(&r);
        counts.add(&r);
        live.publish(&agg, &counts, Duration::from_secs(3));
        let f = live.frame();
        assert!((f.remaining_s - 7.0).abs() < 1e-9);
        assert!(live.metrics_text().contains("sshlab_agent_running 1"));
        // The summary, with the run's thresholds and notes, drawn live.
        let rx = live.subscribe();
        live.publish(&agg, &counts, Duration::from_secs(4));
        let f = rx.borrow().clone();
        let s = f.summary.as_ref().expect("summary");
        assert_eq!(s.totals.requests, 1);
        assert_eq!(s.notes, ["a note"]);
        assert!(s.thresholds[0].passed);
        let main = f.main_html().expect("html");
        assert!(main.contains("RUNNING") && !main.contains("did not finish"));
        assert!(
            Arc::ptr_eq(&main, &f.main_html().expect("html")),
            "rendered once"
        );
        // Stop: cancels the run's token, shows at once.
        assert!(live.stop());
        assert!(cancel.is_cancelled());
        assert_eq!(live.frame().status, Status::Stopping);
        let mut done = s.clone();
        done.run.complete = false;
        done.run.incomplete_reason = Some("interrupted".into());
        live.finish(&done);
        let f = live.frame();
        assert_eq!(f.status, Status::Finished);
        assert_eq!(f.report.as_deref(), Some(html::render(&done).as_str()));
        assert!(!live.stop(), "nothing to stop once it ended");
        assert!(live.metrics_text().contains("sshlab_agent_running 0"));
        // Frames after the end are ignored.
        live.publish(&agg, &counts, Duration::from_secs(5));
        assert_eq!(live.frame().status, Status::Finished);
    }
}
