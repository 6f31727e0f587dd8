//! Running part of a test in a network namespace of its own: [`in_new_network_namespace`].

use std::process::Command;

use anyhow::{Context, bail};
use nix::sched::{CloneFlags, unshare};

/// Runs `f` on a new thread that is alone in a fresh network namespace
/// (only `lo`, brought up), and returns what `f` returns.
///
/// Everything `f` does, and every process or thread it starts, is in that
/// namespace: an [`SshdBuilder`](crate::SshdBuilder) started there listens
/// there, so a test may use fixed port numbers (the lab's 2222, 2225, ...)
/// without touching the machine's own. The namespace has no name and no
/// file: it is gone once the thread has returned and the processes started
/// in it have exited (the fixture stops its sshd on drop), with nothing to
/// delete, even if the test process dies.
///
/// Needs root (`CAP_SYS_ADMIN`) and `ip` (iproute2). A panic in `f` is
/// passed on to the caller.
pub fn in_new_network_namespace<T, F>(f: F) -> anyhow::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    if !nix::unistd::geteuid().is_root() {
        bail!("a new network namespace needs root");
    }
    std::thread::scope(|scope| {
        // A thread's network namespace is its own: unshare(2) here leaves
        // the test's other threads where they are.
        let thread = scope.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET) failed")?;
            let out = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .output()
                .context("cannot run `ip` (iproute2)")?;
            if !out.status.success() {
                bail!(
                    "`ip link set lo up` failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(f())
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net_ns() -> std::path::PathBuf {
        std::fs::read_link("/proc/thread-self/ns/net").expect("read /proc/thread-self/ns/net")
    }

    #[test]
    fn runs_in_a_namespace_of_its_own() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: a new network namespace needs root");
            return;
        }
        let outside = net_ns();
        let (inside, lo) = in_new_network_namespace(|| {
            let lo = std::net::TcpListener::bind("127.0.0.1:0").is_ok();
            (net_ns(), lo)
        })
        .expect("new network namespace");
        assert_ne!(inside, outside);
        assert!(lo, "lo is up inside");
        assert_eq!(net_ns(), outside, "the calling thread stays where it was");
    }
}
