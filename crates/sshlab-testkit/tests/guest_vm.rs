//! [`GuestVm::run`] when its guest never starts the script: qemu, started for real through
//! virtme-ng, refuses a device that does not exist and exits at once. The run boots once more,
//! and its error names both attempts and carries qemu's own words, so that a CI log says why a
//! guest never ran (a real-VM test once failed there with nothing but "the guest ended").
//!
//! Needs root (virtme-ng's shared directory is under /var/lib) and virtme-ng with qemu
//! (`scripts/install-deps vm`). Without them it prints why and passes, but fails under `CI=true`.

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use sshlab_testkit::{GuestVm, check_vm_tools};

    fn in_ci() -> bool {
        std::env::var("CI").is_ok_and(|v| matches!(v.as_str(), "true" | "1" | "yes"))
    }

    #[test]
    fn a_guest_that_never_starts_its_script_is_booted_once_more_and_says_why() {
        let why = if !nix::unistd::geteuid().is_root() {
            Some("needs root".to_string())
        } else {
            check_vm_tools().err().map(|e| format!("{e:#}"))
        };
        if let Some(why) = why {
            assert!(!in_ci(), "guest_vm cannot run (and CI=true): {why}");
            eprintln!("SKIPPED guest_vm: {why} (set CI=true to make this a failure)");
            return;
        }
        let vm = GuestVm::builder()
            .memory_mb(256)
            .cpus(1)
            .timeout(Duration::from_secs(60))
            .qemu_opts("-device sshlab-no-such-device")
            .build()
            .expect("the guest's kernel and tools");
        let t0 = Instant::now();
        let e = vm.run("echo never").expect_err("qemu refuses the device");
        let text = format!("{e:#}");
        assert!(
            text.contains("ended before its script started, twice; the first attempt:"),
            "not said that both attempts failed: {text}"
        );
        // qemu's own words, once from each attempt.
        let refused = "'sshlab-no-such-device' is not a valid device model name";
        assert_eq!(text.matches(refused).count(), 2, "{text}");
        // Both attempts end by themselves: nothing waits for the 60 s timeout.
        assert!(
            t0.elapsed() < Duration::from_secs(50),
            "took {:?}",
            t0.elapsed()
        );
    }
}
