//! `report.html`: one self-contained page (inline CSS, inline SVG drawn here, no scripts, no
//! fonts, nothing fetched) rendered from the [`Summary`] alone.
//!
//! Sections: status header, key figures, thresholds, latency percentiles over time,
//! throughput over time, the latency distribution (corrected vs uncorrected), the per-port
//! comparison (latency_test), per-operation and per-phase tables, errors, and the server's
//! metrics (pool, CPU, RSS over time with the leak warning). Every string taken from the
//! summary is HTML-escaped; every coordinate is finite even for an empty summary.
//!
//! This file is the page itself: its stylesheet, the order of its sections, and the two
//! blocks every section may use (a key-figure card, a "no data" line). Each section lives in
//! the submodule for its part of the page and only decides what to show; how a chart is drawn
//! is `svg`'s job, how a number reads is `numbers`'s, and escaping is [`escape()`]'s.

use std::fmt::Write;

use crate::results::Summary;

mod breakdown;
mod capacity;
mod faults;
mod latency;
mod numbers;
#[cfg(test)]
mod sample;
mod server;
mod svg;
mod timeline;
mod verdict;

use super::escape::escape;

const CSS: &str = r#"
:root{--fg:#1d2330;--muted:#6b7385;--line:#e3e6ec;--bg:#f5f6f8;--card:#fff;--ok:#2f9e44;--bad:#e03131;--warn:#f08c00;--accent:#3b5bdb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:24px}
header{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:20px 24px;margin-bottom:16px}
h1{margin:0 0 6px;font-size:22px}
h2{font-size:16px;margin:0 0 12px}
.meta{color:var(--muted);font-size:13px}
.meta b{color:var(--fg);font-weight:600}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-size:12px;font-weight:700;letter-spacing:.03em;vertical-align:middle;margin-left:8px;color:#fff}
.badge.ok{background:var(--ok)}.badge.bad{background:var(--bad)}.badge.warn{background:var(--warn)}
.reason{margin-top:10px;padding:8px 12px;background:#fff5f5;border:1px solid #ffc9c9;border-radius:6px;color:#c92a2a}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 20px;margin-bottom:16px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin-bottom:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:24px;font-weight:700;margin-top:2px;font-variant-numeric:tabular-nums}
.card .s{color:var(--muted);font-size:12px;font-variant-numeric:tabular-nums}
.card.bad .v{color:var(--bad)}.card.good .v{color:var(--ok)}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{color:var(--muted);font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
th:first-child,td:first-child{text-align:left}
td.l{text-align:left;white-space:normal}
tr:last-child td{border-bottom:0}
.pass{color:var(--ok);font-weight:700}.fail{color:var(--bad);font-weight:700}
.pos{color:var(--bad)}.neg{color:var(--ok)}
.bar{display:inline-block;height:8px;background:var(--bad);border-radius:4px;vertical-align:middle}
.none{color:var(--muted);font-style:italic}
.warnbox{margin-top:10px;padding:8px 12px;background:#fff9db;border:1px solid #ffe066;border-radius:6px;color:#8f5f00}
svg{display:block;width:100%;height:auto}
svg text{font-family:inherit;font-size:11px;fill:#6b7385}
svg .lbl{fill:#1d2330;font-size:10px}
.legend{display:flex;gap:16px;flex-wrap:wrap;font-size:12px;color:var(--muted);margin:-4px 0 6px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-2px}
details summary{cursor:pointer;color:var(--accent);margin-top:10px}
footer{color:var(--muted);font-size:12px;text-align:center;margin:8px 0 24px}
"#;

/// A muted sentence in place of a chart or table: "No {what}."
fn no_data(out: &mut String, what: &str) {
    let _ = write!(out, r#"<p class="none">No {}.</p>"#, escape(what));
}

/// A key-figure card: small caps name `k`, big value `v`, muted line `sub`; `class` is
/// `""`, `"good"` or `"bad"` (colours the value).
fn card(out: &mut String, class: &str, k: &str, v: &str, sub: &str) {
    let _ = write!(
        out,
        r#"<div class="card {class}"><div class="k">{}</div><div class="v">{}</div><div class="s">{}</div></div>"#,
        escape(k),
        escape(v),
        escape(sub)
    );
}

/// What a page is: the report of a run that ended (`report.html`), or a frame of the live
/// dashboard while the run goes on. They differ only where a run in progress is not an
/// unfinished one: a live header says RUNNING instead of INCOMPLETE and gives no reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// `report.html`.
    Report,
    /// A frame of the agent's live dashboard.
    Live,
}

/// Render `report.html`.
pub fn render(s: &Summary) -> String {
    document(s, View::Report, "", "", "")
}

/// The whole page: `extra_head` goes into `<head>` after the stylesheet, `before_main` and
/// `after_main` around `<main>` (the live dashboard's status bar and script); `report.html` is
/// this with all three empty.
pub fn document(
    s: &Summary,
    view: View,
    extra_head: &str,
    before_main: &str,
    after_main: &str,
) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let title = format!(
        "{} · {}",
        if s.run.scenario.is_empty() {
            "load test"
        } else {
            &s.run.scenario
        },
        s.run.test_id
    );
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{CSS}</style>{extra_head}</head><body>{before_main}<main>",
        escape(&title)
    );
    sections(&mut out, s, view);
    let _ = writeln!(out, "</main>{after_main}</body></html>");
    out
}

/// The content of the page's `<main>`: every section, in order, and the footer (what the live
/// dashboard replaces every second).
pub fn main_content(s: &Summary, view: View) -> String {
    let mut out = String::with_capacity(32 * 1024);
    sections(&mut out, s, view);
    out
}

fn sections(out: &mut String, s: &Summary, view: View) {
    verdict::header(out, s, view);
    verdict::key_figures(out, s);
    if !s.thresholds.is_empty() {
        verdict::thresholds(out, s);
    }
    timeline::latency_over_time(out, s);
    timeline::throughput(out, s);
    capacity::capacity(out, s);
    faults::faults(out, s);
    latency::distribution(out, s);
    latency::per_port(out, s);
    breakdown::per_operation(out, s);
    breakdown::baseline(out, s);
    breakdown::errors(out, s);
    server::server(out, s);
    // With no thresholds given, their section only says so, at the end, out of the way.
    if s.thresholds.is_empty() {
        verdict::thresholds(out, s);
    }
    let _ = write!(
        out,
        "<footer>sshlab · summary.json schema v{} · latency is corrected for coordinated omission (measured from the intended start) unless marked uncorrected</footer>",
        s.schema_version
    );
}

#[cfg(test)]
mod tests {
    use super::sample::sample;
    use super::*;
    use crate::results::{GroupSummary, IntervalStats, ServerReport};

    fn assert_finite_svg(html: &str) {
        for bad in ["NaN", "inf", "-0.0."] {
            assert!(!html.contains(bad), "found {bad:?} in output");
        }
    }

    #[test]
    fn has_the_sections_and_is_self_contained() {
        let html = render(&sample());
        for needle in [
            "<!DOCTYPE html>",
            "COMPLETE",
            "Latency percentiles over time",
            "Throughput over time",
            "Latency distribution",
            "Per-port comparison",
            "Per operation",
            "Errors",
            "Server metrics",
            "Resident memory over time",
            "Thresholds",
            "2 OF 3 THRESHOLDS FAILED",
            "ssh_run_command.p99&lt;200ms",
            "<polyline",
            "<rect",
            "+12.2 ms",
        ] {
            assert!(html.contains(needle), "missing {needle:?}");
        }
        for external in ["<script", "src=", "href=", "@import", "url("] {
            assert!(!html.contains(external), "external reference {external:?}");
        }
        assert_finite_svg(&html);
    }

    #[test]
    fn escapes_strings_from_the_summary() {
        let mut s = sample();
        s.run.scenario = "<script>alert('x')</script>".into();
        s.run.complete = false;
        s.run.incomplete_reason = Some("ctrl-c & <b>".into());
        s.errors.insert("<img onerror=x>".into(), 1);
        s.ops[0].name = "a\"b".into();
        let html = render(&s);
        assert!(!html.contains("<script"));
        assert!(!html.contains("<img"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("INCOMPLETE"));
        assert!(html.contains("ctrl-c &amp; &lt;b&gt;"));
        assert!(html.contains("a&quot;b"));
    }

    #[test]
    fn empty_summary_renders_without_nan() {
        let html = render(&Summary::default());
        assert!(html.contains("INCOMPLETE"));
        assert!(html.contains("No per-second latency data."));
        assert!(html.contains("No server metrics"));
        assert_finite_svg(&html);

        // Degenerate but non-empty: one interval, zero latencies, one port.
        let mut s = Summary::default();
        s.timeline.push(IntervalStats {
            t: 0,
            ok: 1,
            ..IntervalStats::default()
        });
        s.ports.push(GroupSummary {
            name: "2222".into(),
            ..GroupSummary::default()
        });
        s.server = Some(ServerReport {
            rss_mib: vec![(0.0, 10.0)],
            cpu_utilisation_percent: Some(f64::NAN),
            ..ServerReport::default()
        });
        s.latency.count = 1;
        let html = render(&s);
        assert_finite_svg(&html);
        assert!(html.contains("<circle"));
    }

    /// The live dashboard draws a run in progress with the same code: the same sections, a
    /// RUNNING badge instead of INCOMPLETE and no "did not finish" reason; the page around the
    /// sections is report.html's with the extras inserted.
    #[test]
    fn the_live_view_differs_only_in_the_header_of_a_run_in_progress() {
        let mut s = sample();
        s.run.complete = false;
        s.run.incomplete_reason = Some("still running".into());
        let report = main_content(&s, View::Report);
        let live = main_content(&s, View::Live);
        assert!(report.contains("INCOMPLETE") && report.contains("did not finish as planned"));
        assert!(live.contains("RUNNING") && !live.contains("INCOMPLETE"));
        assert!(!live.contains("did not finish as planned"));
        let cut = |h: &str| h[h.find("</header>").expect("header")..].to_owned();
        assert_eq!(
            cut(&report),
            cut(&live),
            "every section after the header is the same"
        );
        // A finished run reads the same in both views.
        s.run.complete = true;
        assert_eq!(main_content(&s, View::Report), main_content(&s, View::Live));
        // The page: report.html with the extras in their places.
        let page = document(
            &s,
            View::Live,
            "<style>x</style>",
            "<div>bar</div>",
            "<p>end</p>",
        );
        assert_eq!(
            page.replace("<style>x</style>", "")
                .replace("<div>bar</div>", "")
                .replace("<p>end</p>", ""),
            render(&s)
        );
    }

    /// Writes the sample page to `$SSHLAB_SAMPLE_HTML` when set (for looking at it).
    #[test]
    fn write_sample_when_asked() {
        if let Ok(path) = std::env::var("SSHLAB_SAMPLE_HTML") {
            std::fs::write(path, render(&sample())).expect("write sample");
        }
    }
}
