# What the lab's modules do once NixOS and the test driver have them, for the defects that
# parsing, formatting and the option audit could not see. Each expectation models the one
# upstream rule involved (cited, nixpkgs d6c71932 / microvm.nix 68c9f9c) on the modules' raw
# definitions (./audit/stubs.nix keeps mkOverride priorities). Evaluates to the list of failed
# expectations: [] means every one holds.
# nix-instantiate --eval --strict --json nix/tests/runtime.nix
let
  stubs = import ./audit/stubs.nix;
  inherit (stubs) lib pkgs sshlab settings;
  expect = name: actual: expected:
    if actual == expected
    then []
    else [{inherit name actual expected;}];
  isOverride = v: builtins.isAttrs v && (v._type or null) == "override";
  priority = v:
    if isOverride v
    then v.priority
    else 100; # a plain definition (lib/modules.nix defaultOverridePriority)
  content = v:
    if isOverride v
    then v.content
    else v;
  # The definition with the lowest priority number wins (lib/modules.nix filterOverrides).
  winner = defs:
    builtins.foldl' (a: b:
      if priority b < priority a
      then b
      else a) (builtins.head defs) (builtins.tail defs);

  target = settings (import ../../vms/target.nix);
  vmTest = (import ../checks/vm-test.nix {inherit pkgs sshlab;}).sshlab-lab;
  targetNode = settings vmTest.nodes.target;
  agentNode = settings vmTest.nodes.agent;
  agent = settings (import ../../vms/agent.nix);

  # 1. Root's password in the VM test. nixos/modules/testing/test-instrumentation.nix sets
  #    users.users.root.hashedPasswordFile = mkOverride 150 (an empty file); in
  #    nixos/modules/config/users-groups.nix (update-users-groups.pl) a hashedPasswordFile wins
  #    over password, and an empty hash refuses every password.
  rootDefs = attr: let
    fromModules = builtins.concatMap (m: let
      root = ((m.users or {}).users or {}).root or {};
    in
      if root ? ${attr}
      then [root.${attr}]
      else []) [target targetNode];
  in
    fromModules;
  rootFile = content (winner ([(lib.mkOverride 150 "/nix/store/hashed-password.root")] ++ rootDefs "hashedPasswordFile"));
  rootPassword = map content (rootDefs "password");
  rootLogin =
    if rootFile != null
    then "refused: hashedPasswordFile ${rootFile} (empty) wins over password"
    else if rootPassword == ["testpass"]
    then "password testpass"
    else "no password";

  # 2. sshd runs an AuthorizedKeysCommand only from a path whose directories are all root-owned
  #    and not group- or world-writable (OpenSSH auth2-pubkeyfile.c safe_path); /nix/store is
  #    1775 root:nixbld. It must be an /etc file that environment.etc copies (a mode other than
  #    "symlink", nixos/modules/system/etc/etc.nix), mode 0755.
  lab = import ../lib/lab.nix {};
  # Each sshd's config: the file its unit's ExecStart passes with -f.
  sshdConfigText = unit: let
    path = builtins.head (builtins.match ".* -f ([^ ]*).*" target.systemd.services.${unit}.serviceConfig.ExecStart);
    rel = builtins.match "/etc/(.*)" path;
  in
    # A store path written by writeText: its text is out of reach here, which fails the
    # expectations that read it (they name what they looked for).
    if rel == null
    then ""
    else target.environment.etc.${builtins.head rel}.text;
  slowConfig = sshdConfigText (builtins.head (builtins.filter (i: i.name == "slow-auth") lab.sshdInstances)).unit;
  authorizedKeysCommand = text: let
    lines = builtins.filter (l: builtins.isString l && builtins.match "AuthorizedKeysCommand .*" l != null) (builtins.split "\n" text);
  in
    map (l: builtins.head (builtins.match "AuthorizedKeysCommand (.*)" l)) lines;
  etcEntry = path: let
    rel = builtins.match "/etc/(.*)" path;
  in
    if rel == null
    then null
    else target.environment.etc.${builtins.head rel} or null;
  commandSafe = path: let
    e = etcEntry path;
  in
    if e == null
    then "unsafe: ${path} is not a file in /etc (sshd refuses store paths)"
    else if (e.mode or "symlink") != "0755"
    then "unsafe: /etc entry for ${path} has mode ${e.mode or "symlink"} (a symlink into the store)"
    else "safe";

  # 3. The fancy prompt. /etc/profile sources /etc/profile.local and then /etc/bashrc, whose
  #    promptInit sets PS1 again; /etc/bashrc sources /etc/bashrc.local last
  #    (nixos/modules/programs/bash/bash.nix). Only bashrc.local (or a user's own files) keeps it.
  setsPS1 = name: builtins.match ".*PS1=.*" (target.environment.etc.${name}.text or "") != null;

  # 4. The VM test's shell runs each command as `bash -c "set -euo pipefail; ..."`
  #    (nixos/lib/test-driver machine.py): `cmd | grep -q` fails whenever grep exits before cmd
  #    has written everything (EPIPE). It also runs in /tmp: no command may rely on a checkout.
  pipesIntoGrepQ = builtins.match ".*\\|[[:space:]]*grep -q.*" vmTest.testScript != null;

  # 5. The apps: which ones carry the VM runners (and so depend on three VM closures).
  appsWith = let
    apps = import ../apps.nix {
      inherit sshlab;
      lib =
        lib
        // {
          # The wrapper itself, not its path, so its text can be read.
          getExe = p: p;
        };
      pkgs = pkgs // {writeShellApplication = a: a;};
      runners = lib.genAttrs ["agent" "mcp" "target"] (n: "/nix/store/stub-runner-${n}");
    };
  in
    builtins.mapAttrs (_: a: a.program.text) apps;
  hasRunners = text: builtins.match ".*SSHLAB_RUNNER_.*" text != null;
in
  builtins.concatLists [
    (expect "vm-test: root logs in with its password" rootLogin "password testpass")
    (expect "target: slow-auth's AuthorizedKeysCommand passes sshd's safe_path" (map commandSafe (authorizedKeysCommand slowConfig)) ["safe"])
    (expect "target: profile.local sets no PS1 (bashrc's promptInit overwrites it)" (setsPS1 "profile.local") false)
    (expect "target: bashrc.local sets the fancy prompt" (setsPS1 "bashrc.local") true)
    (expect "target: every sshd disables PerSourcePenalties (OpenSSH >= 9.8)" (map (i: builtins.match ".*\nPerSourcePenalties no\n.*" (sshdConfigText i.unit) != null) lab.sshdInstances) (map (_: true) lab.sshdInstances))
    (expect "target: the sshd PAM stack runs pam_env (PATH for dash/zsh users)" (builtins.match ".*session required [^ ]*pam_env.so conffile=/etc/pam/environment readenv=0.*" target.security.pam.services.sshd.text != null) true)
    (expect "vm-test: no pipe into grep -q under pipefail" pipesIntoGrepQ false)
    (expect "agent: no tmpfiles rule on the results share's mount point" (agent.systemd.tmpfiles.rules or []) [])
    (expect "vm-test: the agent node makes its results directory" ((agentNode.systemd or {}).tmpfiles.rules or []) ["d /results 0755 root root -"])
    (expect "apps without VMs carry no runners" (map (n: hasRunners appsWith.${n}) ["ssh-network-setup" "ssh-network-teardown" "ssh-loadtest-list" "ssh-loadtest-metrics"]) [false false false false])
    (expect "apps with VMs carry the runners" (map (n: hasRunners appsWith.${n}) ["ssh-vm-start-all" "ssh-loadtest-full"]) [true true])
    (expect "ssh-network-setup: one sshlab call, net up with the user's flags (it applies netem itself)" (builtins.match ".*exec [^ ]*/bin/sshlab net up \"\\$@\"[[:space:]]*" appsWith.ssh-network-setup != null && builtins.match ".*netem apply.*" appsWith.ssh-network-setup == null) true)
  ]
