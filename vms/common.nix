# Shared by the three roles, in the microVMs and in the VM test's nodes alike.
# Declares the one option the roles need from outside (the workspace package) and the
# settings every lab machine has. Addresses come from nix/lib/lab.nix (vms/topology.toml).
{
  lib,
  pkgs,
  ...
}: {
  options.sshlab.package = lib.mkOption {
    type = lib.types.package;
    description = "The sshlab workspace package (mcp-ssh-server, sshlab-agent, sshlab).";
  };

  config = {
    system.stateVersion = "25.11";
    networking.firewall.enable = true;
    # The host tool drives the lab; a console login is enough to debug a guest.
    services.getty.autologinUser = "root";
    environment.systemPackages = [pkgs.curl pkgs.jq pkgs.iproute2];
  };
}
