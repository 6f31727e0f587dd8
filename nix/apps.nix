# The seed's app names, each a thin wrapper around the host tool `sshlab`. The apps that boot
# or run VMs hand the runners built by this flake to `sshlab vm` as SSHLAB_RUNNER_<VM> (one per
# [[vm]] of vms/topology.toml), with SSHLAB_VM_BACKEND=microvm; the others (network, list,
# metrics) do not depend on the VM closures. The lab's files are compiled into `sshlab` from
# the same source, so no wrapper depends on the current directory.
{
  lib,
  pkgs,
  sshlab,
  runners,
}: let
  lab = import ./lib/lab.nix {};
  runnerEnv = lib.concatMapStrings (name: "export SSHLAB_RUNNER_${lib.toUpper name}=${runners.${name}}\n") lab.vmNames;
  wrapper = name: text: {
    type = "app";
    program = lib.getExe (pkgs.writeShellApplication {inherit name text;});
  };
  sshlabBin = lib.getExe' sshlab "sshlab";
  run = args: ''exec ${sshlabBin} ${args} "$@"'';
  # An app that boots or drives the VMs: the runners and the microvm backend.
  vmApp = name: args:
    wrapper name ''
      export SSHLAB_VM_BACKEND=microvm
      ${runnerEnv}
      ${run args}
    '';
  # An app that needs no VM.
  hostApp = name: args: wrapper name (run args);
in {
  # `net up` applies netem itself (unless --no-netem); "$@" passes --owner / --no-netem on.
  ssh-network-setup = hostApp "ssh-network-setup" "net up";
  ssh-network-teardown = hostApp "ssh-network-teardown" "net down";
  ssh-vm-start-all = vmApp "ssh-vm-start-all" "vm up";
  ssh-vm-stop = vmApp "ssh-vm-stop" "vm down";
  ssh-vm-status = vmApp "ssh-vm-status" "vm status";
  ssh-loadtest = vmApp "ssh-loadtest" "run";
  ssh-loadtest-quick = vmApp "ssh-loadtest-quick" "run quick";
  ssh-loadtest-full = vmApp "ssh-loadtest-full" "run full";
  ssh-loadtest-list = hostApp "ssh-loadtest-list" "list";
  ssh-loadtest-connection-rate = vmApp "ssh-loadtest-connection-rate" "run connection_rate";
  ssh-loadtest-throughput = vmApp "ssh-loadtest-throughput" "run command_throughput";
  ssh-loadtest-latency = vmApp "ssh-loadtest-latency" "run latency_test";
  ssh-loadtest-metrics = hostApp "ssh-loadtest-metrics" "metrics";
}
