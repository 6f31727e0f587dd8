//! What the live dashboard costs the agent each second, measured without a load test's noise:
//! the work [`sshlab_agent::dashboard::live::Live::publish`] and a page's frame add once a
//! second (the summary built from the aggregate, the page's `<main>` drawn by the report's
//! code) and one `/metrics` scrape, on aggregates of a 10-second and a 20-minute run at
//! 2,000 requests/s. `scripts/bench-agent` prints these after its with/without comparison.
//!
//!     cargo run --release -p sshlab-agent --example dashboard_cost

use std::time::{Duration, Instant};

use sshlab_core::report::html::{View, main_content};
use sshlab_core::results::live_metrics::{Gauges, LiveCounts, Snapshot, render};
use sshlab_core::results::{Aggregate, Record, RunInfo, Status, Summary};

/// Requests per second of the synthetic run.
const RATE: u64 = 2_000;
/// Repetitions of each measurement.
const REPEAT: u32 = 20;

fn run_of(seconds: u64) -> (Aggregate, LiveCounts) {
    let mut agg = Aggregate::new(0.0);
    let mut counts = LiveCounts::default();
    for t in 0..seconds {
        for i in 0..RATE {
            let failed = i % 50 == 0;
            let r = Record {
                ts: t as f64 + i as f64 / RATE as f64,
                intended_ts: t as f64,
                worker: "w0".into(),
                op: if i % 10 == 0 {
                    "ssh_connect"
                } else {
                    "ssh_run_command"
                }
                .into(),
                latency_ms: 1.0 + (i % 97) as f64,
                service_ms: 1.0 + (i % 89) as f64,
                status: if failed {
                    Status::Error
                } else {
                    Status::Success
                },
                error_kind: failed.then(|| "timeout".into()),
                error: failed.then(|| format!("timed out after {i} ms")),
                port: Some(2222),
                phase: None,
                segment: None,
            };
            agg.add(&r);
            counts.add(&r);
        }
    }
    (agg, counts)
}

fn per_call(mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..REPEAT {
        f();
    }
    t.elapsed() / REPEAT
}

fn main() {
    for seconds in [10, 1200] {
        let (agg, counts) = run_of(seconds);
        let mut bytes = 0;
        let frame = per_call(|| {
            let s = Summary::build(RunInfo::default(), &agg);
            bytes = main_content(&s, View::Live).len();
        });
        let scrape = per_call(|| {
            let _ = render(&Snapshot::take(&counts, &agg), &Gauges::default());
        });
        println!(
            "dashboard work per second, {seconds:>4} s into a run: a page's frame {:>6.2} ms \
             ({} KiB of HTML), a /metrics scrape {:>5.2} ms",
            frame.as_secs_f64() * 1e3,
            bytes / 1024,
            scrape.as_secs_f64() * 1e3
        );
    }
}
