# The microVM wrapper of one role: `import ./microvm.nix { name = "agent"; }` is a NixOS
# module that imports the role module (vms/<name>.nix) and adds what only a microVM has:
# hypervisor, vCPUs, memory, the TAP and the shares (nix/lib/lab.nix `microvmFor`, all from
# vms/topology.toml), and the guest's address on the lab bridge via systemd-networkd.
# `lab` is nix/lib/lab.nix, overridable so tests can evaluate other lab files.
{
  name,
  lab ? import ../nix/lib/lab.nix {},
}: let
  vm = lab.vm name;
in {
  imports = [(./. + "/${name}.nix")];

  microvm = lab.microvmFor name;

  networking.useNetworkd = true;
  networking.useDHCP = false;
  systemd.network.enable = true;
  systemd.network.networks."10-lab" = {
    matchConfig.MACAddress = vm.mac;
    address = [(lab.addressOf name)];
    gateway = [lab.gateway];
  };
}
