//! Starting a VM's processes inside its network namespace, and stopping them again by pid.
//!
//! A process is started detached (its own session, stdin from /dev/null, stdout and stderr to
//! its log) after `setns(2)` into the VM's namespace, so it outlives `sshlab vm up`. The state
//! file records its pid and its start time (field 22 of `/proc/PID/stat`): `stop` signals a pid
//! only while that pair still matches, so a reused pid is never hit.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A process `vm up` started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Proc {
    /// The VM it belongs to.
    pub vm: String,
    /// What it is (`sshd`, `mcp-ssh-server`, `sshlab-agent`).
    pub what: String,
    /// Its pid.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// Its log file.
    pub log: String,
    /// The pid that gets SIGTERM when it is not `pid` itself (the target's namespace init under
    /// `unshare`, which ignores SIGTERM while it waits).
    #[serde(default)]
    pub term_pid: Option<u32>,
    /// Its process group when it leads one (microvm backend): `stop` signals the whole group,
    /// but only while `pid` still has its recorded start time.
    #[serde(default)]
    pub pgid: Option<u32>,
    /// Its descendants when the VM became ready ([`Proc::record_descendants`]), wherever their
    /// process group: `stop` waits for each of them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
}

/// A process `vm up` started indirectly (a runner's qemu or virtiofsd), by pid and start time.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// Its pid.
    pub pid: u32,
    /// Its start time (`/proc/PID/stat` field 22), so a reused pid is never taken for it.
    pub start_time: u64,
}

impl Member {
    /// Still running (not a zombie), and still the process recorded.
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }

    /// Whether it belongs to user `uid` (its `/proc` entry's owner).
    pub fn owned_by(&self, uid: u32) -> bool {
        owned_by(self.pid, uid)
    }
}

/// Every live (non-zombie) descendant of `root`, by the parent pids in `/proc`.
pub fn descendants(root: u32) -> Vec<Member> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // (pid, ppid, start time) of every live process.
    let table: Vec<(u32, u32, u64)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            if matches!(f.first(), Some(&"Z" | &"X")) {
                return None;
            }
            Some((pid, f.get(1)?.parse().ok()?, f.get(19)?.parse().ok()?))
        })
        .collect();
    let mut out: Vec<Member> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid, start_time) in &table {
            if ppid == parent && pid != root && !out.iter().any(|m| m.pid == pid) {
                out.push(Member { pid, start_time });
                frontier.push(pid);
            }
        }
    }
    out
}

/// SIGTERM to each of `members` still alive, up to `grace` for them to exit, then SIGKILL;
/// waits until none is left (5 s at most). Returns how many were running.
fn stop_members(members: &[Member], grace: Duration) -> usize {
    let running: Vec<Member> = members.iter().copied().filter(Member::alive).collect();
    let signal = |sig: Signal| {
        for m in running.iter().filter(|m| m.alive()) {
            if let Ok(p) = i32::try_from(m.pid) {
                let _ = kill(Pid::from_raw(p), sig);
            }
        }
    };
    if running.is_empty() {
        return 0;
    }
    signal(Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while running.iter().any(Member::alive) && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    if running.iter().any(Member::alive) {
        signal(Signal::SIGKILL);
        let hard = Instant::now() + Duration::from_secs(5);
        while running.iter().any(Member::alive) && Instant::now() < hard {
            sleep(Duration::from_millis(50));
        }
    }
    running.len()
}

fn owned_by(pid: u32, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid)
}

/// Spawns `cmd` inside network namespace `netns_file`, detached, logging to `log`.
pub fn spawn_in(
    vm: &str,
    what: &str,
    mut cmd: Command,
    netns_file: &File,
    log: &Path,
) -> anyhow::Result<Proc> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    let fd: RawFd = netns_file.as_raw_fd();
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (setns, setsid) on a descriptor that stays open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {what} for VM {vm}"))?;
    let pid = child.id();
    // Not waited for here: `stop` reaps it when this process is still its parent.
    std::mem::forget(child);
    let start_time = start_time(pid).unwrap_or(0);
    Ok(Proc {
        vm: vm.to_owned(),
        what: what.to_owned(),
        pid,
        start_time,
        log: log.display().to_string(),
        term_pid: None,
        pgid: None,
        members: Vec::new(),
    })
}

/// The processes whose process group is `pgid` (field 5 of `/proc/PID/stat`).
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok())
                    == Some(pgid)
            })
        })
        .filter(|pid| start_time(*pid).is_some())
        .collect()
}

/// SIGTERM to process group `pgid` (> 1), up to `grace` for its members to exit, then SIGKILL;
/// waits until none is left (5 s at most).
fn stop_group(pgid: u32, grace: Duration) {
    let Ok(g) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 || group_members(pgid).is_empty() {
        return;
    }
    let _ = kill(Pid::from_raw(-g), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while !group_members(pgid).is_empty() && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    if !group_members(pgid).is_empty() {
        let _ = kill(Pid::from_raw(-g), Signal::SIGKILL);
        let hard = Instant::now() + Duration::from_secs(5);
        while !group_members(pgid).is_empty() && Instant::now() < hard {
            sleep(Duration::from_millis(50));
        }
    }
}

/// Waits up to `timeout` for `child` to exit and returns its stdout and stderr (as piped by the
/// caller), `None` when it did not exit in time (the caller kills it).
pub fn wait_output(mut child: std::process::Child, timeout: Duration) -> Option<String> {
    use std::io::Read;
    let pipe = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(p) = p {
                let _ = p.take(1 << 20).read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut text = out.join().unwrap_or_default();
    text.push_str(&err.join().unwrap_or_default());
    Some(text)
}

/// Field 22 (starttime) of `/proc/PID/stat`, `None` when the process is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and ')'; starttime is the 20th
    // field after it.
    let (_, rest) = stat.rsplit_once(')')?;
    let state = rest.split_whitespace().next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Proc {
    /// Still running, and still the process that was started.
    pub fn alive(&self) -> bool {
        reap(self.pid);
        start_time(self.pid).is_some_and(|t| t == self.start_time)
    }

    /// Whether the running process belongs to user `uid` (its `/proc` entry's owner).
    pub fn owned_by(&self, uid: u32) -> bool {
        owned_by(self.pid, uid)
    }

    /// Records its current descendants as [`Proc::members`] (called once the VM is up: the
    /// runner's hypervisor and helpers exist by then).
    pub fn record_descendants(&mut self) {
        self.members = descendants(self.pid);
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; then the same for every process it started
    /// that is left, in its process group or not: its recorded members and its descendants now
    /// (a supervisor such as microvm.nix's supervisord gives each child a group of its own and
    /// may exit before its children have). Returns only when none of them runs. Returns a line
    /// for the report.
    pub fn stop(&self, grace: Duration) -> String {
        let mut members = self.members.clone();
        if self.alive() {
            for m in descendants(self.pid) {
                if !members.contains(&m) {
                    members.push(m);
                }
            }
        }
        let line = self.stop_leader(grace);
        match stop_members(&members, grace) {
            0 => line,
            n => format!("{line}; and {n} of its processes that were left"),
        }
    }

    /// [`Proc::stop`] for the process itself and its process group.
    fn stop_leader(&self, grace: Duration) -> String {
        // Never process group 0 or 1 (the caller's own group, or init's: everything).
        let group = self.pgid.filter(|g| *g > 1);
        if !self.alive() {
            // The leader (e.g. vng) may be gone while its group (qemu) still runs: the group id
            // stays taken while members live, so those are still ours, unless the leader's pid
            // now belongs to another process (then nothing is touched).
            let orphans = group
                .filter(|g| start_time(*g).is_none())
                .map(group_members)
                .unwrap_or_default();
            if let (Some(g), false) = (group, orphans.is_empty()) {
                stop_group(g, grace);
                return format!(
                    "{} {} (pid {}) had exited; stopped what was left of its group ({} processes)",
                    self.vm,
                    self.what,
                    self.pid,
                    orphans.len()
                );
            }
            return format!(
                "{} {} (pid {}) was not running",
                self.vm, self.what, self.pid
            );
        }
        let Ok(raw) = i32::try_from(self.pid) else {
            return format!("{} {}: bad pid {}", self.vm, self.what, self.pid);
        };
        let term = group
            .and_then(|g| i32::try_from(g).ok())
            .map(|g| -g)
            .or_else(|| self.term_pid.and_then(|p| i32::try_from(p).ok()))
            .unwrap_or(raw);
        let _ = kill(Pid::from_raw(term), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.alive() {
            if Instant::now() >= deadline {
                let _ = kill(
                    Pid::from_raw(
                        group
                            .and_then(|g| i32::try_from(g).ok())
                            .map_or(raw, |g| -g),
                    ),
                    Signal::SIGKILL,
                );
                let hard = Instant::now() + Duration::from_secs(5);
                while self.alive() && Instant::now() < hard {
                    sleep(Duration::from_millis(20));
                }
                if let Some(g) = group {
                    stop_group(g, Duration::ZERO);
                }
                return format!(
                    "stopped {} {} (pid {}) with SIGKILL after {grace:?}",
                    self.vm, self.what, self.pid
                );
            }
            sleep(Duration::from_millis(20));
        }
        // The leader is gone; the rest of its group (qemu under vng) goes too before `down`
        // says the VM is stopped.
        if let Some(g) = group {
            stop_group(g, grace);
        }
        format!("stopped {} {} (pid {})", self.vm, self.what, self.pid)
    }
}

/// The first child of `pid` (from `/proc/PID/task/PID/children`).
pub fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Reaps `pid` if it is an exited child of this process (no-op otherwise).
fn reap(pid: u32) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG));
    }
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    /// At most this much of the end of a log is read.
    const TAIL_BYTES: u64 = 64 * 1024;
    // O_NOFOLLOW: a log is a file this tool wrote, never a link (root may read a user's dir).
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = f.take(TAIL_BYTES).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable_and_stable() {
        let me = std::process::id();
        let t = start_time(me).expect("own stat");
        assert_eq!(start_time(me), Some(t));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("sshlab-tail-{}", std::process::id()));
        std::fs::write(&dir, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&dir, 2), "b\nc");
        std::fs::remove_file(&dir).unwrap();
    }
}
