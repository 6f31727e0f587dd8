//! A capacity search: its verdict, latency against the throughput served at each step (with the
//! capacity found marked: the knee), and one row per step.

use std::fmt::Write;

use super::numbers::{fin, opt};
use super::svg::{Line, xy_chart};
use crate::report::escape::escape;
use crate::report::format::thousands;
use crate::results::Summary;

pub(super) fn capacity(out: &mut String, s: &Summary) {
    let Some(c) = &s.capacity else {
        return;
    };
    let _ = write!(
        out,
        "<section><h2>Capacity</h2><p>{}{}</p>",
        escape(&c.verdict),
        if c.limited_by.is_empty() {
            String::new()
        } else {
            format!(" Limited by: {}.", escape(&c.limited_by.join("; ")))
        }
    );
    // A step without a judged success has no latency to plot.
    let mut steps: Vec<_> = c
        .steps
        .iter()
        .filter(|st| st.latency_ms().is_some())
        .collect();
    steps.sort_by(|a, b| a.achieved_per_s.total_cmp(&b.achieved_per_s));
    let point = |f: fn(&crate::results::capacity::CapacityStep) -> f64| {
        steps
            .iter()
            .map(|st| (st.achieved_per_s, f(st)))
            .collect::<Vec<_>>()
    };
    let knee = c.rate_per_s.and_then(|r| {
        c.steps
            .iter()
            .find(|st| st.rate_per_s == r)
            .map(|st| (st.achieved_per_s, format!("capacity {r:.1}/s")))
    });
    xy_chart(
        out,
        260.0,
        &[
            Line {
                label: "p50",
                color: "#4263eb",
                points: point(|st| st.p50_ms),
                max_step: None,
            },
            Line {
                label: "p99",
                color: "#e03131",
                points: point(|st| st.p99_ms),
                max_step: None,
            },
        ],
        ("served per second", "/s"),
        " ms",
        knee,
        "latency against throughput",
    );
    out.push_str("<table><tr><th>step</th><th>offered/s</th><th>served/s</th><th>p50 ms</th><th>p99 ms</th><th>errors</th><th>server CPU</th><th class=\"l\">verdict</th></tr>");
    for (i, st) in c.steps.iter().enumerate() {
        let verdict = st.verdict();
        let latency = st.latency_ms();
        let p50 = opt(latency.map(|l| l.0), |v| format!("{v:.1}"));
        let p99 = opt(latency.map(|l| l.1), |v| format!("{v:.1}"));
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{p50}</td><td>{p99}</td><td>{}</td><td>{}</td><td class="l {}">{}</td></tr>"#,
            i + 1,
            fin(st.rate_per_s),
            fin(st.achieved_per_s),
            thousands(st.failures),
            st.server_cpu_percent
                .map_or("n/a".to_owned(), |u| format!("{:.0}%", fin(u))),
            if st.passed { "pass" } else { "fail" },
            escape(&verdict)
        );
    }
    out.push_str("</table></section>");
}
