//! The control port's systemd executor against a real systemd.
//!
//! `sshlab guest-control` is what vms/control.nix runs in the NixOS target and MCP VMs, and what
//! `sshlab run --fault sshd-kill|mcp-restart` and the NixOS VM test's fault subtest drive there.
//! The qemu backend's guests run the other executor (`sshlab guest`, the role's init), so only
//! this test runs the systemd one for real:
//! - a TCG guest (sshlab-testkit's [`GuestVm`]) boots with the control port on a host socket,
//!   exactly as vms/control.nix gives qemu (`virtio-serial-pci`, `virtserialport` named
//!   `sshlab.control`);
//! - in it, Debian's systemd runs as PID 1 of its own PID and mount namespaces (container mode,
//!   with its own `/run`), over units shaped as the NixOS modules define them:
//!   - two sshd units with `Restart=always` and `RestartSec=1` (vms/target.nix's `sshdUnit`);
//!   - the unstable instance's restart service and timer, with vms/target.nix's
//!     `ConditionPathExists` on the down flag (every 3 s here, 20 s there);
//!   - `sshlab-control.service`, running `sshlab guest-control target --systemctl=...
//!     --sshd-unit=PORT=UNIT...` as vms/control.nix does;
//!   - a watcher that holds one connection to the standard sshd (a session that sshd serves)
//!     and prints each unit's state, the unstable one's main pid, and whether each port
//!     accepts, into a file the host reads.
//!
//! The host sends commands through the socket with [`control::send`], as `sshlab run --fault`
//! does, and asserts:
//! - `sshd-kill`: both units go down, their ports close, the held connection is cut, and the
//!   standard unit's `Result` is `signal` (killed, as a crash, not stopped cleanly);
//! - they stay down for 10 s: neither `Restart=always` nor the unstable one's timer (seen
//!   restarting it before the kill) brings them back;
//! - `sshd-back`: both units are active again, the ports accept, and the timer restarts the
//!   unstable one again;
//! - a port or a role the VM has no unit for is refused, with the reason.
//!
//! Needs root and the VM tools; fails under `CI=true` when it cannot run, skips loudly
//! otherwise. About 55 s (TCG boot ~20 s).

mod common;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use sshlab::vm::control::{self, Command, DOWN_DIR, PORT};
    use sshlab_testkit::{GuestOutput, GuestVm, check_vm_tools};

    use crate::common::real_vm;

    /// Where the guest sees the host's files (see sshlab-testkit's vm module on `/tmp`).
    const SHARE_ROOT: &str = "/var/lib/sshlab-vm";
    const SYSTEMD: &str = "/lib/systemd/systemd";
    const SSHD: &str = "/usr/sbin/sshd";
    /// The unstable instance's timer period here.
    const TIMER_SEC: u32 = 3;

    /// One line of the watcher.
    #[derive(Debug, Clone)]
    struct Watch {
        /// The guest's uptime.
        t: f64,
        standard: String,
        unstable: String,
        /// The unstable unit's main pid (0: none).
        pid: u32,
        /// The standard unit's `Result` (`signal` once its process was killed by one).
        result: String,
        p2222: bool,
        p2227: bool,
        /// The held connection to 2222 is still open.
        session: bool,
    }

    impl Watch {
        fn parse(line: &str) -> Option<Self> {
            let mut w = line.strip_prefix("WATCH ")?.split_whitespace();
            let t = w.next()?.parse().ok()?;
            let mut field = |name: &str| {
                w.next()?
                    .strip_prefix(name)?
                    .strip_prefix('=')
                    .map(str::to_owned)
            };
            Some(Self {
                t,
                standard: field("standard")?,
                unstable: field("unstable")?,
                pid: field("pid")?.parse().ok()?,
                result: field("result")?,
                p2222: field("p2222")? == "open",
                p2227: field("p2227")? == "open",
                session: field("session")? == "alive",
            })
        }

        /// Both units down, both ports closed.
        fn both_down(&self) -> bool {
            !matches!(
                self.standard.as_str(),
                "active" | "activating" | "reloading"
            ) && !matches!(
                self.unstable.as_str(),
                "active" | "activating" | "reloading"
            ) && !self.p2222
                && !self.p2227
        }
    }

    /// The watcher's complete lines so far (one being written is left for the next read).
    fn watches(share: &Path) -> Vec<Watch> {
        let text = std::fs::read_to_string(share.join("watch.log")).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete.lines().filter_map(Watch::parse).collect()
    }

    /// Polls the watcher's lines until `ok` holds for them, for up to `limit` or until the
    /// guest has ended; the lines at that moment.
    fn wait_for(
        guest: &mut Guest,
        share: &Path,
        limit: Duration,
        what: &str,
        ok: impl Fn(&[Watch]) -> bool,
    ) -> Vec<Watch> {
        let deadline = Instant::now() + limit;
        loop {
            let w = watches(share);
            if ok(&w) {
                return w;
            }
            if Instant::now() >= deadline || guest.ended() {
                let ended = if guest.ended() {
                    format!(" (the guest ended: {})", guest.outcome())
                } else {
                    String::new()
                };
                panic!(
                    "{what}: not within {} s{ended}; watcher's last lines:\n{}\nsystemd:\n{}\n\
                     control:\n{}",
                    limit.as_secs(),
                    tail(&share.join("watch.log"), 8),
                    tail(&share.join("systemd.log"), 30),
                    tail(&share.join("control.log"), 10),
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn tail(path: &Path, n: usize) -> String {
        last_lines(&std::fs::read_to_string(path).unwrap_or_default(), n)
    }

    fn last_lines(text: &str, n: usize) -> String {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn distinct_pids(w: &[Watch]) -> usize {
        let mut pids: Vec<u32> = w.iter().map(|w| w.pid).filter(|p| *p != 0).collect();
        pids.sort_unstable();
        pids.dedup();
        pids.len()
    }

    /// The guest's thread. Dropped (the test's end, or an assertion failing), it creates
    /// `done`, on which the guest's script ends, and waits for the guest: no qemu outlives the
    /// test, and the shared directory is removed only after.
    struct Guest {
        done: PathBuf,
        thread: Option<JoinHandle<anyhow::Result<GuestOutput>>>,
    }

    impl Guest {
        fn ended(&self) -> bool {
            self.thread.as_ref().is_none_or(JoinHandle::is_finished)
        }

        /// What the guest's run came to, once it has ended: its error (vng or qemu could not
        /// start, the guest never booted, with the console's tail) or its output.
        fn outcome(&mut self) -> String {
            match self.thread.take() {
                Some(t) if t.is_finished() => match t.join() {
                    Ok(Ok(out)) => format!(
                        "the guest's script ended with {}; stdout:\n{}\nstderr:\n{}\nconsole \
                         tail:\n{}",
                        out.exit_code,
                        out.stdout,
                        out.stderr,
                        last_lines(&out.console, 30)
                    ),
                    Ok(Err(e)) => format!("the guest's run failed: {e:#}"),
                    Err(_) => "the guest's thread panicked".into(),
                },
                Some(t) => {
                    self.thread = Some(t);
                    "the guest is still running".into()
                }
                None => "the guest was already ended".into(),
            }
        }

        /// Ends the guest and returns what it ran.
        fn finish(mut self) -> anyhow::Result<GuestOutput> {
            let _ = std::fs::write(&self.done, b"");
            match self.thread.take() {
                Some(t) => t.join().expect("the guest's thread"),
                None => anyhow::bail!("the guest was already ended"),
            }
        }
    }

    impl Drop for Guest {
        fn drop(&mut self) {
            let _ = std::fs::write(&self.done, b"");
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// A unit of the guest's systemd: no default dependencies (no sysinit.target: nothing of
    /// the host's root is set up in the guest), the rest as given.
    fn unit(unit: &str, service: &str) -> String {
        format!("[Unit]\nDefaultDependencies=no\n{unit}\n[Service]\n{service}\n")
    }

    /// Writes the units, sshd's configs and key, the watcher, and sshlab into `share`.
    fn lay_out(share: &Path) {
        let s = share.display();
        let write = |name: &str, text: String| {
            let p = share.join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        };
        std::fs::copy(env!("CARGO_BIN_EXE_sshlab"), share.join("sshlab")).expect("copy sshlab");
        let key = share.join("host_ed25519");
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .output()
            .expect("ssh-keygen");
        assert!(out.status.success(), "ssh-keygen: {out:?}");
        for (name, port) in [("standard", 2222), ("unstable", 2227)] {
            // LoginGraceTime 0: the watcher's connection stays until the kill cuts it.
            write(
                &format!("sshd_config-{name}"),
                format!(
                    "ListenAddress 127.0.0.1:{port}\nHostKey {}\nPidFile none\nUsePAM no\n\
                     LoginGraceTime 0\nMaxStartups 100\n",
                    key.display()
                ),
            );
            // As vms/target.nix's sshdUnit (Restart=always, RestartSec=1); Debian's sshd
            // wants its privilege-separation directory, which NixOS' build does not.
            write(
                &format!("units/sshd-{name}.service"),
                unit(
                    "",
                    &format!(
                        "ExecStartPre=/bin/mkdir -p /run/sshd\n\
                         ExecStart={SSHD} -D -e -f {s}/sshd_config-{name}\n\
                         Restart=always\nRestartSec=1"
                    ),
                ),
            );
        }
        // vms/target.nix's sshd-unstable-restart service and timer.
        write(
            "units/sshd-unstable-restart.service",
            unit(
                &format!("ConditionPathExists=!{DOWN_DIR}/sshd-unstable.service"),
                "Type=oneshot\nExecStart=/bin/systemctl restart sshd-unstable.service",
            ),
        );
        write(
            "units/sshd-unstable-restart.timer",
            format!(
                "[Unit]\nDefaultDependencies=no\n[Timer]\nOnActiveSec={TIMER_SEC}\n\
                 OnUnitActiveSec={TIMER_SEC}\nAccuracySec=100ms\n"
            ),
        );
        // vms/control.nix's service.
        write(
            "units/sshlab-control.service",
            unit(
                "",
                &format!(
                    "ExecStart={s}/sshlab guest-control target --systemctl=/bin/systemctl \
                     --sshd-unit=2222=sshd-standard.service \
                     --sshd-unit=2227=sshd-unstable.service\n\
                     Restart=on-failure\nRestartSec=5\n\
                     StandardOutput=append:{s}/control.log\nStandardError=append:{s}/control.log"
                ),
            ),
        );
        write(
            "units/sshlab-watch.service",
            unit(
                "After=sshd-standard.service",
                &format!(
                    "ExecStart=/bin/bash {s}/watch.sh\nStandardOutput=append:{s}/watch.log\n\
                     StandardError=append:{s}/watch.log"
                ),
            ),
        );
        write(
            "units/sshlab-test.target",
            "[Unit]\nWants=sshd-standard.service sshd-unstable.service \
             sshd-unstable-restart.timer sshlab-control.service sshlab-watch.service\n"
                .into(),
        );
        // A closed connection reads as ready (EOF): `read` then fails.
        write(
            "watch.sh",
            r#"sleep 1
until exec 3<>/dev/tcp/127.0.0.1/2222; do sleep 0.5; done
read -r -t 10 banner <&3; echo "BANNER $banner"
session=alive
accepts() { (exec 4<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && echo open || echo closed; }
while :; do
  if [ "$session" = alive ] && read -r -t 0 <&3; then
    read -r -t 1 _ <&3 || session=dead
  fi
  echo "WATCH $(cut -d' ' -f1 /proc/uptime)" \
    "standard=$(systemctl is-active sshd-standard.service)" \
    "unstable=$(systemctl is-active sshd-unstable.service)" \
    "pid=$(systemctl show -p MainPID --value sshd-unstable.service)" \
    "result=$(systemctl show -p Result --value sshd-standard.service)" \
    "p2222=$(accepts 2222) p2227=$(accepts 2227) session=$session"
  sleep 0.3
done
"#
            .into(),
        );
    }

    /// The guest: systemd in namespaces of its own, until the host says `done`.
    fn guest_script(share: &Path) -> String {
        format!(
            r#"S='{s}'
unshare --pid --fork --mount --mount-proc --propagation private sh -c '
  mount -t tmpfs -o mode=755 tmpfs /run
  mkdir -p /run/systemd/system
  cp "$0"/units/* /run/systemd/system/
  exec env container=sshlab-test {SYSTEMD} --system --unit=sshlab-test.target \
    --log-target=console --show-status=no
' "$S" >"$S/systemd.log" 2>&1 &
i=0
while [ ! -e "$S/done" ] && [ "$i" -lt 600 ]; do sleep 0.5; i=$((i + 1)); done
[ -e "$S/done" ] && echo "host done" || echo "no word from the host"
"#,
            s = share.display()
        )
    }

    #[test]
    fn the_systemd_executor_kills_keeps_down_and_brings_back_real_units() {
        if !nix::unistd::geteuid().is_root() {
            return real_vm::unavailable("guest_control_systemd", "needs root");
        }
        for tool in [SYSTEMD, SSHD] {
            if !Path::new(tool).is_file() {
                return real_vm::unavailable(
                    "guest_control_systemd",
                    &format!("{tool} is missing (scripts/install-deps base vm)"),
                );
            }
        }
        if let Err(e) = check_vm_tools() {
            return real_vm::unavailable("guest_control_systemd", &format!("{e:#}"));
        }
        std::fs::create_dir_all(SHARE_ROOT).expect("share root");
        let share_dir = tempfile::Builder::new()
            .prefix("systemd-")
            .tempdir_in(SHARE_ROOT)
            .expect("share");
        let share = share_dir.path().to_path_buf();
        lay_out(&share);
        let sockets = tempfile::tempdir().expect("socket dir");
        let socket = sockets.path().join("control.sock");
        // vms/control.nix's qemuArgs, with this test's socket path.
        let opts = format!(
            "-device virtio-serial-pci,id=sshlab-serial \
             -chardev socket,id=sshlab-control,path={},server=on,wait=off \
             -device virtserialport,bus=sshlab-serial.0,chardev=sshlab-control,name={PORT}",
            socket.display()
        );
        let vm = GuestVm::builder()
            .memory_mb(512)
            .cpus(1)
            .timeout(Duration::from_secs(420))
            .rwdir(&share)
            .qemu_opts(opts)
            .build()
            .expect("guest");
        let script = guest_script(&share);
        let mut guest = Guest {
            done: share.join("done"),
            thread: Some(std::thread::spawn(move || vm.run(&script))),
        };

        // Up: the held session, both ports, the control port served, and the timer restarting
        // the unstable sshd (so that its staying down below means something).
        let before = wait_for(
            &mut guest,
            &share,
            Duration::from_secs(300),
            "the guest's units up",
            |w| {
                w.last().is_some_and(|l| {
                    l.standard == "active" && l.session && l.p2222 && l.unstable == "active"
                }) && distinct_pids(w) >= 3
            },
        );
        let control_log = std::fs::read_to_string(share.join("control.log")).unwrap_or_default();
        assert!(
            control_log.contains("serving"),
            "guest-control never said it serves the port: {control_log}"
        );
        println!(
            "up at guest uptime {:.1} s; the timer restarted the unstable sshd {} times",
            before.last().map_or(0.0, |l| l.t),
            distinct_pids(&before) - 1
        );

        let send = |cmd: Command| control::send(&socket, &cmd, Duration::from_secs(30));
        let t0 = Instant::now();
        send(Command::SshdKill { base: 2222 }).expect("sshd-kill 2222");
        send(Command::SshdKill { base: 2227 }).expect("sshd-kill 2227");
        println!("both kills answered in {:.2} s", t0.elapsed().as_secs_f64());
        let n = before.len();
        let w = wait_for(
            &mut guest,
            &share,
            Duration::from_secs(20),
            "both sshd down",
            |w| {
                w[n.min(w.len())..]
                    .iter()
                    .any(|l| l.both_down() && !l.session)
            },
        );
        let down_at = w[n..]
            .iter()
            .find(|l| l.both_down() && !l.session)
            .map(|l| l.t)
            .expect("down");
        // Ten seconds of guest time: Restart=always would restart within 1 s, the timer
        // within TIMER_SEC.
        let w = wait_for(
            &mut guest,
            &share,
            Duration::from_secs(60),
            "10 s after the kill",
            |w| w.last().is_some_and(|l| l.t >= down_at + 10.0),
        );
        let held: Vec<&Watch> = w.iter().filter(|l| l.t >= down_at).collect();
        assert!(
            held.iter().all(|l| l.both_down() && !l.session),
            "a killed sshd came back while kept down: {held:#?}"
        );
        // Killed by a signal, as a crash: a plain stop would leave Result=success.
        assert!(
            held.iter().all(|l| l.result == "signal"),
            "sshd-standard's Result after the kill: {held:#?}"
        );
        println!(
            "both down at {down_at:.1} s and still down {:.1} s later ({} looks)",
            held.last().map_or(0.0, |l| l.t - down_at),
            held.len()
        );

        send(Command::SshdBack { base: 2222 }).expect("sshd-back 2222");
        send(Command::SshdBack { base: 2227 }).expect("sshd-back 2227");
        let m = w.len();
        let w = wait_for(
            &mut guest,
            &share,
            Duration::from_secs(60),
            "both back, the timer restarting again",
            |w| {
                let after = &w[m.min(w.len())..];
                after
                    .iter()
                    .any(|l| l.standard == "active" && l.p2222 && l.unstable == "active")
                    && distinct_pids(after) >= 3
            },
        );
        println!(
            "back; the timer restarted the unstable sshd {} times since",
            distinct_pids(&w[m..]) - 1
        );

        // What the VM has no unit for is refused, with the reason.
        let e = send(Command::SshdKill { base: 2299 }).expect_err("no unit for 2299");
        assert!(
            format!("{e:#}").contains("no sshd unit for port 2299"),
            "{e:#}"
        );
        let e = send(Command::McpKill).expect_err("no MCP unit on the target");
        assert!(format!("{e:#}").contains("no mcp-ssh-server unit"), "{e:#}");

        let out = guest.finish().expect("the guest ran");
        assert!(
            out.stdout.contains("host done"),
            "the guest did not end on the host's word: {out:?}"
        );
        assert_eq!(out.exit_code, 0, "{out:?}");
    }
}
