//! The top of the page, read first: what ran and how (scenario, test id, model, endpoint, start
//! time), whether it completed and passed its thresholds (badges in the header, the reason when
//! it stopped early), the key figures as cards, and the thresholds table. The table sits here
//! because it belongs to the verdict; the page moves it to the end when no thresholds were given.

use std::fmt::Write;

use super::numbers::{fin, ms, tick, utc};
use super::{View, card, no_data};
use crate::report::escape::escape;
use crate::report::format::thousands;
use crate::results::Summary;

/// In the [`View::Live`] a run that has not finished is running, not incomplete: RUNNING, and no
/// reason why it did not finish.
pub(super) fn header(out: &mut String, s: &Summary, view: View) {
    let live = view == View::Live && !s.run.complete;
    let r = &s.run;
    let scenario = if r.scenario.is_empty() {
        "load test"
    } else {
        &r.scenario
    };
    let failed = s.thresholds.iter().filter(|t| !t.passed).count();
    out.push_str("<header>");
    let _ = write!(out, "<h1>{}", escape(scenario));
    if r.complete {
        out.push_str(r#"<span class="badge ok">COMPLETE</span>"#);
    } else if live {
        out.push_str(r#"<span class="badge warn">RUNNING</span>"#);
    } else {
        out.push_str(r#"<span class="badge bad">INCOMPLETE</span>"#);
    }
    if !s.thresholds.is_empty() {
        if failed == 0 {
            let _ = write!(
                out,
                r#"<span class="badge ok">{} THRESHOLDS PASSED</span>"#,
                s.thresholds.len()
            );
        } else {
            let _ = write!(
                out,
                r#"<span class="badge bad">{failed} OF {} THRESHOLDS FAILED</span>"#,
                s.thresholds.len()
            );
        }
    }
    out.push_str("</h1>");
    let model = match r.target_rate {
        Some(rate) => format!(
            "open model, {:.1}/s target, {} workers, {} late starts, {} dropped",
            fin(rate),
            r.workers,
            thousands(r.late_starts),
            thousands(r.dropped)
        ),
        None if r.model.is_empty() => format!("{} workers", r.workers),
        None => format!("{} model, {} workers", r.model, r.workers),
    };
    let _ = write!(
        out,
        r#"<div class="meta"><b>{}</b> · {} · started {} · ran {:.1} s</div><div class="meta">{} · protocol {}</div>"#,
        escape(&r.test_id),
        escape(&model),
        utc(r.started_at),
        fin(s.duration_s),
        escape(if r.mcp_url.is_empty() {
            "endpoint n/a"
        } else {
            &r.mcp_url
        }),
        escape(if r.protocol.is_empty() {
            "n/a"
        } else {
            &r.protocol
        }),
    );
    if !r.complete && !live {
        let _ = write!(
            out,
            r#"<div class="reason">The run did not finish as planned: {}. Everything measured until then is included.</div>"#,
            escape(r.incomplete_reason.as_deref().unwrap_or("still running"))
        );
    }
    if r.dropped > 0 {
        let _ = write!(
            out,
            r#"<div class="warnbox">{} arrivals were never sent: their phase ended before a worker was free to start them.</div>"#,
            thousands(r.dropped)
        );
    }
    if r.unreleased > 0 {
        let _ = write!(
            out,
            r#"<div class="warnbox">{} SSH sessions could not be released on the server at the end.</div>"#,
            thousands(r.unreleased)
        );
    }
    for n in &s.notes {
        let _ = write!(out, r#"<div class="warnbox">{}</div>"#, escape(n));
    }
    out.push_str("</header>");
}

pub(super) fn key_figures(out: &mut String, s: &Summary) {
    let t = &s.totals;
    let success = if t.requests == 0 {
        0.0
    } else {
        100.0 - fin(t.error_rate_percent)
    };
    out.push_str(r#"<div class="cards">"#);
    card(
        out,
        "",
        "Requests",
        &thousands(t.requests),
        &format!("{} failed", thousands(t.failures)),
    );
    let class = if t.failures > 0 { "bad" } else { "good" };
    card(
        out,
        if t.requests == 0 { "" } else { class },
        "Success",
        &format!("{success:.2}%"),
        &format!("{} ok", thousands(t.successes)),
    );
    card(
        out,
        "",
        "Requests / s",
        &format!("{:.1}", fin(t.rps_avg)),
        &format!("peak {:.0}/s", fin(t.rps_peak)),
    );
    let (c, u) = (&s.latency, &s.latency_uncorrected);
    for (name, cv, uv) in [
        ("p50", c.p50, u.p50),
        ("p95", c.p95, u.p95),
        ("p99", c.p99, u.p99),
    ] {
        card(
            out,
            "",
            &format!("{name} latency"),
            &ms(cv),
            &format!("uncorrected {}", ms(uv)),
        );
    }
    out.push_str("</div>");
}

pub(super) fn thresholds(out: &mut String, s: &Summary) {
    out.push_str("<section><h2>Thresholds</h2>");
    if s.thresholds.is_empty() {
        no_data(out, "thresholds given");
    } else {
        out.push_str("<table><tr><th>threshold</th><th>actual</th><th>result</th></tr>");
        for t in &s.thresholds {
            let actual = t
                .actual
                .filter(|v| v.is_finite())
                .map_or("n/a (not measured)".to_owned(), |v| {
                    tick((v * 1000.0).round() / 1000.0)
                });
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"{}\">{}</td></tr>",
                escape(&t.expr),
                escape(&actual),
                if t.passed { "pass" } else { "fail" },
                if t.passed { "✔ pass" } else { "✘ FAIL" }
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
}
