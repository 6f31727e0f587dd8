//! The two charts over time: latency percentiles per second (p50, p90, p99, corrected) and
//! operations completed per second (successes with failures stacked on top, and the mean rate).
//! Both read the summary's per-second timeline; the drawing is in [`super::svg`].

use super::svg::{Band, Line, Stacked, line_chart, stacked_chart};
use crate::results::{IntervalStats, Summary};

/// The run's faults as bands (seconds since the start); a fault never reverted lasts to the
/// end of the timeline.
pub(super) fn fault_bands(s: &Summary) -> Vec<Band> {
    let end = s.timeline.iter().map(|i| i.t + 1).max().unwrap_or(0) as f64;
    s.faults
        .iter()
        .filter_map(|f| {
            let from = f.started_at? - s.run.started_at;
            let to = f.ended_at.map_or(end, |e| e - s.run.started_at);
            Some(Band {
                from,
                to,
                label: f.label(),
            })
        })
        .collect()
}

pub(super) fn latency_over_time(out: &mut String, s: &Summary) {
    out.push_str("<section><h2>Latency percentiles over time (corrected, per second)</h2>");
    let pick = |f: fn(&IntervalStats) -> f64| -> Vec<(f64, f64)> {
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
                max_step: Some(1.0),
                color: "#4263eb",
                points: pick(|i| i.p50),
            },
            Line {
                label: "p90",
                max_step: Some(1.0),
                color: "#f59f00",
                points: pick(|i| i.p90),
            },
            Line {
                label: "p99",
                max_step: Some(1.0),
                color: "#e03131",
                points: pick(|i| i.p99),
            },
        ],
        " ms",
        "per-second latency data",
        &fault_bands(s),
    );
    out.push_str("</section>");
}

pub(super) fn throughput(out: &mut String, s: &Summary) {
    out.push_str("<section><h2>Throughput over time (operations completed per second)</h2>");
    let avg = s.totals.rps_avg;
    stacked_chart(
        out,
        240.0,
        &Stacked {
            lower: ("successes / s", "#40c057"),
            upper: ("failures / s", "#fa5252"),
            columns: s.timeline.iter().map(|i| (i.t, i.ok, i.err)).collect(),
            mark: (avg > 0.0 && avg.is_finite()).then(|| (avg, format!("avg {avg:.1}/s"))),
            bands: fault_bands(s),
        },
        "throughput over time",
        "per-second data",
    );
    out.push_str("</section>");
}
