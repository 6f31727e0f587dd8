//! Latency compared as bars: the distribution corrected for coordinated omission against the
//! uncorrected one (how much the correction matters), and, for a per-port run (latency_test),
//! each port against the first one as the baseline, in a chart and a table of deltas.

use std::fmt::Write;

use super::no_data;
use super::numbers::{fin, ms};
use super::svg::{Bars, bar_chart};
use crate::report::escape::escape;
use crate::report::format::thousands;
use crate::results::{LatencyStats, Summary};

/// The percentiles the distribution shows: the key in [`LatencyStats::get`], the axis label.
const LADDER: [(&str, &str); 6] = [
    ("p50", "p50"),
    ("p90", "p90"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("p999", "p99.9"),
    ("max", "max"),
];

pub(super) fn distribution(out: &mut String, s: &Summary) {
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
    if s.totals.failures > 0 && s.latency_all.count > 0 {
        let a = &s.latency_all;
        let _ = write!(
            out,
            r#"<p class="meta">Successes only above. Every operation, the {} failures included (what latency thresholds judge): p50 {}, p99 {}, max {}.</p>"#,
            thousands(s.totals.failures),
            ms(a.p50),
            ms(a.p99),
            ms(a.max)
        );
    }
    out.push_str("</section>");
}

/// `v` against the baseline `base`, in ms and (when the base is positive) in percent.
fn delta(v: f64, base: f64) -> String {
    let d = fin(v - base);
    if base > 0.0 {
        format!("{d:+.1} ms ({:+.0}%)", d / base * 100.0)
    } else {
        format!("{d:+.1} ms")
    }
}

pub(super) fn per_port(out: &mut String, s: &Summary) {
    // One port is the endpoint's only target: nothing to compare.
    if s.ports.len() < 2 {
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
