# The Agent VM's role: sshlab-agent serve, the host's trigger; results go to /results
# (the host's results dir, shared by the microVM wrapper; a plain directory in the VM test).
{
  config,
  lib,
  ...
}: let
  lab = import ../nix/lib/lab.nix {};
  port = lab.servicePort "agent" "control";
in {
  imports = [./common.nix];

  config = {
    networking.hostName = "agent";
    networking.firewall.allowedTCPPorts = lab.listenPorts "agent";
    systemd.tmpfiles.rules = ["d /results 0755 root root -"];

    systemd.services.sshlab-agent = {
      description = "sshlab-agent serve: the load agent's control API";
      wantedBy = ["multi-user.target"];
      after = ["network-online.target"];
      wants = ["network-online.target"];
      serviceConfig = {
        ExecStart = "${lib.getExe' config.sshlab.package "sshlab-agent"} serve --listen 0.0.0.0:${toString port} --results /results";
        Restart = "on-failure";
        LimitNOFILE = 65536;
      };
    };
  };
}
