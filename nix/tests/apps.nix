# The text of each app of nix/apps.nix (the wrapper script `nix run .#<app>` executes), with the
# package at /nix/store/stub-sshlab and each VM's runner at /nix/store/stub-runner-<vm>, for
# crates/sshlab/tests/as_user.rs, which runs those texts here against stand-in runners.
# nix-instantiate --eval --strict --json nix/tests/apps.nix
let
  stubs = import ./audit/stubs.nix;
  inherit (stubs) lib pkgs sshlab;
  apps = import ../apps.nix {
    inherit sshlab;
    # The wrapper itself, not its path, so its text can be read.
    lib = lib // {getExe = p: p;};
    pkgs = pkgs // {writeShellApplication = a: a;};
    runners = lib.genAttrs (import ../lib/lab.nix {}).vmNames (n: "/nix/store/stub-runner-${n}");
  };
in
  builtins.mapAttrs (_: a: a.program.text) apps
