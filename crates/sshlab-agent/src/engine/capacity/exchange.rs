//! The step files of a capacity search: how the agents of a split search (`--segment I/N`)
//! judge every step together, and how `merge` judges it again afterwards.
//!
//! Each agent writes what it judged of step K to `capacity/step-K.json` in its own results dir
//! ([`StepShare`]; written whole, then renamed, so nobody reads half a file). The agents of one
//! split search share one results root (the Kubernetes Job's results volume), so agent I
//! finds agent J's files in `<root>/<test-id>-s<J>of<N>/capacity/`. After each step every agent
//! waits for the others' files, adds them up in segment order and judges the sum: all of them
//! reach the same verdict and so the same next rate, and start the next step at the same
//! moment (after the last file was written). An agent whose judge stops a step early also
//! writes `step-K.stop.json`; the others watch for it and stop too, so every share of a step
//! covers the same time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sshlab_core::scenario::segment::Segment;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::judge::{StepShare, Stopped};

/// How often the agents look for each other's files.
pub(super) const POLL: Duration = Duration::from_millis(100);

/// Why the agents of a split search could not judge a step together.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// A step file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A step file is not one.
    #[error("{path}: not a capacity step file: {message}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Some agents never wrote their part of a step.
    #[error(
        "step {step}: no result from segment(s) {missing} within {waited_s:.0} s of this \
         agent's (each agent of a split search writes <results-dir>/<test-id>-s<I>of<N>/\
         capacity/step-NNN.json; do they share one --results-dir, --test-id and --start-at?){stale}"
    )]
    Missing {
        /// The step.
        step: usize,
        /// The segments that did not report, `1/3, 2/3`.
        missing: String,
        /// How long this agent waited.
        waited_s: f64,
        /// What was found instead, if anything.
        stale: String,
    },
    /// The agents did not run the same step.
    #[error("step {step}: segment {segment} ran {theirs}, this agent {ours}: not one search")]
    Diverged {
        /// The step.
        step: usize,
        /// The other agent.
        segment: Segment,
        /// Its step.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// The run was cancelled while waiting.
    #[error("cancelled")]
    Cancelled,
}

/// Where one agent's step files go, and where its peers' are.
#[derive(Debug, Clone)]
pub struct StepFiles {
    own: PathBuf,
    run_started_at: f64,
    /// Every other segment's `capacity` dir.
    peers: Vec<(Segment, PathBuf)>,
}

fn step_file(dir: &Path, step: usize) -> PathBuf {
    dir.join(format!("step-{step:03}.json"))
}

fn stop_file(dir: &Path, step: usize) -> PathBuf {
    dir.join(format!("step-{step:03}.stop.json"))
}

/// `step-NNN.stop.json`: an early stop, with the run it belongs to.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StopFile {
    run_started_at: f64,
    stopped: Stopped,
}

/// The directory, under a run's results dir, that holds its step files.
pub const DIR: &str = "capacity";

impl StepFiles {
    /// The step files of the agent whose results are in `results_dir`, of a run that started
    /// at `run_started_at`; a split search's peers write theirs into `peer_dirs` (their
    /// results dirs).
    pub fn new(
        results_dir: &Path,
        run_started_at: f64,
        peer_dirs: Vec<(Segment, PathBuf)>,
    ) -> Self {
        Self {
            own: results_dir.join(DIR),
            run_started_at,
            peers: peer_dirs
                .into_iter()
                .map(|(s, d)| (s, d.join(DIR)))
                .collect(),
        }
    }

    /// Whether other agents share the search.
    pub fn split(&self) -> bool {
        !self.peers.is_empty()
    }

    /// The run's start, as every share of it says.
    pub fn run_started_at(&self) -> f64 {
        self.run_started_at
    }

    fn write(&self, path: PathBuf, json: Vec<u8>) -> Result<(), ExchangeError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ExchangeError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(&self.own)
            .map_err(io(&self.own))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Writes this agent's part of a step, and returns it as the others will read it (the
    /// numbers every agent judges must be the same to the last bit).
    pub fn publish(&self, share: &StepShare) -> Result<StepShare, ExchangeError> {
        let path = step_file(&self.own, share.step);
        let bad = |e: serde_json::Error| ExchangeError::Bad {
            path: path.clone(),
            message: e.to_string(),
        };
        let json = serde_json::to_vec(share).map_err(bad)?;
        let read = serde_json::from_slice(&json).map_err(bad)?;
        self.write(path.clone(), json)?;
        Ok(read)
    }

    /// Says that this agent stopped step `step` early, for the others to follow.
    pub fn publish_stop(&self, step: usize, stopped: &Stopped) -> Result<(), ExchangeError> {
        let file = StopFile {
            run_started_at: self.run_started_at,
            stopped: stopped.clone(),
        };
        let json = serde_json::to_vec(&file).map_err(|e| ExchangeError::Bad {
            path: stop_file(&self.own, step),
            message: e.to_string(),
        })?;
        self.write(stop_file(&self.own, step), json)
    }

    /// The first stop another agent wrote for step `step`, if any.
    pub fn peer_stop(&self, step: usize) -> Option<Stopped> {
        self.peers
            .iter()
            .filter_map(|(seg, dir)| {
                let bytes = std::fs::read(stop_file(dir, step)).ok()?;
                let file: StopFile = serde_json::from_slice(&bytes).ok()?;
                // Another run's (the same test id used before): not this search's.
                if file.run_started_at != self.run_started_at {
                    return None;
                }
                let mut s = file.stopped;
                if !s.why.starts_with("segment ") {
                    s.why = format!("segment {seg}: {}", s.why);
                }
                Some(s)
            })
            .min_by(|a, b| a.at.total_cmp(&b.at))
    }

    /// Every other agent's part of the step `ours` is this agent's part of (as read back from
    /// its file, so that every agent judges the same numbers), waiting up to `wait` for the
    /// last of them.
    pub async fn gather(
        &self,
        ours: &StepShare,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<Vec<StepShare>, ExchangeError> {
        let until = Instant::now() + wait;
        let mut found: Vec<Option<StepShare>> = vec![None; self.peers.len()];
        let mut stale = String::new();
        loop {
            for ((seg, dir), slot) in self.peers.iter().zip(found.iter_mut()) {
                if slot.is_some() {
                    continue;
                }
                let path = step_file(dir, ours.step);
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let share: StepShare =
                    serde_json::from_slice(&bytes).map_err(|e| ExchangeError::Bad {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                if share.run_started_at != ours.run_started_at || share.segment != *seg {
                    // Another run's file (the same test id used twice): not this search's.
                    stale = format!(
                        "; {} is from another run (segment {}, started at {:.0}, not {:.0})",
                        path.display(),
                        share.segment,
                        share.run_started_at,
                        ours.run_started_at
                    );
                    continue;
                }
                if share.step != ours.step
                    || share.label != ours.label
                    || share.rate_per_s != ours.rate_per_s
                    || share.planned_s != ours.planned_s
                    || share.search != ours.search
                {
                    return Err(ExchangeError::Diverged {
                        step: ours.step,
                        segment: *seg,
                        theirs: share.label,
                        ours: ours.label.clone(),
                    });
                }
                *slot = Some(share);
            }
            if found.iter().all(Option::is_some) {
                return Ok(found.into_iter().flatten().collect());
            }
            if Instant::now() >= until {
                let missing: Vec<String> = self
                    .peers
                    .iter()
                    .zip(&found)
                    .filter(|(_, f)| f.is_none())
                    .map(|((s, _), _)| s.to_string())
                    .collect();
                return Err(ExchangeError::Missing {
                    step: ours.step,
                    missing: missing.join(", "),
                    waited_s: wait.as_secs_f64(),
                    stale,
                });
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = cancel.cancelled() => return Err(ExchangeError::Cancelled),
            }
        }
    }
}

/// Every step file in the results dir `dir` (none when it has no `capacity` dir), for `merge`.
pub fn read_shares(dir: &Path) -> Result<Vec<StepShare>, ExchangeError> {
    let cap = dir.join(DIR);
    let entries = match std::fs::read_dir(&cap) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ExchangeError::Io { path: cap, source }),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-") && !n.ends_with(".stop.json"))
                && p.extension().is_some_and(|e| e == "json")
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).map_err(|source| ExchangeError::Io {
                path: path.clone(),
                source,
            })?;
            serde_json::from_slice(&bytes).map_err(|e| ExchangeError::Bad {
                path,
                message: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::judge::SearchPlan;
    use super::*;

    fn share(segment: Segment, run_started_at: f64, label: &str) -> StepShare {
        StepShare {
            segment,
            run_started_at,
            step: 1,
            label: label.into(),
            rate_per_s: 10.0,
            planned_s: 8.0,
            judged_from: 102.0,
            stopped: None,
            published_at: 111.0,
            served: None,
            search: SearchPlan {
                slo: vec!["p99<200ms".into()],
                start_rate: 10.0,
                max_steps: 10,
                precision: 0.05,
            },
            all: Default::default(),
            ops: Default::default(),
        }
    }

    /// A peer's file left by another run with the same test id is not taken (the wait ends
    /// saying so), nor is its stop followed; a peer of this run that ran another step is
    /// refused; a cancelled wait ends at once.
    #[tokio::test]
    async fn peers_are_this_runs_and_ran_the_same_step() {
        let root = tempfile::tempdir().expect("tmp");
        let (a, b) = (root.path().join("t-s0of2"), root.path().join("t-s1of2"));
        let (s0, s1) = (
            Segment { index: 0, count: 2 },
            Segment { index: 1, count: 2 },
        );
        let me = StepFiles::new(&a, 100.0, vec![(s1, b.clone())]);
        let old = StepFiles::new(&b, 50.0, vec![(s0, a.clone())]);
        let peer = StepFiles::new(&b, 100.0, vec![(s0, a.clone())]);
        let ours = me
            .publish(&share(s0, 100.0, "step 1: 10.0/s"))
            .expect("publish");
        let never = CancellationToken::new();
        old.publish(&share(s1, 50.0, "step 1: 10.0/s"))
            .expect("publish");
        let e = me
            .gather(&ours, Duration::from_millis(300), &never)
            .await
            .expect_err("another run's file");
        assert!(
            matches!(e, ExchangeError::Missing { .. }) && e.to_string().contains("another run"),
            "{e}"
        );
        let stop = Stopped {
            at: 105.0,
            why: "p99<200ms broken beyond doubt".into(),
        };
        old.publish_stop(1, &stop).expect("stop");
        assert_eq!(me.peer_stop(1), None, "another run's stop");
        peer.publish_stop(1, &stop).expect("stop");
        assert_eq!(
            me.peer_stop(1).map(|s| s.why),
            Some("segment 1/2: p99<200ms broken beyond doubt".into())
        );
        peer.publish(&share(s1, 100.0, "step 1: 20.0/s"))
            .expect("publish");
        let e = me
            .gather(&ours, Duration::from_millis(300), &never)
            .await
            .expect_err("another step");
        assert!(matches!(e, ExchangeError::Diverged { .. }), "{e}");
        peer.publish(&share(s1, 100.0, "step 1: 10.0/s"))
            .expect("publish");
        let both = me
            .gather(&ours, Duration::from_millis(300), &never)
            .await
            .expect("this run's peer");
        assert_eq!(both.len(), 1);
        let cancelled = CancellationToken::new();
        cancelled.cancel();
        let mut next = ours.clone();
        next.step = 2;
        let e = me
            .gather(&next, Duration::from_secs(30), &cancelled)
            .await
            .expect_err("cancelled");
        assert!(matches!(e, ExchangeError::Cancelled), "{e}");
        // A file that is not one is refused with its path.
        std::fs::write(b.join(DIR).join("step-002.json"), b"{").expect("write");
        let e = me
            .gather(&next, Duration::from_millis(300), &never)
            .await
            .expect_err("bad");
        assert!(e.to_string().contains("not a capacity step file"), "{e}");
    }
}
