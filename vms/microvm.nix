# The microVM wrapper of one role: `import ./microvm.nix { name = "agent"; }` is a NixOS
# module that imports the role module (vms/<name>.nix) and adds what only a microVM has:
# hypervisor, vCPUs, memory, the TAP and the shares (nix/lib/lab.nix `microvmFor`, all from
# vms/topology.toml), the guest's address on the lab bridge via systemd-networkd, and, on the
# Target and the MCP VM, the host's control port for faults (./control.nix).
# `lab` is nix/lib/lab.nix, overridable so tests can evaluate other lab files.
{
  name,
  lab ? import ../nix/lib/lab.nix {},
}: let
  vm = lab.vm name;
  control = import ./control.nix;
  controlled = name != "agent";
in {
  # The Target and the MCP VM take the host's fault commands (./control.nix).
  imports =
    [(./. + "/${name}.nix")]
    ++ (
      if controlled
      then [(control.module {inherit name lab;})]
      else []
    );

  microvm =
    lab.microvmFor name
    // {
      qemu.extraArgs =
        if controlled
        then control.qemuArgs
        else [];
    };

  networking.useNetworkd = true;
  networking.useDHCP = false;
  systemd.network.enable = true;
  systemd.network.networks."10-lab" = {
    matchConfig.MACAddress = vm.mac;
    address = [(lab.addressOf name)];
    gateway = [lab.gateway];
  };
}
