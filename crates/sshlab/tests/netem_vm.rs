//! Real netem, measured: `sshlab net up` + `netem apply` inside a VM whose kernel has sch_netem
//! and sch_prio (this machine's kernel has neither), driven by sshlab-testkit's [`GuestVm`].
//!
//! The guest script (tests/vm/netem_guest.sh) builds everything in namespaces of the guest and
//! prints RESULT lines; this test asserts on them:
//! - the median TCP connect time to 2322 exceeds 2222's by 100 ms ± 10 ms (the profile's delay,
//!   added once per round trip);
//! - 2323 loses 5% ± 2% of 4,000 UDP probes (why UDP: see the script), and the unshaped 2222
//!   loses under 0.5% of the same probe (the control);
//! - `netem show` reports every profile ok, on the target's TAP and on the shaped veth; with a
//!   profile shaped both ways, the MCP VM's TAP holds its netem on source ports, and applying
//!   the one-way profiles again removes it;
//! - the lab itself, with mcp-ssh-server and sshlab-agent passed into the guest: `sshlab run
//!   latency_test 5 2 --rate 2` on the netns backend, whose `vm up` shapes the target's veth
//!   with real netem, covers 2222 and the five netem ports that take its password login (not
//!   2323 key-only, 2326 deny-all), with 2322 shaped both ways (`both_ways`): 2322's p50 (100
//!   ms ± 10 ms each way) exceeds 2222's by at least 180 ms, and its fastest call adds at
//!   least 300 ms over 2222's (one way it would add about 200 ms), while 2328's (50 ms one
//!   way, no loss) adds at least 40 ms.
//!   It needs *release* builds of mcp-ssh-server and sshlab-agent
//!   ([`release_bins`]): under TCG a debug build answers one command in ~4.7 s even at 1/s, so
//!   no delay shows; release answers in ~0.2 s. And 2/s, not the scenario's 10/s, which the
//!   emulated guest cannot serve: queueing would hide the delay. Without fresh release builds
//!   that part is skipped with a message (a failure in CI).
//!
//! Then netem's seed (tests/vm/netem_seed_guest.sh) in the same guest: on Debian 12's 6.1,
//! refused with the reason, nothing left. A second, smaller guest on a kernel that keeps it
//! (6.6 or later: bookworm-backports' 6.12, which `scripts/install-deps vm` extracts) checks
//! that each seed is read back and the same seed loses exactly the same datagrams.
//!
//! Needs root and the VM tools (`scripts/install-deps vm`; [`check_vm_tools`] names what is
//! missing). When the VM cannot be had (not root, a tool missing), the test fails under `CI=true` and
//! prints a clear skip message otherwise. Takes about 4-5 minutes (TCG boot ~1 minute, the
//! lab's run ~1.5 minutes).

mod common;

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::common::real_vm::{self, in_ci, release_bins};

    use serde_json::Value;
    use sshlab_testkit::{GuestVm, check_vm_tools};

    const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    const PROBES: u32 = 4000;

    /// Fails in CI, skips (loudly) elsewhere.
    fn unavailable(why: &str) {
        real_vm::unavailable("netem_vm", why);
    }

    /// The guest, with sshlab and, when `lab_bins` is given, the lab's two other binaries; on
    /// `kernel` when given, else the guests' kernel.
    fn vm(lab_bins: Option<&Path>, kernel: Option<&Path>) -> Result<GuestVm, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root (for the guest's namespaces)".into());
        }
        check_vm_tools().map_err(|e| format!("{e:#}"))?;
        let mut b = GuestVm::builder();
        if let Some(k) = kernel {
            b = b.kernel(k);
        }
        let mut b = b
            .memory_mb(2048)
            .cpus(2)
            .timeout(Duration::from_secs(900))
            .file(env!("CARGO_BIN_EXE_sshlab"));
        for bin in ["mcp-ssh-server", "sshlab-agent"] {
            if let Some(dir) = lab_bins {
                b = b.file(dir.join(bin));
            }
        }
        b.build()
            .map_err(|e| format!("cannot set up the VM: {e:#}"))
    }

    /// The fields `key=value` of the RESULT line starting with `prefix`.
    fn result<'a>(stdout: &'a str, prefix: &str) -> Vec<(&'a str, f64)> {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT ")?.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `RESULT {prefix}` line in the guest output:\n{stdout}"));
        line.split_whitespace()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k, v.parse().ok()?))
            })
            .collect()
    }

    fn field(fields: &[(&str, f64)], key: &str) -> f64 {
        fields
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("no {key} in {fields:?}"))
            .1
    }

    fn assert_show_ok(stdout: &str, dev: &str, profiles: usize) {
        let json = stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("RESULT show {dev} ")))
            .unwrap_or_else(|| panic!("no `netem show` JSON for {dev}:\n{stdout}"));
        let state: Value = serde_json::from_str(json).expect("netem show --json");
        let rows = state["rows"].as_array().expect("rows");
        assert!(
            rows.len() >= profiles,
            "{dev}: expected every profile: {state}"
        );
        for row in rows {
            assert_eq!(row["ok"], true, "{dev}: profile not ok: {row}");
        }
        assert_eq!(state["ready"], true, "{dev}: {state}");
    }

    #[test]
    fn netem_delays_and_drops_for_real_in_a_vm() {
        let lab_bins = match release_bins() {
            Ok(d) => Some(d),
            Err(why) if in_ci() => {
                panic!("the lab part of netem_vm cannot run (and CI=true): {why}")
            }
            Err(why) => {
                eprintln!("SKIPPED the lab part of netem_vm: {why}");
                None
            }
        };
        let vm = match vm(lab_bins.as_deref(), None) {
            Ok(vm) => vm,
            Err(why) => return unavailable(&why),
        };
        // The lab's binaries sit beside sshlab in the shared directory.
        let lab = if lab_bins.is_some() {
            "LAB_BIN_DIR=\"$SSHLAB_VM_DIR\" LAB_DURATION=5 LAB_WORKERS=2 LAB_RATE=2 "
        } else {
            ""
        };
        let script = format!(
            "{lab}SSHLAB_BIN=\"$SSHLAB_VM_DIR/sshlab\" SSHLAB_ROOT='{REPO}' UDP_PROBES={PROBES} \
             sh '{REPO}/crates/sshlab/tests/vm/netem_guest.sh' && {}",
            seed_script()
        );
        let out = match vm.run(&script) {
            Ok(out) => out,
            Err(e) => {
                return unavailable(&format!(
                    "the VM ({}) did not run the script: {e:#}",
                    vm.kernel().display()
                ));
            }
        };
        eprintln!(
            "guest ({}) boot+run {:.1} s, exit {}\n--- stdout\n{}\n--- stderr\n{}",
            vm.kernel().display(),
            out.boot_and_run.as_secs_f64(),
            out.exit_code,
            out.stdout,
            out.stderr
        );
        assert_eq!(out.exit_code, 0, "the guest script failed");
        assert!(
            out.stdout.contains("GUEST-OK"),
            "the guest script did not finish"
        );

        assert_show_ok(&out.stdout, "default", 7);
        assert_show_ok(&out.stdout, "tgt0", 7);
        assert_both_ways(&out.stdout);
        assert_more_netem(&out.stdout);

        let base = field(&result(&out.stdout, "connect 2222 "), "median_ms");
        let slow = field(&result(&out.stdout, "connect 2322 "), "median_ms");
        let added = slow - base;
        assert!(
            (90.0..=110.0).contains(&added),
            "2322's median connect ({slow:.1} ms) should exceed 2222's ({base:.1} ms) by \
             100 ± 10 ms, not {added:.1} ms"
        );

        let lossy = result(&out.stdout, "udp-loss 2323 ");
        let sent = field(&lossy, "sent");
        assert!(sent >= 2000.0, "only {sent} probes");
        let loss = 100.0 * field(&lossy, "lost") / sent;
        assert!(
            (3.0..=7.0).contains(&loss),
            "2323 should lose 5 ± 2% of {sent} probes, lost {loss:.2}%"
        );
        let control = result(&out.stdout, "udp-loss 2222 ");
        let control_loss = 100.0 * field(&control, "lost") / field(&control, "sent");
        assert!(
            control_loss < 0.5,
            "the unshaped 2222 lost {control_loss:.2}% of the same probe: the probe itself loses"
        );
        eprintln!(
            "netem_vm: connect medians 2222 {base:.1} ms, 2322 {slow:.1} ms (+{added:.1} ms); \
             2323 lost {loss:.2}% of {sent} probes (2222: {control_loss:.2}%); \
             VM boot+run {:.1} s",
            out.boot_and_run.as_secs_f64()
        );

        if lab_bins.is_some() {
            assert_lab_latency(&out.stdout);
        }
        // netem's seed on the guests' kernel: refused on Debian 12's 6.1, kept on 6.6 and later.
        let (_, summary) = assert_seed(&out.stdout);
        eprintln!("netem_vm seed on {}: {summary}", vm.kernel().display());
    }

    /// The seed script's lines: on a kernel that keeps the seed, the kernel reads each seed back
    /// (`netem show` ok) and the same seed loses exactly the same datagrams while another seed,
    /// and no seed twice, lose others; on an older kernel, `apply` refuses the seed, naming the
    /// port, and leaves nothing behind. Returns whether this kernel keeps it, and a summary.
    fn assert_seed(stdout: &str) -> (bool, String) {
        let keeps = field(&result(stdout, "kernel "), "keeps_seed") == 1.0;
        let round = |label: &str| -> (u32, String) {
            let line = stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("RESULT round {label} ")))
                .unwrap_or_else(|| panic!("no round {label}:\n{stdout}"));
            let get = |k: &str| {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .unwrap_or_else(|| panic!("no {k} in {line}"))
                    .to_owned()
            };
            let received: u32 = get("received").parse().expect("received");
            assert!(
                (400..=600).contains(&received),
                "{label}: 50% loss of 1,000 should deliver 500 ± 100, not {received}"
            );
            (received, get("digest"))
        };
        if !keeps {
            round("unseeded");
            let refused = result(stdout, "refused ");
            assert_ne!(
                field(&refused, "exit"),
                0.0,
                "a seed the kernel cannot keep must be refused"
            );
            assert_eq!(
                field(&refused, "kept_no_seed"),
                1.0,
                "the refusal names the port"
            );
            assert_eq!(field(&refused, "netem_left"), 0.0, "nothing half-applied");
            return (false, "a seed refused, nothing left".into());
        }
        for (label, seed) in [
            ("seed7", Some(7)),
            ("seed7-again", Some(7)),
            ("seed8", Some(8)),
        ] {
            assert_show_ok(stdout, label, 1);
            let json = stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("RESULT show {label} ")))
                .expect("show");
            let state: Value = serde_json::from_str(json).expect("netem show --json");
            assert_eq!(
                state["rows"][0]["have"]["seed"].as_u64(),
                seed,
                "{label}: the kernel's seed: {state}"
            );
        }
        let labels = [
            "seed7",
            "seed7-again",
            "seed8",
            "unseeded",
            "unseeded-again",
        ];
        let rounds: Vec<(u32, String)> = labels.iter().map(|l| round(l)).collect();
        assert_eq!(
            rounds[0].1, rounds[1].1,
            "seed 7 twice must lose the same datagrams: {rounds:?}"
        );
        assert_ne!(
            rounds[0].1, rounds[2].1,
            "seeds 7 and 8 lost the same: {rounds:?}"
        );
        assert_ne!(
            rounds[3].1, rounds[4].1,
            "two unseeded rounds lost the same datagrams: the check cannot tell: {rounds:?}"
        );
        (
            true,
            format!(
                "seed 7 delivered the same {} datagrams twice; seed 8 {}, unseeded {} and {}, \
                 each a different set",
                rounds[0].0, rounds[2].0, rounds[3].0, rounds[4].0
            ),
        )
    }

    /// netem's seed kept and repeated where the kernel keeps it: a guest on the newest kernel of
    /// 6.6 or later (bookworm-backports' 6.12, which `scripts/install-deps vm` extracts into
    /// `$SSHLAB_TOOLS/kernels`) runs tests/vm/netem_seed_guest.sh.
    #[test]
    fn netem_seed_is_kept_and_repeats_its_losses_on_a_kernel_that_keeps_it() {
        let Some(kernel) = sshlab_core::guest_kernel::find_at_least(6, 6) else {
            return unavailable(
                "no kernel of 6.6 or later with sch_netem for netem's seed (scripts/install-deps \
                 vm extracts bookworm-backports' 6.12 into $SSHLAB_TOOLS/kernels)",
            );
        };
        let vm = match vm(None, Some(&kernel)) {
            Ok(vm) => vm,
            Err(why) => return unavailable(&why),
        };
        let out = vm
            .run(&seed_script())
            .unwrap_or_else(|e| panic!("the guest ({}) did not run: {e:#}", kernel.display()));
        eprintln!(
            "guest ({}) boot+run {:.1} s, exit {}\n--- stdout\n{}\n--- stderr\n{}",
            kernel.display(),
            out.boot_and_run.as_secs_f64(),
            out.exit_code,
            out.stdout,
            out.stderr
        );
        assert_eq!(out.exit_code, 0, "the seed script failed");
        let (keeps, summary) = assert_seed(&out.stdout);
        assert!(keeps, "{} is 6.6 or later", kernel.display());
        eprintln!("netem_vm seed on {}: {summary}", kernel.display());
    }

    /// The seed script, as the guest runs it.
    fn seed_script() -> String {
        format!(
            "SSHLAB_BIN=\"$SSHLAB_VM_DIR/sshlab\" SSHLAB_ROOT='{REPO}' \
             sh '{REPO}/crates/sshlab/tests/vm/netem_seed_guest.sh'"
        )
    }

    /// netem beyond delay and loss, measured with numbered UDP echoes (see the guest script):
    /// a normal distribution spreads the delay beyond ±jitter where the uniform control does
    /// not; duplicate, reorder and corrupt do what their percentages say; the kernel reports
    /// them back (`netem show` ok).
    fn assert_more_netem(stdout: &str) {
        assert_show_ok(stdout, "more", 5);
        assert_show_ok(stdout, "duplicate", 1);
        let normal = field(&result(stdout, "more-spread 2322 "), "beyond25");
        let uniform = field(&result(stdout, "more-spread 2326 "), "beyond25");
        assert!(
            normal > 0.10 && uniform < 0.05,
            "RTTs over 25 ms from the median: normal {normal:.3} (about 0.21 expected), \
             uniform ±20 ms {uniform:.3} (about 0)"
        );
        // Jitter alone reorders (netem delays each packet by its own amount, which `apply`
        // notes); a rate limit queues them in order. Not every one: netem's timer dequeues on
        // either of the guest's two CPUs, and the veth hands each packet to that CPU's backlog,
        // so a few can still overtake (0 in one run, 6 of 2,000 in another).
        let spread = result(stdout, "more-spread 2327 ");
        let jittered = field(&result(stdout, "more-spread 2326 "), "out_of_order");
        let rated = field(&spread, "out_of_order");
        assert!(
            jittered > 100.0 && rated <= field(&spread, "sent") * 0.01 && rated * 20.0 < jittered,
            "echoes out of order: jitter alone {jittered}, jitter with rate_kbit {rated}"
        );
        let dup = result(stdout, "more-duplicate 2323 ");
        let extra = field(&dup, "echoes") / field(&dup, "sent") - 1.0;
        assert!(
            (0.24..=0.36).contains(&extra),
            "duplicate 30%: {:.1}% more echoes than probes",
            extra * 100.0
        );
        let re = result(stdout, "more-reorder 2324 ");
        let undelayed = field(&re, "undelayed");
        assert!(
            (0.19..=0.31).contains(&undelayed) && field(&re, "out_of_order") > 0.0,
            "reorder 25%: {:.1}% came back without the delay, {} out of order",
            undelayed * 100.0,
            field(&re, "out_of_order")
        );
        let bad = result(stdout, "more-corrupt 2325 ");
        let lost = field(&bad, "lost") / field(&bad, "sent");
        assert!(
            (0.06..=0.14).contains(&lost),
            "corrupt 10%: {:.1}% of the probes dropped by their checksums",
            lost * 100.0
        );
        eprintln!(
            "netem_vm: beyond ±25 ms normal {:.1}% / uniform {:.1}%; out of order: jitter \
             {jittered}, jitter+rate {rated}; duplicate +{:.1}%; undelayed {:.1}%; corrupt lost \
             {:.1}%",
            normal * 100.0,
            uniform * 100.0,
            extra * 100.0,
            undelayed * 100.0,
            lost * 100.0
        );
    }

    /// The lab's latency_test in the guest: ran to the end, every port that takes the scenario's
    /// password login covered, and 2322 slower
    /// than 2222 by at least 90 ms at the median.
    fn assert_lab_latency(stdout: &str) {
        let run = result(stdout, "lab-run ");
        assert_eq!(
            field(&run, "exit"),
            0.0,
            "sshlab run latency_test failed in the guest"
        );
        let s = result(stdout, "lab-summary ");
        assert_eq!(field(&s, "complete"), 1.0, "{s:?}");
        assert_eq!(
            field(&s, "ports"),
            6.0,
            "2222 and the netem ports whose sshd takes the password login (not 2323 key-only, \
             2326 deny-all): {s:?}"
        );
        let base = result(stdout, "lab-port 2222 ");
        let both = result(stdout, "lab-port 2322 ");
        let light = result(stdout, "lab-port 2328 ");
        assert!(field(&base, "requests") > 0.0 && field(&both, "requests") > 0.0);
        let (b, d) = (field(&base, "p50_ms"), field(&both, "p50_ms"));
        assert!(
            d - b >= 180.0,
            "latency_test: 2322, shaped both ways, p50 {d:.1} ms: it should exceed 2222's \
             ({b:.1} ms) by >= 180 ms"
        );
        // Both ways is about twice one way: 2322's calls (100 ms each way, two round trips)
        // wait about 400 ms more than 2222's; one way they would wait about 200 ms. Judged on
        // the fastest call of each port (uncorrected min: ten calls a port), which the emulated
        // guest's scheduling can only slow, never speed up; yet the difference of two such
        // mins still moves by tens of ms (2222's own min is as noisy): 2328 (50 ms one way,
        // 100 ms due) has added +60.0 to +158.0 ms. So 2322 alone must add at least 300 ms,
        // between one way and both ways with room for netem's jitter (±10 ms a packet) and
        // that noise; measured +362 to +433 ms. The control 2328 must add at least 40 ms (it is
        // shaped). A bound of three times 2328's added delay compounded both noises (3.14 in
        // one passing run, 2.74 in a later one), and a 60 ms floor for 2328 was met by 0.0
        // ms. 2327's loss makes a poor control (seen at +695 ms once).
        let m = |f: &[(&str, f64)]| field(f, "min_uncorrected_ms");
        let (one, two) = (m(&light) - m(&base), m(&both) - m(&base));
        assert!(
            one >= 40.0 && two >= 300.0,
            "latency_test, fastest call over 2222's: 2328 (50 ms one way) +{one:.1} ms, 2322 \
             (100 ms both ways) +{two:.1} ms: 2322 should add at least 300 ms (one way would \
             add about 200 ms) and 2328 at least 40 ms"
        );
        let u = |f: &[(&str, f64)]| field(f, "p50_uncorrected_ms");
        let (one_p50, two_p50) = (u(&light) - u(&base), u(&both) - u(&base));
        eprintln!(
            "netem_vm lab: latency_test p50 2222 {b:.1} ms, 2322 (both ways) {d:.1} ms \
             (+{:.1} ms); uncorrected over 2222: 2322 +{two_p50:.1} ms at p50, +{two:.1} ms at \
             min; 2328 (50 ms one way) +{one_p50:.1} ms at p50, +{one:.1} ms at min",
            d - b
        );
    }

    /// The lab's shaping with a profile shaped both ways: the target's TAP as ever, and the
    /// MCP VM's with that profile alone, matching source ports; gone again when the profiles
    /// no longer ask for it.
    fn assert_both_ways(stdout: &str) {
        assert_show_ok(stdout, "both", 7);
        let json = stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT show both "))
            .expect("netem show of the both-ways lab");
        let state: Value = serde_json::from_str(json).expect("netem show --json");
        let back = &state["back"];
        assert_eq!(back["dev"], "sshtap1", "{state}");
        assert_eq!(back["port_match"], "sport", "{state}");
        assert_eq!(back["ready"], true, "{state}");
        let rows = back["rows"].as_array().expect("back rows");
        assert_eq!(rows.len(), 1, "{state}");
        assert_eq!(rows[0]["want"]["port"], 2322, "{state}");
        assert_eq!(rows[0]["ok"], true, "{state}");
        let cleared = result(stdout, "back-cleared ");
        assert_eq!(
            field(&cleared, "netem_left"),
            0.0,
            "the way back stayed shaped after the one-way profiles were applied"
        );
    }
}
