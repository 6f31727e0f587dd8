"""A stand-in for the NixOS test driver: runs nix/checks/vm-test.nix's own test script, exactly
as Nix evaluates it (nix/tests/vm-test-driver.nix), against the qemu backend's three real guests
instead of NixOS nodes. crates/sshlab/tests/nixos_vm_test.rs runs it; Nix cannot build here.

What it implements is what the script uses, with the driver's semantics as nixpkgs has them
(nixos/lib/test-driver/src/test_driver/machine/__init__.py, read at NixOS/nixpkgs 019697db;
the pin d6c71932 is not in the source index, see nix/tests/data/nixos-options.txt):
- `execute(cmd, timeout=900)` sends `timeout T bash -c 'set -euo pipefail; CMD' |
  (base64 -w 0; echo)` to the node's root shell, reads the base64 line, then sends
  `echo ${PIPESTATUS[0]}` and reads the exit status (124 when `timeout` killed it); stdout only.
- `succeed`/`fail` (timeout None by default) raise unless the status is 0 / non-zero.
- `wait_until_succeeds(cmd, timeout=900)` and `wait_for_open_port(port, addr="localhost",
  timeout=900)` (`nc -z ADDR PORT`) retry once a second, then try a last time and raise.
- `wait_for_unit(unit, timeout=900)` waits for the unit's service to run. There is no systemd
  in the guests: the unit is mapped to the guest role that serves it, from the node's NixOS role
  module (vms/<node>.nix): a target sshd instance is the guest's sshd running its base port's
  config (`sshd_<port>.conf`, crates/sshlab/src/vm/target.rs); any other unit is the guest's
  process running the unit's ExecStart program with the same first argument. A unit the node's
  module does not define fails at once, as systemd would report it inactive with no job.
- `start_all()` boots the three guests: `sshlab vm up --backend qemu --test-driver`, whose
  guests each serve the driver's root shell (test-instrumentation.nix's backdoor: bash in /tmp,
  stdin and stdout on a virtio channel) on `<runtime>/qemu/<vm>/shell.sock`; the target's shell
  runs in its sshd's mount namespace, where its accounts and files are. The lab's NIC is `eth1`,
  as on the test's VLAN 1.
- `machine.state_dir`: where the node's qemu runs (the driver's `vm-state-<node>`), here
  `<runtime>/qemu/<vm>`: the guest's control port (`control.sock`, vms/control.nix) is there.
- `subtest(name)` logs its start, end and time; an exception ends the test (exit 1).

Usage: vm-test-driver.py DRIVER_JSON --sshlab BIN --runtime DIR -- VM_UP_ARGS...
"""

import argparse
import base64
import contextlib
import json
import linecache
import os
import pathlib
import shlex
import socket
import subprocess
import sys
import time
import traceback


class RequestedAssertionFailed(AssertionError):
    """A check of the test script failed (the driver's own exception name)."""


def log(msg):
    print(f"[driver] {msg}", flush=True)


def retry(fn, timeout_seconds=900):
    """The driver's retry: fn(False) once a second until it holds or time is up, then
    fn(True) a last time."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_seconds:
        if fn(False):
            return
        time.sleep(1)
    elapsed = time.monotonic() - start
    if not fn(True):
        raise RequestedAssertionFailed(
            f"action timed out after {elapsed:.2f} seconds (timeout={timeout_seconds})"
        )


class Machine:
    """One node of the test: the guest of the VM of the same name."""

    READY = b"Spawning backdoor root shell..."

    def __init__(self, name, state_dir, units):
        self.name = name
        # The driver runs each node's qemu in its state_dir; the qemu backend runs each
        # guest's in `<runtime>/qemu/<vm>`, where its sockets are.
        self.state_dir = state_dir
        self.socket_path = str(state_dir / "shell.sock")
        self.units = units
        self.shell = None
        self.buffer = b""

    def __repr__(self):
        return f"<Machine '{self.name}'>"

    def log(self, msg):
        log(f"{self.name}: {msg}")

    def _read_line(self):
        while b"\n" not in self.buffer:
            chunk = self.shell.recv(4096)
            if not chunk:
                raise RuntimeError(f"{self.name}: the guest's shell disconnected")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def connect(self):
        """Connects to the guest's root shell. The shell said it is ready when it started,
        possibly before this connection; a sync line makes sure both ends agree on where the
        protocol starts."""
        if self.shell is not None:
            return
        tic = time.monotonic()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.socket_path)
        self.shell = s
        token = f"sshlab-driver-sync-{os.getpid()}-{time.monotonic_ns()}"
        s.sendall(f"echo {token}\n".encode())
        # As the driver, say so every 30 s; unlike it, give up after 5 minutes.
        s.settimeout(30)
        for _ in range(10):
            try:
                while self._read_line().strip() != token.encode():
                    pass
                break
            except TimeoutError:
                self.log("guest root shell did not produce any data yet... (see its console log)")
        else:
            raise RuntimeError(f"{self.name}: no answer from the guest's root shell")
        s.settimeout(None)
        self.log(f"connected to the guest root shell ({time.monotonic() - tic:.2f} s)")

    def start(self):
        """The guests are started together by start_all() (one `vm up`)."""
        if not Driver.started:
            start_all()

    def execute(self, command, check_return=True, check_output=True, timeout=900):
        self.start()
        self.connect()
        command = f"set -euo pipefail; {command}"
        timeout_str = f"timeout {timeout}" if timeout is not None else ""
        out_command = f"{timeout_str} bash -c {shlex.quote(command)} | (base64 -w 0; echo)\n"
        self.shell.sendall(out_command.encode())
        if not check_output:
            return (-2, "")
        output = base64.b64decode(self._read_line())
        if not check_return:
            return (-1, output.decode())
        self.shell.sendall(b"echo ${PIPESTATUS[0]}\n")
        rc = int(self._read_line().strip())
        return (rc, output.decode(errors="replace"))

    def succeed(self, *commands, timeout=None):
        output = ""
        for command in commands:
            self.log(f"must succeed: {command}")
            status, out = self.execute(command, timeout=timeout)
            if status != 0:
                self.log(f"output: {out}")
                raise RequestedAssertionFailed(
                    f"command `{command}` failed (exit code {status})"
                )
            output += out
        return output

    def fail(self, *commands, timeout=None):
        output = ""
        for command in commands:
            self.log(f"must fail: {command}")
            status, out = self.execute(command, timeout=timeout)
            if status == 0:
                raise RequestedAssertionFailed(f"command `{command}` unexpectedly succeeded")
            output += out
        return output

    def wait_until_succeeds(self, command, timeout=900):
        output = ""

        def check_success(_last_try):
            nonlocal output
            status, output = self.execute(command, timeout=timeout)
            return status == 0

        self.log(f"waiting for success: {command}")
        retry(check_success, timeout)
        return output

    def wait_for_open_port(self, port, addr="localhost", timeout=900):
        def port_is_open(_last_try):
            status, _ = self.execute(f"nc -z {addr} {port}")
            return status == 0

        self.log(f"waiting for TCP port {port} on {addr}")
        retry(port_is_open, timeout)

    def role_pattern(self, unit):
        """The `pgrep -f` pattern of the guest role that serves `unit` (see the module doc)."""
        name = unit[: -len(".service")] if unit.endswith(".service") else unit
        u = self.units.get(name)
        if u is None or u["node"] != self.name:
            raise RequestedAssertionFailed(
                f'unit "{unit}" is inactive and there are no pending jobs '
                f"(vms/{self.name}.nix defines no such service)"
            )
        if u["port"] is not None:
            return f"sshd_{u['port']}\\.conf"
        if u["program"] is None:
            raise RequestedAssertionFailed(f'unit "{unit}" has no ExecStart to map to a role')
        first = f" {u['firstArg']}" if u["firstArg"] else ""
        return f"{u['program']}{first}"

    def wait_for_unit(self, unit, user=None, timeout=900):
        assert user is None, "user units are not modelled"
        pattern = self.role_pattern(unit)

        def check_active(_last_try):
            status, _ = self.execute(f"pgrep -f -- {shlex.quote(pattern)} >/dev/null")
            return status == 0

        self.log(f"waiting for unit {unit} (the guest's `{pattern}`)")
        retry(check_active, timeout)


class Driver:
    started = False
    sshlab = None
    vm_up = []
    machines = []


def start_all():
    if Driver.started:
        return
    log("start_all: " + shlex.join([Driver.sshlab, *Driver.vm_up]))
    tic = time.monotonic()
    subprocess.run([Driver.sshlab, *Driver.vm_up], check=True)
    Driver.started = True
    log(f"start_all: the three guests are up ({time.monotonic() - tic:.1f} s)")


@contextlib.contextmanager
def subtest(name):
    log(f"subtest: {name}")
    tic = time.monotonic()
    try:
        yield
    except Exception:
        log(f"subtest failed after {time.monotonic() - tic:.1f} s: {name}")
        raise
    log(f"subtest ok ({time.monotonic() - tic:.1f} s): {name}")


def main():
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(usage=__doc__.splitlines()[-1])
    p.add_argument("driver_json")
    p.add_argument("--sshlab", required=True)
    p.add_argument("--runtime", required=True)
    a = p.parse_args(argv[:split])
    with open(a.driver_json) as f:
        d = json.load(f)
    Driver.sshlab = a.sshlab
    Driver.vm_up = argv[split + 1 :]
    machines = {
        n: Machine(n, pathlib.Path(a.runtime) / "qemu" / n, d["units"])
        for n in d["nodes"]
    }
    Driver.machines = list(machines.values())
    env = dict(machines)
    env.update(
        start_all=start_all,
        subtest=subtest,
        machines=Driver.machines,
        RequestedAssertionFailed=RequestedAssertionFailed,
    )
    # Tracebacks show the script's own lines.
    src = d["testScript"]
    linecache.cache["testScript"] = (len(src), None, src.splitlines(True), "testScript")
    tic = time.monotonic()
    try:
        exec(compile(src, "testScript", "exec"), env)
    except Exception:
        traceback.print_exc()
        log(f"test script failed after {time.monotonic() - tic:.1f} s")
        return 1
    log(f"test script finished in {time.monotonic() - tic:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
