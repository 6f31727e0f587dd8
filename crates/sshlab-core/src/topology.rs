//! The lab's topology: bridge, subnet, VMs (TAP, IP, MAC, resources) and their services.
//!
//! This module owns the schema of `vms/topology.toml`, the one source of truth for every name,
//! address and port of the lab. The host tool (`sshlab net up`, `vm up`), the agent and the
//! Nix modules (through `builtins.fromTOML`) all read that file, so it stays plain TOML and
//! nothing in it is repeated elsewhere. [`Topology::validate`] (run by the loaders) catches
//! what the parser cannot: addresses outside the subnet, duplicates, interface names Linux
//! would refuse, and so on.
//!
//! Addresses are IPv4 only (the lab is). [`Ipv4Cidr`] is a small address-plus-prefix type
//! written here rather than taken from `ipnet`: the lab needs parsing, `contains` and the
//! network/broadcast addresses, about sixty lines, and owning it keeps the error messages ours.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{self, Error};

/// The VM that runs the sshd instances; [`Topology::validate`] requires it.
pub const TARGET_VM: &str = "target";
/// The VM that runs the system under test, mcp-ssh-server.
pub const MCP_VM: &str = "mcp";

/// Linux's `IFNAMSIZ` (16) minus the terminating NUL: the longest interface name.
pub const MAX_IFNAME_LEN: usize = 15;

/// The whole of `vms/topology.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The lab's network (host bits zero): `10.178.0.0/24`.
    pub subnet: Ipv4Cidr,
    /// Each sshd on the target also listens on its port plus this offset, and netem shapes
    /// that second port.
    pub netem_port_offset: u16,
    /// The host's bridge.
    pub bridge: Bridge,
    /// Where the Agent VM's results land, on the host and in the guest.
    pub results: ResultsShare,
    /// How the MCP VM runs the system under test (default: no flags but `--bind`).
    #[serde(default)]
    pub mcp_server: McpServer,
    /// The microVMs, in file order (`[[vm]]`).
    #[serde(rename = "vm")]
    pub vms: Vec<Vm>,
}

/// The lab's `mcp-ssh-server`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// Its flags after `--bind <the mcp service's address>`: every backend and the MCP VM's
    /// NixOS module pass exactly these.
    pub args: Vec<String>,
}

/// The host-side Linux bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    /// Interface name, e.g. `sshbr0`.
    pub name: String,
    /// The host's address on the bridge, with the subnet's prefix: `10.178.0.1/24`.
    pub address: Ipv4Cidr,
}

/// The results share (`[results]`): the Agent VM writes each run's results under `guest`, which
/// is the host directory `host` shared into it (virtiofs on the microvm backend), so the host
/// reads them back from `host`. One path for Nix and Rust alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsShare {
    /// The host's results directory, absolute: `/var/lib/sshlab/results`.
    pub host: PathBuf,
    /// Where the Agent VM sees it, absolute: `/results`.
    pub guest: PathBuf,
}

/// One microVM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// Role name: `agent`, `mcp` or `target`.
    pub name: String,
    /// The host-side TAP device, enslaved to the bridge.
    pub tap: String,
    /// The guest's address (inside the subnet; prefix is the subnet's).
    pub ip: Ipv4Addr,
    /// The guest NIC's MAC: unicast and locally administered.
    pub mac: MacAddr,
    /// Virtual CPUs (at least one).
    pub vcpus: u32,
    /// Guest memory in MiB (at least one).
    pub memory_mib: u32,
    /// TCP services the guest listens on (`[[vm.service]]`).
    #[serde(rename = "service", default)]
    pub services: Vec<Service>,
}

/// A TCP service a VM listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Name, unique within the VM; for the target's sshd instances, the role (`key-only`).
    pub name: String,
    /// TCP port.
    pub port: u16,
    /// What speaks on the port.
    pub protocol: Protocol,
    /// One line for humans.
    #[serde(default)]
    pub description: String,
}

/// The protocol of a [`Service`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP (MCP, the agent's control API).
    Http,
    /// SSH (an sshd on the target; also reachable, shaped, on port + `netem_port_offset`).
    Ssh,
}

/// One sshd instance on the target, as returned by [`Topology::target_ports`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetPort<'a> {
    /// The role (the service's name), e.g. `slow-auth`.
    pub role: &'a str,
    /// The clean port, e.g. 2225.
    pub base: u16,
    /// The netem'd port, `base + netem_port_offset`, e.g. 2325.
    pub netem: u16,
}

impl Topology {
    /// Reads, parses and validates the file at `path`; errors name `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        Self::from_toml_str(&error::read(path)?, &path.display().to_string())
    }

    /// Parses and validates `text`; errors name `source_name` as the file.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self, Error> {
        let topology: Self = error::parse(text, source_name)?;
        topology.validate(source_name)?;
        Ok(topology)
    }

    /// Checks the rules the parser cannot; errors name `file` and the offending key.
    pub fn validate(&self, file: &str) -> Result<(), Error> {
        let bad = |key: String, message: String| Err(Error::invalid(file, key, message));
        let subnet = self.subnet;
        if !subnet.is_network() {
            return bad(
                "subnet".into(),
                format!(
                    "{subnet} has host bits set; the network is {}",
                    Ipv4Cidr::new(subnet.network(), subnet.prefix()).expect("prefix checked")
                ),
            );
        }
        if self.netem_port_offset == 0 {
            return bad("netem_port_offset".into(), "must not be 0".into());
        }
        check_ifname(&self.bridge.name).or_else(|m| bad("bridge.name".into(), m))?;
        let address = self.bridge.address;
        if address.prefix() != subnet.prefix() {
            return bad(
                "bridge.address".into(),
                format!("prefix /{} differs from subnet {subnet}", address.prefix()),
            );
        }
        check_host(address.addr(), subnet).or_else(|m| bad("bridge.address".into(), m))?;
        for (key, path) in [
            ("results.host", &self.results.host),
            ("results.guest", &self.results.guest),
        ] {
            check_abs_path(path).or_else(|m| bad(key.into(), m))?;
        }

        let mut names = HashSet::new();
        let mut ifnames = HashSet::from([self.bridge.name.as_str()]);
        let mut ips = HashSet::from([address.addr()]);
        let mut macs = HashSet::new();
        for (i, vm) in self.vms.iter().enumerate() {
            let key = |field: &str| format!("vm[{i}].{field}");
            check_name(&vm.name).or_else(|m| bad(key("name"), m))?;
            if !names.insert(vm.name.as_str()) {
                return bad(key("name"), format!("duplicate VM name {:?}", vm.name));
            }
            check_ifname(&vm.tap).or_else(|m| bad(key("tap"), m))?;
            if !ifnames.insert(vm.tap.as_str()) {
                return bad(
                    key("tap"),
                    format!("interface {:?} is already used", vm.tap),
                );
            }
            check_host(vm.ip, subnet).or_else(|m| bad(key("ip"), m))?;
            if !ips.insert(vm.ip) {
                return bad(key("ip"), format!("address {} is already used", vm.ip));
            }
            if !vm.mac.is_unicast() {
                return bad(key("mac"), format!("{} is a multicast address", vm.mac));
            }
            if !vm.mac.is_locally_administered() {
                return bad(
                    key("mac"),
                    format!(
                        "{} is not locally administered (set bit 0x02 of the first octet, e.g. 02:...)",
                        vm.mac
                    ),
                );
            }
            if !macs.insert(vm.mac) {
                return bad(key("mac"), format!("{} is already used", vm.mac));
            }
            if vm.vcpus == 0 {
                return bad(key("vcpus"), "must be at least 1".into());
            }
            if vm.memory_mib == 0 {
                return bad(key("memory_mib"), "must be at least 1".into());
            }
            self.validate_services(vm, i, file)?;
        }
        if !names.contains(TARGET_VM) {
            return bad("vm".into(), format!("no VM named {TARGET_VM:?}"));
        }
        Ok(())
    }

    fn validate_services(&self, vm: &Vm, i: usize, file: &str) -> Result<(), Error> {
        let mut names = HashSet::new();
        // port -> what uses it, to say which two collide
        let mut ports: Vec<(u16, String)> = Vec::new();
        for (j, service) in vm.services.iter().enumerate() {
            let key = |field: &str| format!("vm[{i}].service[{j}].{field}");
            let bad = |field: &str, message: String| Err(Error::invalid(file, key(field), message));
            check_name(&service.name).or_else(|m| bad("name", m))?;
            if !names.insert(service.name.as_str()) {
                return bad("name", format!("duplicate service name {:?}", service.name));
            }
            if service.port == 0 {
                return bad("port", "must not be 0".into());
            }
            let mut used = vec![(service.port, format!("port of {:?}", service.name))];
            if service.protocol == Protocol::Ssh {
                let Some(netem) = service.port.checked_add(self.netem_port_offset) else {
                    return bad(
                        "port",
                        format!(
                            "{} + netem_port_offset {} exceeds 65535",
                            service.port, self.netem_port_offset
                        ),
                    );
                };
                used.push((netem, format!("netem port of {:?}", service.name)));
            }
            for (port, what) in used {
                if let Some((_, other)) = ports.iter().find(|(p, _)| *p == port) {
                    return bad(
                        "port",
                        format!("port {port} ({what}) is already the {other}"),
                    );
                }
                ports.push((port, what));
            }
        }
        Ok(())
    }

    /// The VM called `name`, if any.
    pub fn vm(&self, name: &str) -> Option<&Vm> {
        self.vms.iter().find(|vm| vm.name == name)
    }

    /// The target's sshd instances (its `ssh` services), in file order, with their netem'd
    /// ports.
    pub fn target_ports(&self) -> Vec<TargetPort<'_>> {
        let Some(target) = self.vm(TARGET_VM) else {
            return Vec::new();
        };
        target
            .services
            .iter()
            .filter(|s| s.protocol == Protocol::Ssh)
            .map(|s| TargetPort {
                role: &s.name,
                base: s.port,
                netem: s.port.saturating_add(self.netem_port_offset),
            })
            .collect()
    }
}

impl Vm {
    /// Whether the VM's TAP is multi-queue: one queue per vCPU when it has more than one. `net
    /// up` creates the TAP so, and the hypervisor must open it so (qemu `queues=<vcpus>`).
    pub fn multi_queue(&self) -> bool {
        self.vcpus > 1
    }

    /// The service called `name`, if any.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// An absolute, normalised path (no `.` or `..`): it is baked into VM images and shell wrappers.
fn check_abs_path(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("{} is not an absolute path", path.display()));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return Err(format!("{} contains . or ..", path.display()));
    }
    if path.to_str().is_none() {
        return Err("is not UTF-8".into());
    }
    Ok(())
}

/// A Linux interface name: 1 to 15 bytes, no `/`, `:`, whitespace or NUL, not `.` or `..`
/// (the kernel's `dev_valid_name`). Public so the host tool checks names typed on its command
/// line by the same rule the topology file is checked by.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "interface name {name:?} is {} bytes; Linux allows 1 to {MAX_IFNAME_LEN} (IFNAMSIZ)",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is reserved"));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err(format!(
            "interface name {name:?} contains {c:?}, which Linux refuses"
        ));
    }
    Ok(())
}

/// A VM or service name: non-empty ASCII letters, digits, `-` and `_` (safe as a Nix attribute,
/// a hostname part and a file name).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "name {name:?} must be non-empty ASCII letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

/// A host address inside `subnet`: neither its network nor its broadcast address.
fn check_host(ip: Ipv4Addr, subnet: Ipv4Cidr) -> Result<(), String> {
    if !subnet.contains(ip) {
        return Err(format!("{ip} is outside subnet {subnet}"));
    }
    if subnet.prefix() < 31 {
        if ip == subnet.network() {
            return Err(format!("{ip} is the network address of {subnet}"));
        }
        if ip == subnet.broadcast() {
            return Err(format!("{ip} is the broadcast address of {subnet}"));
        }
    }
    Ok(())
}

/// An IPv4 address with a prefix length, written `10.178.0.1/24`.
///
/// The address may have host bits set (an interface address); [`Ipv4Cidr::is_network`] says
/// whether it is a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// `addr/prefix`, or `None` if `prefix` exceeds 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Self { addr, prefix })
    }

    /// The address as written.
    pub fn addr(self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length, 0 to 32.
    pub fn prefix(self) -> u8 {
        self.prefix
    }

    /// The netmask: `255.255.255.0` for /24.
    pub fn netmask(self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    /// The network address (host bits cleared).
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address (host bits set).
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether the host bits are zero, i.e. this names a network.
    pub fn is_network(self) -> bool {
        self.addr == self.network()
    }

    /// Whether `ip` lies in this network.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not address/prefix (e.g. 10.178.0.0/24)"))?;
        let addr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 address"))?;
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| prefix.bytes().all(|b| b.is_ascii_digit()) && *p <= 32)
            .ok_or_else(|| format!("{s:?}: prefix {prefix:?} is not 0 to 32"))?;
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Ipv4Cidr> for String {
    fn from(cidr: Ipv4Cidr) -> Self {
        cidr.to_string()
    }
}

/// An Ethernet MAC address, written `02:00:00:b2:00:05` (colons, hex, any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Whether this is a unicast address (bit 0x01 of the first octet clear).
    pub fn is_unicast(self) -> bool {
        self.0[0] & 0x01 == 0
    }

    /// Whether this is locally administered (bit 0x02 of the first octet set), so it cannot
    /// collide with a vendor's address.
    pub fn is_locally_administered(self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || format!("{s:?} is not a MAC address (six hex octets: 02:00:00:b2:00:05)");
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl TryFrom<String> for MacAddr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(mac: MacAddr) -> Self {
        mac.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "vms/topology.toml";

    const VALID: &str = r#"
subnet = "10.178.0.0/24"
netem_port_offset = 100

[bridge]
name = "sshbr0"
address = "10.178.0.1/24"
[results]
host = "/var/lib/sshlab/results"
guest = "/results"

[[vm]]
name = "agent"
tap = "sshtap0"
ip = "10.178.0.5"
mac = "02:00:00:b2:00:05"
vcpus = 2
memory_mib = 512

[[vm.service]]
name = "control"
port = 9100
protocol = "http"

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
name = "key-only"
port = 2223
protocol = "ssh"
"#;

    /// The error message for `VALID` with `from` replaced by `to` (which must occur).
    fn error_with(from: &str, to: &str) -> String {
        assert!(VALID.contains(from), "{from:?} not in VALID");
        let text = VALID.replacen(from, to, 1);
        Topology::from_toml_str(&text, FILE)
            .expect_err("should be rejected")
            .to_string()
    }

    fn assert_invalid(from: &str, to: &str, key: &str, needle: &str) {
        let message = error_with(from, to);
        let prefix = format!("{FILE}: {key}: ");
        assert!(message.starts_with(&prefix), "{message:?} lacks {prefix:?}");
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }

    #[test]
    fn valid_file_parses_and_accessors_work() {
        let t = Topology::from_toml_str(VALID, FILE).unwrap();
        assert_eq!(t.subnet.to_string(), "10.178.0.0/24");
        assert_eq!(t.bridge.address.addr(), Ipv4Addr::new(10, 178, 0, 1));
        let agent = t.vm("agent").unwrap();
        assert_eq!(agent.service("control").unwrap().port, 9100);
        assert!(t.vm("nope").is_none());
        assert_eq!(
            t.target_ports(),
            vec![
                TargetPort {
                    role: "standard",
                    base: 2222,
                    netem: 2322
                },
                TargetPort {
                    role: "key-only",
                    base: 2223,
                    netem: 2323
                },
            ]
        );
    }

    #[test]
    fn serializes_back_to_the_same_topology() {
        let t = Topology::from_toml_str(VALID, FILE).unwrap();
        let text = toml::to_string(&t).unwrap();
        assert_eq!(Topology::from_toml_str(&text, "again").unwrap(), t);
    }

    #[test]
    fn unparsable_cidr_names_file_and_key() {
        let message = error_with("10.178.0.0/24\"", "10.178.0.0/33\"");
        assert!(message.starts_with("vms/topology.toml: "), "{message}");
        assert!(message.contains("subnet = "), "{message}");
        assert!(
            message.contains("prefix \"33\" is not 0 to 32"),
            "{message}"
        );
        let message = error_with("10.178.0.0/24\"", "10.178.0/24\"");
        assert!(message.contains("not an IPv4 address"), "{message}");
    }

    #[test]
    fn subnet_with_host_bits_is_rejected() {
        assert_invalid("10.178.0.0/24\"", "10.178.0.7/24\"", "subnet", "host bits");
    }

    #[test]
    fn bridge_address_must_be_in_subnet_with_its_prefix() {
        assert_invalid(
            "10.178.0.1/24",
            "10.179.0.1/24",
            "bridge.address",
            "outside subnet",
        );
        assert_invalid(
            "10.178.0.1/24",
            "10.178.0.1/16",
            "bridge.address",
            "prefix /16",
        );
        assert_invalid(
            "10.178.0.1/24",
            "10.178.0.255/24",
            "bridge.address",
            "broadcast",
        );
    }

    #[test]
    fn vm_ip_outside_subnet_or_special_is_rejected() {
        assert_invalid(
            "10.178.0.5\"",
            "10.178.1.5\"",
            "vm[0].ip",
            "outside subnet 10.178.0.0/24",
        );
        assert_invalid(
            "10.178.0.5\"",
            "10.178.0.0\"",
            "vm[0].ip",
            "network address",
        );
    }

    #[test]
    fn duplicate_vm_names_taps_ips_macs_are_rejected() {
        assert_invalid("\"target\"", "\"agent\"", "vm[1].name", "duplicate VM name");
        assert_invalid("sshtap2", "sshtap0", "vm[1].tap", "already used");
        assert_invalid("sshtap0", "sshbr0", "vm[0].tap", "already used");
        assert_invalid("10.178.0.20", "10.178.0.5", "vm[1].ip", "already used");
        assert_invalid("10.178.0.5\"", "10.178.0.1\"", "vm[0].ip", "already used");
        assert_invalid(
            "02:00:00:b2:00:14",
            "02:00:00:b2:00:05",
            "vm[1].mac",
            "already used",
        );
    }

    #[test]
    fn multicast_or_universal_mac_is_rejected() {
        assert_invalid(
            "02:00:00:b2:00:05",
            "03:00:00:b2:00:05",
            "vm[0].mac",
            "multicast",
        );
        assert_invalid(
            "02:00:00:b2:00:05",
            "00:16:3e:b2:00:05",
            "vm[0].mac",
            "not locally administered",
        );
    }

    #[test]
    fn unparsable_mac_names_file_and_key() {
        let message = error_with("02:00:00:b2:00:05", "02:00:00:b2:00");
        assert!(message.starts_with("vms/topology.toml: "), "{message}");
        assert!(message.contains("mac = "), "{message}");
        assert!(message.contains("is not a MAC address"), "{message}");
    }

    #[test]
    fn bad_interface_names_are_rejected() {
        assert_invalid("sshtap0", "sshtap0123456789", "vm[0].tap", "IFNAMSIZ");
        assert_invalid("sshtap0", "ssh/tap0", "vm[0].tap", "'/'");
        assert_invalid("sshtap0", "ssh tap0", "vm[0].tap", "' '");
        assert_invalid("sshtap0", r"ssh\u0000tap", "vm[0].tap", r"'\0'");
        assert_invalid("\"sshbr0\"", "\"\"", "bridge.name", "1 to 15");
        // 15 bytes is the limit, not 16
        assert!(
            Topology::from_toml_str(&VALID.replace("sshtap0", "sshtap012345678"), FILE).is_ok()
        );
    }

    #[test]
    fn zero_vcpus_or_memory_is_rejected() {
        assert_invalid("vcpus = 2", "vcpus = 0", "vm[0].vcpus", "at least 1");
        assert_invalid(
            "memory_mib = 512",
            "memory_mib = 0",
            "vm[0].memory_mib",
            "at least 1",
        );
    }

    #[test]
    fn duplicate_ports_are_rejected() {
        assert_invalid(
            "port = 2223",
            "port = 2222",
            "vm[1].service[1].port",
            "port 2222",
        );
        // 2322 is standard's netem port
        assert_invalid(
            "port = 2223",
            "port = 2322",
            "vm[1].service[1].port",
            "netem port of \"standard\"",
        );
        assert_invalid(
            "name = \"key-only\"",
            "name = \"standard\"",
            "vm[1].service[1].name",
            "duplicate",
        );
        assert_invalid(
            "port = 2222",
            "port = 65500",
            "vm[1].service[0].port",
            "exceeds 65535",
        );
    }

    #[test]
    fn missing_target_and_unknown_keys_are_rejected() {
        assert_invalid(
            "name = \"target\"",
            "name = \"other\"",
            "vm",
            "no VM named \"target\"",
        );
        let message = error_with("vcpus = 2", "vcpu = 2");
        assert!(message.starts_with("vms/topology.toml: "), "{message}");
        assert!(message.contains("vcpu"), "{message}");
    }

    #[test]
    fn cidr_parses_displays_and_contains() {
        let c: Ipv4Cidr = "10.178.0.1/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.178.0.1/24");
        assert_eq!(c.network(), Ipv4Addr::new(10, 178, 0, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 178, 0, 255));
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert!(!c.is_network());
        assert!(c.contains(Ipv4Addr::new(10, 178, 0, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 178, 1, 1)));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)) && all.is_network());
        let host: Ipv4Cidr = "10.0.0.1/32".parse().unwrap();
        assert!(host.contains(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!host.contains(Ipv4Addr::new(10, 0, 0, 2)));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/33",
            "10.0.0/8",
            "x/8",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
        assert_eq!(Ipv4Cidr::new(Ipv4Addr::LOCALHOST, 33), None);
    }

    #[test]
    fn mac_parses_and_displays_lowercase() {
        let m: MacAddr = "02:00:00:B2:00:0A".parse().unwrap();
        assert_eq!(m, MacAddr([2, 0, 0, 0xb2, 0, 0x0a]));
        assert_eq!(m.to_string(), "02:00:00:b2:00:0a");
        assert!(m.is_unicast() && m.is_locally_administered());
        for bad in [
            "02:00:00:b2:00",
            "02:00:00:b2:00:05:06",
            "02-00-00-b2-00-05",
            "2:00:00:b2:00:05",
            "+2:00:00:b2:00:05",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
