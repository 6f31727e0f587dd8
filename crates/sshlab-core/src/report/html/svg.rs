//! The charts, drawn as inline SVG: a plot frame with "nice" axis scales, a y grid and time
//! ticks, and on it line charts, stacked per-second columns and grouped bars, each with its
//! legend. This is pure drawing: callers hand over labelled numbers, never a summary, and
//! decide what to plot; this module decides only how it looks. Every coordinate written goes
//! through [`fin`] or a clamp first, so even an empty or NaN-laden input gives finite SVG; with
//! no points at all a chart says so in words instead of drawing empty axes.

use std::fmt::Write;

use super::no_data;
use super::numbers::{fin, ms, secs_label, tick};
use crate::report::escape::escape;

/// The viewBox width; the page scales it to the column.
const W: f64 = 1000.0;
/// Margins around the plot area: left (room for y labels), right, top, bottom (x labels).
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

/// A span of time to mark on a chart (a fault), in seconds since the start.
pub(super) struct Band {
    pub(super) from: f64,
    pub(super) to: f64,
    pub(super) label: String,
}

/// Shaded bands across the plot area, each labelled at its top.
fn bands(out: &mut String, f: &Frame, bands: &[Band]) {
    for b in bands {
        let (x0, x1) = (f.x(b.from.max(f.x0)), f.x(b.to.min(f.x1)));
        if x1 <= x0 {
            continue;
        }
        let _ = write!(
            out,
            r##"<rect x="{x0:.1}" y="{MT}" width="{w:.1}" height="{h:.1}" fill="#f08c00" fill-opacity="0.14"/><text x="{tx:.1}" y="{ty}" class="lbl">{l}</text>"##,
            w = x1 - x0,
            h = f.h - MT - MB,
            tx = x0 + 3.0,
            ty = MT + 11.0,
            l = escape(&b.label)
        );
    }
}

/// One line of a line chart.
pub(super) struct Line<'a> {
    pub(super) label: &'a str,
    pub(super) color: &'a str,
    pub(super) points: Vec<(f64, f64)>,
    /// Points further apart than this (in x) are not joined: the line shows a gap where
    /// nothing was measured instead of drawing straight across it.
    pub(super) max_step: Option<f64>,
}

/// The smallest and largest x and the largest y of `lines`' points (`None`: no point).
fn extent(lines: &[Line<'_>]) -> Option<(f64, f64, f64)> {
    lines
        .iter()
        .flat_map(|l| l.points.iter())
        .map(|&(x, y)| (fin(x), fin(y)))
        .fold(None, |acc, (x, y)| match acc {
            None => Some((x, x, y.max(0.0))),
            Some((x0, x1, ym)) => Some((x0.min(x), x1.max(x), ym.max(y))),
        })
}

/// Lines over time (x in seconds since the start), `h` units tall, y labels suffixed `unit`,
/// with `marks` shaded behind them.
pub(super) fn line_chart(
    out: &mut String,
    h: f64,
    lines: &[Line<'_>],
    unit: &str,
    what: &str,
    marks: &[Band],
) {
    let Some((mut x0, mut x1, ymax)) = extent(lines) else {
        no_data(out, what);
        return;
    };
    legend(
        out,
        &lines.iter().map(|l| (l.label, l.color)).collect::<Vec<_>>(),
    );
    for m in marks {
        x0 = x0.min(fin(m.from));
        x1 = x1.max(fin(m.to));
    }
    let f = Frame::new(h, x0, x1, ymax * 1.05);
    f.open(out, what);
    f.y_grid(out, unit);
    bands(out, &f, marks);
    f.x_time(out);
    for l in lines {
        let mut runs: Vec<&[(f64, f64)]> = Vec::new();
        let mut from = 0;
        for i in 1..=l.points.len() {
            let split = i == l.points.len()
                || l.max_step
                    .is_some_and(|step| l.points[i].0 - l.points[i - 1].0 > step + 1e-9);
            if split {
                runs.push(&l.points[from..i]);
                from = i;
            }
        }
        for run in runs {
            polyline(out, &f, run, l.color);
        }
    }
    out.push_str("</svg>");
}

/// Lines over a quantity other than time: x labelled `x_label` with values suffixed
/// `x_unit`, y suffixed `y_unit`; `mark` draws a dashed vertical line at an x with its label.
pub(super) fn xy_chart(
    out: &mut String,
    h: f64,
    lines: &[Line<'_>],
    (x_label, x_unit): (&str, &str),
    y_unit: &str,
    mark: Option<(f64, String)>,
    what: &str,
) {
    let Some((_, x1, ymax)) = extent(lines) else {
        no_data(out, what);
        return;
    };
    legend(
        out,
        &lines.iter().map(|l| (l.label, l.color)).collect::<Vec<_>>(),
    );
    let (xtop, xstep) = nice(x1 * 1.05);
    let f = Frame::new(h, 0.0, xtop, ymax * 1.05);
    f.open(out, what);
    f.y_grid(out, y_unit);
    let mut t = 0.0;
    while t <= xtop + xstep / 2.0 {
        let x = f.x(t);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{y0:.1}" y2="{y1:.1}" stroke="#c5cad3"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle">{l}</text>"##,
            y0 = f.h - MB,
            y1 = f.h - MB + 4.0,
            ty = f.h - MB + 17.0,
            l = escape(&format!("{}{x_unit}", tick(t)))
        );
        t += xstep;
    }
    let _ = write!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="end">{l}</text>"#,
        x = W - MR,
        y = f.h - 2.0,
        l = escape(x_label)
    );
    if let Some((mx, label)) = mark {
        let x = f.x(mx);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{MT}" y2="{y2:.1}" stroke="#1d2330" stroke-dasharray="5 4"/><text x="{tx:.1}" y="{ty}" class="lbl">{l}</text>"##,
            y2 = f.h - MB,
            tx = x + 4.0,
            ty = MT + 11.0,
            l = escape(&label)
        );
    }
    for l in lines {
        polyline(out, &f, &l.points, l.color);
    }
    out.push_str("</svg>");
}

/// A joined run of points, or a dot for a single one.
fn polyline(out: &mut String, f: &Frame, points: &[(f64, f64)], color: &str) {
    if let [(x, y)] = points {
        let _ = write!(
            out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
            f.x(*x),
            f.y(*y)
        );
        return;
    }
    let mut d = String::new();
    for &(x, y) in points {
        let _ = write!(d, "{:.1},{:.1} ", f.x(x), f.y(y));
    }
    let _ = write!(
        out,
        r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" stroke-linejoin="round" points="{}"/>"#,
        d.trim_end()
    );
}

/// Per-second columns of two stacked counts (the `upper` part drawn on top of the `lower`),
/// with an optional dashed line that marks one value.
pub(super) struct Stacked<'a> {
    /// Label and colour of the lower part of each column.
    pub(super) lower: (&'a str, &'a str),
    /// Label and colour of the upper part.
    pub(super) upper: (&'a str, &'a str),
    /// `(second, lower count, upper count)`, one per column.
    pub(super) columns: Vec<(u64, u64, u64)>,
    /// A value to mark across the chart, and its label.
    pub(super) mark: Option<(f64, String)>,
    /// Spans of time to shade behind the columns.
    pub(super) bands: Vec<Band>,
}

/// Draw `chart` `h` units tall (labelled `what`), or say there is no `empty` when it has no
/// columns.
pub(super) fn stacked_chart(
    out: &mut String,
    h: f64,
    chart: &Stacked<'_>,
    what: &str,
    empty: &str,
) {
    let cols = &chart.columns;
    if cols.is_empty() {
        no_data(out, empty);
        return;
    }
    legend(out, &[chart.lower, chart.upper]);
    let tmax = cols.iter().map(|c| c.0).max().unwrap_or(0) as f64 + 1.0;
    let tmax = chart.bands.iter().map(|b| fin(b.to)).fold(tmax, f64::max);
    let ymax = cols.iter().map(|c| c.1 + c.2).max().unwrap_or(0) as f64;
    let f = Frame::new(h, 0.0, tmax, ymax * 1.05);
    f.open(out, what);
    f.y_grid(out, "");
    bands(out, &f, &chart.bands);
    let bw = (f.x(1.0) - f.x(0.0)).max(0.5);
    let gap = if bw > 6.0 { 1.0 } else { 0.0 };
    for &(t, lo, hi) in cols {
        let x = f.x(t as f64);
        let (lo_v, hi_v) = (lo as f64, hi as f64);
        let (y_lo, y_all, base) = (f.y(lo_v), f.y(lo_v + hi_v), f.y(0.0));
        // Each part spans from its own top down to the top of the part below it.
        for (n, top, bottom, color) in [
            (lo, y_lo, base, chart.lower.1),
            (hi, y_all, y_lo, chart.upper.1),
        ] {
            if n > 0 {
                let _ = write!(
                    out,
                    r#"<rect x="{x:.2}" y="{top:.1}" width="{w:.2}" height="{bh:.1}" fill="{color}"/>"#,
                    w = bw - gap,
                    bh = bottom - top
                );
            }
        }
    }
    if let Some((v, label)) = &chart.mark {
        let y = f.y(*v);
        let _ = write!(
            out,
            r##"<line x1="{ML}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#1d2330" stroke-dasharray="5 4" stroke-width="1"/><rect x="{rx}" y="{ry:.1}" width="78" height="16" rx="3" fill="#fff" fill-opacity="0.85"/><text x="{tx}" y="{ty:.1}" text-anchor="end" class="lbl">{l}</text>"##,
            x2 = W - MR,
            rx = W - MR - 84.0,
            ry = y - 18.0,
            tx = W - MR - 10.0,
            ty = y - 6.0,
            l = escape(label)
        );
    }
    f.x_time(out);
    out.push_str("</svg>");
}

/// One bar series: label, colour, one value per category.
pub(super) struct Bars<'a> {
    pub(super) label: &'a str,
    pub(super) color: &'a str,
    pub(super) values: Vec<f64>,
}

/// Grouped vertical bars with value labels; `notes` (one per category) go under the names.
pub(super) fn bar_chart(
    out: &mut String,
    cats: &[String],
    notes: &[String],
    series: &[Bars<'_>],
    what: &str,
) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axis_tops() {
        assert_eq!(nice(97.0), (100.0, 20.0));
        assert_eq!(nice(0.0), (1.0, 0.2));
    }
}
