//! JUnit XML for CI systems: one `testsuite` named after the scenario, one `testcase` per
//! threshold (a `failure` with the actual value when it failed), and a `run completed`
//! testcase that fails when the run ended early.

use std::fmt::Write;

use super::escape::escape;
use crate::results::Summary;

fn seconds(v: f64) -> String {
    format!("{:.3}", if v.is_finite() { v.max(0.0) } else { 0.0 })
}

/// Render the JUnit XML report.
pub fn render(s: &Summary) -> String {
    let r = &s.run;
    let suite = if r.scenario.is_empty() {
        "sshlab"
    } else {
        &r.scenario
    };
    let class = format!("sshlab.{suite}");
    let tests = s.thresholds.len() + 1;
    let failures = s.thresholds.iter().filter(|t| !t.passed).count() + usize::from(!r.complete);

    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        r#"<testsuites name="sshlab" tests="{tests}" failures="{failures}" errors="0" time="{t}">"#,
        t = seconds(s.duration_s)
    );
    let _ = writeln!(
        out,
        r#"  <testsuite name="{n}" id="{id}" tests="{tests}" failures="{failures}" errors="0" skipped="0" time="{t}">"#,
        n = escape(suite),
        id = escape(&r.test_id),
        t = seconds(s.duration_s)
    );
    let _ = writeln!(out, "    <properties>");
    for (k, v) in [
        ("test_id", r.test_id.clone()),
        ("mcp_url", r.mcp_url.clone()),
        ("model", r.model.clone()),
        ("workers", r.workers.to_string()),
        ("requests", s.totals.requests.to_string()),
        ("failures", s.totals.failures.to_string()),
    ] {
        let _ = writeln!(
            out,
            r#"      <property name="{k}" value="{}"/>"#,
            escape(&v)
        );
    }
    let _ = writeln!(out, "    </properties>");

    let _ = write!(
        out,
        r#"    <testcase classname="{c}" name="run completed" time="{t}""#,
        c = escape(&class),
        t = seconds(s.duration_s)
    );
    if r.complete {
        out.push_str("/>\n");
    } else {
        let reason = r.incomplete_reason.as_deref().unwrap_or("still running");
        let _ = writeln!(
            out,
            ">\n      <failure message=\"run incomplete: {m}\" type=\"incomplete\">{m}</failure>\n    </testcase>",
            m = escape(reason)
        );
    }

    for t in &s.thresholds {
        let _ = write!(
            out,
            r#"    <testcase classname="{c}.thresholds" name="{n}" time="0""#,
            c = escape(&class),
            n = escape(&t.expr)
        );
        if t.passed {
            out.push_str("/>\n");
        } else {
            let actual = t
                .actual
                .filter(|v| v.is_finite())
                .map_or("not measured".to_owned(), |v| format!("{v}"));
            let msg = format!("threshold {} failed: actual {actual}", t.expr);
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{m}\" type=\"threshold\">expected: {e}\nactual: {a}</failure>\n    </testcase>",
                m = escape(&msg),
                e = escape(&t.expr),
                a = escape(&actual)
            );
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// JUnit XML of a comparison (`sshlab-agent compare`): one testcase per regression bound,
/// failed when the candidate crossed it.
pub fn render_comparison(
    baseline: &Summary,
    candidate: &Summary,
    verdicts: &[crate::results::compare::Verdict],
) -> String {
    let failures = verdicts.iter().filter(|v| !v.passed).count();
    let tests = verdicts.len();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        r#"<testsuites name="sshlab-compare" tests="{tests}" failures="{failures}" errors="0">"#
    );
    let _ = writeln!(
        out,
        r#"  <testsuite name="regression bounds" id="{} vs {}" tests="{tests}" failures="{failures}" errors="0" skipped="0">"#,
        escape(&candidate.run.test_id),
        escape(&baseline.run.test_id)
    );
    let show = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
    for v in verdicts {
        let _ = write!(
            out,
            r#"    <testcase classname="sshlab.compare" name="{}""#,
            escape(&v.bound.expr)
        );
        if v.passed {
            out.push_str("/>\n");
        } else {
            let msg = format!(
                "baseline {} candidate {}",
                show(v.baseline),
                show(v.candidate)
            );
            let _ = writeln!(
                out,
                r#"><failure message="{m}" type="regression">{m}</failure></testcase>"#,
                m = escape(&msg)
            );
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{RunInfo, ThresholdResult};

    fn summary(complete: bool) -> Summary {
        Summary {
            run: RunInfo {
                test_id: "loadtest_1".into(),
                scenario: "quick<&>".into(),
                complete,
                incomplete_reason: (!complete).then(|| "interrupted \"ctrl-c\"".into()),
                ..RunInfo::default()
            },
            duration_s: 30.0,
            thresholds: vec![
                ThresholdResult {
                    expr: "ssh_run_command.p99<200ms".into(),
                    actual: Some(12.5),
                    passed: true,
                },
                ThresholdResult {
                    expr: "errors<1%".into(),
                    actual: Some(2.5),
                    passed: false,
                },
                ThresholdResult {
                    expr: "nope.p50<1ms".into(),
                    actual: None,
                    passed: false,
                },
            ],
            ..Summary::default()
        }
    }

    #[test]
    fn shape_counts_and_escaping() {
        let x = render(&summary(true));
        assert!(x.starts_with("<?xml version=\"1.0\""));
        assert_eq!(x.matches("<testsuite ").count(), 1);
        assert_eq!(x.matches("<testcase ").count(), 4);
        assert_eq!(x.matches("<failure ").count(), 2);
        assert!(x.contains(r#"<testsuite name="quick&lt;&amp;&gt;""#));
        assert!(x.contains(r#"tests="4" failures="2""#));
        assert!(x.contains(r#"name="ssh_run_command.p99&lt;200ms" time="0"/>"#));
        assert!(x.contains("actual: 2.5"));
        assert!(x.contains("actual: not measured"));
        assert!(x.contains(r#"name="run completed" time="30.000"/>"#));
        assert_eq!(x.matches("</testcase>").count(), 2);
        assert!(x.trim_end().ends_with("</testsuites>"));
    }

    #[test]
    fn incomplete_run_fails_its_testcase() {
        let x = render(&summary(false));
        assert!(x.contains(r#"tests="4" failures="3""#));
        assert!(x.contains("type=\"incomplete\">interrupted &quot;ctrl-c&quot;</failure>"));
        let empty = render(&Summary::default());
        assert!(empty.contains(r#"<testsuite name="sshlab""#));
        assert!(empty.contains(r#"tests="1" failures="1""#));
    }
}
