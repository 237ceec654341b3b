"""Landlock confinement: each confining test runs in a forked child, since it cannot be undone.

The child applies the rules, runs a probe and sends the probe's result back through a pipe as
JSON. Everything the probe needs is imported at the top of this module, because a confined child
may no longer be able to read Python's own files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_child import outcome, run_in_child

from mosquitto_guard.errors import HostError
from mosquitto_guard.sandbox import landlock
from mosquitto_guard.sandbox.landlock import (
    LandlockRules,
    apply_landlock,
    landlock_abi,
    rights_for_abi,
)

ABI = landlock_abi()

needs_landlock = pytest.mark.skipif(ABI < 1, reason="this kernel has no Landlock (ABI 0)")
needs_net = pytest.mark.skipif(ABI < 4, reason=f"TCP port rules need Landlock ABI 4; ABI {ABI}")
needs_scope = pytest.mark.skipif(ABI < 6, reason=f"scoping needs Landlock ABI 6; ABI {ABI}")


def confined(rules: LandlockRules, probe: Callable[[], Any]) -> dict[str, Any]:
    """Run `probe` in a forked child confined to `rules` and return the child's JSON message."""

    def confine() -> dict[str, Any]:
        report = apply_landlock(rules)
        return {"abi": report.abi, "missing": list(report.missing)}

    return run_in_child(confine, lambda _report_fd: probe())


@pytest.fixture
def area() -> Iterator[Path]:
    """A fresh directory with `allowed/`, `other/` and `rw/`, each containing `data.txt`."""
    base = Path(tempfile.mkdtemp(prefix="landlock-"))
    for name in ("allowed", "other", "rw"):
        (base / name).mkdir()
        (base / name / "data.txt").write_text(f"{name} data")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_abi_is_version_number() -> None:
    assert isinstance(ABI, int)
    assert ABI >= 0


@pytest.mark.parametrize(
    ("abi", "present", "absent"),
    [
        (1, {"fs.read_file", "fs.execute"}, {"fs.refer", "fs.truncate", "net.bind_tcp"}),
        (2, {"fs.refer"}, {"fs.truncate", "fs.ioctl_dev"}),
        (3, {"fs.truncate"}, {"fs.ioctl_dev", "net.connect_tcp"}),
        (4, {"net.bind_tcp", "net.connect_tcp"}, {"fs.ioctl_dev", "scope.signal"}),
        (5, {"fs.ioctl_dev"}, {"scope.signal", "scope.abstract_unix_socket"}),
        (6, {"scope.signal", "scope.abstract_unix_socket"}, set()),
    ],
)
def test_rights_for_older_abis(abi: int, present: set[str], absent: set[str]) -> None:
    active, missing = rights_for_abi(abi)
    assert present <= set(active)
    assert absent <= set(missing)
    assert not set(active) & set(missing)
    assert len(active) + len(missing) == 20


def test_rules_are_frozen_and_copied() -> None:
    paths = ["/etc"]
    rules = LandlockRules(read_only=paths, bind_tcp=[1883])  # type: ignore[arg-type]
    paths.append("/var")
    assert rules.read_only == (Path("/etc"),)
    assert rules.bind_tcp == (1883,)
    with pytest.raises(AttributeError):
        rules.bind_tcp = ()  # type: ignore[misc]


def test_rules_reject_bare_path_and_bad_port() -> None:
    with pytest.raises(TypeError):
        LandlockRules(read_only="/etc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="70000"):
        LandlockRules(bind_tcp=(70000,))


@needs_landlock
def test_apply_missing_path_names_it(area: Path) -> None:
    missing = area / "absent"
    out = confined(
        LandlockRules(read_only=(area / "allowed", missing)),
        lambda: (area / "other" / "data.txt").read_text(),
    )
    assert "report" not in out
    assert str(missing) in out["error"]


@needs_landlock
def test_report_lists_missing_rights(area: Path) -> None:
    out = confined(LandlockRules(read_only=(area / "allowed",)), lambda: None)
    assert out["report"]["abi"] == ABI
    assert out["report"]["missing"] == list(rights_for_abi(ABI)[1])
    if ABI >= 6:
        assert out["report"]["missing"] == []


def test_apply_without_landlock_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(landlock, "landlock_abi", lambda: 0)
    with pytest.raises(HostError, match="does not support Landlock"):
        apply_landlock(LandlockRules())


@needs_landlock
def test_read_only_allowed_paths(area: Path) -> None:
    def probe() -> dict[str, str]:
        return {
            "allowed": (area / "allowed" / "data.txt").read_text(),
            "other": outcome(lambda: (area / "other" / "data.txt").read_text()),
            "list_other": outcome(lambda: os.listdir(area / "other")),
            "shadow": outcome(lambda: Path("/etc/shadow").read_bytes()),
            "single_file": (area / "rw" / "data.txt").read_text(),
        }

    single = area / "rw" / "data.txt"
    out = confined(LandlockRules(read_only=(area / "allowed", single)), probe)
    assert out["result"] == {
        "allowed": "allowed data",
        "other": "EACCES",
        "list_other": "EACCES",
        "shadow": "EACCES",
        "single_file": "rw data",
    }


@needs_landlock
def test_write_only_read_write_paths(area: Path) -> None:
    def probe() -> dict[str, str]:
        return {
            "new_in_rw": outcome(lambda: (area / "rw" / "new.txt").write_text("x")),
            "overwrite_in_rw": outcome(lambda: (area / "rw" / "data.txt").write_text("y")),
            "remove_in_rw": outcome(lambda: (area / "rw" / "new.txt").unlink()),
            "write_read_only": outcome(lambda: (area / "allowed" / "data.txt").write_text("z")),
            "create_read_only": outcome(lambda: (area / "allowed" / "new.txt").write_text("z")),
            "create_elsewhere": outcome(lambda: (area / "other" / "new.txt").write_text("z")),
        }

    out = confined(LandlockRules(read_only=(area / "allowed",), read_write=(area / "rw",)), probe)
    assert out["result"] == {
        "new_in_rw": "ok",
        "overwrite_in_rw": "ok",
        "remove_in_rw": "ok",
        "write_read_only": "EACCES",
        "create_read_only": "EACCES",
        "create_elsewhere": "EACCES",
    }
    assert (area / "allowed" / "data.txt").read_text() == "allowed data"
    assert not (area / "other" / "new.txt").exists()


@needs_landlock
def test_execute_only_executable_paths(area: Path) -> None:
    true = shutil.which("true")
    assert true is not None
    copy = area / "allowed" / "true"
    shutil.copy2(os.path.realpath(true), copy)
    system = tuple(Path(p) for p in ("/usr", "/bin", "/lib", "/lib64", "/etc") if Path(p).exists())

    def probe() -> dict[str, str]:
        return {
            "system": outcome(lambda: subprocess.run([true], check=True)),
            "copy": outcome(lambda: subprocess.run([str(copy)], check=True)),
        }

    out = confined(LandlockRules(read_only=(area / "allowed",), executable=system), probe)
    assert out["result"] == {"system": "ok", "copy": "EACCES"}


@needs_landlock
def test_library_loads_from_read_only_path(area: Path) -> None:
    name = ctypes.util.find_library("z") or ctypes.util.find_library("m")
    assert name is not None
    machine = os.uname().machine
    folders = ("/lib", "/usr/lib", "/lib64", "/usr/lib64", f"/usr/lib/{machine}-linux-gnu")
    candidates = [Path(folder) / name for folder in folders]
    found = [path for path in candidates if path.exists()]
    assert found, f"{name} not found in {folders}"
    for folder in ("allowed", "other"):
        shutil.copy2(os.path.realpath(found[0]), area / folder / name)

    def probe() -> dict[str, str]:
        return {
            "read_only": outcome(lambda: ctypes.CDLL(str(area / "allowed" / name))),
            "denied": outcome(lambda: ctypes.CDLL(str(area / "other" / name))),
        }

    out = confined(LandlockRules(read_only=(area / "allowed",)), probe)
    assert out["result"]["read_only"] == "ok"
    assert out["result"]["denied"] != "ok"


def _bind(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def _connect(port: int) -> None:
    # Not `socket.create_connection`, because its `getaddrinfo` imports the idna codec on first
    # use, which reads a file that the rules deny.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@needs_net
def test_bind_only_listed_ports() -> None:
    listed, unlisted = _free_ports(2)
    out = confined(
        LandlockRules(bind_tcp=(listed,)),
        lambda: {
            "listed": outcome(lambda: _bind(listed)),
            "unlisted": outcome(lambda: _bind(unlisted)),
        },
    )
    assert out["result"] == {"listed": "ok", "unlisted": "EACCES"}


@needs_net
def test_connect_only_listed_ports() -> None:
    listeners = []
    try:
        for _ in range(2):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sock.listen(4)
            listeners.append(sock)
        listed, unlisted = (int(sock.getsockname()[1]) for sock in listeners)
        out = confined(
            LandlockRules(connect_tcp=(listed,)),
            lambda: {
                "listed": outcome(lambda: _connect(listed)),
                "unlisted": outcome(lambda: _connect(unlisted)),
            },
        )
    finally:
        for sock in listeners:
            sock.close()
    assert out["result"] == {"listed": "ok", "unlisted": "EACCES"}


@needs_scope
def test_signal_outside_domain_denied() -> None:
    outside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:

        def probe() -> dict[str, str]:
            return {
                "outside": outcome(lambda: os.kill(outside.pid, 0)),
                "parent": outcome(lambda: os.kill(os.getppid(), 0)),
                "itself": outcome(lambda: os.kill(os.getpid(), 0)),
            }

        out = confined(LandlockRules(), probe)
    finally:
        outside.send_signal(signal.SIGKILL)
        outside.wait()
    assert out["result"] == {"outside": "EPERM", "parent": "EPERM", "itself": "ok"}


@needs_scope
def test_abstract_socket_outside_domain_denied() -> None:
    name = f"\0mosquitto-guard-landlock-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen(1)

        def probe() -> str:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                return outcome(lambda: client.connect(name))

        out = confined(LandlockRules(), probe)
    assert out["result"] == "EPERM"
