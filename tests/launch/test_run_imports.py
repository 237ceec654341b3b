"""What `mosquitto-guard run` imports: nothing that only signing, key generation or the
inventory command needs, so that none of it slows down every broker start."""

from __future__ import annotations

import subprocess
import sys

from support import Guard

# Replaces os.execve, so the child lists its modules at the moment it would become the broker.
CHILD = """
import os
import sys

def report(*args):
    sys.stdout.write("\\n".join(sorted(sys.modules)) + "\\n")
    sys.stdout.flush()
    os._exit(0)

os.execve = report
from mosquitto_guard.cli import main
sys.exit(main(sys.argv[1:]))
"""

# Module prefixes a launch that verifies Ed25519 SSH signatures must not import.
NOT_AT_LAUNCH = (
    "elftools",  # build ids and `sign`'s symbol tables; the launch reads ELF with fastelf
    "minisign",
    "mosquitto_guard.signing.minisign",
    "cryptography.hazmat.primitives.serialization",
    "cryptography.hazmat.primitives.asymmetric.rsa",
    "cryptography.hazmat.primitives.asymmetric.ec",
    "tomli_w",
    "mosquitto_guard.cli.sign",
    "mosquitto_guard.cli.keygen",
)


def launch_modules(guard: Guard, *lines: str) -> list[str]:
    config = guard.config(*lines)
    argv = ["run", "--policy", str(guard.policy), "--", "-c", str(config)]
    result = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_run_imports_nothing_for_signing(guard: Guard) -> None:
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    modules = launch_modules(guard, f"plugin {plugin}")
    assert "mosquitto_guard.launch.runner" in modules
    unexpected = [name for name in modules if name.startswith(NOT_AT_LAUNCH)]
    assert unexpected == []
