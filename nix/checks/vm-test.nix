# The lab as a NixOS VM test: three nodes named after their role, each importing the same role
# module as its microVM (vms/<role>.nix). The test framework's VLAN 1 stands in for the bridge:
# eth1 carries the topology's address. Netem runs on the target's eth1 egress (replies from the
# netem'd ports), since this test has no host bridge or TAPs. The Target and the MCP node have
# the microVMs' control port (vms/control.nix): the script sends it a fault as the host would.
{
  pkgs,
  sshlab,
}: let
  inherit (pkgs) lib;
  lab = import ../lib/lab.nix {};
  ip = name: (lab.vm name).ip;
  mcpUrl = "http://${ip "mcp"}:${toString (lab.servicePort "mcp" "mcp")}/mcp";
  healthUrl = "http://${ip "mcp"}:${toString (lab.servicePort "mcp" "mcp")}/health";
  standard = builtins.head lab.sshdInstances;
  byName = n: builtins.head (builtins.filter (i: i.name == n) lab.sshdInstances);
  py = builtins.toJSON;

  control = import ../../vms/control.nix;
  # The nodes that take fault commands on a control port, as their microVMs do.
  controlled = name: name != "agent";
  agentApi = "http://${ip "agent"}:${toString (lab.servicePort "agent" "control")}";

  node = name: {lib, ...}: let
    vm = lab.vm name;
  in {
    imports =
      [(../../vms + "/${name}.nix")]
      ++ lib.optional (controlled name) (control.module {inherit name lab;});
    # The control port, on `control.sock` in the machine's state_dir (where the driver runs qemu).
    virtualisation.qemu.options = lib.optionals (controlled name) control.qemuArgs;
    sshlab.package = sshlab;
    virtualisation.vlans = [1];
    virtualisation.memorySize = lib.max 1024 vm.memory_mib;
    virtualisation.cores = vm.vcpus;
    networking.interfaces.eth1.ipv4.addresses = lib.mkForce [
      {
        address = vm.ip;
        inherit (lab.subnet) prefixLength;
      }
    ];
    boot.kernelModules = ["sch_prio" "sch_netem" "cls_u32"];
    environment.systemPackages = [sshlab pkgs.sshpass pkgs.openssh];
    # No results share in this test: the agent writes into a plain directory.
    systemd.tmpfiles.rules = lib.optional (name == "agent") "d ${lab.results.guest} 0755 root root -";
  };

  ssh = port: user: "sshpass -p testpass ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o PreferredAuthentications=password,keyboard-interactive -o ConnectTimeout=10 -p ${toString port} ${user}@${ip "target"} true";
  agentRun = args: "sshlab-agent run --mcp-url ${mcpUrl} --target-host ${ip "target"} --target-port ${toString standard.port} --user testuser --password testpass ${args}";
in {
  sshlab-lab = pkgs.testers.runNixOSTest {
    name = "sshlab-lab";
    meta.timeout = 1800;
    nodes = lib.genAttrs lab.vmNames node;
    testScript = ''
      import json, shlex, socket, time

      units = ${py (map (i: i.unit) lab.sshdInstances)}
      ports = ${py (lab.listenPorts "target")}

      start_all()

      with subtest("target: every sshd instance runs and listens on its base and netem port"):
          for unit in units:
              target.wait_for_unit(unit, timeout=180)
          for port in ports:
              target.wait_for_open_port(port, timeout=60)

      with subtest("mcp: mcp-ssh-server is up and healthy from the agent"):
          mcp.wait_for_unit("mcp-ssh-server.service", timeout=180)
          mcp.wait_for_open_port(${toString (lab.servicePort "mcp" "mcp")}, timeout=60)
          agent.wait_for_unit("sshlab-agent.service", timeout=180)
          agent.wait_for_open_port(${toString (lab.servicePort "agent" "control")}, timeout=60)
          agent.wait_until_succeeds("curl -sf --max-time 5 ${healthUrl}", timeout=60)

      with subtest("sanity: a password login on the standard sshd succeeds"):
          agent.succeed("${ssh standard.port "testuser"}", timeout=30)

      with subtest("negative: key-only and deny-all refuse the same password"):
          agent.fail("${ssh (byName "key-only").port "testuser"}", timeout=30)
          agent.fail("${ssh (byName "deny-all").port "testuser"}", timeout=30)

      with subtest("slow-auth really takes at least 2 s, standard does not"):
          t0 = time.monotonic()
          agent.succeed("${ssh (byName "slow-auth").port "slowuser"}", timeout=60)
          slow = time.monotonic() - t0
          t0 = time.monotonic()
          agent.succeed("${ssh standard.port "slowuser"}", timeout=60)
          fast = time.monotonic() - t0
          assert slow >= 2.0, f"slow-auth login took {slow:.2f} s"
          assert fast < slow - 1.5, f"standard {fast:.2f} s vs slow-auth {slow:.2f} s"

      with subtest("root may log in on root-login only"):
          agent.succeed("${ssh (byName "root-login").port "root"}", timeout=30)
          agent.fail("${ssh standard.port "root"}", timeout=30)

      with subtest("the test files exist; the large one has 1000 lines"):
          target.succeed("grep -q 'test file' /etc/test-file.txt")
          assert target.succeed("wc -l < /etc/large-test-file.txt").strip() == "1000"

      with subtest("netem is applied on the target's eth1 egress"):
          # The test driver runs each command as `bash -c "set -euo pipefail; ..."` in /tmp: no
          # pipes into `grep -q` (EPIPE under pipefail), and sshlab finds its lab files itself.
          # `show` plans what `apply` did only with the same --match (without it, destination
          # ports); it exits 3 while the plan is not in the kernel, as before `apply`.
          target.fail("sshlab netem show --dev eth1 --match sport --json", timeout=30)
          target.succeed("sshlab netem apply --dev eth1 --match sport", timeout=30)
          shown = json.loads(target.succeed("sshlab netem show --dev eth1 --match sport --json", timeout=30))
          assert shown["ready"], shown
          assert ${toString standard.netemPort} in [r["want"]["port"] for r in shown["rows"]], shown

      with subtest("quick scenario passes its thresholds from the agent"):
          agent.succeed("${agentRun "--scenario quick --duration 10 --results-dir /tmp/quick --threshold 'errors<1%'"}", timeout=600)
          agent.succeed("test -s /tmp/quick/*/summary.json")

      with subtest("negative: an impossible threshold fails the run with exit code 99"):
          status, _ = agent.execute("${agentRun "--scenario quick --duration 5 --workers 1 --results-dir /tmp/neg --threshold 'ssh_run_command.p99<1us'"}", timeout=300)
          assert status == 99, f"expected exit 99 (thresholds failed), got {status}"

      def control(machine, op):
          """A fault command to the node's control port (vms/control.nix), as `sshlab run
          --fault` sends it (crates/sshlab/src/vm/control.rs): one JSON line each way."""
          req = dict(op, id=time.time_ns())
          with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
              s.settimeout(60)
              s.connect(str(machine.state_dir / "control.sock"))
              s.sendall((json.dumps(req) + "\n").encode())
              buf = b""
              while True:
                  chunk = s.recv(4096)
                  assert chunk, f"{machine.name}: no answer to {req}"
                  buf += chunk
                  while b"\n" in buf:
                      line, buf = buf.split(b"\n", 1)
                      reply = json.loads(line)
                      if reply.get("id") == req["id"]:
                          assert reply["ok"], f"{machine.name}: {req}: {reply}"
                          return

      def agent_api(method, path, body=None):
          data = "" if body is None else f"-H 'content-type: application/json' --data {shlex.quote(json.dumps(body))}"
          out = agent.succeed(f"curl -sf --max-time 30 -X {method} {data} ${agentApi}{path}", timeout=60)
          return json.loads(out) if out.strip() else None

      with subtest("sshd-kill: ${toString standard.port}'s sshd killed mid-run with its sessions, started again; the run recovers"):
          # As `sshlab run --fault sshd-kill:${toString standard.port}@12s+4s` does it: the job on the agent's
          # control API, the fault through the target's control port, and its record (times on
          # the agent's clock, which judges them) posted to the job.
          job = agent_api("POST", "/jobs", dict(scenario="quick", duration=34, workers=2, rate=3,
              mcp_url="${mcpUrl}", target_host="${ip "target"}", target_port=${toString standard.port},
              user="testuser", password="testpass"))
          test_id = job["test_id"]
          clock = lambda: float(agent.succeed("date +%s.%N"))
          record = dict(index=0, spec=dict(kind="sshd-kill", target="${toString standard.port}", start_s=12.0, duration_s=4.0))
          time.sleep(12)
          # Its start is when the host acts, as `sshlab run` records it: before the kill.
          record["started_at"] = clock()
          control(target, dict(op="sshd-kill", base=${toString standard.port}))
          agent_api("POST", f"/jobs/{test_id}/faults", record)
          time.sleep(4)
          control(target, dict(op="sshd-back", base=${toString standard.port}))
          agent.wait_for_open_port(${toString standard.port}, addr="${ip "target"}", timeout=60)
          record["ended_at"] = clock()
          agent_api("POST", f"/jobs/{test_id}/faults", record)
          deadline = time.monotonic() + 300
          while (job_status := agent_api("GET", f"/jobs/{test_id}"))["state"] == "running":
              assert time.monotonic() < deadline, f"job {test_id} still running"
              time.sleep(2)
          assert job_status["state"] == "done", job_status
          summary = job_status["summary"]
          fault = summary["faults"][0]
          print(f"sshd-kill: {fault['analysis']['verdict']} (during: {fault['analysis']['during']})")
          begin = fault["started_at"] - summary["run"]["started_at"]
          for i in summary["timeline"]:
              if i["t"] >= begin - 3:
                  print(f"  t={i['t']} s: {i['ok']} ok, {i['err']} failed, p99 {i['p99']} ms")
          for m in summary["error_messages"]:
              print(f"  {m['count']} x {m['op']}: {m['example']} ({m['first_s']:.1f}..{m['last_s']:.1f} s)")
          assert fault["analysis"]["during"]["failures"] > 0, f"no call failed while sshd was down: {fault}"
          # Its recovery, the server's part: once sshd is back, no call fails (no dead pooled
          # connection is handed out again). The recovery time also needs the p99 back within
          # the baseline's, which is the machine's: the baseline's calls reused pooled SSH
          # connections, the ones after it make new ones, and on emulated CPUs (the stand-in's
          # guests) each handshake takes seconds. It is printed, not bounded.
          back = record["ended_at"] - summary["run"]["started_at"]
          late = [m for m in summary["error_messages"] if m["last_s"] > back + 1]
          assert not late, f"calls still failed after sshd was back at {back:.1f} s: {late}"
          ok_after = sum(i["ok"] for i in summary["timeline"] if i["t"] > back + 1)
          assert ok_after > 0, f"no call succeeded after sshd was back: {summary['timeline']}"
          last_error = max((m["last_s"] for m in summary["error_messages"]), default=0.0)
          print(f"sshd-kill: errors stopped {last_error - back:+.1f} s from sshd's return; recovery_s {fault['analysis'].get('recovery_s')}")

      with subtest("latency_test: ${toString standard.netemPort} is at least 90 ms slower than ${toString standard.port}"):
          agent.succeed("${agentRun "--scenario latency_test --duration 10 --results-dir /tmp/lat"}", timeout=900)
          summary = json.loads(agent.succeed("cat /tmp/lat/*/summary.json"))

          # summary.json schema 1: "ports" lists each target port's figures in run order,
          # with the corrected latency percentiles in ms (crates/sshlab-core/src/results/summary.rs).
          m = {int(p["name"]): p["latency"]["p50"] for p in summary["ports"]}
          base, shaped = m[${toString standard.port}], m[${toString standard.netemPort}]
          print(f"median {base} ms on ${toString standard.port}, {shaped} ms on ${toString standard.netemPort}")
          assert shaped - base >= 90, f"netem adds only {shaped - base} ms"
    '';
  };
}
