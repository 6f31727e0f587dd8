# The Target VM's `sshd` PAM service as vms/target.nix writes it, rendered for a machine without
# a Nix store, for crates/sshlab-testkit/tests/slow_auth_gate.rs (which runs it under a real
# OpenSSH sshd). Nothing is restated here: the PAM text is the module's own
# `security.pam.services.sshd.text`, and every script it runs is cut out of it.
#
# Each package target.nix uses in that text is a directory given as an argument (the test
# passes "/usr", or a directory of links such as <dir>/lib/security -> Debian's PAM modules).
# A `writeShellScript` becomes its whole text between markers wherever the module interpolates
# its path; `render` below takes each script out again and puts `scriptDir/<name>` back.
#
#   nix-instantiate --eval --strict --json nix/tests/slow-auth-gate.nix \
#     --argstr scriptDir /tmp/x --argstr gawk /tmp/gawk --argstr pam /tmp/pam
# =>
#   { pam = "<PAM file>"; scripts = { slow-auth-gate = "#!/bin/bash\n..."; };
#     slowPorts = [2225 2325]; otherPorts = [2222 2322]; }
{
  scriptDir,
  iproute2 ? "/usr",
  gnugrep ? "/usr",
  gawk ? "/usr",
  coreutils ? "/usr",
  pam ? "/usr",
  runtimeShell ? "/bin/bash",
}: let
  lab = import ../lib/lab.nix {};
  stub = name: {
    outPath = "/nix/store/stub-${name}";
    inherit name;
  };
  pkgs = {
    inherit iproute2 gnugrep gawk coreutils pam;
    bashInteractive = stub "bash";
    dash = stub "dash";
    openssh = stub "openssh";
    systemd = stub "systemd";
    zsh = stub "zsh";
    writeText = name: _: stub name;
    # nixpkgs' writeShellScript: "#!${runtimeShell}" then the text, executable.
    writeShellScript = name: text: {
      outPath = "<<script ${name}>>#!${runtimeShell}\n${text}<</script>>";
      inherit name;
    };
  };
  lib = {
    optionalString = c: s:
      if c
      then s
      else "";
    concatStrings = builtins.concatStringsSep "";
  };
  target = (import ../../vms/target.nix {inherit lib pkgs;}).config;

  # builtins.split: text, [name], script, [null], text, ... (the markers do not nest).
  render = text: let
    parts = builtins.split "<<script ([a-z0-9-]+)>>|<</script>>" text;
    n = builtins.length parts;
    go = i: acc:
      if i >= n
      then acc
      else let
        p = builtins.elemAt parts i;
        name = builtins.head p;
      in
        if builtins.isString p
        then go (i + 1) (acc // {pam = acc.pam + p;})
        else if name == null || i + 2 >= n || builtins.elemAt parts (i + 2) != [null]
        then throw "slow-auth-gate.nix: unbalanced script markers in the rendered PAM text"
        else
          go (i + 3) {
            pam = acc.pam + "${scriptDir}/${name}";
            scripts = acc.scripts // {${name} = builtins.elemAt parts (i + 1);};
          };
  in
    go 0 {
      pam = "";
      scripts = {};
    };
  ports = name: let
    i = builtins.head (builtins.filter (i: i.name == name) lab.sshdInstances);
  in [i.port i.netemPort];
in
  render target.security.pam.services.sshd.text
  // {
    slowPorts = ports "slow-auth";
    otherPorts = ports "standard";
  }
