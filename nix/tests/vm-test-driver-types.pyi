# What the NixOS test driver gives a test script, typed as nixpkgs declares it
# (nixos/lib/test-driver/src/test_driver/machine/__init__.py, read at NixOS/nixpkgs 019697db).
# The driver type-checks the script with mypy when it builds the test (runNixOSTest without
# skipTypeCheck): scripts/nix-check runs mypy on the script with these declarations, so an
# error that only the build would see fails here too. The nodes (`target: Machine`, ...) are
# declared there, from the test's own node names.
from contextlib import AbstractContextManager
from pathlib import Path

class Machine:
    name: str
    state_dir: Path
    def execute(
        self,
        command: str,
        check_return: bool = True,
        check_output: bool = True,
        timeout: int | None = 900,
    ) -> tuple[int, str]: ...
    def succeed(self, *commands: str, timeout: int | None = None) -> str: ...
    def fail(self, *commands: str, timeout: int | None = None) -> str: ...
    def wait_until_succeeds(self, command: str, timeout: int = 900) -> str: ...
    def wait_for_open_port(
        self, port: int, addr: str = "localhost", timeout: int = 900
    ) -> None: ...
    def wait_for_unit(
        self, unit: str, user: str | None = None, timeout: int = 900
    ) -> None: ...

def start_all() -> None: ...
def subtest(name: str) -> AbstractContextManager[None]: ...
