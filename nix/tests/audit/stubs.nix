# Stubs for evaluating the lab's NixOS modules WITHOUT nixpkgs: `lib` and `pkgs` implement just
# what the modules call (a package is its name under a fake store path; `testers.runNixOSTest`
# returns its argument; `lib.mkOverride` and `lib.mkForce` keep their priority as nixpkgs'
# lib/modules.nix does, `{ _type = "override"; priority; content; }`). `settings` is a
# module's own definitions; `strip` turns them into plain data (overrides to their content).
# A module that starts using another lib or pkgs attribute fails by name: add a stub here.
let
  stubPkg = name: {
    outPath = "/nix/store/stub-${name}";
    inherit name;
    meta.mainProgram = name;
  };
  pkgs =
    builtins.listToAttrs (map (n: {
        name = n;
        value = stubPkg n;
      }) [
        "bashInteractive"
        "coreutils"
        "curl"
        "dash"
        "gawk"
        "gnugrep"
        "iproute2"
        "jq"
        "openssh"
        "pam"
        "sshpass"
        "systemd"
        "zsh"
      ])
    // {
      writeText = name: text: (stubPkg name) // {inherit text;};
      writeShellScript = name: text: (stubPkg name) // {inherit text;};
      testers.runNixOSTest = test: test;
      inherit lib;
    };
  lib = {
    mkOption = a: {_option = a;};
    types.package = "package";
    getExe' = p: bin: "${p}/bin/${bin}";
    # As nixpkgs lib/strings.nix defines them.
    toUpper = builtins.replaceStrings (lib.stringToCharacters "abcdefghijklmnopqrstuvwxyz") (lib.stringToCharacters "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    stringToCharacters = s: builtins.genList (p: builtins.substring p 1 s) (builtins.stringLength s);
    concatMapStrings = f: list: builtins.concatStringsSep "" (map f list);
    # As nixpkgs lib/strings.nix defines them since 24.11 (quotes only what needs quoting).
    escapeShellArg = arg: let
      string = toString arg;
    in
      if builtins.match "[[:alnum:],._+:@%/-]+" string == null
      then "'${builtins.replaceStrings ["'"] ["'\\''"] string}'"
      else string;
    escapeShellArgs = list: builtins.concatStringsSep " " (map lib.escapeShellArg list);
    optional = c: x:
      if c
      then [x]
      else [];
    optionals = c: xs:
      if c
      then xs
      else [];
    optionalString = c: s:
      if c
      then s
      else "";
    concatStrings = builtins.concatStringsSep "";
    genAttrs = names: f:
      builtins.listToAttrs (map (name: {
          inherit name;
          value = f name;
        })
        names);
    max = a: b:
      if a > b
      then a
      else b;
    mkOverride = priority: content: {
      _type = "override";
      inherit priority content;
    };
    mkForce = lib.mkOverride 50;
  };
  sshlab = stubPkg "sshlab";
  args = {
    inherit lib pkgs;
    config = {
      sshlab.package = sshlab;
      systemd.package = pkgs.systemd;
    };
  };
  # A module's own settings: `config` if it uses the long form, else everything but imports.
  settings = m: let
    v =
      if builtins.isFunction m
      then m args
      else m;
  in
    v.config or (removeAttrs v ["imports" "options"]);
  strip = v:
    if builtins.isAttrs v && v ? outPath
    then "${v.outPath}"
    else if builtins.isAttrs v && (v._type or null) == "override"
    then strip v.content
    else if builtins.isAttrs v
    then builtins.mapAttrs (_: strip) v
    else if builtins.isList v
    then map strip v
    else v;
in {
  inherit lib pkgs sshlab args settings strip;
}
