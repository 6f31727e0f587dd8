# The Agent VM's role: sshlab-agent serve, the host's trigger; results go to the topology's
# `[results] guest` (/results): the host's results dir, mounted by the microVM wrapper
# (virtiofs; no tmpfiles rule here, which would chown the share's root through virtiofsd), a
# plain directory made by the VM test.
{
  config,
  lib,
  ...
}: let
  lab = import ../nix/lib/lab.nix {};
  port = lab.servicePort "agent" "control";
  # The live dashboard of the job running, on the VM's own address (not loopback, hence
  # --dashboard-public; only the lab reaches it): `sshlab run --dashboard` forwards it.
  dashboard = "${(lab.vm "agent").ip}:${toString (lab.servicePort "agent" "dashboard")}";
in {
  imports = [./common.nix];

  config = {
    networking.hostName = "agent";
    networking.firewall.allowedTCPPorts = lab.listenPorts "agent";

    systemd.services.sshlab-agent = {
      description = "sshlab-agent serve: the load agent's control API";
      wantedBy = ["multi-user.target"];
      after = ["network-online.target"];
      wants = ["network-online.target"];
      serviceConfig = {
        ExecStart = "${lib.getExe' config.sshlab.package "sshlab-agent"} serve --listen 0.0.0.0:${toString port} --results ${lab.results.guest} --dashboard ${dashboard} --dashboard-public";
        Restart = "on-failure";
        LimitNOFILE = 65536;
      };
    };
  };
}
