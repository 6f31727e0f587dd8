//! The server's side of a run, from its Prometheus `/metrics`: the text parsed into a
//! [`Sample`] per scrape, and the samples of a run folded into a [`ServerReport`] by
//! [`build_report`] (deltas, pool hit rate, CPU utilisation, RSS slope and the leak warning).
//! The agent's scraper fetches the text; everything computed from it lives here, next to the
//! summary it fills.
//!
//! Series are kept as their exact `name{labels}` text, so deltas can be reported per series;
//! the few figures the report needs are looked up by name and parsed labels.

use std::collections::BTreeMap;

use super::summary::{Observed, PhaseServer, ServerReport};

/// One scrape: every sample line's value by its exact series text (`name{labels}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Value by series.
    pub series: BTreeMap<String, f64>,
}

/// The metric name of a series (`name` of `name{labels}`).
pub fn series_name(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

/// The labels of a series (`{a="x",b="y"}` of `name{a="x",b="y"}`), unescaped (`\\`, `\"`,
/// `\n`); `None` when the label set is malformed.
pub fn series_labels(series: &str) -> Option<Vec<(String, String)>> {
    let Some(open) = series.find('{') else {
        return Some(Vec::new());
    };
    let body = series[open + 1..].strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if name.is_empty() || chars.next() != Some('=') {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        labels.push((name, value));
    }
}

impl Sample {
    /// Parse Prometheus text exposition: `name{labels} value [timestamp]` lines; comments,
    /// blank and malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let mut series = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((key, value)) = parse_line(line) {
                series.insert(key.to_owned(), value);
            }
        }
        Self { series }
    }

    /// The exact series' value.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.series.get(series).copied()
    }

    /// Sum over all series of metric `name` that carry every `label="value"` of `labels`
    /// (labels parsed, so `state="active"` does not match `substate="active"`); `None` when
    /// no series matches.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for (k, v) in &self.series {
            if series_name(k) != name {
                continue;
            }
            let Some(have) = series_labels(k) else {
                continue;
            };
            if labels
                .iter()
                .all(|(l, val)| have.iter().any(|(hl, hv)| hl == l && hv == val))
            {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }
}

/// Split one sample line into its series text and value.
fn parse_line(line: &str) -> Option<(&str, f64)> {
    let key_end = match line.find(['{', ' ', '\t']) {
        Some(i) if line.as_bytes()[i] == b'{' => {
            // Find the closing brace outside quoted label values.
            let (mut in_quotes, mut escaped) = (false, false);
            let mut end = None;
            for (j, c) in line[i..].char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if in_quotes => escaped = true,
                    '"' => in_quotes = !in_quotes,
                    '}' if !in_quotes => {
                        end = Some(i + j + 1);
                        break;
                    }
                    _ => {}
                }
            }
            end?
        }
        Some(i) => i,
        None => return None,
    };
    let key = &line[..key_end];
    let name = series_name(key);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let value = line[key_end..].split_whitespace().next()?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((key, value))
}

/// Counter growth between two values; a drop means the counter was reset (server restart),
/// and the later value is then the growth since the reset.
fn growth(first: f64, last: f64) -> f64 {
    if last >= first { last - first } else { last }
}

/// Growth of a metric (summed over its series) over the samples: the sum of its growth
/// between consecutive samples that have it, a drop counting as a reset (a server restart), so
/// what was counted before a restart is kept. A metric that appears only later started from
/// zero. `None` when never seen.
fn metric_delta(samples: &[(f64, Sample)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = samples
        .iter()
        .filter_map(|(_, s)| s.sum(name, labels))
        .collect();
    let first_seen = samples
        .iter()
        .position(|(_, s)| s.sum(name, labels).is_some())?;
    // Seen only from a later sample on: it started from zero in between.
    let base = if first_seen == 0 { values[0] } else { 0.0 };
    Some(piecewise(base, &values))
}

/// The growth from `base` through `values`, each drop being a reset.
fn piecewise(base: f64, values: &[f64]) -> f64 {
    let mut prev = base;
    let mut total = 0.0;
    for v in values {
        total += growth(prev, *v);
        prev = *v;
    }
    total
}

/// How many times the server restarted between the samples: its exported start time
/// (`process_start_time_seconds`) changed.
fn restarts(samples: &[(f64, Sample)]) -> u32 {
    let starts: Vec<f64> = samples
        .iter()
        .filter_map(|(_, s)| s.get("process_start_time_seconds"))
        .collect();
    starts
        .windows(2)
        .filter(|w| (w[1] - w[0]).abs() > 0.5)
        .count()
        .try_into()
        .unwrap_or(u32::MAX)
}

/// Least-squares slope of `points` (y per x unit); `None` with fewer than two distinct x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx).filter(|v| v.is_finite())
}

/// Samples taken at a phase's start and end (`None`: that scrape failed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseSamples {
    /// The phase's label (`None` for a run of one phase).
    pub label: Option<String>,
    /// At its start.
    pub start: Option<Sample>,
    /// At its end, after its workers released their handles.
    pub end: Option<Sample>,
    /// When the start and end samples were taken, seconds since the scraping began.
    pub start_t: f64,
    /// (The end's.)
    pub end_t: f64,
}

/// The server's side of one phase: connections made, pool hits, sessions left and CPU (of
/// `vcpus`; 0: unknown), each `None` when a scrape it needs failed or the server does not
/// export the metric.
pub fn phase_report(p: &PhaseSamples, vcpus: u32) -> PhaseServer {
    let delta = |name: &str| {
        let end = p.end.as_ref()?.sum(name, &[])?;
        let start = p.start.as_ref()?.sum(name, &[]).unwrap_or(0.0);
        Some(growth(start, end))
    };
    PhaseServer {
        phase: p.label.clone().unwrap_or_else(|| "all".into()),
        new_connections: delta("mcp_pool_creates_total"),
        pool_hits: delta("mcp_pool_hits_total"),
        sessions_at_end: p
            .end
            .as_ref()
            .and_then(|s| s.sum("mcp_ssh_sessions_active", &[])),
        cpu_percent: delta("process_cpu_seconds_total").and_then(|cpu| {
            let wall = p.end_t - p.start_t;
            (wall > 0.0 && vcpus > 0)
                .then(|| cpu / (wall * f64::from(vcpus)) * 100.0)
                .filter(|u| u.is_finite())
        }),
    }
}

/// Run length needed before a rising RSS counts as a leak, seconds.
pub const LEAK_MIN_SECS: f64 = 300.0;
/// RSS slope above which it may be a leak, MiB per minute.
pub const LEAK_MIN_SLOPE_MIB_PER_MIN: f64 = 1.0;
/// Overall RSS rise needed for a leak warning, as a fraction of the first value.
pub const LEAK_MIN_RISE: f64 = 0.10;

/// Fold timed samples (seconds since the run started, sample) into the report.
///
/// Deltas are last − first for every counter (`*_total`); a histogram's or summary's
/// `*_count` and `*_sum` become one [`Observed`] (observations during the run and their mean,
/// in the metric's unit) instead of two bare numbers; pool
/// hit rate is Δhits / (Δhits + Δmisses); CPU utilisation is Δ`process_cpu_seconds_total` /
/// (Δt × `vcpus`) × 100; RSS is `process_resident_memory_bytes` in MiB with its
/// least-squares slope; the leak warning needs a run of at least 5 minutes, a slope above
/// 1 MiB/min and a rise of at least 10%. Anything the server does not export is `None`.
pub fn build_report(samples: &[(f64, Sample)], vcpus: u32) -> ServerReport {
    let mut report = ServerReport {
        scrapes: u32::try_from(samples.len()).unwrap_or(u32::MAX),
        vcpus,
        ..ServerReport::default()
    };
    let (Some((_, first)), Some((_, last))) = (samples.first(), samples.last()) else {
        return report;
    };

    let _ = first;
    // Each series' growth through every sample (a restart's reset kept as a reset).
    let delta = |key: &str| {
        let values: Vec<f64> = samples.iter().filter_map(|(_, s)| s.get(key)).collect();
        let base = samples.first().and_then(|(_, s)| s.get(key)).unwrap_or(0.0);
        piecewise(base, &values)
    };
    report.restarts = restarts(samples);
    for key in last.series.keys() {
        let name = series_name(key);
        if name.ends_with("_total") {
            let d = delta(key);
            if d.is_finite() {
                report.deltas.insert(key.clone(), d);
            }
        } else if let Some(base) = name.strip_suffix("_count") {
            let labels = &key[name.len()..];
            let sum_key = format!("{base}_sum{labels}");
            let count = delta(key);
            let sum = last.get(&sum_key).map(|_| delta(&sum_key));
            if let Some(sum) = sum.filter(|s| s.is_finite())
                && count.is_finite()
            {
                report.observed.insert(
                    format!("{base}{labels}"),
                    Observed {
                        count,
                        mean: (count > 0.0).then(|| sum / count),
                    },
                );
            }
        }
    }

    let hits = metric_delta(samples, "mcp_pool_hits_total", &[]);
    let misses = metric_delta(samples, "mcp_pool_misses_total", &[]);
    report.pool_hit_rate_percent = match (hits, misses) {
        (None, None) => None,
        (h, m) => {
            let (h, m) = (h.unwrap_or(0.0), m.unwrap_or(0.0));
            (h + m > 0.0).then(|| h * 100.0 / (h + m))
        }
    };

    report.peak_active_connections = samples
        .iter()
        .filter_map(|(_, s)| s.sum("mcp_pool_connections", &[("state", "active")]))
        .filter(|v| v.is_finite())
        .reduce(f64::max);

    report.rate_limited = metric_delta(samples, "mcp_rate_limited_total", &[]);

    let cpu: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|(t, s)| Some((*t, s.sum("process_cpu_seconds_total", &[])?)))
        .collect();
    if let (Some(&(t0, c0)), Some(&(t1, _))) = (cpu.first(), cpu.last()) {
        let wall = t1 - t0;
        if wall > 0.0 && vcpus > 0 {
            let used = piecewise(c0, &cpu.iter().map(|c| c.1).collect::<Vec<_>>());
            let u = used / (wall * f64::from(vcpus)) * 100.0;
            report.cpu_utilisation_percent = u.is_finite().then_some(u);
        }
    }

    report.rss_mib = samples
        .iter()
        .filter_map(|(t, s)| {
            let b = s.sum("process_resident_memory_bytes", &[])?;
            (b.is_finite() && t.is_finite()).then(|| (*t, b / (1024.0 * 1024.0)))
        })
        .collect();
    report.rss_slope_mib_per_min = slope(&report.rss_mib).map(|per_s| per_s * 60.0);
    if let (Some(&(t0, r0)), Some(&(t1, r1)), Some(sl)) = (
        report.rss_mib.first(),
        report.rss_mib.last(),
        report.rss_slope_mib_per_min,
    ) {
        report.leak_warning = t1 - t0 >= LEAK_MIN_SECS
            && sl > LEAK_MIN_SLOPE_MIB_PER_MIN
            && r0 > 0.0
            && r1 >= r0 * (1.0 + LEAK_MIN_RISE);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP mcp_pool_hits_total Pool hits
# TYPE mcp_pool_hits_total counter
mcp_pool_hits_total 10
mcp_pool_misses_total 5
mcp_pool_connections{state="active"} 2
mcp_pool_connections{state="idle"} 3
mcp_tool_calls_total{tool="ssh_run_command",outcome="ok"} 7 1700000000000
weird{label="a}b \"q\""} 1.5
mcp_ssh_command_duration_seconds_bucket{le="+Inf"} 4
mcp_ssh_command_duration_seconds_sum 0.25
mcp_ssh_command_duration_seconds_count 4
process_cpu_seconds_total 1.0e1
process_resident_memory_bytes 104857600
garbage line here
{no_name="x"} 1
nan_metric NaN
"#;

    #[test]
    fn parses_prometheus_text() {
        let s = Sample::parse(TEXT);
        assert_eq!(s.get("mcp_pool_hits_total"), Some(10.0));
        assert_eq!(s.get(r#"mcp_pool_connections{state="active"}"#), Some(2.0));
        assert_eq!(
            s.get(r#"mcp_tool_calls_total{tool="ssh_run_command",outcome="ok"}"#),
            Some(7.0)
        );
        assert_eq!(s.get(r#"weird{label="a}b \"q\""}"#), Some(1.5));
        assert_eq!(
            s.get(r#"mcp_ssh_command_duration_seconds_bucket{le="+Inf"}"#),
            Some(4.0)
        );
        assert_eq!(s.get("process_cpu_seconds_total"), Some(10.0));
        assert!(s.get("nan_metric").is_some_and(f64::is_nan));
        assert_eq!(s.series.len(), 12, "{:?}", s.series.keys());
        assert_eq!(s.sum("mcp_pool_connections", &[]), Some(5.0));
        assert_eq!(
            s.sum("mcp_pool_connections", &[("state", "idle")]),
            Some(3.0)
        );
        assert_eq!(s.sum("mcp_pool_connections", &[("state", "gone")]), None);
        assert_eq!(Sample::parse("# only comments\n\n").series.len(), 0);
        // Labels are parsed, not searched: `state` does not match `substate`.
        let sub =
            Sample::parse("m{substate=\"active\"} 4\nm{state=\"active\",x=\"a,b=\\\"c\\\"\"} 1\n");
        assert_eq!(sub.sum("m", &[("state", "active")]), Some(1.0));
        assert_eq!(sub.sum("m", &[("x", "a,b=\"c\"")]), Some(1.0));
        assert_eq!(
            series_labels(r#"weird{label="a}b \"q\""}"#),
            Some(vec![("label".into(), "a}b \"q\"".into())])
        );
        assert_eq!(series_labels("m{broken"), None);
    }

    fn sample(pairs: &[(&str, f64)]) -> Sample {
        Sample {
            series: pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    #[test]
    fn report_from_samples() {
        let samples = vec![
            (
                0.0,
                sample(&[
                    ("mcp_pool_hits_total", 100.0),
                    ("mcp_pool_misses_total", 10.0),
                    (r#"mcp_pool_connections{state="active"}"#, 1.0),
                    ("process_cpu_seconds_total", 5.0),
                    ("process_resident_memory_bytes", 100.0 * 1048576.0),
                    ("mcp_ssh_command_duration_seconds_count", 3.0),
                    ("mcp_pool_connections_gauge", 9.0),
                ]),
            ),
            (
                30.0,
                sample(&[
                    ("mcp_pool_hits_total", 150.0),
                    ("mcp_pool_misses_total", 12.0),
                    (r#"mcp_pool_connections{state="active"}"#, 7.0),
                    ("process_cpu_seconds_total", 20.0),
                    ("process_resident_memory_bytes", 101.0 * 1048576.0),
                ]),
            ),
            (
                60.0,
                sample(&[
                    ("mcp_pool_hits_total", 280.0),
                    ("mcp_pool_misses_total", 30.0),
                    (r#"mcp_pool_connections{state="active"}"#, 3.0),
                    ("mcp_rate_limited_total", 4.0),
                    ("process_cpu_seconds_total", 35.0),
                    ("process_resident_memory_bytes", 102.0 * 1048576.0),
                    ("mcp_ssh_command_duration_seconds_count", 13.0),
                    ("mcp_ssh_command_duration_seconds_sum", 0.5),
                ]),
            ),
        ];
        let r = build_report(&samples, 2);
        assert_eq!(r.scrapes, 3);
        assert_eq!(r.vcpus, 2);
        assert_eq!(r.deltas["mcp_pool_hits_total"], 180.0);
        // A histogram's _count and _sum are one observation figure, not two deltas.
        assert!(
            !r.deltas
                .keys()
                .any(|k| k.ends_with("_count") || k.ends_with("_sum"))
        );
        let obs = &r.observed["mcp_ssh_command_duration_seconds"];
        assert_eq!(obs.count, 10.0);
        assert_eq!(obs.mean, Some(0.05));
        assert_eq!(r.deltas["mcp_rate_limited_total"], 4.0);
        assert!(!r.deltas.contains_key("mcp_pool_connections_gauge"));
        assert!(
            !r.deltas
                .contains_key(r#"mcp_pool_connections{state="active"}"#)
        );
        assert_eq!(r.pool_hit_rate_percent, Some(90.0));
        assert_eq!(r.peak_active_connections, Some(7.0));
        assert_eq!(r.rate_limited, Some(4.0));
        // 30 CPU seconds over 60 s on 2 vCPUs.
        assert_eq!(r.cpu_utilisation_percent, Some(25.0));
        assert_eq!(r.rss_mib, vec![(0.0, 100.0), (30.0, 101.0), (60.0, 102.0)]);
        let slope = r.rss_slope_mib_per_min.expect("slope");
        assert!((slope - 2.0).abs() < 1e-9, "{slope}");
        assert!(
            !r.leak_warning,
            "a one-minute run is too short to call a leak"
        );
        assert_eq!(r.error, None);
    }

    #[test]
    fn leak_warning_needs_length_slope_and_rise() {
        let rss = |f: &dyn Fn(f64) -> f64| -> Vec<(f64, Sample)> {
            (0..=20)
                .map(|i| {
                    let t = f64::from(i) * 30.0; // ten minutes
                    (
                        t,
                        sample(&[("process_resident_memory_bytes", f(t) * 1048576.0)]),
                    )
                })
                .collect()
        };
        // 50 MiB + 2 MiB/min: +40% over ten minutes.
        let leaking = build_report(&rss(&|t| 50.0 + t / 30.0), 1);
        assert!(leaking.leak_warning);
        // Same slope on a big base: +2% only.
        let big = build_report(&rss(&|t| 1000.0 + t / 30.0), 1);
        assert!(!big.leak_warning);
        // Flat.
        let flat = build_report(&rss(&|_| 50.0), 1);
        assert_eq!(flat.rss_slope_mib_per_min, Some(0.0));
        assert!(!flat.leak_warning);
        // Missing CPU and pool metrics are None, not zero.
        assert_eq!(flat.cpu_utilisation_percent, None);
        assert_eq!(flat.pool_hit_rate_percent, None);
        assert_eq!(flat.peak_active_connections, None);
        assert_eq!(flat.rate_limited, None);
    }

    #[test]
    fn a_phase_reads_connections_hits_and_what_it_left() {
        let p = PhaseSamples {
            label: Some("workers=2".into()),
            start: Some(sample(&[
                ("mcp_pool_creates_total", 4.0),
                ("mcp_pool_hits_total", 10.0),
            ])),
            end: Some(sample(&[
                ("mcp_pool_creates_total", 54.0),
                ("mcp_pool_hits_total", 10.0),
                ("mcp_ssh_sessions_active", 0.0),
                ("process_cpu_seconds_total", 5.0),
            ])),
            start_t: 10.0,
            end_t: 20.0,
        };
        let r = phase_report(&p, 2);
        assert_eq!(
            r.cpu_percent,
            Some(25.0),
            "5 CPU seconds over 10 s of 2 vCPUs"
        );
        assert_eq!(r.phase, "workers=2");
        assert_eq!(r.new_connections, Some(50.0));
        assert_eq!(r.pool_hits, Some(0.0));
        assert_eq!(r.sessions_at_end, Some(0.0));
        let failed = phase_report(
            &PhaseSamples {
                end: None,
                ..p.clone()
            },
            2,
        );
        assert_eq!(
            (failed.phase.as_str(), failed.new_connections),
            ("workers=2", None)
        );
        assert_eq!(failed.sessions_at_end, None);
        let one = phase_report(&PhaseSamples { label: None, ..p }, 2);
        assert_eq!(one.phase, "all");
    }

    #[test]
    fn missing_or_degenerate_input_does_not_panic() {
        let empty = build_report(&[], 4);
        assert_eq!((empty.scrapes, empty.vcpus), (0, 4));
        assert!(empty.deltas.is_empty() && empty.rss_mib.is_empty());
        assert_eq!(empty.rss_slope_mib_per_min, None);

        let one = build_report(&[(0.0, Sample::parse(TEXT))], 0);
        assert_eq!(one.scrapes, 1);
        assert_eq!(one.deltas["mcp_pool_hits_total"], 0.0);
        assert_eq!(one.pool_hit_rate_percent, None, "no traffic, no rate");
        assert_eq!(one.peak_active_connections, Some(2.0));
        assert_eq!(one.cpu_utilisation_percent, None);
        assert_eq!(one.rss_slope_mib_per_min, None);

        // A counter reset (server restart) counts the growth since the reset, and keeps what
        // was counted before it.
        let reset = build_report(
            &[
                (0.0, sample(&[("mcp_rate_limited_total", 50.0)])),
                (5.0, sample(&[("mcp_rate_limited_total", 60.0)])),
                (10.0, sample(&[("mcp_rate_limited_total", 7.0)])),
            ],
            1,
        );
        assert_eq!(reset.rate_limited, Some(17.0));
        assert_eq!(reset.deltas["mcp_rate_limited_total"], 17.0);
        assert_eq!(reset.restarts, 0, "no start time exported: not counted");
        let restarted = build_report(
            &[
                (0.0, sample(&[("process_start_time_seconds", 1000.0)])),
                (5.0, sample(&[("process_start_time_seconds", 1000.0)])),
                (10.0, sample(&[("process_start_time_seconds", 1009.0)])),
            ],
            1,
        );
        assert_eq!(restarted.restarts, 1);
        // Counters that appear only later started from zero.
        let late = build_report(
            &[
                (0.0, sample(&[("process_cpu_seconds_total", 1.0)])),
                (10.0, sample(&[("mcp_pool_misses_total", 4.0)])),
            ],
            1,
        );
        assert_eq!(late.pool_hit_rate_percent, Some(0.0));
        assert_eq!(late.cpu_utilisation_percent, None, "one CPU reading only");
    }
}
