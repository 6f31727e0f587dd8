# Evaluates the lab's NixOS modules (vms/*.nix and each VM's microVM wrapper) and the NixOS VM
# test (nix/checks/vm-test.nix) WITHOUT nixpkgs: `lib` and `pkgs` are stubs that implement just
# what the modules call (a package is its name under a fake store path; `testers.runNixOSTest`
# returns its argument). The result is the config each module sets, as plain data, for
# scripts/nix-check's option audit and for the expectations in nix/tests/lab.nix.
# Keys starting with `test:` are runNixOSTest arguments (test options; `nodes.<name>` holds each
# node module's own settings); option-audit.py checks them against data/nixos-test-options.txt.
# A module that starts using another lib or pkgs attribute fails here by name: add a stub.
let
  stubPkg = name: {
    outPath = "/nix/store/stub-${name}";
    inherit name;
    meta.mainProgram = name;
  };
  pkgs =
    builtins.listToAttrs (map (n: {
        name = n;
        value = stubPkg n;
      }) [
        "bashInteractive"
        "coreutils"
        "curl"
        "dash"
        "gawk"
        "gnugrep"
        "iproute2"
        "jq"
        "openssh"
        "pam"
        "sshpass"
        "systemd"
        "zsh"
      ])
    // {
      writeText = name: text: (stubPkg name) // {inherit text;};
      writeShellScript = name: text: (stubPkg name) // {inherit text;};
      testers.runNixOSTest = test: test;
      inherit lib;
    };
  lib = {
    mkOption = a: {_option = a;};
    types.package = "package";
    getExe' = p: bin: "${p}/bin/${bin}";
    optionalString = c: s:
      if c
      then s
      else "";
    concatStrings = builtins.concatStringsSep "";
    genAttrs = names: f:
      builtins.listToAttrs (map (name: {
          inherit name;
          value = f name;
        })
        names);
    max = a: b:
      if a > b
      then a
      else b;
    mkForce = content: {
      _type = "override";
      priority = 50;
      inherit content;
    };
  };
  sshlab = stubPkg "sshlab";
  args = {
    inherit lib pkgs;
    config.sshlab.package = sshlab;
  };
  # A module's own settings: `config` if it uses the long form, else everything but imports.
  settings = m: let
    v =
      if builtins.isFunction m
      then m args
      else m;
  in
    v.config or (removeAttrs v ["imports" "options"]);
  strip = v:
    if builtins.isAttrs v && v ? outPath
    then "${v.outPath}"
    else if builtins.isAttrs v && (v._type or null) == "override"
    then strip v.content
    else if builtins.isAttrs v
    then builtins.mapAttrs (_: strip) v
    else if builtins.isList v
    then map strip v
    else v;
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
      lab.vmNames))
