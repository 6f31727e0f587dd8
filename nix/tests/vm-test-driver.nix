# What the stand-in for the NixOS test driver (nix/tests/vm-test-driver.py) needs to run
# nix/checks/vm-test.nix's own test script against the qemu backend's guests, evaluated without
# nixpkgs (./audit/stubs.nix: `testers.runNixOSTest` returns its argument):
# - testScript: the exact Python the test driver would run;
# - nodes: the node names (each the guest of the VM of that name);
# - units: every systemd service of the nodes' role modules, with its node and what its
#   ExecStart runs (program name and first argument; for the target's sshd instances, the
#   instance's base port), so that the stand-in can map a unit the script waits for to the
#   guest role that serves it.
# nix-instantiate --eval --strict --json nix/tests/vm-test-driver.nix
let
  stubs = import ./audit/stubs.nix;
  inherit (stubs) pkgs sshlab settings strip;
  lab = import ../lib/lab.nix {};
  test = (import ../checks/vm-test.nix {inherit pkgs sshlab;}).sshlab-lab;
  words = s: builtins.filter (w: builtins.isString w && w != "") (builtins.split " " s);
  baseName = p: let
    parts = builtins.split "/" p;
  in
    builtins.elemAt parts (builtins.length parts - 1);
  services = node: (strip (settings (import (../../vms + "/${node}.nix")))).systemd.services or {};
  sshdPort = unit: let
    found = builtins.filter (i: i.unit == unit) lab.sshdInstances;
  in
    if found == []
    then null
    else (builtins.head found).port;
  unitsOf = node:
    builtins.mapAttrs (name: svc: let
      argv = words (svc.serviceConfig.ExecStart or "");
    in {
      inherit node;
      program =
        if argv == []
        then null
        else baseName (builtins.head argv);
      firstArg =
        if builtins.length argv < 2
        then null
        else builtins.elemAt argv 1;
      port = sshdPort name;
    })
    (services node);
in {
  inherit (test) testScript;
  nodes = builtins.attrNames test.nodes;
  units = builtins.foldl' (acc: node: acc // unitsOf node) {} (builtins.attrNames test.nodes);
}
