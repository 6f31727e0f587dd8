//! The MCP server's side of the run, from its scraped `/metrics`: pool, rate limiting, CPU and
//! resident memory as cards, RSS over time with the leak warning, the guide's extrapolation to
//! 8 CPUs (shared with the text report), and every counter's delta. A run whose server was not
//! scraped gets a sentence saying so instead.

use std::fmt::Write;

use super::numbers::{fin, opt, tick};
use super::svg::{Line, line_chart};
use super::{card, no_data};
use crate::report::escape::escape;
use crate::report::text::{CapacityClaim, EXTRAPOLATION_CPUS, capacity_claim};
use crate::results::{ServerReport, Summary};

/// New SSH connections, pool hits and the sessions left at the end, per phase.
fn per_phase(out: &mut String, sv: &ServerReport) {
    if sv
        .phases
        .iter()
        .all(|p| p.new_connections.is_none() && p.pool_hits.is_none())
    {
        return;
    }
    let num = |v: Option<f64>| opt(v, |v| format!("{v:.0}"));
    out.push_str("<table><tr><th>phase</th><th>new SSH connections</th><th>pool hits</th><th>sessions left at its end</th></tr>");
    for p in &sv.phases {
        let left = p.sessions_at_end.filter(|v| v.is_finite()).unwrap_or(0.0);
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="{}">{}</td></tr>"#,
            escape(&p.phase),
            num(p.new_connections),
            num(p.pool_hits),
            if left > 0.0 { "fail" } else { "" },
            num(p.sessions_at_end)
        );
    }
    out.push_str("</table>");
}

pub(super) fn server(out: &mut String, s: &Summary) {
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
            r#"<div class="warnbox">Scraping failed ({} time(s)): {}</div>"#,
            sv.scrape_failures.max(1),
            escape(e)
        );
    }
    if sv.restarts > 0 {
        let _ = write!(
            out,
            r#"<div class="warnbox">The server restarted {} time(s) during the run (its process_start_time_seconds changed); each counter adds up what was counted before and after.</div>"#,
            sv.restarts
        );
    }
    // A card only for what the server exports (pool figures are mcp-ssh-server's own).
    out.push_str(r#"<div class="cards" style="margin-top:4px">"#);
    if let Some(v) = sv.pool_hit_rate_percent.filter(|v| v.is_finite()) {
        card(
            out,
            "",
            "Pool hit rate",
            &format!("{v:.1}%"),
            "hits / (hits + misses)",
        );
    }
    if let Some(v) = sv.peak_active_connections.filter(|v| v.is_finite()) {
        card(
            out,
            "",
            "Peak active",
            &format!("{v:.0}"),
            "pooled SSH connections",
        );
    }
    if let Some(v) = sv.rate_limited.filter(|v| v.is_finite()) {
        card(
            out,
            if v > 0.0 { "bad" } else { "" },
            "Rate limited",
            &format!("{v:.0}"),
            "requests rejected",
        );
    }
    if sv.vcpus > 0 {
        card(
            out,
            "",
            "Server CPU",
            &opt(sv.cpu_utilisation_percent, |v| format!("{v:.1}%")),
            &format!("of {}", sv.cpus_label()),
        );
    }
    if let Some(last_rss) = sv.rss_mib.last().map(|p| p.1) {
        card(
            out,
            if sv.leak_warning { "bad" } else { "" },
            "RSS",
            &format!("{last_rss:.1} MiB"),
            &opt(sv.rss_slope_mib_per_min, |v| {
                format!("slope {v:+.2} MiB/min")
            }),
        );
    }
    out.push_str("</div>");
    per_phase(out, sv);
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
            max_step: None,
        }],
        "",
        "RSS samples",
        &[],
    );
    match capacity_claim(s) {
        Some(CapacityClaim::Measured {
            rate,
            estimate,
            confidence,
            cpu,
        }) => {
            let scaled = match estimate {
                Ok(estimate) => format!(
                    "extrapolated to {EXTRAPOLATION_CPUS} CPUs ≈ <b>{estimate:.0}/s</b> (× {EXTRAPOLATION_CPUS}/{} × 0.85; the count from {})",
                    sv.vcpus,
                    escape(sv.vcpus_source.as_deref().unwrap_or("the run's settings")),
                ),
                Err(why) => format!(
                    "not extrapolated to {EXTRAPOLATION_CPUS} CPUs: {}",
                    escape(&why)
                ),
            };
            let _ = write!(
                out,
                r#"<p class="meta">Measured capacity <b>{rate:.1}/s</b> (capacity search, on {}); {scaled}; confidence <b>{confidence}</b> at {} server CPU.</p>"#,
                sv.cpus_label(),
                opt(cpu, |u| format!("{u:.0}%"))
            );
        }
        Some(CapacityClaim::Searching) => {
            out.push_str(r#"<p class="meta">A capacity search is running: its capacity is extrapolated when it ends.</p>"#);
        }
        Some(CapacityClaim::NoneFound) => {
            out.push_str(r#"<p class="meta">No capacity to extrapolate: no rate the search tried met the SLO.</p>"#);
        }
        Some(CapacityClaim::NotSearched { rps, cpu }) => {
            let _ = write!(
                out,
                r#"<p class="meta">Served {rps:.1}/s, the offered load: that is no capacity. The server used {} of {}{}. A capacity search measures one (<code>sshlab-agent run --find-capacity --slo 'p99&lt;200ms'</code>, or <code>sshlab run capacity</code>).</p>"#,
                opt(cpu, |u| format!("{u:.0}%")),
                sv.cpus_label(),
                if cpu.is_some_and(|u| u > 80.0) {
                    " (near saturation)"
                } else {
                    ", so it was not saturated"
                }
            );
        }
        None => out.push_str(r#"<p class="meta">No CPU utilisation or extrapolation: the server's vCPU count is unknown (give it with <code>--server-vcpus</code>; the lab's is used only when the run targets the lab's MCP VM).</p>"#),
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
    if !sv.observed.is_empty() {
        out.push_str("<details><summary>Histograms over the run (observations and their mean)</summary><table><tr><th>series</th><th>observed</th><th>mean</th></tr>");
        for (k, o) in &sv.observed {
            let mean = match o.mean.filter(|m| m.is_finite()) {
                Some(m) if k.contains("_seconds") => format!("{:.3} ms", m * 1000.0),
                Some(m) => format!("{m:.4}"),
                None => "–".to_owned(),
            };
            let _ = write!(
                out,
                r#"<tr><td class="l"><code>{}</code></td><td>{}</td><td>{mean}</td></tr>"#,
                escape(k),
                tick(fin(o.count))
            );
        }
        out.push_str("</table></details>");
    }
}
