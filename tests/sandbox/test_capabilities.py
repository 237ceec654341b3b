"""The capability bounding set: what a root process keeps after `limit_capabilities`.

The child drops capabilities, then execs a program, which is where the bounding set takes
effect for a root process, and reads that program's own capability sets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sandbox_child import run_in_child

from mosquitto_guard.sandbox.capabilities import CAPABILITIES, bounding_set, limit_capabilities

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping capabilities needs root")


def status_capabilities(text: str) -> dict[str, int]:
    return {
        line.split(":")[0]: int(line.split()[1], 16)
        for line in text.splitlines()
        if line.startswith("Cap")
    }


def bit(name: str) -> int:
    return 1 << CAPABILITIES.index(name)


@needs_root
def test_exec_keeps_only_the_listed_capabilities() -> None:
    def probe(_: int) -> dict[str, int]:
        shown = subprocess.run(
            ["cat", "/proc/self/status"], capture_output=True, text=True, check=True
        ).stdout
        return status_capabilities(shown)

    out = run_in_child(lambda: {"kept": list(limit_capabilities(["CAP_SETUID"]).kept)}, probe)
    assert out["report"] == {"kept": ["CAP_SETUID"]}
    assert out["result"]["CapBnd"] == bit("CAP_SETUID")
    assert out["result"]["CapEff"] == bit("CAP_SETUID")
    assert out["result"]["CapInh"] == 0
    assert out["result"]["CapAmb"] == 0


@needs_root
def test_root_without_capabilities_cannot_read_others_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("owned by nobody")
    os.chown(secret, 65534, 65534)
    os.chmod(secret, 0o600)
    reader = [sys.executable, "-I", "-c", f"open({str(secret)!r}).read()"]

    def probe(_: int) -> int:
        return subprocess.run(reader, capture_output=True, check=False).returncode

    before = run_in_child(lambda: {}, probe)
    after = run_in_child(lambda: {"kept": list(limit_capabilities([]).kept)}, probe)
    assert before["result"] == 0
    assert after["report"] == {"kept": []}
    assert after["result"] == 1


def test_unknown_capability_is_refused() -> None:
    with pytest.raises(ValueError, match="CAP_EVERYTHING"):
        limit_capabilities(["CAP_EVERYTHING"])


@needs_root
def test_bounding_set_reads_this_process() -> None:
    assert "CAP_SYS_ADMIN" in bounding_set()
