//! The totals broken down: one table row per operation (and per phase when the run had more
//! than one), and the errors by kind with their share of errors and of requests.

use std::fmt::Write;

use super::no_data;
use super::numbers::{fin, ms};
use crate::report::escape::escape;
use crate::report::format::thousands;
use crate::results::{GroupSummary, Summary};

fn group_table(out: &mut String, first: &str, groups: &[GroupSummary]) {
    let _ = write!(
        out,
        "<table><tr><th>{}</th><th>requests</th><th>errors</th><th>error %</th><th>rps</th><th>p50</th><th>p95</th><th>p99</th><th>max</th><th>p99 uncorr.</th></tr>",
        escape(first)
    );
    for g in groups {
        let t = &g.totals;
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{:.2}%</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&g.name),
            thousands(t.requests),
            thousands(t.failures),
            fin(t.error_rate_percent),
            fin(t.rps_avg),
            ms(g.latency.p50),
            ms(g.latency.p95),
            ms(g.latency.p99),
            ms(g.latency.max),
            ms(g.latency_uncorrected.p99),
        );
    }
    out.push_str("</table>");
}

pub(super) fn per_operation(out: &mut String, s: &Summary) {
    out.push_str("<section><h2>Per operation</h2>");
    if s.ops.is_empty() {
        no_data(out, "operations");
    } else {
        group_table(out, "operation", &s.ops);
    }
    out.push_str("</section>");
    if s.phases.len() > 1 {
        out.push_str("<section><h2>Phases</h2>");
        group_table(out, "phase", &s.phases);
        out.push_str("</section>");
    }
}

/// This run against its baseline (when one was given): both runs' figures per group with the
/// change, and the regression bounds.
pub(super) fn baseline(out: &mut String, s: &Summary) {
    use crate::results::compare::{METRICS, change, fmt};
    let Some(b) = &s.baseline else {
        return;
    };
    let _ = write!(
        out,
        "<section><h2>Against baseline <code>{}</code></h2><table><tr><th>group</th><th>metric</th><th>baseline</th><th>this run</th><th>change</th></tr>",
        escape(&b.test_id)
    );
    for r in &b.rows {
        for (m, (base, cand)) in METRICS.iter().zip(&r.values) {
            let _ = write!(
                out,
                r#"<tr><td class="l">{}</td><td>{m}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                escape(&r.group),
                fmt(*base),
                fmt(*cand),
                change(*base, *cand)
            );
        }
    }
    out.push_str("</table>");
    for v in &b.verdicts {
        let _ = write!(
            out,
            r#"<p class="meta"><b>{}</b> <code>{}</code>: baseline {}, this run {} ({})</p>"#,
            if v.passed { "PASS" } else { "FAIL" },
            escape(&v.bound.expr),
            fmt(v.baseline),
            fmt(v.candidate),
            change(v.baseline, v.candidate)
        );
    }
    out.push_str("</section>");
}

pub(super) fn errors(out: &mut String, s: &Summary) {
    out.push_str("<section><h2>Errors</h2>");
    if s.errors.is_empty() {
        no_data(out, "errors");
    } else {
        let total: u64 = s.errors.values().sum();
        let mut rows: Vec<(&String, &u64)> = s.errors.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        out.push_str("<table><tr><th>kind</th><th>count</th><th>share of errors</th><th>share of requests</th><th></th></tr>");
        for (kind, n) in rows {
            let share = if total == 0 {
                0.0
            } else {
                *n as f64 * 100.0 / total as f64
            };
            let of_req = if s.totals.requests == 0 {
                0.0
            } else {
                *n as f64 * 100.0 / s.totals.requests as f64
            };
            let _ = write!(
                out,
                r#"<tr><td class="l"><code>{}</code></td><td>{}</td><td>{share:.1}%</td><td>{of_req:.2}%</td><td style="width:30%;text-align:left"><span class="bar" style="width:{w:.1}%"></span></td></tr>"#,
                escape(kind),
                thousands(*n),
                w = share.clamp(0.0, 100.0)
            );
        }
        out.push_str("</table>");
        messages(out, s);
    }
    out.push_str("</section>");
}

/// What the failures said: each distinct message with its count, when it first happened and
/// where, verbatim (escaped).
fn messages(out: &mut String, s: &Summary) {
    if s.error_messages.is_empty() {
        return;
    }
    out.push_str("<h3>What failed</h3><table><tr><th>count</th><th>kind</th><th>first at</th><th>last at</th><th>operation</th><th class=\"l\">message (first example)</th></tr>");
    for m in &s.error_messages {
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td><code>{}</code></td><td>{:.1} s</td><td>{:.1} s</td><td>{}</td><td class="l"><code>{}</code></td></tr>"#,
            thousands(m.count),
            escape(&m.kind),
            fin(m.first_s),
            fin(m.last_s.max(m.first_s)),
            escape(&m.op),
            escape(&m.example),
        );
    }
    out.push_str("</table>");
    if s.error_messages_unlisted > 0 {
        let _ = write!(
            out,
            "<p>{} more failures had other messages (only the first {} distinct ones are kept).</p>",
            thousands(s.error_messages_unlisted),
            crate::results::messages::MAX_DISTINCT
        );
    }
}
