//! The run's faults: when each was in effect, what completed while it lasted, and how long the
//! run took to recover (the same judgement as report.txt's FAULTS section). The timeline charts
//! shade the same spans.

use std::fmt::Write;

use super::numbers::fin;
use crate::report::escape::escape;
use crate::report::format::thousands;
use crate::results::Summary;

pub(super) fn faults(out: &mut String, s: &Summary) {
    if s.faults.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<section><h2>Faults</h2><p class=\"meta\">Recovery: from the fault's end until the error rate and p99 are back within the run's pre-fault baseline, and stay there for {:.0} s.</p>",
        crate::faults::recovery::HOLD_S
    );
    out.push_str("<table><tr><th>fault</th><th>from</th><th>to</th><th>calls while it lasted</th><th>failed</th><th>p99 ms</th><th>recovery</th><th class=\"l\">verdict</th></tr>");
    let t0 = s.run.started_at;
    let at = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{:.1} s", fin(v - t0)));
    for f in &s.faults {
        let a = f.analysis.as_ref();
        let verdict = match (&f.error, a) {
            (Some(e), _) => format!("error: {e}"),
            (None, Some(a)) => a.verdict.clone(),
            (None, None) => "not judged".to_owned(),
        };
        let recovered = a.is_some_and(|a| a.recovered());
        let _ = write!(
            out,
            r#"<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="{}">{}</td><td class="l">{}</td></tr>"#,
            escape(&f.label()),
            at(f.started_at),
            at(f.ended_at),
            a.map_or("n/a".into(), |a| thousands(a.during.requests)),
            a.map_or("n/a".into(), |a| thousands(a.during.failures)),
            a.map_or("n/a".into(), |a| format!("{:.1}", fin(a.during.p99_ms))),
            if recovered { "pass" } else { "fail" },
            a.and_then(|a| a.recovery_s)
                .map_or("none".into(), |r| format!("{:.1} s", fin(r))),
            escape(&verdict)
        );
    }
    out.push_str("</table></section>");
}
