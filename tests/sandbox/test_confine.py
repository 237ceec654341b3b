"""Applying a whole plan, and how the report reads when the kernel lacks a layer.

An older kernel cannot run here, so the tests that show one replace the function that reads
the Landlock ABI version: the kernel then gets the smaller ruleset an older kernel would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sandbox_child import run_in_child

from mosquitto_guard.sandbox import landlock
from mosquitto_guard.sandbox.confine import confine
from mosquitto_guard.sandbox.plan import SandboxPlan


def small_plan(tmp_path: Path) -> SandboxPlan:
    plan = SandboxPlan()
    plan.add("read", tmp_path, "a test directory")
    plan.add("bind", 18830, "a test port")
    return plan


def confined_lines(plan: SandboxPlan) -> dict[str, Any]:
    return run_in_child(lambda: {"lines": confine(plan).lines()}, lambda _: None)


def layer_line(lines: list[str], name: str) -> str:
    [line] = [line for line in lines if line.startswith(f"{name}: ")]
    return line


def test_every_layer_active_on_this_kernel(tmp_path: Path) -> None:
    lines = confined_lines(small_plan(tmp_path))["report"]["lines"]
    names = [line.split(":")[0] for line in lines]
    assert names == [
        "no_new_privs",
        "noexec",
        "capabilities",
        "landlock",
        "landlock-network",
        "landlock-scoping",
        "seccomp",
        "mdwe",
    ]
    assert all(": active: " in line for line in lines), lines


def test_older_abi_reports_missing_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(landlock, "landlock_abi", lambda: 3)
    lines = confined_lines(small_plan(tmp_path))["report"]["lines"]
    assert "this ABI cannot restrict fs.ioctl_dev" in layer_line(lines, "landlock")
    network = layer_line(lines, "landlock-network")
    assert network.startswith("landlock-network: NOT active: the kernel's Landlock ABI 3 lacks")
    assert network.endswith("fix: use Linux 6.7 or later")
    assert layer_line(lines, "landlock-scoping").endswith("fix: use Linux 6.12 or later")
    assert ": active: " in layer_line(lines, "seccomp")


def test_no_landlock_keeps_other_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(landlock, "landlock_abi", lambda: 0)
    lines = confined_lines(small_plan(tmp_path))["report"]["lines"]
    assert layer_line(lines, "landlock").startswith(
        "landlock: NOT active: the kernel does not support Landlock"
    )
    for name in ("no_new_privs", "capabilities", "seccomp", "mdwe"):
        assert ": active: " in layer_line(lines, name)


def test_refuses_while_threads_run(tmp_path: Path) -> None:
    import threading

    from mosquitto_guard.errors import HostError

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        with pytest.raises(HostError, match="single thread"):
            confine(small_plan(tmp_path))
    finally:
        stop.set()
        worker.join()
