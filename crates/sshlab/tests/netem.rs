//! `sshlab netem` against this machine's kernel, as root, each test in its own namespace.
//!
//! This kernel has no sch_prio and no sch_netem: the live test is that `apply` names the
//! missing module and leaves nothing behind. Where the modules exist (the VM harness), the same
//! test checks the installed tree instead. u32 filters work here, so they are installed live on
//! an htb root and compared with the filters `tc` itself installs for the same commands.

mod common;

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use sshlab::netem::{self, NetemPlan, PortMatch, tc::handle};

    use crate::common::{Netns, assert_root_namespace_clean, text};

    fn lab() -> sshlab_core::Lab {
        sshlab_core::Lab::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).unwrap()
    }

    fn qdiscs(ns: &Netns, dev: &str) -> Vec<Value> {
        let out = ns.tc(&["-j", "qdisc", "show", "dev", dev]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[test]
    fn apply_names_the_missing_module_or_builds_the_tree() {
        let Some(ns) = Netns::new("netem") else {
            return;
        };
        let out = ns.sshlab(&["net", "up", "--no-netem"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        let missing = ns.missing_qdisc_modules().first().copied();

        let out = ns.sshlab(&["netem", "apply"], &[]);
        match missing {
            Some(module) => {
                assert_eq!(out.status.code(), Some(1), "{}", text(&out));
                let stderr = String::from_utf8_lossy(&out.stderr);
                let want = format!("Kernel lacks {module}: run `modprobe {module}`");
                assert!(stderr.contains(&want), "{stderr}");
                assert_eq!(stderr.lines().count(), 1, "one clear error: {stderr}");
                // Nothing half-built: no prio, no netem on the TAP.
                let kinds: Vec<_> = qdiscs(&ns, "sshtap2")
                    .iter()
                    .map(|q| q["kind"].as_str().unwrap().to_owned())
                    .collect();
                assert!(
                    !kinds.iter().any(|k| k == "prio" || k == "netem"),
                    "{kinds:?}"
                );
                // `net up` applies netem too: same error, links built all the same.
                let out = ns.sshlab(&["net", "up"], &[]);
                assert_eq!(out.status.code(), Some(1), "{}", text(&out));
                assert!(String::from_utf8_lossy(&out.stderr).contains(&want));
                assert!(ns.sshlab(&["net", "status"], &[]).status.success());
            }
            None => {
                assert!(out.status.success(), "{}", text(&out));
                let q = qdiscs(&ns, "sshtap2");
                let netems = q.iter().filter(|q| q["kind"] == "netem").count();
                assert_eq!(netems, lab().netem.profiles.len(), "{q:#?}");
                let out = ns.sshlab(&["netem", "show"], &[]);
                assert!(out.status.success(), "{}", text(&out));
                let out = ns.sshlab(&["netem", "apply"], &[]);
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout).trim(),
                    "netem apply: nothing to change"
                );
                let out = ns.sshlab(&["netem", "clear"], &[]);
                assert!(out.status.success(), "{}", text(&out));
                assert!(!qdiscs(&ns, "sshtap2").iter().any(|q| q["kind"] == "netem"));
            }
        }
        assert_root_namespace_clean();
    }

    #[test]
    fn show_reports_not_applied_and_clear_leaves_foreign_roots_alone() {
        let Some(ns) = Netns::new("show") else {
            return;
        };
        assert!(
            ns.sshlab(&["net", "up", "--no-netem"], &[])
                .status
                .success()
        );
        let out = ns.sshlab(&["netem", "show", "--json"], &[]);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        let state: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(state["dev"], "sshtap2");
        assert_eq!(state["port_match"], "dport");
        assert_eq!(state["ready"], false);
        assert_eq!(state["rows"][0]["want"]["port"], 2322);

        let out = ns.tc(&[
            "qdisc", "add", "dev", "sshtap1", "root", "handle", "1:", "htb",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let out = ns.sshlab(&["netem", "clear", "--dev", "sshtap1"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("alone"));
        assert!(qdiscs(&ns, "sshtap1").iter().any(|q| q["kind"] == "htb"));
        let out = ns.sshlab(&["netem", "apply", "--dev", "sshtap1"], &[]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("root qdisc sshlab did not make"));
    }

    /// Filters as the kernel lists them, without the per-device parts.
    fn filters(ns: &Netns, dev: &str) -> Vec<Value> {
        let out = ns.tc(&["-j", "filter", "show", "dev", dev, "parent", "1:"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[test]
    fn u32_filters_install_live_and_equal_tcs_own() {
        let Some(ns) = Netns::new("u32") else {
            return;
        };
        for dev in ["ours0", "theirs0"] {
            ns.ip(&[
                "link",
                "add",
                dev,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{dev}p"),
            ]);
            let out = ns.tc(&["qdisc", "add", "dev", dev, "root", "handle", "1:", "htb"]);
            assert!(out.status.success(), "{}", text(&out));
        }
        let lab = lab();
        for which in [PortMatch::Dport, PortMatch::Sport] {
            let plan =
                NetemPlan::new(&lab.topology, &lab.netem, Some("ours0"), Some(which)).unwrap();
            // sshlab's filters, from a thread inside the namespace.
            let name = ns.name.clone();
            let p = plan.clone();
            std::thread::spawn(move || {
                sshlab::netns::enter(&name).unwrap();
                let (mut sock, index) = netem::open(&p.dev).unwrap();
                netem::install_filters(&mut sock, index, handle(1, 0), &p).unwrap();
            })
            .join()
            .unwrap();
            // tc's, for the same profiles.
            for c in &plan.classes {
                let port = c.port.to_string();
                let flowid = format!("1:{:x}", c.minor);
                let args = [
                    "filter",
                    "add",
                    "dev",
                    "theirs0",
                    "parent",
                    "1:",
                    "protocol",
                    "ip",
                    "prio",
                    "1",
                    "u32",
                    "match",
                    "ip",
                    which.as_str(),
                    &port,
                    "0xffff",
                    "flowid",
                    &flowid,
                ];
                let out = ns.tc(&args);
                assert!(out.status.success(), "{}", text(&out));
            }
            let ours = filters(&ns, "ours0");
            assert_eq!(ours, filters(&ns, "theirs0"), "{which:?}");
            let keys = ours
                .iter()
                .filter(|f| f["options"]["match"].is_object())
                .count();
            assert_eq!(keys, plan.classes.len());
            let first = ours
                .iter()
                .find(|f| f["options"]["flowid"] == "1:4")
                .expect("filter to 1:4");
            let (value, mask) = match which {
                PortMatch::Dport => ("912", "ffff"),
                PortMatch::Sport => ("9120000", "ffff0000"),
            };
            assert_eq!(first["options"]["match"]["value"], value, "{first:#}");
            assert_eq!(first["options"]["match"]["mask"], mask, "{first:#}");
            assert_eq!(first["options"]["match"]["off"], 20, "{first:#}");
            for dev in ["ours0", "theirs0"] {
                let out = ns.tc(&["filter", "del", "dev", dev, "parent", "1:"]);
                assert!(out.status.success(), "{}", text(&out));
            }
        }
        assert_root_namespace_clean();
    }
}
