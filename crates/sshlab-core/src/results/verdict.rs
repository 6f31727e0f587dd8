//! What a finished run means, and the exit code that says it, written once: `sshlab-agent run`,
//! the agent's job API (`serve`) and the host's `sshlab run` (and through it the Nix apps) all
//! exit with [`Verdict::exit_code`] of the same summary.
//!
//! In order of precedence: a run cut short (Ctrl-C, a cancelled job) is [`Verdict::Interrupted`];
//! a run in which no operation succeeded is [`Verdict::NothingSucceeded`], whatever the thresholds
//! say (a run that measured only failures, or nothing, is never a pass); then thresholds decide.

use serde::{Deserialize, Serialize};

use super::Summary;

/// Exit code when every threshold held.
pub const EXIT_OK: u8 = 0;
/// A run error: the server unreachable, results not writable, or a run in which no operation
/// succeeded.
pub const EXIT_RUN_ERROR: u8 = 1;
/// Bad flags, scenario or threshold: nothing ran.
pub const EXIT_USAGE: u8 = 2;
/// A threshold failed.
pub const EXIT_THRESHOLDS: u8 = 99;
/// Interrupted (Ctrl-C / SIGTERM / a cancelled job); partial results were written.
pub const EXIT_INTERRUPTED: u8 = 130;

/// The verdict on a finished run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    /// Complete, something succeeded, every threshold held.
    Passed,
    /// Complete, something succeeded, a threshold failed.
    ThresholdsFailed,
    /// No operation succeeded: why, naming the most frequent failure.
    NothingSucceeded(String),
    /// Stopped early: why.
    Interrupted(String),
}

impl Verdict {
    /// The verdict on `s`.
    pub fn of(s: &Summary) -> Self {
        if !s.run.complete {
            return Self::Interrupted(
                s.run
                    .incomplete_reason
                    .clone()
                    .unwrap_or_else(|| "stopped early".into()),
            );
        }
        if s.totals.successes == 0 {
            return Self::NothingSucceeded(nothing_succeeded(s));
        }
        if s.thresholds.iter().all(|t| t.passed) {
            Self::Passed
        } else {
            Self::ThresholdsFailed
        }
    }

    /// The process exit code that says it.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Passed => EXIT_OK,
            Self::ThresholdsFailed => EXIT_THRESHOLDS,
            Self::NothingSucceeded(_) => EXIT_RUN_ERROR,
            Self::Interrupted(_) => EXIT_INTERRUPTED,
        }
    }

    /// A line for people, or `None` when it passed.
    pub fn problem(&self) -> Option<String> {
        match self {
            Self::Passed => None,
            Self::ThresholdsFailed => Some("a threshold failed".into()),
            Self::NothingSucceeded(why) => Some(why.clone()),
            Self::Interrupted(why) => Some(format!("incomplete: {why}")),
        }
    }
}

/// Why a run in which nothing succeeded is a run error: names the most frequent failure, so
/// the terminal says what the server answered.
fn nothing_succeeded(s: &Summary) -> String {
    if s.totals.requests == 0 {
        return "no operation completed in the run's duration".into();
    }
    let top = s.error_messages.first().map_or(String::new(), |m| {
        format!("; most frequent ({}x, {}): {}", m.count, m.kind, m.example)
    });
    format!("no operation succeeded ({} failed){top}", s.totals.failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{RunInfo, ThresholdResult, Totals};

    fn summary(successes: u64, failures: u64, complete: bool, passed: &[bool]) -> Summary {
        Summary {
            run: RunInfo {
                complete,
                incomplete_reason: (!complete).then(|| "interrupted".into()),
                ..RunInfo::default()
            },
            totals: Totals {
                requests: successes + failures,
                successes,
                failures,
                ..Totals::default()
            },
            thresholds: passed
                .iter()
                .map(|p| ThresholdResult {
                    expr: "errors<1%".into(),
                    actual: None,
                    passed: *p,
                })
                .collect(),
            ..Summary::default()
        }
    }

    #[test]
    fn nothing_succeeded_is_a_run_error_whatever_the_thresholds_say() {
        let v = Verdict::of(&summary(0, 10, true, &[true]));
        assert!(
            matches!(&v, Verdict::NothingSucceeded(w) if w.contains("10 failed")),
            "{v:?}"
        );
        assert_eq!(v.exit_code(), EXIT_RUN_ERROR);
        let none = Verdict::of(&summary(0, 0, true, &[]));
        assert_eq!(none.exit_code(), EXIT_RUN_ERROR);
    }

    #[test]
    fn precedence_interrupted_then_nothing_then_thresholds() {
        assert_eq!(
            Verdict::of(&summary(0, 3, false, &[])).exit_code(),
            EXIT_INTERRUPTED
        );
        assert_eq!(Verdict::of(&summary(5, 0, true, &[true])), Verdict::Passed);
        assert_eq!(
            Verdict::of(&summary(5, 0, true, &[true, false])).exit_code(),
            EXIT_THRESHOLDS
        );
    }

    #[test]
    fn it_travels_as_json() {
        let v = Verdict::NothingSucceeded("x".into());
        let text = serde_json::to_string(&v).expect("json");
        assert_eq!(text, r#"{"verdict":"nothing_succeeded","reason":"x"}"#);
        assert_eq!(serde_json::from_str::<Verdict>(&text).expect("back"), v);
        assert_eq!(
            serde_json::to_string(&Verdict::Passed).expect("json"),
            r#"{"verdict":"passed"}"#
        );
    }
}
