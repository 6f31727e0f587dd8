//! The process's own metrics, read at each scrape: `process_cpu_seconds_total` (user + system
//! time from `getrusage`, microsecond resolution), `process_resident_memory_bytes` (`VmRSS` of
//! `/proc/self/status`), `process_open_fds`, `process_max_fds` and
//! `process_start_time_seconds` (unix time the server started: a scraper that sees it change
//! knows the server restarted and its counters started again from zero).
//!
//! Not the `prometheus` crate's process collector: it divides clock ticks by the tick rate in
//! integers, so its CPU counter moves in whole seconds and any run shorter than minutes reads
//! as 0% CPU, which made the load reports' CPU figures and extrapolation meaningless.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, IntGauge};

/// The collector (register it once).
#[derive(Debug, Clone)]
pub struct ProcessMetrics {
    cpu: Counter,
    rss: Gauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: Gauge,
}

impl ProcessMetrics {
    /// The four metrics, unset until the first scrape.
    pub fn new() -> Self {
        // The names and helps are constants: these cannot fail.
        Self {
            cpu: Counter::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
            )
            .expect("valid metric"),
            rss: Gauge::new(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            )
            .expect("valid metric"),
            open_fds: IntGauge::new("process_open_fds", "Number of open file descriptors.")
                .expect("valid metric"),
            max_fds: IntGauge::new(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            )
            .expect("valid metric"),
            start_time: {
                let g = Gauge::new(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                )
                .expect("valid metric");
                g.set(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64()),
                );
                g
            },
        }
    }

    /// Reads the process's figures into the metrics.
    fn refresh(&self) {
        if let Some(cpu) = cpu_seconds() {
            let delta = cpu - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
        }
        if let Some(rss) = resident_bytes() {
            self.rss.set(rss as f64);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(fds.count()).unwrap_or(i64::MAX));
        }
        if let Ok((soft, _)) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        {
            self.max_fds.set(i64::try_from(soft).unwrap_or(i64::MAX));
        }
    }
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.cpu.desc(),
            self.rss.desc(),
            self.open_fds.desc(),
            self.max_fds.desc(),
            self.start_time.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        [
            self.cpu.collect(),
            self.rss.collect(),
            self.open_fds.collect(),
            self.max_fds.collect(),
            self.start_time.collect(),
        ]
        .concat()
    }
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> Option<f64> {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(secs(u.user_time()) + secs(u.system_time()))
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  10 kB\nVmRSS:\t    2048 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: lots"), None);
    }

    #[test]
    fn cpu_time_has_sub_second_resolution() {
        let m = ProcessMetrics::new();
        m.refresh();
        let before = m.cpu.get();
        // About 150 ms of work on this thread.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(150) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        m.refresh();
        let spent = m.cpu.get() - before;
        // A whole-second counter moves by 0 or whole seconds (other threads may add to it).
        assert!(spent >= 0.05 && spent.fract() != 0.0, "{spent} s");
        assert!(m.rss.get() > 0.0 && m.open_fds.get() > 0 && m.max_fds.get() > 0);
    }
}
