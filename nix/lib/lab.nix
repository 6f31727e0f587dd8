# The lab's shape for Nix, read from the one source of truth: vms/topology.toml and
# netem/profiles.toml (the same files sshlab-core parses). Pure: builtins only, no nixpkgs,
# so nix/tests/lab.nix can evaluate it where Nix cannot build anything.
#
# Nothing here restates an address, MAC, port or delay: every value below comes from the
# TOML files. Functions that need a check fail loudly (`throw`) naming the offending value.
{
  topologyFile ? ../../vms/topology.toml,
  profilesFile ? ../../netem/profiles.toml,
}: let
  topology = builtins.fromTOML (builtins.readFile topologyFile);
  profiles = (builtins.fromTOML (builtins.readFile profilesFile)).profile;

  offset = topology.netem_port_offset;
  splitCidr = cidr: let
    parts = builtins.split "/" cidr;
  in
    if builtins.length parts != 3
    then throw "sshlab lab.nix: expected ADDRESS/PREFIX, got '${cidr}'"
    else {
      address = builtins.elemAt parts 0;
      prefixLength = builtins.fromJSON (builtins.elemAt parts 2);
    };
  subnet = splitCidr topology.subnet;
  bridge = splitCidr topology.bridge.address;

  vmList = topology.vm;
  vms = builtins.listToAttrs (map (vm: {
      inherit (vm) name;
      value = vm;
    })
    vmList);
  vm = name: vms.${name} or (throw "sshlab lab.nix: no [[vm]] named '${name}' in vms/topology.toml (have: ${builtins.concatStringsSep ", " (builtins.attrNames vms)})");

  servicesOf = name: (vm name).service or [];
  servicePort = vmName: serviceName: let
    found = builtins.filter (s: s.name == serviceName) (servicesOf vmName);
  in
    if found == []
    then throw "sshlab lab.nix: vm '${vmName}' has no [[vm.service]] named '${serviceName}'"
    else (builtins.head found).port;

  profileFor = port: let
    found = builtins.filter (p: p.base == port) profiles;
  in
    if found == []
    then null
    else builtins.head found;

  # One entry per sshd instance on the target: its base port and its netem'd twin.
  sshdInstances = map (s: {
    inherit (s) name port description;
    unit = "sshd-${s.name}";
    netemPort = s.port + offset;
    netem = profileFor s.port;
  }) (builtins.filter (s: s.protocol == "ssh") (servicesOf "target"));

  netem =
    map (p: {
      inherit (p) base port delay_ms jitter_ms loss_percent;
    })
    profiles;

  # Every TCP port a VM listens on (the target's sshd also on base + offset).
  listenPorts = name:
    if name == "target"
    then builtins.concatMap (i: [i.port i.netemPort]) sshdInstances
    else map (s: s.port) (servicesOf name);

  # The guest's address with the lab's prefix length, as systemd-networkd and NixOS want it.
  addressOf = name: "${(vm name).ip}/${toString subnet.prefixLength}";

  # The results share (vms/topology.toml [results]): `host` on the host, `guest` in the Agent VM.
  inherit (topology) results;

  # The `microvm` settings of one VM: plain data (no pkgs), so the option audit can evaluate it.
  # qemu: it supports both share kinds (firecracker throws on any share) and falls back to TCG.
  # vcpu > 1 makes microvm.nix open the TAP with multi_queue: the host must create it so.
  # The runners run unprivileged as the user who started `sshlab vm up` (sudo's user, with
  # that user's groups), and virtiofsd with them: `virtiofsd.group = null` drops the
  # `--socket-group` (default "kvm", microvm.nix 68c9f9c nixos-modules/microvm/options.nix),
  # which virtiofsd 1.14 turns into a chown that exits the daemon when the user is not in that
  # group (virtiofsd src/main.rs). qemu runs as the same user and reaches the socket anyway.
  microvmFor = name: let
    v = vm name;
  in {
    hypervisor = "qemu";
    vcpu = v.vcpus;
    mem = v.memory_mib;
    interfaces = [
      {
        type = "tap";
        id = v.tap;
        inherit (v) mac;
      }
    ];
    virtiofsd.group = null;
    shares =
      [
        # 9p for the store: qemu serves it itself, no virtiofsd per VM for a read-only share.
        {
          proto = "9p";
          tag = "ro-store";
          source = "/nix/store";
          mountPoint = "/nix/.ro-store";
          readOnly = true;
        }
      ]
      ++ (
        if name == "agent"
        then [
          {
            proto = "virtiofs";
            tag = "results";
            source = results.host;
            mountPoint = results.guest;
          }
        ]
        else []
      );
  };
in {
  inherit topology profiles offset subnet bridge vms vm servicePort sshdInstances netem listenPorts addressOf results microvmFor;
  vmNames = map (v: v.name) vmList;
  # mcp-ssh-server's flags after --bind (vms/topology.toml [mcp_server]), as every backend passes them.
  mcpServerArgs = topology.mcp_server.args or [];
  gateway = bridge.address;
  bridgeName = topology.bridge.name;
}
