//! The collector: the one consumer of the workers' records during a run.
//!
//! It appends each record to its worker's `w<N>.jsonl` (whole lines, flushed every second, so
//! a crash or Ctrl-C leaves only complete lines), folds it into the [`Aggregate`], hands each
//! finished one-second interval histogram to the `.hlog` writer thread, prints progress, and
//! rewrites `summary.json` every few seconds marked incomplete, so even a killed run leaves a
//! summary of what it measured. With a live dashboard it also counts requests by operation and
//! port and hands the dashboard its figures every second ([`crate::dashboard::live`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use sshlab_core::results::live_metrics::LiveCounts;
use sshlab_core::results::{Aggregate, IntervalStats, LatencyStats, Record, RunInfo, Summary};
use tokio::sync::mpsc;

/// Name of the interval log in the results dir.
pub const HLOG: &str = "latency.hlog";

/// Write `bytes` to `path` atomically (temp file + rename), so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    std::fs::rename(tmp, path)
}

/// One worker's `w<N>.jsonl`: whole lines, buffered until the buffer is full or the next
/// one-second flush.
///
/// The buffer is small and bounded: at 1,000 workers, a second's worth of records per file
/// (what a plain flush-every-second would keep) was ~7 MB at 40,000 records/s, plus the slack of
/// growing each buffer by doubling, and it took the agent's RSS past its 64 MB budget. So each
/// file holds at most [`Jsonl::CAP`] (allocated exactly, once): 4 MiB for 1,000 workers
/// whatever the rate, one `write` per ~20 records. A file that stayed idle through a whole
/// second gives its buffer back, so idle workers cost nothing. (Not a `BufWriter`: it would
/// allocate its buffer up front for every file, idle or not.)
struct Jsonl {
    file: File,
    buf: Vec<u8>,
    /// Lines pushed since the last timed flush.
    active: bool,
}

impl Jsonl {
    /// The most one file buffers.
    const CAP: usize = 4 * 1024;

    fn new(file: File) -> Self {
        Self {
            file,
            buf: Vec::new(),
            active: false,
        }
    }

    fn push(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.buf.len() + line.len() > Self::CAP {
            self.write_out()?;
        }
        if line.len() > Self::CAP {
            return self.file.write_all(line);
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(Self::CAP);
        }
        self.buf.extend_from_slice(line);
        self.active = true;
        Ok(())
    }

    /// Write what is buffered, keeping the buffer.
    fn write_out(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// The timed flush: write what is buffered; give the buffer back if this file was idle
    /// for the whole second.
    fn flush(&mut self) -> std::io::Result<()> {
        self.write_out()?;
        if !std::mem::take(&mut self.active) {
            self.buf = Vec::new();
        }
        Ok(())
    }
}

/// Writes the HdrHistogram interval log on its own thread (the log writer borrows its
/// output and serializer for its whole life, which a thread owns naturally).
pub(crate) struct HlogWriter {
    tx: Option<std::sync::mpsc::Sender<(IntervalStats, Histogram<u64>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HlogWriter {
    pub(crate) fn start(path: PathBuf, start: SystemTime) -> std::io::Result<Self> {
        let mut file = BufWriter::new(File::create(&path)?);
        let (tx, rx) = std::sync::mpsc::channel::<(IntervalStats, Histogram<u64>)>();
        let thread = std::thread::spawn(move || {
            let mut ser = V2DeflateSerializer::new();
            let mut log = match IntervalLogWriterBuilder::new()
                .add_comment("sshlab-agent: corrected latency of successful operations, microseconds; max in ms")
                .with_start_time(start)
                .with_base_time(start)
                .with_max_value_divisor(1000.0)
                .begin_log_with(&mut file, &mut ser)
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the interval log");
                    return;
                }
            };
            for (stats, h) in rx {
                let at = Duration::from_secs(stats.t);
                if let Err(e) = log.write_histogram(&h, at, Duration::from_secs(1), None) {
                    tracing::warn!(error = %e, "interval log write failed");
                }
            }
            drop(log);
            let _ = file.flush();
        });
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub(crate) fn send(&self, closed: Vec<(IntervalStats, Histogram<u64>)>) {
        if let Some(tx) = &self.tx {
            for c in closed {
                let _ = tx.send(c);
            }
        }
    }

    pub(crate) fn finish(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing.
    Quiet,
    /// A line rewritten in place (a terminal).
    Live,
    /// A plain line every few seconds (logs, CI).
    Lines,
}

impl Progress {
    /// Live on a terminal, lines otherwise.
    pub fn detect() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Live
        } else {
            Self::Lines
        }
    }
}

/// The collector's settings.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Results directory of this run.
    pub dir: PathBuf,
    /// What the run is (for the in-progress summaries).
    pub run: RunInfo,
    /// Planned length, for "remaining".
    pub planned: Duration,
    /// Progress display.
    pub progress: Progress,
    /// The live dashboard, when one is served.
    pub live: Option<std::sync::Arc<crate::dashboard::Live>>,
}

/// Records taken from the channel at a time.
const BATCH: usize = 1024;
/// How long the collector waits, once it has caught up, before it looks for records again.
/// The channel (4,096 records) fills in this time only above 2 million records/s; workers
/// stamp their records themselves, so waiting changes no measurement.
const NAP: Duration = Duration::from_millis(2);

/// Consume records until every sender is gone; returns the aggregate.
pub async fn collect(
    mut rx: mpsc::Receiver<Record>,
    cfg: CollectorConfig,
) -> std::io::Result<Aggregate> {
    let mut agg = Aggregate::new(cfg.run.started_at);
    let mut files: HashMap<String, Jsonl> = HashMap::new();
    let start_wall = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(cfg.run.started_at.max(0.0));
    let mut hlog = HlogWriter::start(cfg.dir.join(HLOG), start_wall)?;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    let mut counts = cfg.live.as_ref().map(|_| LiveCounts::default());
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                for rec in batch.drain(..) {
                    line.clear();
                    // Serialise into a reused buffer, then write the whole line at once: a
                    // flushed file never ends in half a record.
                    if serde_json::to_writer(&mut line, &rec).is_ok() {
                        line.push(b'\n');
                    } else {
                        line.clear();
                    }
                    let w = match files.get_mut(&rec.worker) {
                        Some(w) => w,
                        None => {
                            let f = File::create(cfg.dir.join(format!("{}.jsonl", rec.worker)))?;
                            files.entry(rec.worker.clone()).or_insert(Jsonl::new(f))
                        }
                    };
                    w.push(&line)?;
                    hlog.send(agg.add(&rec));
                    if let Some(c) = counts.as_mut() {
                        c.add(&rec);
                    }
                }
                if n < BATCH {
                    // Caught up: let records gather instead of being woken by each one (every
                    // wake-up from a worker thread is a futex call on both sides).
                    tokio::time::sleep(NAP).await;
                }
            }
            _ = tick.tick() => {
                ticks += 1;
                for f in files.values_mut() {
                    f.flush()?;
                }
                show(&cfg, &agg, started.elapsed(), ticks);
                if let (Some(live), Some(c)) = (&cfg.live, &counts) {
                    live.publish(&agg, c, started.elapsed());
                }
                if ticks.is_multiple_of(5) {
                    let mut run = cfg.run.clone();
                    run.ended_at = cfg.run.started_at + started.elapsed().as_secs_f64();
                    run.complete = false;
                    run.incomplete_reason = Some("still running".into());
                    let s = Summary::build(run, &agg);
                    if let Ok(json) = serde_json::to_vec_pretty(&s) {
                        write_atomic(&cfg.dir.join("summary.json"), &json)?;
                    }
                }
            }
        }
    }
    for f in files.values_mut() {
        f.flush()?;
    }
    // Every record counted: what /metrics says once the run has ended.
    if let (Some(live), Some(c)) = (&cfg.live, &counts) {
        live.publish(&agg, c, started.elapsed());
    }
    hlog.send(agg.finish());
    hlog.finish();
    if cfg.progress == Progress::Live {
        eprintln!();
    }
    Ok(agg)
}

fn show(cfg: &CollectorConfig, agg: &Aggregate, elapsed: Duration, ticks: u64) {
    let last = agg.timeline().last();
    let rps = last.map_or(0, |i| i.ok + i.err);
    let p99 = last.map_or(0.0, |i| i.p99);
    let all = LatencyStats::of(&agg.all.corrected);
    let remaining = cfg.planned.saturating_sub(elapsed).as_secs();
    let text = format!(
        "[{:>4}s elapsed, {:>4}s left] {} ops, {} errors, {rps} ops/s now, p99 {p99:.1} ms now / {:.1} ms overall",
        elapsed.as_secs(),
        remaining,
        agg.all.total(),
        agg.all.err,
        all.p99
    );
    match cfg.progress {
        Progress::Quiet => {}
        Progress::Live => {
            eprint!("\r{text:<110}");
            let _ = std::io::stderr().flush();
        }
        Progress::Lines => {
            if ticks.is_multiple_of(5) {
                eprintln!("{text}");
            }
        }
    }
}
