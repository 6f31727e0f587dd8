//! Test infrastructure shared by sshlab's integration tests (dev-only).
//!
//! This crate owns the *real* OpenSSH server fixture ([`Sshd`], built with
//! [`SshdBuilder`]), a real headless browser for the dashboard tests
//! ([`browser::Browser`]), and a couple of small helpers ([`wait_until`],
//! [`free_port`]). Tests talk to a genuine `sshd` rather than a mock so that
//! authentication, host-key checking, channel limits and "server died
//! mid-command" behave exactly as they do in production.
//!
//! # How the fixture works (and why it needs root)
//!
//! The tests must log in as made-up users (`alice`, `bob`, ...) but must never
//! touch the machine's `/etc/passwd`. So each fixture:
//!
//! 1. writes its own `passwd`, `group` and `shadow` files, host key, user
//!    homes, `authorized_keys` and `sshd_config` into a fresh temp dir;
//! 2. starts `unshare --mount --propagation private --pid --fork --kill-child`
//!    which, in a private mount namespace, bind-mounts those files over
//!    `/etc/passwd`, `/etc/group` and `/etc/shadow` and then `exec`s
//!    `sshd -D -e -f <dir>/sshd_config` (stderr goes to `<dir>/sshd.log`).
//!
//! The bind mounts are only visible inside that namespace, so the host's
//! account database is never modified. A test can bind-mount more files the
//! same way ([`SshdBuilder::bind_file`], e.g. a PAM service), and give sshd a
//! `/proc` of its own PID namespace ([`SshdBuilder::mount_proc`]).
//!
//! A test that needs fixed port numbers runs in a network namespace of its
//! own: [`in_new_network_namespace`]. Mounting requires `CAP_SYS_ADMIN`,
//! hence the fixture refuses to start unless running as root.
//!
//! `sshd` also runs as PID 1 of its own PID namespace. That is what makes
//! [`Sshd::kill`] a faithful "the server died" test: OpenSSH forks one
//! process per connection (in its own session), so killing only the
//! listener would leave established connections alive. When the init of a
//! PID namespace dies, the kernel kills every process in it, so every
//! connection drops at once, and no stray `sshd` or user command can outlive
//! the fixture. `--kill-child` makes the namespace die with the `unshare`
//! process, too.
//!
//! Cleanup does not depend on destructors only: the fixture holds the write
//! end of a pipe whose read end a tiny watcher inside the namespace waits on.
//! If the test process dies without running `Drop` (SIGKILL from a test
//! runner's timeout, `panic = "abort"`), the pipe closes and the watcher
//! removes the temp dir and stops sshd, so no fixture outlives its test.
//!
//! # Installing OpenSSH
//!
//! [`ensure_openssh_server`] installs Debian's `openssh-server` when `sshd` is
//! missing, without ever starting the system `ssh` service (see its docs).
//!
//! Doing the namespace setup with `unshare(1)` (util-linux, always present on
//! Debian) instead of `unshare(2)` in a `pre_exec` hook keeps this crate free
//! of `unsafe` code: a PID namespace only applies to *children* of the
//! caller, so a `pre_exec` version would need an extra fork anyway.

pub mod browser;
mod install;
mod netns;
mod sshd;
mod vm;

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

pub use install::ensure_openssh_server;
pub use netns::in_new_network_namespace;
pub use sshd::{Sshd, SshdBuilder};
pub use vm::{GuestOutput, GuestVm, GuestVmBuilder, check_vm_tools, find_in_path, find_kernel};

/// Polls `f` until it returns `true`, or fails after `timeout`.
///
/// `what` describes the awaited condition and appears in the error message
/// (`"timed out after 2000 ms waiting for <what>"`). The poll interval starts
/// at 10 ms and backs off to at most 200 ms. `f` is always polled at least
/// once, even with a zero timeout.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    let mut interval = Duration::from_millis(10);
    loop {
        if f().await {
            return Ok(());
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            anyhow::bail!(
                "timed out after {} ms waiting for {what}",
                timeout.as_millis()
            );
        }
        tokio::time::sleep(interval.min(timeout - elapsed)).await;
        interval = (interval * 2).min(Duration::from_millis(200));
    }
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding port 0 and releasing it, so another process
/// may grab it before the caller does; [`SshdBuilder::start`] retries with a
/// new port when that happens.
///
/// # Panics
///
/// Panics if the loopback interface cannot be bound at all (a broken test
/// environment).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("cannot bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("bound listener has no local address")
        .port()
}

/// Send `sig` to `root` and every descendant of it (found through `/proc`), e.g. SIGSTOP and
/// SIGCONT to stall a server for a while. Processes that are gone by then are skipped.
pub fn signal_process_tree(root: u32, sig: nix::sys::signal::Signal) {
    let mut pids = vec![root];
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        let Ok(entries) = std::fs::read_dir("/proc") else {
            break;
        };
        for e in entries.filter_map(Result::ok) {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The parent pid is the second field after the `(comm)`, which may hold spaces.
            let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
                continue;
            };
            if rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent)
                && !pids.contains(&pid)
            {
                pids.push(pid);
            }
        }
        i += 1;
    }
    for p in pids {
        if let Ok(p) = i32::try_from(p) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn wait_until_succeeds_once_condition_holds() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        wait_until("third call", Duration::from_secs(5), move || {
            let c = c.clone();
            async move { c.fetch_add(1, Ordering::SeqCst) >= 2 }
        })
        .await
        .expect("condition should become true");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn wait_until_times_out_with_description() {
        let err = wait_until("never", Duration::from_millis(50), || async { false })
            .await
            .expect_err("must time out");
        let msg = err.to_string();
        assert!(msg.contains("waiting for never"), "{msg}");
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port should be free");
    }
}
