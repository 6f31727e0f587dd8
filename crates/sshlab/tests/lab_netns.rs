//! `sshlab run quick 5 2` through the netns backend, end to end, as root, with the whole lab
//! inside an outer namespace this test creates and removes. Needs mcp-ssh-server and
//! sshlab-agent built (SSHLAB_BIN_DIR, or the target dir this test runs from, where a workspace
//! test run builds them); outside CI it is skipped with a message when they are missing, in CI
//! (CI=true) that is a failure.

mod common;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::common::{Netns, assert_root_namespace_clean, text};

    fn bin_dir() -> Option<PathBuf> {
        // This test runs from <target>/<profile>/deps/; the workspace's binaries sit one up.
        let beside_us = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent()?.parent().map(PathBuf::from));
        let dir = match (std::env::var_os("SSHLAB_BIN_DIR"), beside_us) {
            (Some(d), _) => PathBuf::from(d),
            (None, Some(d)) => d,
            (None, None) => {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/debug"))
            }
        };
        let ok = ["mcp-ssh-server", "sshlab-agent"]
            .iter()
            .all(|b| dir.join(b).is_file());
        if !ok && std::env::var_os("CI").is_some() {
            panic!(
                "mcp-ssh-server/sshlab-agent not in {}: build the workspace (or set SSHLAB_BIN_DIR)",
                dir.display()
            );
        }
        if !ok {
            eprintln!(
                "skipped: mcp-ssh-server/sshlab-agent not in {} (build them, or set SSHLAB_BIN_DIR)",
                dir.display()
            );
        }
        ok.then_some(dir)
    }

    #[test]
    fn run_quick_end_to_end_and_teardown_leaves_nothing() {
        let Some(ns) = Netns::new("lab") else {
            return;
        };
        let Some(bins) = bin_dir() else {
            return;
        };
        ns.ip(&["link", "set", "lo", "up"]);
        let results =
            std::env::temp_dir().join(format!("sshlab-lab-results-{}", std::process::id()));
        let bins = bins.display().to_string();
        let res = results.display().to_string();
        let out = ns.sshlab(
            &[
                "run",
                "quick",
                "5",
                "2",
                "--results",
                &res,
                "--threshold",
                "errors<1%",
            ],
            &[("SSHLAB_BIN_DIR", &bins)],
        );
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(t.contains("vm down: deleted sshbr0"), "{t}");
        assert_root_namespace_clean();

        // Complete results with zero errors.
        let dir = std::fs::read_dir(&results)
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.path().join("summary.json").is_file())
            .expect("a results dir")
            .path();
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["run"]["complete"], true, "{summary:#}");
        assert!(
            summary["totals"]["requests"].as_u64().unwrap() > 0,
            "{summary:#}"
        );
        assert_eq!(summary["totals"]["failures"], 0, "{summary:#}");
        assert!(dir.join("report.txt").is_file());

        // `sshlab report` re-renders it.
        let out = crate::common::sshlab(&["report", &dir.display().to_string()], &[]);
        assert!(out.status.success(), "{}", text(&out));

        // Nothing left: no VM namespace, no link in the outer one, no state, no process.
        let names = crate::common::ip(&["netns", "list"]);
        assert!(!names.contains(&format!("{}-", ns.name)), "{names}");
        assert!(ns.link("sshbr0").is_none() && ns.link("sshtap2").is_none());
        assert!(
            !PathBuf::from("/run/sshlab")
                .join(&ns.name)
                .join("state.json")
                .exists()
        );
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        assert!(!mounts.contains("sshlab-etc"), "{mounts}");
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        assert!(!ps.contains(&res), "{ps}");
        assert!(!ps.contains(&format!("/run/sshlab/{}/", ns.name)), "{ps}");
        let _ = std::fs::remove_dir_all(&results);
    }
}
