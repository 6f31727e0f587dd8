# The seed's app names, each a thin wrapper around the host tool `sshlab`. The VM runners
# built by this flake are handed to `sshlab vm` as SSHLAB_RUNNER_<VM> (one per [[vm]] of
# vms/topology.toml), with SSHLAB_VM_BACKEND=microvm.
{
  lib,
  pkgs,
  sshlab,
  runners,
}: let
  lab = import ./lib/lab.nix {};
  runnerEnv = lib.concatMapStrings (name: "export SSHLAB_RUNNER_${lib.toUpper name}=${runners.${name}}\n") lab.vmNames;
  app = name: body: {
    type = "app";
    program = lib.getExe (pkgs.writeShellApplication {
      inherit name;
      text = ''
        export SSHLAB_VM_BACKEND=microvm
        ${runnerEnv}
        ${body}
      '';
    });
  };
  sshlabBin = lib.getExe' sshlab "sshlab";
  run = args: ''exec ${sshlabBin} ${args} "$@"'';
in {
  ssh-network-setup = app "ssh-network-setup" ''
    ${sshlabBin} net up
    ${run "netem apply"}
  '';
  ssh-network-teardown = app "ssh-network-teardown" (run "net down");
  ssh-vm-start-all = app "ssh-vm-start-all" (run "vm up");
  ssh-vm-stop = app "ssh-vm-stop" (run "vm down");
  ssh-vm-status = app "ssh-vm-status" (run "vm status");
  ssh-loadtest = app "ssh-loadtest" (run "run");
  ssh-loadtest-quick = app "ssh-loadtest-quick" (run "run quick");
  ssh-loadtest-full = app "ssh-loadtest-full" (run "run full");
  ssh-loadtest-list = app "ssh-loadtest-list" (run "list");
  ssh-loadtest-connection-rate = app "ssh-loadtest-connection-rate" (run "run connection_rate");
  ssh-loadtest-throughput = app "ssh-loadtest-throughput" (run "run command_throughput");
  ssh-loadtest-latency = app "ssh-loadtest-latency" (run "run latency_test");
  ssh-loadtest-metrics = app "ssh-loadtest-metrics" (run "metrics");
}
