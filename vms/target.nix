# The Target VM's role: seven OpenSSH sshd instances, one per [[vm.service]] of the target in
# vms/topology.toml, each listening on its base port and on base + netem_port_offset.
#
# All seven are custom units (`sshd-<name>`) with their own sshd_config; NixOS' own
# services.openssh stays off, so this module provides what it would: host keys (oneshot
# `sshd-host-keys`), the privilege-separation user, the PAM service and authorized keys.
#
# Behaviours, real rather than declared:
# - slow-auth: authentication takes >= 2 s. Password logins run the shared `sshd` PAM stack,
#   whose first auth rule is pam_exec of `slow-auth-gate`: it sleeps when the connection's
#   local port (found with `ss` from the sshd process that called PAM, its parent) is the
#   slow-auth instance's (crates/sshlab-testkit/tests/slow_auth_gate.rs runs this PAM stack,
#   rendered from this file, under a real OpenSSH sshd). Public-key logins on that instance go
#   through an AuthorizedKeysCommand that sleeps the same time and prints nothing (the key
#   files still apply). Other instances never sleep.
# - unstable: a timer restarts `sshd-unstable` (its whole cgroup: sessions too) every `unstableRestartSec`, dropping its
#   connections (sshd -D alone never restarts itself: the original's Restart=always did nothing),
#   except while a fault keeps it down.
# - key-only: only public keys; the test-only snakeoil key (vms/keys/) is authorised for testuser.
# - deny-all: no authentication method enabled and `DenyUsers *`.
{
  lib,
  pkgs,
  ...
}: let
  lab = import ../nix/lib/lab.nix {};
  password = "testpass";
  slowAuthSec = 2;
  unstableRestartSec = 20;
  snakeoilPub = builtins.readFile ./keys/snakeoil-ed25519.pub;

  # Per-instance differences, by service name (vms/topology.toml); everything else is shared.
  behaviour = {
    standard = {};
    key-only = {password = false;};
    fancy-prompt = {};
    slow-auth = {slow = true;};
    deny-all = {
      password = false;
      pubkey = false;
      deny = true;
    };
    unstable = {};
    root-login = {root = true;};
  };
  behaviourOf = name:
    {
      password = true;
      pubkey = true;
      root = false;
      slow = false;
      deny = false;
    }
    // (behaviour.${name} or (throw "vms/target.nix: no behaviour for the target's sshd '${name}' (vms/topology.toml); add it to `behaviour`"));
  yesNo = b:
    if b
    then "yes"
    else "no";

  slowInstance = builtins.head (builtins.filter (i: (behaviourOf i.name).slow) lab.sshdInstances);
  slowPorts = [slowInstance.port slowInstance.netemPort];
  unstableUnit = (builtins.head (builtins.filter (i: i.name == "unstable") lab.sshdInstances)).unit;

  slowAuthGate = pkgs.writeShellScript "slow-auth-gate" ''
    # pam_exec: our parent is the sshd process that runs PAM; it holds the client's socket.
    ports=$(${pkgs.iproute2}/bin/ss -Htnp state established | ${pkgs.gnugrep}/bin/grep "pid=$PPID," \
      | ${pkgs.gawk}/bin/awk '{ n = split($3, a, ":"); print a[n] }')
    for p in $ports; do
      case " ${toString slowPorts} " in *" $p "*) exec ${pkgs.coreutils}/bin/sleep ${toString slowAuthSec} ;; esac
    done
    exit 0
  '';
  slowKeysCommand = pkgs.writeShellScript "slow-auth-keys" ''
    ${pkgs.coreutils}/bin/sleep ${toString slowAuthSec}
  '';
  # sshd runs an AuthorizedKeysCommand only from a path whose every directory is root-owned and
  # not group- or world-writable (OpenSSH safe_path()); /nix/store is group-writable (1775
  # root:nixbld), so the command is copied into /etc (a mode makes environment.etc copy the
  # file, root-owned), as nixpkgs' sssd and google-oslogin modules do for theirs.
  slowKeysEtc = "ssh/slow-auth-keys";

  # Each instance's sshd_config lives in /etc/ssh (environment.etc below), readable in the VM.
  sshdConfigPath = inst: "ssh/sshd_config-${inst.name}";
  sshdConfig = inst: let
    b = behaviourOf inst.name;
  in ''
    ListenAddress 0.0.0.0:${toString inst.port}
    ListenAddress 0.0.0.0:${toString inst.netemPort}
    HostKey /etc/ssh/ssh_host_ed25519_key
    HostKey /etc/ssh/ssh_host_rsa_key
    PidFile /run/${inst.unit}.pid
    PasswordAuthentication ${yesNo b.password}
    KbdInteractiveAuthentication no
    PubkeyAuthentication ${yesNo b.pubkey}
    PermitRootLogin ${yesNo b.root}
    PermitEmptyPasswords no
    AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/authorized_keys.d/%u
    ${lib.optionalString b.slow "AuthorizedKeysCommand /etc/${slowKeysEtc}\nAuthorizedKeysCommandUser nobody"}
    ${lib.optionalString b.deny "DenyUsers *"}
    UsePAM yes
    MaxStartups 200:30:400
    MaxSessions 50
    # OpenSSH >= 9.8 (nixpkgs ships 10.x) penalises a source address that fails logins or
    # drops connections, refusing it for a while: the load agent is one address that does
    # both on purpose (deny-all, unstable, pool exhaustion). The netns backend does the same.
    PerSourcePenalties no
    LogLevel INFO
    Subsystem sftp ${pkgs.openssh}/libexec/sftp-server
  '';

  sshdUnit = inst: {
    name = inst.unit;
    value = {
      description = "sshd '${inst.name}' (${inst.description}) on ${toString inst.port} and ${toString inst.netemPort}";
      wantedBy = ["multi-user.target"];
      after = ["network.target" "sshd-host-keys.service"];
      requires = ["sshd-host-keys.service"];
      # The config is an /etc file: restart the unit when it changes on a switch.
      restartTriggers = [(sshdConfig inst)];
      serviceConfig = {
        ExecStart = "${pkgs.openssh}/bin/sshd -D -e -f /etc/${sshdConfigPath inst}";
        Restart = "always";
        RestartSec = 1;
      };
    };
  };

  user = shell: {
    isNormalUser = true;
    inherit password shell;
  };
  largeFile = lib.concatStrings (builtins.genList (i: "Line ${toString i}: This is line number ${toString i} of the large test file for buffer testing.\n") 1000);
in {
  imports = [./common.nix];

  config = {
    networking.hostName = "target";
    networking.firewall.allowedTCPPorts = lab.listenPorts "target";

    users.mutableUsers = false;
    users.users = {
      # hashedPasswordFile wins over password (nixos/modules/config/users-groups.nix), and the
      # NixOS test driver sets root's to an empty file at priority 150
      # (nixos/modules/testing/test-instrumentation.nix): a plain null here (priority 100)
      # beats it, so root's password is testpass in the VM test as in the microVM.
      root = {
        inherit password;
        hashedPasswordFile = null;
      };
      testuser = user pkgs.bashInteractive;
      slowuser = user pkgs.bashInteractive;
      fancyuser = user pkgs.bashInteractive;
      zshuser = user pkgs.zsh;
      dashuser = user pkgs.dash;
      sshd = {
        isSystemUser = true;
        group = "sshd";
        description = "SSH privilege separation user";
      };
    };
    users.groups.sshd = {};
    programs.zsh.enable = true;
    environment.shells = [pkgs.dash];

    environment.etc =
      builtins.listToAttrs (map (i: {
          name = sshdConfigPath i;
          value.text = sshdConfig i;
        })
        lab.sshdInstances)
      // {
        "test-file.txt".text = ''
          This is a test file for ssh_cat_file testing.
          It has three lines.
          The end.
        '';
        "large-test-file.txt".text = largeFile;
        "ssh/authorized_keys.d/testuser" = {
          mode = "0444";
          text = snakeoilPub;
        };
        "ssh/authorized_keys.d/root" = {
          mode = "0444";
          text = snakeoilPub;
        };
        ${slowKeysEtc} = {
          mode = "0755";
          source = slowKeysCommand;
        };
        # The fancy prompt: multi-line and coloured, for prompt-detection tests. In bashrc.local,
        # which /etc/bashrc sources last: /etc/profile sources profile.local *before* /etc/bashrc,
        # whose promptInit would set PS1 again (nixos/modules/programs/bash/bash.nix).
        "bashrc.local".text = ''
          if [ "$USER" = fancyuser ]; then
            PS1='\[\e[32m\]\u@\h\[\e[0m\]:\[\e[34m\]\w\[\e[0m\]\n\$ '
          fi
        '';
      };

    # Replaces the whole sshd PAM file: the slow-auth gate first, then plain pam_unix. pam_env
    # as NixOS' own generated stacks have it (nixos/modules/security/pam.nix): it sets PATH and
    # the rest of /etc/pam/environment, without which a dash or zsh login has no usable PATH.
    security.pam.services.sshd.text = ''
      account required ${pkgs.pam}/lib/security/pam_unix.so
      auth required ${pkgs.pam}/lib/security/pam_exec.so quiet ${slowAuthGate}
      auth required ${pkgs.pam}/lib/security/pam_unix.so
      password required ${pkgs.pam}/lib/security/pam_unix.so sha512
      session required ${pkgs.pam}/lib/security/pam_env.so conffile=/etc/pam/environment readenv=0
      session required ${pkgs.pam}/lib/security/pam_unix.so
    '';

    systemd.services =
      builtins.listToAttrs (map sshdUnit lab.sshdInstances)
      // {
        sshd-host-keys = {
          description = "Generate the target's shared SSH host keys";
          before = map (i: "${i.unit}.service") lab.sshdInstances;
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            ExecStart = "${pkgs.openssh}/bin/ssh-keygen -A";
          };
        };
        sshd-unstable-restart = {
          description = "Restart the unstable sshd, dropping its connections";
          # Not while a fault keeps it down (`sshlab guest-control` flags it there,
          # vms/control.nix; crates/sshlab/src/vm/control.rs DOWN_DIR).
          unitConfig.ConditionPathExists = "!/run/sshlab-control/down/${unstableUnit}.service";
          serviceConfig = {
            Type = "oneshot";
            ExecStart = "${pkgs.systemd}/bin/systemctl restart ${unstableUnit}.service";
          };
        };
      };
    systemd.timers.sshd-unstable-restart = {
      wantedBy = ["timers.target"];
      timerConfig = {
        OnActiveSec = unstableRestartSec;
        OnUnitActiveSec = unstableRestartSec;
      };
    };
  };
}
