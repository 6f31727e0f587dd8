//! `report.html`: one self-contained page (inline CSS, inline SVG drawn here, no scripts, no
//! fonts, nothing fetched) rendered from the [`Summary`] alone.
//!
//! Sections: status header, key figures, thresholds, latency percentiles over time,
//! throughput over time, the latency distribution (corrected vs uncorrected), the per-port
//! comparison (latency_test), per-operation and per-phase tables, errors, and the server's
//! metrics (pool, CPU, RSS over time with the leak warning). Every string taken from the
//! summary is HTML-escaped; every coordinate is finite even for an empty summary.

use super::format::thousands;
use std::fmt::Write;

use super::text::{EXTRAPOLATION_CPUS, confidence, extrapolate};
use crate::results::{GroupSummary, LatencyStats, ServerReport, Summary};

/// Escape `s` for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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

// ---------------------------------------------------------------------------------------
// Number formatting

/// A finite number or 0.
fn fin(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// Milliseconds, with precision that suits the magnitude.
fn ms(v: f64) -> String {
    let v = fin(v);
    if v >= 10_000.0 {
        format!("{:.2} s", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

/// A tick label: no trailing zeros.
fn tick(v: f64) -> String {
    let v = fin(v);
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Seconds as `42s`, or `3:05` on long axes.
fn secs_label(t: f64, long: bool) -> String {
    let t = fin(t).max(0.0).round() as u64;
    if long {
        format!("{}:{:02}", t / 60, t % 60)
    } else {
        format!("{t}s")
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(ts: f64) -> String {
    if !ts.is_finite() || ts <= 0.0 {
        return "n/a".into();
    }
    let (y, m, d, hh, mm, ss) = super::format::utc_fields(ts as i64);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

// ---------------------------------------------------------------------------------------
// SVG charts

const W: f64 = 1000.0;
const ML: f64 = 64.0;
const MR: f64 = 16.0;
const MT: f64 = 14.0;
const MB: f64 = 34.0;

/// A "nice" axis top and step for values up to `max`.
fn nice(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

/// The plot area of one chart.
struct Frame {
    h: f64,
    x0: f64,
    x1: f64,
    top: f64,
    step: f64,
}

impl Frame {
    fn new(h: f64, x0: f64, x1: f64, ymax: f64) -> Self {
        let (top, step) = nice(ymax);
        let (x0, x1) = (fin(x0), fin(x1));
        let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
        Self {
            h,
            x0,
            x1,
            top,
            step,
        }
    }

    fn x(&self, v: f64) -> f64 {
        ML + (fin(v) - self.x0) / (self.x1 - self.x0) * (W - ML - MR)
    }

    fn y(&self, v: f64) -> f64 {
        let v = fin(v).clamp(0.0, self.top);
        self.h - MB - v / self.top * (self.h - MT - MB)
    }

    fn open(&self, out: &mut String, label: &str) {
        let _ = write!(
            out,
            r#"<svg viewBox="0 0 {W} {h}" role="img" aria-label="{label}" xmlns="http://www.w3.org/2000/svg">"#,
            h = self.h,
            label = escape(label)
        );
    }

    /// Horizontal grid with y labels.
    fn y_grid(&self, out: &mut String, unit: &str) {
        let mut v = 0.0;
        while v <= self.top + self.step / 2.0 {
            let y = self.y(v);
            let _ = write!(
                out,
                r##"<line x1="{ML}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e6ec"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{label}</text>"##,
                x2 = W - MR,
                tx = ML - 6.0,
                ty = y + 4.0,
                label = escape(&format!("{}{unit}", tick(v)))
            );
            v += self.step;
        }
    }

    /// Time ticks along the bottom.
    fn x_time(&self, out: &mut String) {
        let range = self.x1 - self.x0;
        let long = range >= 120.0;
        let step = if long {
            // Whole minutes or half minutes, about eight ticks.
            [30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0]
                .into_iter()
                .find(|s| range / s <= 9.0)
                .unwrap_or(7200.0)
        } else {
            nice(range).1.max(1.0)
        };
        let mut t = (self.x0 / step).ceil() * step;
        while t <= self.x1 + 1e-9 {
            let x = self.x(t);
            let _ = write!(
                out,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{y0:.1}" y2="{y1:.1}" stroke="#c5cad3"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle">{l}</text>"##,
                y0 = self.h - MB,
                y1 = self.h - MB + 4.0,
                ty = self.h - MB + 17.0,
                l = secs_label(t, long)
            );
            t += step;
        }
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="end">time since start</text>"#,
            x = W - MR,
            y = self.h - 2.0
        );
    }
}

fn no_data(out: &mut String, what: &str) {
    let _ = write!(out, r#"<p class="none">No {}.</p>"#, escape(what));
}

fn legend(out: &mut String, items: &[(&str, &str)]) {
    out.push_str(r#"<div class="legend">"#);
    for (label, color) in items {
        let _ = write!(
            out,
            r#"<span><i style="background:{color}"></i>{}</span>"#,
            escape(label)
        );
    }
    out.push_str("</div>");
}

/// One line of a line chart.
struct Line<'a> {
    label: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

fn line_chart(out: &mut String, h: f64, lines: &[Line<'_>], unit: &str, what: &str) {
    let pts = lines.iter().flat_map(|l| l.points.iter());
    let (mut x0, mut x1, mut ymax) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    let mut any = false;
    for &(x, y) in pts {
        any = true;
        x0 = x0.min(fin(x));
        x1 = x1.max(fin(x));
        ymax = ymax.max(fin(y));
    }
    if !any {
        no_data(out, what);
        return;
    }
    legend(
        out,
        &lines.iter().map(|l| (l.label, l.color)).collect::<Vec<_>>(),
    );
    let f = Frame::new(h, x0, x1, ymax * 1.05);
    f.open(out, what);
    f.y_grid(out, unit);
    f.x_time(out);
    for l in lines {
        if l.points.len() == 1 {
            let (x, y) = l.points[0];
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                f.x(x),
                f.y(y),
                l.color
            );
            continue;
        }
        let mut d = String::new();
        for &(x, y) in &l.points {
            let _ = write!(d, "{:.1},{:.1} ", f.x(x), f.y(y));
        }
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8" stroke-linejoin="round" points="{}"/>"#,
            l.color,
            d.trim_end()
        );
    }
    out.push_str("</svg>");
}

/// Successes and failures per second as stacked bars.
fn throughput_chart(out: &mut String, s: &Summary) {
    let tl = &s.timeline;
    if tl.is_empty() {
        no_data(out, "per-second data");
        return;
    }
    legend(
        out,
        &[("successes / s", "#40c057"), ("failures / s", "#fa5252")],
    );
    let tmax = tl.iter().map(|i| i.t).max().unwrap_or(0) as f64 + 1.0;
    let ymax = tl.iter().map(|i| i.ok + i.err).max().unwrap_or(0) as f64;
    let f = Frame::new(240.0, 0.0, tmax, ymax * 1.05);
    f.open(out, "throughput over time");
    f.y_grid(out, "");
    let bw = (f.x(1.0) - f.x(0.0)).max(0.5);
    let gap = if bw > 6.0 { 1.0 } else { 0.0 };
    for i in tl {
        let x = f.x(i.t as f64);
        let (ok, err) = (i.ok as f64, i.err as f64);
        let (y_ok, y_all, base) = (f.y(ok), f.y(ok + err), f.y(0.0));
        if i.ok > 0 {
            let _ = write!(
                out,
                r##"<rect x="{x:.2}" y="{y_ok:.1}" width="{w:.2}" height="{h:.1}" fill="#40c057"/>"##,
                w = bw - gap,
                h = base - y_ok
            );
        }
        if i.err > 0 {
            let _ = write!(
                out,
                r##"<rect x="{x:.2}" y="{y_all:.1}" width="{w:.2}" height="{h:.1}" fill="#fa5252"/>"##,
                w = bw - gap,
                h = y_ok - y_all
            );
        }
    }
    if s.totals.rps_avg > 0.0 && s.totals.rps_avg.is_finite() {
        let y = f.y(s.totals.rps_avg);
        let _ = write!(
            out,
            r##"<line x1="{ML}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#1d2330" stroke-dasharray="5 4" stroke-width="1"/><rect x="{rx}" y="{ry:.1}" width="78" height="16" rx="3" fill="#fff" fill-opacity="0.85"/><text x="{tx}" y="{ty:.1}" text-anchor="end" class="lbl">avg {avg:.1}/s</text>"##,
            x2 = W - MR,
            rx = W - MR - 84.0,
            ry = y - 18.0,
            tx = W - MR - 10.0,
            ty = y - 6.0,
            avg = s.totals.rps_avg
        );
    }
    f.x_time(out);
    out.push_str("</svg>");
}

/// One bar series: label, colour, one value per category.
struct Bars<'a> {
    label: &'a str,
    color: &'a str,
    values: Vec<f64>,
}

/// Grouped vertical bars with value labels; `notes` (one per category) go under the names.
fn bar_chart(out: &mut String, cats: &[String], notes: &[String], series: &[Bars<'_>], what: &str) {
    if cats.is_empty() || series.is_empty() {
        no_data(out, what);
        return;
    }
    legend(
        out,
        &series
            .iter()
            .map(|b| (b.label, b.color))
            .collect::<Vec<_>>(),
    );
    let ymax = series
        .iter()
        .flat_map(|b| b.values.iter())
        .fold(0.0f64, |a, v| a.max(fin(*v)));
    let h = if notes.is_empty() { 260.0 } else { 276.0 };
    let mut f = Frame::new(h, 0.0, cats.len() as f64, ymax * 1.12);
    if !notes.is_empty() {
        // Room for the note line below the category names.
        f.h = h;
    }
    f.open(out, what);
    f.y_grid(out, " ms");
    let slot = f.x(1.0) - f.x(0.0);
    let bw = (slot * 0.8 / series.len() as f64).min(56.0);
    let bottom = f.y(0.0);
    for (ci, cat) in cats.iter().enumerate() {
        let center = f.x(ci as f64 + 0.5);
        let left = center - bw * series.len() as f64 / 2.0;
        for (si, b) in series.iter().enumerate() {
            let v = fin(b.values.get(ci).copied().unwrap_or(0.0));
            let y = f.y(v);
            let x = left + bw * si as f64;
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{hh:.1}" rx="2" fill="{c}"><title>{t}</title></rect>"#,
                w = (bw - 2.0).max(1.0),
                hh = (bottom - y).max(0.0),
                c = b.color,
                t = escape(&format!("{} {}: {}", cat, b.label, ms(v)))
            );
            if bw >= 24.0 {
                let _ = write!(
                    out,
                    r#"<text class="lbl" x="{cx:.1}" y="{ty:.1}" text-anchor="middle">{l}</text>"#,
                    cx = x + (bw - 2.0) / 2.0,
                    ty = y - 4.0,
                    l = tick((v * 10.0).round() / 10.0)
                );
            }
        }
        let _ = write!(
            out,
            r#"<text x="{center:.1}" y="{y:.1}" text-anchor="middle" style="font-size:12px;fill:#1d2330">{}</text>"#,
            escape(cat),
            y = bottom + 16.0
        );
        if let Some(n) = notes.get(ci) {
            let _ = write!(
                out,
                r#"<text x="{center:.1}" y="{y:.1}" text-anchor="middle">{}</text>"#,
                escape(n),
                y = bottom + 30.0
            );
        }
    }
    out.push_str("</svg>");
}

// ---------------------------------------------------------------------------------------
// Sections

fn card(out: &mut String, class: &str, k: &str, v: &str, sub: &str) {
    let _ = write!(
        out,
        r#"<div class="card {class}"><div class="k">{}</div><div class="v">{}</div><div class="s">{}</div></div>"#,
        escape(k),
        escape(v),
        escape(sub)
    );
}

fn header(out: &mut String, s: &Summary) {
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
            "open model, {:.1}/s target, {} workers, {} late starts",
            fin(rate),
            r.workers,
            r.late_starts
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
    if !r.complete {
        let _ = write!(
            out,
            r#"<div class="reason">The run did not finish as planned: {}. Everything measured until then is included.</div>"#,
            escape(r.incomplete_reason.as_deref().unwrap_or("still running"))
        );
    }
    out.push_str("</header>");
}

fn key_figures(out: &mut String, s: &Summary) {
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

fn thresholds(out: &mut String, s: &Summary) {
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

fn latency_over_time(out: &mut String, s: &Summary) {
    out.push_str("<section><h2>Latency percentiles over time (corrected, per second)</h2>");
    let pick = |f: fn(&crate::results::IntervalStats) -> f64| -> Vec<(f64, f64)> {
        s.timeline
            .iter()
            .filter(|i| i.ok > 0)
            .map(|i| (i.t as f64, f(i)))
            .collect()
    };
    line_chart(
        out,
        260.0,
        &[
            Line {
                label: "p50",
                color: "#4263eb",
                points: pick(|i| i.p50),
            },
            Line {
                label: "p90",
                color: "#f59f00",
                points: pick(|i| i.p90),
            },
            Line {
                label: "p99",
                color: "#e03131",
                points: pick(|i| i.p99),
            },
        ],
        " ms",
        "per-second latency data",
    );
    out.push_str("</section>");
}

fn throughput(out: &mut String, s: &Summary) {
    out.push_str("<section><h2>Throughput over time (operations completed per second)</h2>");
    throughput_chart(out, s);
    out.push_str("</section>");
}

const LADDER: [(&str, &str); 6] = [
    ("p50", "p50"),
    ("p90", "p90"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("p999", "p99.9"),
    ("max", "max"),
];

fn distribution(out: &mut String, s: &Summary) {
    out.push_str("<section><h2>Latency distribution: corrected vs uncorrected</h2>");
    if s.latency.count == 0 && s.latency_uncorrected.count == 0 {
        no_data(out, "successful operations");
    } else {
        let get = |l: &LatencyStats| -> Vec<f64> {
            LADDER
                .iter()
                .map(|(k, _)| l.get(k).unwrap_or(0.0))
                .collect()
        };
        bar_chart(
            out,
            &LADDER
                .iter()
                .map(|(_, l)| (*l).to_owned())
                .collect::<Vec<_>>(),
            &[],
            &[
                Bars {
                    label: "corrected (from intended start)",
                    color: "#4263eb",
                    values: get(&s.latency),
                },
                Bars {
                    label: "uncorrected (from actual send)",
                    color: "#adb5bd",
                    values: get(&s.latency_uncorrected),
                },
            ],
            "latency distribution",
        );
    }
    out.push_str("</section>");
}

fn delta(v: f64, base: f64) -> String {
    let d = fin(v - base);
    if base > 0.0 {
        format!("{d:+.1} ms ({:+.0}%)", d / base * 100.0)
    } else {
        format!("{d:+.1} ms")
    }
}

fn per_port(out: &mut String, s: &Summary) {
    if s.ports.is_empty() {
        return;
    }
    out.push_str("<section><h2>Per-port comparison</h2>");
    let base = &s.ports[0];
    let cats: Vec<String> = s.ports.iter().map(|g| format!("port {}", g.name)).collect();
    let notes: Vec<String> = s
        .ports
        .iter()
        .enumerate()
        .map(|(i, g)| {
            if i == 0 {
                "baseline".to_owned()
            } else {
                format!("p50 {}", delta(g.latency.p50, base.latency.p50))
            }
        })
        .collect();
    bar_chart(
        out,
        &cats,
        &notes,
        &[
            Bars {
                label: "p50",
                color: "#4263eb",
                values: s.ports.iter().map(|g| g.latency.p50).collect(),
            },
            Bars {
                label: "p99",
                color: "#e03131",
                values: s.ports.iter().map(|g| g.latency.p99).collect(),
            },
        ],
        "per-port latency",
    );
    out.push_str(
        "<table><tr><th>port</th><th>requests</th><th>errors</th><th>p50</th><th>p99</th><th>Δp50 vs baseline</th><th>Δp99 vs baseline</th></tr>",
    );
    for (i, g) in s.ports.iter().enumerate() {
        let (d50, d99) = if i == 0 {
            ("baseline".to_owned(), "baseline".to_owned())
        } else {
            (
                delta(g.latency.p50, base.latency.p50),
                delta(g.latency.p99, base.latency.p99),
            )
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&g.name),
            thousands(g.totals.requests),
            thousands(g.totals.failures),
            ms(g.latency.p50),
            ms(g.latency.p99),
            escape(&d50),
            escape(&d99)
        );
    }
    out.push_str("</table></section>");
}

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

fn per_operation(out: &mut String, s: &Summary) {
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

fn errors(out: &mut String, s: &Summary) {
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
    }
    out.push_str("</section>");
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.filter(|v| v.is_finite()).map_or("n/a".to_owned(), f)
}

fn server(out: &mut String, s: &Summary) {
    out.push_str("<section><h2>Server metrics</h2>");
    let Some(sv) = &s.server else {
        no_data(
            out,
            "server metrics (the server's /metrics was not scraped)",
        );
        out.push_str("</section>");
        return;
    };
    server_body(out, s, sv);
    out.push_str("</section>");
}

fn server_body(out: &mut String, s: &Summary, sv: &ServerReport) {
    if let Some(e) = &sv.error {
        let _ = write!(
            out,
            r#"<div class="warnbox">Scraping failed: {}</div>"#,
            escape(e)
        );
    }
    out.push_str(r#"<div class="cards" style="margin-top:4px">"#);
    card(
        out,
        "",
        "Pool hit rate",
        &opt(sv.pool_hit_rate_percent, |v| format!("{v:.1}%")),
        "hits / (hits + misses)",
    );
    card(
        out,
        "",
        "Peak active",
        &opt(sv.peak_active_connections, |v| format!("{v:.0}")),
        "pooled SSH connections",
    );
    card(
        out,
        if sv.rate_limited.unwrap_or(0.0) > 0.0 {
            "bad"
        } else {
            ""
        },
        "Rate limited",
        &opt(sv.rate_limited, |v| format!("{v:.0}")),
        "requests rejected",
    );
    card(
        out,
        "",
        "Server CPU",
        &opt(sv.cpu_utilisation_percent, |v| format!("{v:.1}%")),
        &format!("of {} vCPU(s)", sv.vcpus),
    );
    let last_rss = sv.rss_mib.last().map(|p| p.1);
    card(
        out,
        if sv.leak_warning { "bad" } else { "" },
        "RSS",
        &opt(last_rss, |v| format!("{v:.1} MiB")),
        &opt(sv.rss_slope_mib_per_min, |v| {
            format!("slope {v:+.2} MiB/min")
        }),
    );
    out.push_str("</div>");
    if sv.leak_warning {
        out.push_str(r#"<div class="warnbox">⚠ Possible memory leak: resident memory rose steadily over the run (slope above 1 MiB/min and at least 10% overall).</div>"#);
    }
    out.push_str(r#"<h2 style="margin-top:14px">Resident memory over time</h2>"#);
    line_chart(
        out,
        170.0,
        &[Line {
            label: "RSS (MiB)",
            color: "#7048e8",
            points: sv.rss_mib.clone(),
        }],
        "",
        "RSS samples",
    );
    if let Some(cpu) = sv.cpu_utilisation_percent.filter(|v| v.is_finite())
        && sv.vcpus > 0
    {
        let est = extrapolate(s.totals.rps_avg, sv.vcpus, EXTRAPOLATION_CPUS);
        let _ = write!(
            out,
            r#"<p class="meta">Extrapolation to {EXTRAPOLATION_CPUS} CPUs: ≈ <b>{est:.0} requests/s</b> (measured × {EXTRAPOLATION_CPUS}/{} × 0.85); confidence <b>{}</b> at {cpu:.0}% measured CPU.</p>"#,
            sv.vcpus,
            confidence(Some(cpu))
        );
    }
    if !sv.deltas.is_empty() {
        let _ = write!(
            out,
            "<details><summary>Counter deltas over the run ({} series, {} scrapes)</summary><table><tr><th>series</th><th>delta</th></tr>",
            sv.deltas.len(),
            sv.scrapes
        );
        for (k, v) in &sv.deltas {
            let _ = write!(
                out,
                r#"<tr><td class="l"><code>{}</code></td><td>{}</td></tr>"#,
                escape(k),
                tick((fin(*v) * 1000.0).round() / 1000.0)
            );
        }
        out.push_str("</table></details>");
    }
}

/// Render `report.html`.
pub fn render(s: &Summary) -> String {
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
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{CSS}</style></head><body><main>",
        escape(&title)
    );
    header(&mut out, s);
    key_figures(&mut out, s);
    if !s.thresholds.is_empty() {
        thresholds(&mut out, s);
    }
    latency_over_time(&mut out, s);
    throughput(&mut out, s);
    distribution(&mut out, s);
    per_port(&mut out, s);
    per_operation(&mut out, s);
    errors(&mut out, s);
    server(&mut out, s);
    if s.thresholds.is_empty() {
        thresholds(&mut out, s);
    }
    let _ = writeln!(
        out,
        "<footer>sshlab · summary.json schema v{} · latency is corrected for coordinated omission (measured from the intended start) unless marked uncorrected</footer></main></body></html>",
        s.schema_version
    );
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::results::{IntervalStats, RunInfo, ThresholdResult, Totals};

    fn lat(p50: f64) -> LatencyStats {
        LatencyStats {
            count: 1000,
            min: p50 * 0.4,
            mean: p50 * 1.2,
            p50,
            p90: p50 * 1.8,
            p95: p50 * 2.3,
            p99: p50 * 4.0,
            p999: p50 * 7.0,
            max: p50 * 11.0,
        }
    }

    fn group(name: &str, p50: f64, n: u64, err: u64) -> GroupSummary {
        GroupSummary {
            name: name.into(),
            totals: Totals {
                requests: n,
                successes: n - err,
                failures: err,
                error_rate_percent: err as f64 * 100.0 / n as f64,
                rps_avg: n as f64 / 60.0,
                rps_peak: 0.0,
            },
            latency: lat(p50),
            latency_uncorrected: lat(p50 * 0.8),
            errors: BTreeMap::new(),
        }
    }

    /// A realistic latency_test summary, used by the tests and for looking at the page.
    pub(crate) fn sample() -> Summary {
        let timeline = (0..240u64)
            .map(|t| {
                let port_shift = (t / 60) as f64 * 12.0;
                let wave = ((t as f64) / 9.0).sin() * 1.5;
                let stall = if (100..104).contains(&t) { 60.0 } else { 0.0 };
                IntervalStats {
                    t,
                    ok: 28 + (t % 5) - u64::from(t % 37 == 0) * 6,
                    err: u64::from(t % 23 == 0) * 2 + u64::from((100..104).contains(&t)) * 5,
                    p50: 4.0 + port_shift + wave,
                    p90: 7.5 + port_shift * 1.3 + wave + stall * 0.5,
                    p99: 14.0 + port_shift * 1.6 + wave * 2.0 + stall,
                    max: 30.0 + port_shift * 2.0 + stall * 1.5,
                }
            })
            .collect();
        let mut errors = BTreeMap::new();
        errors.insert("timeout".to_owned(), 20);
        errors.insert("tool_error".to_owned(), 22);
        errors.insert("rate_limited".to_owned(), 3);
        let mut ops = vec![
            group("ssh_run_command", 10.2, 6500, 40),
            group("ssh_connect", 85.0, 140, 3),
            group("ssh_disconnect", 1.9, 140, 2),
        ];
        ops[0].errors.insert("timeout".into(), 20);
        let rss: Vec<(f64, f64)> = (0..49)
            .map(|i| {
                let t = f64::from(i) * 5.0;
                (t, 38.0 + t / 60.0 * 0.4 + (f64::from(i) * 1.3).sin() * 0.6)
            })
            .collect();
        let mut deltas = BTreeMap::new();
        deltas.insert("mcp_pool_hits_total".to_owned(), 6360.0);
        deltas.insert("mcp_pool_misses_total".to_owned(), 142.0);
        deltas.insert("process_cpu_seconds_total".to_owned(), 41.7);
        Summary {
            schema_version: 1,
            run: RunInfo {
                test_id: "loadtest_20250301_142233".into(),
                scenario: "latency_test".into(),
                model: "closed".into(),
                workers: 3,
                target_rate: None,
                mcp_url: "http://10.0.1.2:8080/mcp".into(),
                protocol: "2025-11-25".into(),
                started_at: 1_740_838_953.0,
                ended_at: 1_740_839_193.0,
                complete: true,
                incomplete_reason: None,
                late_starts: 0,
            },
            duration_s: 240.3,
            totals: Totals {
                requests: 6780,
                successes: 6735,
                failures: 45,
                error_rate_percent: 45.0 * 100.0 / 6780.0,
                rps_avg: 28.2,
                rps_peak: 37.0,
            },
            latency: lat(10.4),
            latency_uncorrected: lat(8.1),
            ops,
            ports: vec![
                group("2222", 4.1, 1700, 5),
                group("2322", 16.3, 1690, 8),
                group("2323", 28.0, 1700, 12),
                group("2324", 40.2, 1690, 20),
            ],
            phases: vec![],
            errors,
            timeline,
            server: Some(ServerReport {
                scrapes: 49,
                deltas,
                pool_hit_rate_percent: Some(97.8),
                peak_active_connections: Some(3.0),
                rate_limited: Some(3.0),
                cpu_utilisation_percent: Some(8.7),
                vcpus: 2,
                rss_mib: rss,
                rss_slope_mib_per_min: Some(0.41),
                leak_warning: false,
                error: None,
            }),
            thresholds: vec![
                ThresholdResult {
                    expr: "ssh_run_command.p99<200ms".into(),
                    actual: Some(40.8),
                    passed: true,
                },
                ThresholdResult {
                    expr: "errors<0.5%".into(),
                    actual: Some(0.664),
                    passed: false,
                },
                ThresholdResult {
                    expr: "ssh_exec.p95<1s".into(),
                    actual: None,
                    passed: false,
                },
            ],
        }
    }

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

    #[test]
    fn dates_and_ticks() {
        assert_eq!(utc(1_740_838_953.0), "2025-03-01 14:22:33 UTC");
        assert_eq!(utc(0.0), "n/a");
        assert_eq!(nice(97.0), (100.0, 20.0));
        assert_eq!(nice(0.0), (1.0, 0.2));
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(secs_label(185.0, true), "3:05");
        assert_eq!(secs_label(42.0, false), "42s");
    }

    /// Writes the sample page to `$SSHLAB_SAMPLE_HTML` when set (for looking at it).
    #[test]
    fn write_sample_when_asked() {
        if let Ok(path) = std::env::var("SSHLAB_SAMPLE_HTML") {
            std::fs::write(path, render(&sample())).expect("write sample");
        }
    }
}
