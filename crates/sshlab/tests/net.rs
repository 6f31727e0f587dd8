//! `sshlab net` against the kernel, as root, each test in a namespace of its own. The state is
//! read back with iproute2 (`ip -d -j link`, `ip -j addr`), not with sshlab's own parsing.

mod common;

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::common::{Netns, assert_root_namespace_clean, text};

    const TAPS: [&str; 3] = ["sshtap0", "sshtap1", "sshtap2"];

    /// Bridge and TAPs exactly as the topology asks, owned by `uid`.
    fn assert_lab_built(ns: &Netns, uid: u64) {
        let br = ns.link("sshbr0").expect("sshbr0 exists");
        assert_eq!(br["linkinfo"]["info_kind"], "bridge", "{br:#}");
        assert!(flags(&br).contains(&"UP".to_owned()), "{br:#}");
        assert_eq!(ns.ipv4("sshbr0"), ["10.178.0.1/24"]);
        for tap in TAPS {
            let l = ns.link(tap).unwrap_or_else(|| panic!("{tap} exists"));
            let info = &l["linkinfo"];
            assert_eq!(info["info_kind"], "tun", "{l:#}");
            let data = &info["info_data"];
            assert_eq!(data["type"], "tap", "{l:#}");
            assert_eq!(data["pi"], false, "{l:#}");
            assert_eq!(data["vnet_hdr"], true, "{l:#}");
            // Every VM of vms/topology.toml has more than one vCPU.
            assert_eq!(data["multi_queue"], true, "{l:#}");
            assert_eq!(data["persist"], true, "{l:#}");
            assert_eq!(data["user"], uid, "{l:#}");
            assert_eq!(l["master"], "sshbr0", "{l:#}");
            assert!(flags(&l).contains(&"UP".to_owned()), "{l:#}");
        }
    }

    fn flags(link: &Value) -> Vec<String> {
        serde_json::from_value(link["flags"].clone()).unwrap()
    }

    /// The flags `net up` sets, without the carrier state the kernel changes by itself: a new
    /// bridge without running ports turns NO-CARRIER a moment after it is set up (a run on a
    /// loaded machine saw that between two snapshots).
    fn set_flags(link: &Value) -> Vec<String> {
        flags(link)
            .into_iter()
            .filter(|f| f != "NO-CARRIER" && f != "LOWER_UP")
            .collect()
    }

    /// What must not change between two `net up`s: names, kinds, tun data, masters, the flags
    /// it sets, addresses.
    fn snapshot(ns: &Netns) -> Vec<String> {
        let mut out: Vec<String> = ns
            .links()
            .iter()
            .map(|l| {
                format!(
                    "{} {} {} {} {} {}",
                    l["ifindex"],
                    l["ifname"],
                    l["linkinfo"]["info_kind"],
                    // The bridge's info_data carries running timers; the TAPs' is all settings.
                    if l["linkinfo"]["info_kind"] == "tun" {
                        l["linkinfo"]["info_data"].clone()
                    } else {
                        Value::Null
                    },
                    l["master"],
                    set_flags(l).join(",")
                )
            })
            .collect();
        out.push(format!("{:?}", ns.ipv4("sshbr0")));
        out
    }

    #[test]
    fn up_is_idempotent_status_agrees_and_down_leaves_nothing() {
        let Some(ns) = Netns::new("updown") else {
            return;
        };
        let out = ns.sshlab(&["net", "up", "--no-netem"], &[("SUDO_UID", "4242")]);
        assert!(out.status.success(), "{}", text(&out));
        assert_lab_built(&ns, 4242);
        assert_root_namespace_clean();
        // The results share, for the user the TAPs are for (the Agent VM's virtiofsd runs so).
        let results = std::fs::metadata(ns.results()).expect("net up created the results dir");
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&results), 4242);

        let before = snapshot(&ns);
        let out = ns.sshlab(&["net", "up", "--no-netem"], &[("SUDO_UID", "4242")]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "net up: nothing to change"
        );
        assert_eq!(snapshot(&ns), before, "second net up changed something");

        let out = ns.sshlab(&["net", "status", "--json"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(status["ready"], true, "{status:#}");
        assert_eq!(status["taps"][2]["vm"], "target");
        assert_eq!(status["taps"][2]["master"], "sshbr0");

        let out = ns.sshlab(&["net", "down"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        let left: Vec<_> = ns.links().iter().map(|l| l["ifname"].clone()).collect();
        assert_eq!(left, ["lo"], "down left links behind");

        let out = ns.sshlab(&["net", "status"], &[]);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("absent"));
        let out = ns.sshlab(&["net", "down"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        assert_root_namespace_clean();
    }

    #[test]
    fn half_built_state_is_completed() {
        let Some(ns) = Netns::new("half") else {
            return;
        };
        // A down bridge without its address; a TAP without owner and master; a TAP without
        // vnet_hdr; sshtap0 missing.
        ns.ip(&["link", "add", "sshbr0", "type", "bridge"]);
        ns.ip(&[
            "tuntap",
            "add",
            "sshtap1",
            "mode",
            "tap",
            "vnet_hdr",
            "multi_queue",
        ]);
        ns.ip(&["tuntap", "add", "sshtap2", "mode", "tap", "multi_queue"]);
        let out = ns.sshlab(&["net", "status"], &[]);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));

        let out = ns.sshlab(&["net", "up", "--no-netem", "--owner", "4243"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("set sshbr0 up"), "{stdout}");
        assert!(stdout.contains("repaired tap sshtap2"), "{stdout}");
        assert!(stdout.contains("created tap sshtap0"), "{stdout}");
        assert_lab_built(&ns, 4243);
        assert!(ns.sshlab(&["net", "status"], &[]).status.success());
    }

    #[test]
    fn foreign_link_with_a_lab_name_is_refused_and_left_alone() {
        let Some(ns) = Netns::new("foreign") else {
            return;
        };
        ns.ip(&[
            "link", "add", "sshtap1", "type", "veth", "peer", "name", "foreign0",
        ]);
        let out = ns.sshlab(&["net", "up"], &[]);
        assert!(!out.status.success(), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("sshtap1 exists but is not a TAP"),
            "{stderr}"
        );

        let out = ns.sshlab(&["net", "down"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        let veth = ns.link("sshtap1").expect("down must leave the veth alone");
        assert_eq!(veth["linkinfo"]["info_kind"], "veth");
        assert!(ns.link("sshbr0").is_none() && ns.link("sshtap0").is_none());
    }

    #[test]
    fn tap_in_the_other_queue_mode_is_refused() {
        let Some(ns) = Netns::new("queues") else {
            return;
        };
        ns.ip(&["tuntap", "add", "sshtap2", "mode", "tap", "vnet_hdr"]);
        let out = ns.sshlab(&["net", "up"], &[]);
        assert!(!out.status.success(), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("sshtap2 exists with multi_queue false"),
            "{stderr}"
        );
    }

    #[test]
    fn unknown_namespace_is_a_clear_error() {
        let Some(_ns) = Netns::new("unknown") else {
            return;
        };
        let out = crate::common::sshlab(&["--netns", "sshlab-none-such", "net", "status"], &[]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("ip netns add sshlab-none-such"), "{stderr}");
        assert_root_namespace_clean();
    }
}
