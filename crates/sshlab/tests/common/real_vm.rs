//! Shared by the real-VM tests (netem_vm, lab_qemu, lab_microvm): when they may run, the
//! release builds of the lab's binaries they boot guests with, and a watcher of the Agent
//! guest's dashboard that `sshlab run --dashboard` forwards.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Whether this is CI (`CI=true`), where a test that cannot run is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| matches!(v.as_str(), "true" | "1" | "yes"))
}

/// Test `test` cannot run: fails in CI, skips (loudly) elsewhere.
pub fn unavailable(test: &str, why: &str) {
    if in_ci() {
        panic!("{test} cannot run (and CI=true): {why}");
    }
    eprintln!("SKIPPED {test}: {why} (set CI=true to make this a failure)");
}

/// Whether `name` is on PATH.
pub fn which(name: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(name).is_file())
}

/// A JSON file of a results directory.
pub fn run_json(dir: &Path, file: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}")))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The results directory of the newest run under `results`.
pub fn newest_run(results: &Path) -> PathBuf {
    latest_run(results).expect("a run with a summary.json")
}

/// The results directory of the newest run under `results`, if any: for a test that must
/// still take its lab down, and say why `vm up` failed, when no run happened.
pub fn latest_run(results: &Path) -> Option<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(results)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("summary.json").is_file())
        .collect();
    runs.sort();
    runs.pop()
}

/// Newest modification time of the files under `dir` (recursively).
fn newest(dir: &Path) -> Option<SystemTime> {
    let mut out = None;
    for e in std::fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let p = e.path();
        let t = if p.is_dir() {
            newest(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        out = out.max(t);
    }
    out
}

/// Release builds of mcp-ssh-server and sshlab-agent for the lab part: `SSHLAB_VM_BIN_DIR`,
/// else `<target>/release` when both are there and each is newer than its sources (its
/// crates' src, the scenarios and lab files compiled into the agent), so a build older
/// than the code is never measured.
pub fn release_bins() -> Result<PathBuf, String> {
    let bins = ["mcp-ssh-server", "sshlab-agent"];
    let build = "build them: cargo build --release -p mcp-ssh-server -p sshlab-agent";
    if let Some(d) = std::env::var_os("SSHLAB_VM_BIN_DIR") {
        let d = PathBuf::from(d);
        return match bins.iter().all(|b| d.join(b).is_file()) {
            true => Ok(d),
            false => Err(format!("SSHLAB_VM_BIN_DIR={} lacks {bins:?}", d.display())),
        };
    }
    // This test runs from <target>/<profile>/deps/.
    let dir = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.join("release")))
        .ok_or("cannot locate the target directory")?;
    // Each binary against what it is built from (mcp-ssh-server stands alone).
    let inputs: [(&str, &[&str]); 2] = [
        ("mcp-ssh-server", &["crates/mcp-ssh-server/src"]),
        (
            "sshlab-agent",
            &[
                "crates/sshlab-agent/src",
                "crates/sshlab-core/scenarios",
                "crates/sshlab-core/src",
                "vms/topology.toml",
                "netem/profiles.toml",
            ],
        ),
    ];
    for (b, srcs) in inputs {
        let p = dir.join(b);
        let built = p
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|_| format!("no {} ({build})", p.display()))?;
        // Not Cargo.lock: a dependency change elsewhere need not relink this binary.
        let mut newest_source = None;
        for s in srcs {
            let s = Path::new(REPO).join(s);
            // A listed input that is gone (moved) would silently stop being checked.
            let t = if s.is_dir() {
                newest(&s)
            } else {
                let modified = s.metadata().and_then(|m| m.modified());
                Some(modified.map_err(|e| {
                    format!("{}: {e} (update this test's list of inputs)", s.display())
                })?)
            };
            newest_source = newest_source.max(t);
        }
        if newest_source.is_some_and(|s| s > built) {
            return Err(format!(
                "{} is older than its sources ({build})",
                p.display()
            ));
        }
    }
    Ok(dir)
}

/// The processes `vm up` recorded for the guests (each runner and everything below it: vng,
/// virtme-run, qemu) that still run (zombies aside), as "pid comm".
pub fn still_running(state: &sshlab::vm::State) -> Vec<String> {
    state
        .procs
        .iter()
        .flat_map(|p| {
            let me = sshlab::vm::process::Member {
                pid: p.pid,
                start_time: p.start_time,
            };
            std::iter::once(me).chain(p.members.iter().copied())
        })
        .filter(|m| m.alive())
        .map(|m| {
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", m.pid));
            format!("{} {}", m.pid, comm.unwrap_or_default().trim())
        })
        .collect()
}

/// Polls the agent's /metrics at `addr` (a dashboard `sshlab run --dashboard` forwards) on a
/// thread of its own until it shows a job running with requests counted, or until
/// [`DashboardWatch::requests_seen`].
#[derive(Debug)]
pub struct DashboardWatch {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<f64>>,
}

impl DashboardWatch {
    /// Starts watching `addr`.
    pub fn start(addr: std::net::SocketAddr) -> Self {
        use sshlab_core::results::live_metrics::{REQUESTS_TOTAL, RUNNING};
        use sshlab_core::results::server_metrics::Sample;
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = std::time::Duration::from_secs(5);
                if let Ok(r) = sshlab::http::request("GET", addr, "/metrics", None, t)
                    && r.status == 200
                {
                    let m = Sample::parse(&r.body);
                    let n = m.sum(REQUESTS_TOTAL, &[]).unwrap_or(0.0);
                    if m.get(RUNNING) == Some(1.0) && n > 0.0 {
                        return Some(n);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            None
        });
        Self { done, thread }
    }

    /// Stops watching (call it once the run has ended): the requests a running job had
    /// counted when the watcher saw it, if it did.
    pub fn requests_seen(self) -> Option<f64> {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

/// Calls that succeeded in summary `s`'s timeline seconds that began more than 2 s after
/// `t` seconds into the run (after a fault's end, say).
pub fn succeeded_after(s: &Value, t: f64) -> u64 {
    s["timeline"]
        .as_array()
        .map(|seconds| {
            seconds
                .iter()
                .filter(|i| i["t"].as_f64().is_some_and(|at| at > t + 2.0))
                .filter_map(|i| i["ok"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}
