# The MCP VM's role: the system under test, mcp-ssh-server with the lab's flags
# (vms/topology.toml [mcp_server] args, which the other backends pass too).
{
  config,
  lib,
  ...
}: let
  lab = import ../nix/lib/lab.nix {};
  port = lab.servicePort "mcp" "mcp";
in {
  imports = [./common.nix];

  config = {
    networking.hostName = "mcp";
    networking.firewall.allowedTCPPorts = lab.listenPorts "mcp";

    systemd.services.mcp-ssh-server = {
      description = "mcp-ssh-server (the system under test) with the lab's flags";
      wantedBy = ["multi-user.target"];
      after = ["network-online.target"];
      wants = ["network-online.target"];
      serviceConfig = {
        ExecStart = "${lib.getExe' config.sshlab.package "mcp-ssh-server"} --bind 0.0.0.0:${toString port} ${lib.escapeShellArgs lab.mcpServerArgs}";
        Restart = "on-failure";
        DynamicUser = true;
        StateDirectory = "mcp-ssh-server";
        # The server reads ~/.ssh/known_hosts by default; lab targets are trusted per call.
        Environment = "HOME=/var/lib/mcp-ssh-server";
        LimitNOFILE = 65536;
      };
    };
  };
}
