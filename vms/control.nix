# The host's way into a lab VM for the faults of `sshlab run --fault` (sshd-kill on the Target,
# mcp-restart on the MCP VM): a virtio serial port `sshlab.control` that qemu serves on
# `control.sock` in its working directory, and the guest's executor, `sshlab guest-control`,
# which acts on the role's systemd units: a unit's whole cgroup SIGKILLed and the unit stopped
# (its Restart= would bring it back), then started again. The host writes one JSON request per
# line and reads one reply (crates/sshlab/src/vm/control.rs: SOCKET, PORT, host_socket).
# Nothing crosses the lab network, so a partition cannot cut it and the Agent VM cannot use it.
#
# - `qemuArgs`: the port, for microvm.nix's `microvm.qemu.extraArgs` (vms/microvm.nix; the
#   runner's qemu runs in the runner's working directory, where `sshlab vm up --backend
#   microvm` looks) and for the VM test's `virtualisation.qemu.options` (the test driver runs
#   qemu in the machine's state_dir: the test script connects there).
# - `module { name = "target"; }`: the NixOS module of the executor service.
{
  qemuArgs = [
    # microvm.nix 68c9f9c lib/runners/qemu.nix: every lab VM has a share (the store's 9p), so
    # its devices are PCI; the NixOS test driver's VMs (qemu's default machine) have PCI too.
    "-device"
    "virtio-serial-pci,id=sshlab-serial"
    "-chardev"
    "socket,id=sshlab-control,path=control.sock,server=on,wait=off"
    "-device"
    "virtserialport,bus=sshlab-serial.0,chardev=sshlab-control,name=sshlab.control"
  ];

  module = {
    name,
    lab ? import ../nix/lib/lab.nix {},
  }: {
    config,
    lib,
    ...
  }: let
    # The units each role's module defines: the target's sshd instances (nix/lib/lab.nix, as
    # vms/target.nix names them) and vms/mcp.nix's server.
    units =
      if name == "target"
      then map (i: "--sshd-unit=${toString i.port}=${i.unit}.service") lab.sshdInstances
      else if name == "mcp"
      then ["--mcp-unit=mcp-ssh-server.service"]
      else throw "vms/control.nix: VM ${name} takes no fault commands (only target and mcp)";
  in {
    systemd.services.sshlab-control = {
      description = "sshlab's fault commands from the host (virtio port sshlab.control)";
      wantedBy = ["multi-user.target"];
      serviceConfig = {
        ExecStart = lib.escapeShellArgs ([
            (lib.getExe' config.sshlab.package "sshlab")
            "guest-control"
            name
            "--systemctl=${config.systemd.package}/bin/systemctl"
          ]
          ++ units);
        Restart = "on-failure";
        RestartSec = 5;
      };
    };
  };
}
