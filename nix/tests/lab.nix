# Pure-evaluation tests of nix/lib/lab.nix and of the modules' settings (stub-evaluated by
# audit/eval-modules.nix). Evaluates to the list of failures: [] means every expectation holds.
# nix-instantiate --eval --strict --json nix/tests/lab.nix
let
  lab = import ../lib/lab.nix {};
  mods = import ./audit/eval-modules.nix;
  expect = name: actual: expected:
    if actual == expected
    then []
    else [{inherit name actual expected;}];
  target = mods.target;
  vmTest = mods."test:vm-test";
  words = s: builtins.filter (w: builtins.isString w && w != "") (builtins.split " " s);
  sshUnits = builtins.filter (n: builtins.match "sshd-.*" n != null && n != "sshd-host-keys" && n != "sshd-unstable-restart") (builtins.attrNames target.systemd.services);
in
  builtins.concatLists [
    (expect "vm names" lab.vmNames ["agent" "mcp" "target"])
    (expect "gateway" lab.gateway "10.178.0.1")
    (expect "bridge" lab.bridgeName "sshbr0")
    (expect "address of mcp" (lab.addressOf "mcp") "10.178.0.10/24")
    (expect "mcp port" (lab.servicePort "mcp" "mcp") 3000)
    (expect "agent ports" (lab.listenPorts "agent") [9100 9101])
    (expect "target ports" (lab.listenPorts "target") [2222 2322 2223 2323 2224 2324 2225 2325 2226 2326 2227 2327 2228 2328])
    (expect "sshd units" (map (i: i.unit) lab.sshdInstances) ["sshd-standard" "sshd-key-only" "sshd-fancy-prompt" "sshd-slow-auth" "sshd-deny-all" "sshd-unstable" "sshd-root-login"])
    (expect "netem of 2222" (builtins.head lab.sshdInstances).netem {
      base = 2222;
      port = 2322;
      delay_ms = 100;
      jitter_ms = 10;
      loss_percent = 0.0;
      description = "100ms latency";
    })
    (expect "netem ports" (map (n: n.port) lab.netem) [2322 2323 2324 2325 2326 2327 2328])
    (expect "results share" lab.results {
      host = "/var/lib/sshlab/results";
      guest = "/results";
    })
    (expect "agent microvm" (lab.microvmFor "agent") {
      hypervisor = "qemu";
      vcpu = 2;
      mem = 512;
      interfaces = [
        {
          type = "tap";
          id = "sshtap0";
          mac = "02:00:00:b2:00:05";
        }
      ];
      virtiofsd.group = null;
      shares = [
        {
          proto = "9p";
          tag = "ro-store";
          source = "/nix/store";
          mountPoint = "/nix/.ro-store";
          readOnly = true;
        }
        {
          proto = "virtiofs";
          tag = "results";
          source = "/var/lib/sshlab/results";
          mountPoint = "/results";
        }
      ];
    })
    (expect "target has no results share" (map (s: s.tag)
        (lab.microvmFor "target").shares) ["ro-store"])
    (expect "target vm size" (with lab.microvmFor "target"; [vcpu mem]) [4 1024])
    (expect "bad vm name throws" (builtins.tryEval (lab.vm "nope")).success false)
    # Modules (stub-evaluated)
    (expect "target sshd units" (builtins.sort builtins.lessThan sshUnits) (builtins.sort builtins.lessThan (map (i: i.unit) lab.sshdInstances)))
    (expect "target firewall" target.networking.firewall.allowedTCPPorts (lab.listenPorts "target"))
    (expect "users" (builtins.sort builtins.lessThan (builtins.attrNames target.users.users)) ["dashuser" "fancyuser" "root" "slowuser" "sshd" "testuser" "zshuser"])
    (expect "passwords" (map (u: target.users.users.${u}.password) ["testuser" "fancyuser" "zshuser" "dashuser" "slowuser"]) ["testpass" "testpass" "testpass" "testpass" "testpass"])
    (expect "large file: 1000 newline-terminated lines" (builtins.length (builtins.filter builtins.isList (builtins.split "\n" target.environment.etc."large-test-file.txt".text))) 1000)
    (expect "unstable timer" target.systemd.timers.sshd-unstable-restart.timerConfig.OnUnitActiveSec 20)
    (expect "mcp ExecStart" mods.mcp.systemd.services.mcp-ssh-server.serviceConfig.ExecStart "/nix/store/stub-sshlab/bin/mcp-ssh-server --bind 0.0.0.0:3000 --profile loadtest --rate-limit-per-min 0 --global-rate-limit-per-min 0")
    (expect "agent ExecStart" mods.agent.systemd.services.sshlab-agent.serviceConfig.ExecStart "/nix/store/stub-sshlab/bin/sshlab-agent serve --listen 0.0.0.0:9100 --results /results --dashboard 10.178.0.5:9101 --dashboard-public")
    (expect "vm-test: eth1 of each node carries its topology address" (builtins.mapAttrs (_: n: n.networking.interfaces.eth1.ipv4.addresses) vmTest.nodes) {
      agent = [
        {
          address = "10.178.0.5";
          prefixLength = 24;
        }
      ];
      mcp = [
        {
          address = "10.178.0.10";
          prefixLength = 24;
        }
      ];
      target = [
        {
          address = "10.178.0.20";
          prefixLength = 24;
        }
      ];
    })
    (expect "vm-test: node cores follow the topology's vcpus" (builtins.mapAttrs (_: n: n.virtualisation.cores) vmTest.nodes) {
      agent = 2;
      mcp = 4;
      target = 4;
    })
    (expect "vm-test: name and timeout" [vmTest.name vmTest.meta.timeout] ["sshlab-lab" 1800])
    # The host's control port for faults (vms/control.nix): on the Target and the MCP VM only,
    # naming units their role modules define.
    (expect "control port on target and mcp only" (map (name: builtins.length (import ../../vms/microvm.nix {inherit name;}).imports) lab.vmNames) [1 2 2])
    (expect "control: every --sshd-unit is a target service, by base port" (builtins.filter (a: builtins.match ".*--sshd-unit=.*" a != null) (words mods.control-target.systemd.services.sshlab-control.serviceConfig.ExecStart)) (map (i: "'--sshd-unit=${toString i.port}=${i.unit}.service'") (builtins.filter (i: target.systemd.services ? ${i.unit}) lab.sshdInstances)))
    (expect "control: --mcp-unit is the mcp module's service" (mods.mcp.systemd.services ? "mcp-ssh-server" && builtins.elem "'--mcp-unit=mcp-ssh-server.service'" (words mods.control-mcp.systemd.services.sshlab-control.serviceConfig.ExecStart)) true)
    (expect "control: the port on control.sock, named sshlab.control" (builtins.elemAt (import ../../vms/control.nix).qemuArgs 5) "virtserialport,bus=sshlab-serial.0,chardev=sshlab-control,name=sshlab.control")
    (expect "control: the microVMs' qemu has the port where the service runs" (map (name: mods."microvm-${name}".microvm.qemu.extraArgs == (import ../../vms/control.nix).qemuArgs) lab.vmNames) [false true true])
    (expect "control: the VM test's target and mcp nodes have the port too" (builtins.mapAttrs (_: n: n.virtualisation.qemu.options == (import ../../vms/control.nix).qemuArgs) vmTest.nodes) {
      agent = false;
      mcp = true;
      target = true;
    })
    (expect "mcp network" mods.microvm-mcp.systemd.network.networks."10-lab" {
      matchConfig.MACAddress = "02:00:00:b2:00:0a";
      address = ["10.178.0.10/24"];
      gateway = ["10.178.0.1"];
    })
  ]
