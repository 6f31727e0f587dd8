//! The lab's whole configuration: topology and netem profiles, loaded and cross-checked.
//!
//! [`Lab::load`] reads both files from a directory laid out like the repository (`--lab DIR`),
//! [`Lab::builtin`] parses the copies compiled into this build; either validates each file,
//! then checks that they agree (every netem profile shapes an sshd of the target, at `base +
//! netem_port_offset`), so that a caller never holds two files that contradict each other.

use std::path::Path;

use crate::error::Error;
use crate::netem::NetemProfiles;
use crate::topology::{Protocol, TARGET_VM, Topology};

/// Both config files of the lab, validated together.
#[derive(Debug, Clone, PartialEq)]
pub struct Lab {
    /// From `vms/topology.toml`.
    pub topology: Topology,
    /// From `netem/profiles.toml`.
    pub netem: NetemProfiles,
}

impl Lab {
    /// The topology file, relative to the repository root.
    pub const TOPOLOGY_FILE: &str = "vms/topology.toml";
    /// The netem profiles file, relative to the repository root.
    pub const NETEM_FILE: &str = "netem/profiles.toml";

    /// `vms/topology.toml` as compiled into this build.
    pub const BUILTIN_TOPOLOGY: &str = include_str!("../../../vms/topology.toml");
    /// `netem/profiles.toml` as compiled into this build.
    pub const BUILTIN_NETEM: &str = include_str!("../../../netem/profiles.toml");

    /// The lab this build was compiled with: no file is read, so it works from any directory
    /// and without a checkout (a Nix store path, `/`).
    pub fn builtin() -> Result<Self, Error> {
        let topology = Topology::from_toml_str(Self::BUILTIN_TOPOLOGY, Self::TOPOLOGY_FILE)?;
        let netem = NetemProfiles::from_toml_str(Self::BUILTIN_NETEM, Self::NETEM_FILE)?;
        cross_check(&topology, &netem, Self::NETEM_FILE)?;
        Ok(Self { topology, netem })
    }

    /// Loads [`Lab::TOPOLOGY_FILE`] and [`Lab::NETEM_FILE`] under `repo_root`, validates each
    /// and checks them against each other.
    pub fn load(repo_root: impl AsRef<Path>) -> Result<Self, Error> {
        let root = repo_root.as_ref();
        let topology = Topology::load(root.join(Self::TOPOLOGY_FILE))?;
        let netem_path = root.join(Self::NETEM_FILE);
        let netem = NetemProfiles::load(&netem_path)?;
        cross_check(&topology, &netem, &netem_path.display().to_string())?;
        Ok(Self { topology, netem })
    }
}

/// Every profile's `base` is an sshd port of the target and its `port` is `base +
/// netem_port_offset`. Errors name `netem_file`, the file that must change.
fn cross_check(topology: &Topology, netem: &NetemProfiles, netem_file: &str) -> Result<(), Error> {
    let offset = topology.netem_port_offset;
    let target = topology.vm(TARGET_VM);
    for (i, p) in netem.profiles.iter().enumerate() {
        let is_sshd = target.is_some_and(|vm| {
            vm.services
                .iter()
                .any(|s| s.protocol == Protocol::Ssh && s.port == p.base)
        });
        if !is_sshd {
            return Err(Error::invalid(
                netem_file,
                format!("profile[{i}].base"),
                format!(
                    "{} is not an ssh service of vm {TARGET_VM:?} in {}",
                    p.base,
                    Lab::TOPOLOGY_FILE
                ),
            ));
        }
        if u32::from(p.port) != u32::from(p.base) + u32::from(offset) {
            return Err(Error::invalid(
                netem_file,
                format!("profile[{i}].port"),
                format!(
                    "{} is not base + netem_port_offset ({} + {offset}, {})",
                    p.port,
                    p.base,
                    Lab::TOPOLOGY_FILE
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPOLOGY: &str = r#"
subnet = "10.178.0.0/24"
netem_port_offset = 100
[bridge]
name = "sshbr0"
address = "10.178.0.1/24"
[results]
host = "/var/lib/sshlab/results"
guest = "/results"
[[vm]]
name = "target"
tap = "sshtap2"
ip = "10.178.0.20"
mac = "02:00:00:b2:00:14"
vcpus = 4
memory_mib = 1024
[[vm.service]]
name = "standard"
port = 2222
protocol = "ssh"
[[vm.service]]
name = "web"
port = 8080
protocol = "http"
"#;

    fn check(netem: &str) -> Result<(), Error> {
        let topology = Topology::from_toml_str(TOPOLOGY, Lab::TOPOLOGY_FILE).unwrap();
        let netem = NetemProfiles::from_toml_str(netem, Lab::NETEM_FILE).unwrap();
        cross_check(&topology, &netem, Lab::NETEM_FILE)
    }

    const PROFILE: &str =
        "[[profile]]\nbase = 2222\nport = 2322\ndelay_ms = 1\njitter_ms = 0\nloss_percent = 0.0\n";

    #[test]
    fn matching_files_pass() {
        check(PROFILE).unwrap();
    }

    #[test]
    fn port_must_be_base_plus_offset() {
        assert_eq!(
            check(&PROFILE.replace("2322", "2422"))
                .unwrap_err()
                .to_string(),
            "netem/profiles.toml: profile[0].port: 2422 is not base + netem_port_offset \
             (2222 + 100, vms/topology.toml)"
        );
    }

    #[test]
    fn base_must_be_an_sshd_of_the_target() {
        for base in ["2223", "8080"] {
            let netem = PROFILE.replace("2222", base);
            let message = check(&netem).unwrap_err().to_string();
            assert!(
                message.starts_with("netem/profiles.toml: profile[0].base: "),
                "{message}"
            );
            assert!(message.contains("not an ssh service"), "{message}");
        }
    }

    #[test]
    fn the_builtin_lab_is_the_repository_files() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        assert_eq!(Lab::builtin().unwrap(), Lab::load(root).unwrap());
    }

    #[test]
    fn load_names_the_missing_file() {
        let message = Lab::load("/nonexistent-sshlab-root")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("/nonexistent-sshlab-root/vms/topology.toml: cannot read"),
            "{message}"
        );
    }
}
