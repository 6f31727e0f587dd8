//! Loads the repository's real `vms/topology.toml` and `netem/profiles.toml` and checks them
//! against the seed (the load testing guide): addresses, resources, ports and netem values.

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::path::{Path, PathBuf};

    use sshlab_core::{Lab, NetemProfiles, Protocol, Topology};

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn lab() -> Lab {
        Lab::load(repo_root()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_two_files_load_and_agree() {
        let lab = lab();
        assert_eq!(
            lab.topology,
            Topology::load(repo_root().join(Lab::TOPOLOGY_FILE)).unwrap()
        );
        assert_eq!(
            lab.netem,
            NetemProfiles::load(repo_root().join(Lab::NETEM_FILE)).unwrap()
        );
    }

    #[test]
    fn network_matches_the_seed() {
        let t = lab().topology;
        assert_eq!(t.subnet.to_string(), "10.178.0.0/24");
        assert_eq!(t.bridge.name, "sshbr0");
        assert_eq!(t.bridge.address.to_string(), "10.178.0.1/24");
        assert_eq!(t.netem_port_offset, 100);
    }

    #[test]
    fn vms_match_the_seed() {
        let t = lab().topology;
        let expected = [
            // name, tap, ip, vcpus, memory MiB (seed: Agent 512 MB/2, MCP 1 GB/4, Target 1 GB/4)
            ("agent", "sshtap0", Ipv4Addr::new(10, 178, 0, 5), 2, 512),
            ("mcp", "sshtap1", Ipv4Addr::new(10, 178, 0, 10), 4, 1024),
            ("target", "sshtap2", Ipv4Addr::new(10, 178, 0, 20), 4, 1024),
        ];
        assert_eq!(t.vms.len(), expected.len());
        for (name, tap, ip, vcpus, memory_mib) in expected {
            let vm = t.vm(name).unwrap_or_else(|| panic!("no vm {name}"));
            assert_eq!(
                (vm.tap.as_str(), vm.ip, vm.vcpus, vm.memory_mib),
                (tap, ip, vcpus, memory_mib)
            );
            assert!(
                vm.mac.is_unicast() && vm.mac.is_locally_administered(),
                "{}",
                vm.mac
            );
            // the MAC's last octet is the IP's, so each is easy to match to the other
            assert_eq!(vm.mac.0[5], ip.octets()[3], "{name}");
        }
        let total_vcpus: u32 = t.vms.iter().map(|vm| vm.vcpus).sum();
        assert_eq!(total_vcpus, 10);
    }

    #[test]
    fn services_match_the_seed() {
        let t = lab().topology;
        let mcp = t.vm("mcp").unwrap().service("mcp").unwrap();
        assert_eq!((mcp.port, mcp.protocol), (3000, Protocol::Http));
        let control = t.vm("agent").unwrap().service("control").unwrap();
        assert_eq!((control.port, control.protocol), (9100, Protocol::Http));
        let ports: Vec<(&str, u16, u16)> = t
            .target_ports()
            .iter()
            .map(|p| (p.role, p.base, p.netem))
            .collect();
        assert_eq!(
            ports,
            [
                ("standard", 2222, 2322),
                ("key-only", 2223, 2323),
                ("fancy-prompt", 2224, 2324),
                ("slow-auth", 2225, 2325),
                ("deny-all", 2226, 2326),
                ("unstable", 2227, 2327),
                ("root-login", 2228, 2328),
            ]
        );
    }

    #[test]
    fn netem_profiles_match_the_seed() {
        let n = lab().netem;
        // port, delay ms, jitter ms, loss %
        let expected = [
            (2322, 100, 10, 0.0),
            (2323, 50, 5, 5.0),
            (2324, 200, 20, 10.0),
            (2325, 500, 50, 0.0),
            (2326, 1000, 100, 0.0),
            (2327, 100, 30, 2.0),
            (2328, 50, 5, 0.0),
        ];
        assert_eq!(n.profiles.len(), expected.len());
        for (port, delay, jitter, loss) in expected {
            let p = n
                .for_port(port)
                .unwrap_or_else(|| panic!("no profile for {port}"));
            assert_eq!(
                (p.base, p.delay_ms, p.jitter_ms, p.loss_percent),
                (port - 100, delay, jitter, loss),
                "{port}"
            );
            assert_eq!((p.correlation_percent, p.rate_kbit), (None, None), "{port}");
            assert!(!p.description.is_empty(), "{port}");
        }
    }
}
