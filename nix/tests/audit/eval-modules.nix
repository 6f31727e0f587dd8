# Evaluates the lab's NixOS modules (vms/*.nix and each VM's microVM wrapper) and the NixOS VM
# test (nix/checks/vm-test.nix) WITHOUT nixpkgs, on the stubs of ./stubs.nix. The result is the
# config each module sets, as plain data, for scripts/nix-check's option audit and for the
# expectations in nix/tests/lab.nix.
# Keys starting with `test:` are runNixOSTest arguments (test options; `nodes.<name>` holds each
# node module's own settings); option-audit.py checks them against data/nixos-test-options.txt.
let
  inherit (import ./stubs.nix) pkgs sshlab settings strip;
  lab = import ../../lib/lab.nix {};
  vmTest = (import ../../checks/vm-test.nix {inherit pkgs sshlab;}).sshlab-lab;
in
  strip ({
      common = settings (import ../../../vms/common.nix);
      agent = settings (import ../../../vms/agent.nix);
      mcp = settings (import ../../../vms/mcp.nix);
      target = settings (import ../../../vms/target.nix);
      "test:vm-test" = vmTest // {nodes = builtins.mapAttrs (_: settings) vmTest.nodes;};
    }
    // builtins.listToAttrs (map (name: {
        name = "microvm-${name}";
        value = settings (import ../../../vms/microvm.nix {inherit name;});
      })
      lab.vmNames)
    // builtins.listToAttrs (map (name: {
      name = "control-${name}";
      value = settings ((import ../../../vms/control.nix).module {inherit name;});
    }) ["mcp" "target"]))
