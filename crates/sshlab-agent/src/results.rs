//! The results directory of one run: naming, writing the final files, and rebuilding a
//! summary from saved `w<N>.jsonl` files (`sshlab-agent report <dir>`).
//!
//! Rebuilding reads the record stream, not the old summary: records are the contract, the
//! summary is derived. What the records cannot hold (run settings, the server's metrics,
//! thresholds) is kept from the old `summary.json` when there is one.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use sshlab_core::report;
use sshlab_core::results::{Aggregate, IntervalStats, Record, RunInfo, Summary};

use crate::collector::write_atomic;

/// Errors reading or writing results.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// I/O on a results file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No records at all.
    #[error("{0}: no w<N>.jsonl files with records")]
    Empty(PathBuf),
    /// The record files cannot all be open at once.
    #[error(transparent)]
    OpenFiles(#[from] crate::open_files::TooFew),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ResultsError + '_ {
    move |source| ResultsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `loadtest_YYYYMMDD_HHMMSS` (UTC) for unix time `t`.
pub fn test_id(t: f64) -> String {
    let (y, m, d, hh, mm, ss) = report::format::utc_fields(t.max(0.0) as i64);
    format!("loadtest_{y:04}{m:02}{d:02}_{hh:02}{mm:02}{ss:02}")
}

/// Create a fresh directory for `id` under `root` (suffixing `_2`, `_3`, ... if taken).
pub fn create_dir(root: &Path, id: &str) -> Result<(String, PathBuf), ResultsError> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    for n in 1.. {
        let name = if n == 1 {
            id.to_owned()
        } else {
            format!("{id}_{n}")
        };
        let dir = root.join(&name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((name, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&dir)(e)),
        }
    }
    unreachable!("an unbounded range always yields")
}

/// Write summary.json, report.txt, report.html and junit.xml.
pub fn write_all(dir: &Path, s: &Summary) -> Result<(), ResultsError> {
    let json = serde_json::to_vec_pretty(s).unwrap_or_default();
    let p = dir.join("summary.json");
    write_atomic(&p, &json).map_err(io(&p))?;
    let p = dir.join("report.txt");
    write_atomic(&p, report::text::render(s).as_bytes()).map_err(io(&p))?;
    let p = dir.join("report.html");
    write_atomic(&p, report::html::render(s).as_bytes()).map_err(io(&p))?;
    let p = dir.join("junit.xml");
    write_atomic(&p, report::junit::render(s).as_bytes()).map_err(io(&p))?;
    Ok(())
}

struct Next {
    rec: Record,
    src: usize,
}

impl PartialEq for Next {
    fn eq(&self, o: &Self) -> bool {
        self.rec.ts == o.rec.ts
    }
}
impl Eq for Next {}
impl PartialOrd for Next {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Next {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Min-heap on completion time.
        o.rec.ts.total_cmp(&self.rec.ts)
    }
}

/// What rebuilding found.
#[derive(Debug)]
pub struct Rebuilt {
    /// The new summary.
    pub summary: Summary,
    /// Lines that were not records (e.g. one cut short by a crash).
    pub skipped_lines: u64,
}

/// The record files (`w<N>.jsonl`) of a results dir, sorted.
pub fn record_files(dir: &Path) -> Result<Vec<PathBuf>, ResultsError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "jsonl")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('w'))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Records of several files, folded into one aggregate in completion order (each file is
/// already in completion order; a k-way merge keeps memory to one record per file).
#[derive(Debug)]
pub struct Folded {
    /// The aggregate.
    pub agg: Aggregate,
    /// The last completion (unix s).
    pub last: f64,
    /// Lines that were not records (e.g. one cut short by a crash).
    pub skipped_lines: u64,
}

/// Fold the records of `files` into an aggregate starting at `start` (default: the first
/// record's intended start, or `start` if earlier); `closed` gets every finished interval.
pub fn fold(
    files: &[PathBuf],
    start: Option<f64>,
    mut closed: impl FnMut(Vec<(IntervalStats, Histogram<u64>)>),
) -> Result<Folded, ResultsError> {
    crate::open_files::ensure(files.len() as u64, || {
        format!("reading {} record files at once", files.len())
    })?;
    let mut readers = Vec::new();
    for f in files {
        readers.push(BufReader::new(File::open(f).map_err(io(f))?).lines());
    }
    let mut skipped = 0u64;
    let mut heap = BinaryHeap::new();
    let next_of = |src: usize,
                   readers: &mut Vec<std::io::Lines<BufReader<File>>>,
                   skipped: &mut u64|
     -> Option<Next> {
        for line in readers[src].by_ref() {
            match line
                .ok()
                .and_then(|l| serde_json::from_str::<Record>(&l).ok())
            {
                Some(rec) => return Some(Next { rec, src }),
                None => *skipped += 1,
            }
        }
        None
    };
    for src in 0..readers.len() {
        if let Some(n) = next_of(src, &mut readers, &mut skipped) {
            heap.push(n);
        }
    }
    let first = heap.iter().map(|n| n.rec.intended_ts).reduce(f64::min);
    let Some(first) = first else {
        return Err(ResultsError::Empty(
            files
                .first()
                .and_then(|f| f.parent())
                .map(Path::to_owned)
                .unwrap_or_default(),
        ));
    };
    let start = start.map_or(first, |s| s.min(first));
    let mut agg = Aggregate::new(start);
    let mut last = start;
    while let Some(Next { rec, src }) = heap.pop() {
        last = last.max(rec.ts);
        closed(agg.add(&rec));
        if let Some(n) = next_of(src, &mut readers, &mut skipped) {
            heap.push(n);
        }
    }
    closed(agg.finish());
    Ok(Folded {
        agg,
        last,
        skipped_lines: skipped,
    })
}

/// A results dir's `summary.json`, when it has a readable one.
pub fn read_summary(dir: &Path) -> Option<Summary> {
    std::fs::read(dir.join("summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Every record of a results dir, file by file (in no particular order across files); lines
/// that are not records are skipped.
fn each_record(dir: &Path, mut f: impl FnMut(&Record)) -> Result<(), ResultsError> {
    for file in record_files(dir)? {
        let lines = BufReader::new(File::open(&file).map_err(io(&file))?).lines();
        for line in lines.map_while(Result::ok) {
            if let Ok(rec) = serde_json::from_str::<Record>(&line) {
                f(&rec);
            }
        }
    }
    Ok(())
}

/// Judges each executed fault from the run's records (two passes over the record files: the
/// baseline and the faults' windows, then the recovery counters), filling their `analysis`.
pub fn analyse_faults(
    dir: &Path,
    faults: &mut [sshlab_core::faults::FaultRecord],
    run_end: f64,
) -> Result<(), ResultsError> {
    if faults.is_empty() {
        return Ok(());
    }
    let mut a = sshlab_core::faults::recovery::Analyser::new(faults, run_end);
    each_record(dir, |r| a.first_pass(r))?;
    each_record(dir, |r| a.second_pass(r))?;
    for (f, analysis) in faults.iter_mut().zip(a.finish()) {
        f.analysis = analysis;
    }
    Ok(())
}

/// Rebuild the summary of a results dir from its `w<N>.jsonl` files, merged in completion
/// order (each file is already in completion order).
pub fn rebuild(dir: &Path) -> Result<Rebuilt, ResultsError> {
    let files = record_files(dir)?;
    let old = read_summary(dir);
    let folded = fold(&files, old.as_ref().map(|s| s.run.started_at), |_| {})
        .map_err(|_| ResultsError::Empty(dir.to_owned()))?;
    let (agg, last) = (folded.agg, folded.last);
    let start = agg.start();
    let run = old.as_ref().map_or_else(
        || RunInfo {
            test_id: dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned(),
            started_at: start,
            ended_at: last,
            complete: false,
            incomplete_reason: Some("rebuilt from records without a summary.json".into()),
            ..RunInfo::default()
        },
        |s| s.run.clone(),
    );
    let mut summary = Summary::build(run, &agg);
    if let Some(old) = old {
        summary.server = old.server;
        summary.thresholds = old.thresholds;
        summary.notes = old.notes;
        summary.faults = old.faults;
        analyse_faults(dir, &mut summary.faults, summary.run.ended_at)?;
    }
    Ok(Rebuilt {
        summary,
        skipped_lines: folded.skipped_lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ids_are_utc_dates() {
        assert_eq!(test_id(0.0), "loadtest_19700101_000000");
        // 2026-02-12 15:30:45 UTC
        assert_eq!(test_id(1_770_910_245.0), "loadtest_20260212_153045");
        assert_eq!(test_id(951_782_400.0), "loadtest_20000229_000000");
    }
}
