//! `sshlab-agent merge DIR... --out DIR`: the results of several runs as one. Usually the
//! segments of one test split across agents (`--segment I/N`), or any runs to pool.
//!
//! Exact, because it re-reads the records: every input's `w<N>.jsonl` files are folded in
//! completion order into one aggregate. So the merged histograms are the sum of the parts, its
//! interval log is rebuilt by time, and its counts and error messages are the sums. Thresholds
//! (the inputs' and `--threshold`'s) are evaluated again on the merged data, and every report
//! is written as for a single run.
//!
//! What the merge checks: that the inputs are one test's segments (same test id and segment
//! count, each segment once); a missing or repeated segment, an input that did not complete,
//! or runs of different tests make the merged result incomplete, and say why. The records are
//! copied in as `w<N>-<input>.jsonl`, so `sshlab-agent report` can rebuild it.
//!
//! A capacity search is judged again from the inputs' step files (`capacity/step-*.json`, each
//! agent's part of each step): every step from the sum of its parts, the rates in the order
//! the search must have picked them. The result is the merged `capacity`; where it differs
//! from what an input's summary says, the merge says so and is incomplete.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sshlab_core::results::Summary;
use sshlab_core::results::capacity::Capacity;

use crate::collector::{HLOG, HlogWriter};
use crate::engine::capacity::exchange;
use crate::results::{self, ResultsError};
use crate::thresholds::Threshold;

/// Why a merge could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Reading or writing results failed.
    #[error(transparent)]
    Results(#[from] ResultsError),
    /// No input.
    #[error("merge needs at least one results directory")]
    NoInput,
    /// The output directory exists and is not empty.
    #[error("{0}: the output directory exists and is not empty")]
    OutNotEmpty(PathBuf),
    /// A threshold does not parse.
    #[error("threshold `{expr}`: {message}")]
    Threshold {
        /// As given.
        expr: String,
        /// Why.
        message: String,
    },
}

/// What a merge produced.
#[derive(Debug)]
pub struct Merged {
    /// The merged summary (also written to the output directory).
    pub summary: Summary,
    /// Problems that make it incomplete, or worth knowing (also in the summary's reason).
    pub warnings: Vec<String>,
    /// Lines that were not records.
    pub skipped_lines: u64,
}

/// Merge the runs in `dirs` into `out`, evaluating `thresholds` and the inputs' own.
pub fn merge(dirs: &[PathBuf], out: &Path, thresholds: &[String]) -> Result<Merged, MergeError> {
    if dirs.is_empty() {
        return Err(MergeError::NoInput);
    }
    if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(MergeError::OutNotEmpty(out.to_owned()));
    }
    let inputs: Vec<(PathBuf, Option<Summary>)> = dirs
        .iter()
        .map(|d| (d.clone(), results::read_summary(d)))
        .collect();
    let mut warnings = check(&inputs);

    let mut exprs: Vec<String> = thresholds.to_vec();
    for s in inputs.iter().filter_map(|(_, s)| s.as_ref()) {
        for t in &s.thresholds {
            if !exprs.contains(&t.expr) {
                exprs.push(t.expr.clone());
            }
        }
    }
    let mut parsed = Vec::new();
    for expr in &exprs {
        let t: Threshold = expr
            .parse()
            .and_then(|t: Threshold| t.validate().map(|()| t))
            .map_err(|e| MergeError::Threshold {
                expr: expr.clone(),
                message: e.to_string(),
            })?;
        parsed.push(t);
    }

    let mut files = Vec::new();
    for (d, _) in &inputs {
        files.extend(results::record_files(d)?);
    }
    std::fs::create_dir_all(out).map_err(|source| ResultsError::Io {
        path: out.to_owned(),
        source,
    })?;
    let start = inputs
        .iter()
        .filter_map(|(_, s)| s.as_ref().map(|s| s.run.started_at))
        .reduce(f64::min);
    let start_wall = Duration::try_from_secs_f64(start.unwrap_or(0.0).max(0.0))
        .ok()
        .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let hlog_path = out.join(HLOG);
    let mut hlog =
        HlogWriter::start(hlog_path.clone(), start_wall).map_err(|source| ResultsError::Io {
            path: hlog_path,
            source,
        })?;
    let folded = results::fold(&files, start, |closed| hlog.send(closed))?;
    hlog.finish();
    if folded.skipped_lines > 0 {
        warnings.push(format!(
            "{} unreadable record line(s) skipped (e.g. cut short by a crash)",
            folded.skipped_lines
        ));
    }
    // The records, for `report` to rebuild from (one file per input and worker).
    for (i, f) in files.iter().enumerate() {
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("w");
        let to = out.join(format!("{stem}-{i}.jsonl"));
        std::fs::copy(f, &to).map_err(|source| ResultsError::Io { path: to, source })?;
    }

    let summaries: Vec<&Summary> = inputs.iter().filter_map(|(_, s)| s.as_ref()).collect();
    let mut run = summaries.first().map(|s| s.run.clone()).unwrap_or_default();
    run.started_at = folded.agg.start();
    run.ended_at = summaries
        .iter()
        .map(|s| s.run.ended_at)
        .fold(folded.last, f64::max);
    run.workers = summaries.iter().map(|s| s.run.workers).sum();
    run.target_rate = summaries
        .iter()
        .map(|s| s.run.target_rate)
        .try_fold(0.0, |acc, r| r.map(|r| acc + r));
    run.late_starts = summaries.iter().map(|s| s.run.late_starts).sum();
    run.dropped = summaries.iter().map(|s| s.run.dropped).sum();
    run.unreleased = summaries.iter().map(|s| s.run.unreleased).sum();
    run.segment = None;
    run.merged_from = inputs
        .iter()
        .map(|(d, s)| match s {
            Some(s) => match s.run.segment {
                Some(seg) => format!("{} segment {seg}", s.run.test_id),
                None => s.run.test_id.clone(),
            },
            None => format!("{} (no summary.json)", d.display()),
        })
        .collect();
    let mut capacity_notes = Vec::new();
    let capacity = capacity(&inputs, &mut warnings, &mut capacity_notes);
    run.complete = warnings.is_empty();
    run.incomplete_reason = (!warnings.is_empty()).then(|| warnings.join("; "));
    let mut summary = Summary::build(run, &folded.agg);
    summary.capacity = capacity;
    summary.notes = summaries
        .iter()
        .flat_map(|s| s.notes.iter().cloned())
        .chain(capacity_notes)
        .fold(Vec::new(), |mut all, n| {
            if !all.contains(&n) {
                all.push(n);
            }
            all
        });
    summary.thresholds = parsed.iter().map(|t| t.evaluate(&summary)).collect();
    results::write_all(out, &summary)?;
    Ok(Merged {
        summary,
        warnings,
        skipped_lines: folded.skipped_lines,
    })
}

/// The inputs' capacity search, judged again from every input's step files (each step from
/// the sum of its parts, as the agents judged it together); a warning where that differs from
/// what an input's summary says, or where it cannot be done.
fn capacity(
    inputs: &[(PathBuf, Option<Summary>)],
    warnings: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Option<Capacity> {
    let searched: Vec<(&PathBuf, &Capacity)> = inputs
        .iter()
        .filter_map(|(d, s)| Some((d, s.as_ref()?.capacity.as_ref()?)))
        .collect();
    let mut shares = Vec::new();
    for (d, _) in inputs {
        match exchange::read_shares(d) {
            Ok(v) => shares.extend(v),
            Err(e) => warnings.push(e.to_string()),
        }
    }
    if shares.is_empty() {
        if !searched.is_empty() {
            // Results from before step files existed: the records are still merged.
            notes.push(
                "The inputs ran a capacity search but hold no step files (capacity/step-*.json) \
                 to judge it again from, so the merged results carry no capacity."
                    .into(),
            );
        }
        return None;
    }
    let mut c = match crate::engine::capacity::replay(shares) {
        Ok(c) => c,
        Err(e) => {
            warnings.push(format!("capacity search: {e}"));
            return None;
        }
    };
    let show = |c: &Capacity| {
        let steps: Vec<String> = c
            .steps
            .iter()
            .map(|s| {
                format!(
                    "{:.1}/s {}",
                    s.rate_per_s,
                    if s.passed { "pass" } else { "fail" }
                )
            })
            .collect();
        format!(
            "{} via [{}]",
            c.rate_per_s
                .map_or("no capacity".into(), |r| format!("{r:.1}/s")),
            steps.join(", ")
        )
    };
    for (d, theirs) in &searched {
        // Rates as computed, within rounding (they went through JSON).
        let near = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
        let same = match (theirs.rate_per_s, c.rate_per_s) {
            (Some(a), Some(b)) => near(a, b),
            (a, b) => a.is_none() && b.is_none(),
        } && theirs.steps.len() == c.steps.len()
            && theirs
                .steps
                .iter()
                .zip(&c.steps)
                .all(|(a, b)| a.passed == b.passed && near(a.rate_per_s, b.rate_per_s));
        if !same {
            warnings.push(format!(
                "{}: its search found {}, but its steps judged again from every part give {}",
                d.display(),
                show(theirs),
                show(&c)
            ));
        }
    }
    // Each step's server CPU, as the inputs scraped it (they all scraped the one server).
    if let Some((_, first)) = searched.first() {
        for step in &mut c.steps {
            step.server_cpu_percent = first
                .steps
                .iter()
                .find(|s| s.phase == step.phase)
                .and_then(|s| s.server_cpu_percent);
        }
    }
    Some(c)
}

/// What keeps the inputs from being exactly one whole test.
fn check(inputs: &[(PathBuf, Option<Summary>)]) -> Vec<String> {
    let mut warnings = Vec::new();
    for (d, s) in inputs {
        match s {
            None => warnings.push(format!(
                "{}: no summary.json (a crashed agent?)",
                d.display()
            )),
            Some(s) if !s.run.complete => warnings.push(format!(
                "{}: incomplete ({})",
                d.display(),
                s.run
                    .incomplete_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            )),
            Some(_) => {}
        }
    }
    let summaries: Vec<&Summary> = inputs.iter().filter_map(|(_, s)| s.as_ref()).collect();
    let ids: BTreeSet<&str> = summaries.iter().map(|s| s.run.test_id.as_str()).collect();
    if ids.len() > 1 {
        warnings.push(format!(
            "runs of different tests pooled: {}",
            ids.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    let segments: Vec<_> = summaries.iter().filter_map(|s| s.run.segment).collect();
    if !segments.is_empty() {
        let counts: BTreeSet<u32> = segments.iter().map(|s| s.count).collect();
        if counts.len() > 1 || segments.len() != summaries.len() {
            warnings.push("the inputs are not segments of one split (their counts differ)".into());
        } else if let Some(&n) = counts.first() {
            let mut seen = BTreeSet::new();
            for s in &segments {
                if !seen.insert(s.index) {
                    warnings.push(format!("segment {s} given twice"));
                }
            }
            let missing: Vec<String> = (0..n)
                .filter(|i| !seen.contains(i))
                .map(|i| format!("{i}/{n}"))
                .collect();
            if !missing.is_empty() {
                warnings.push(format!("segment {} missing", missing.join(", ")));
            }
        }
    }
    warnings
}
