"""noexec mounts: a shared object written into a writable directory can no longer be mapped.

Each test mounts in a forked child's private mount namespace, so the host's mounts never change;
one test checks that from the parent.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_child import run_in_child
from support import compile_plugin

from mosquitto_guard.sandbox.mounts import is_noexec, mount_noexec


@pytest.fixture
def area() -> Iterator[Path]:
    """A directory on a normal (exec) mount, holding a compiled shared object."""
    base = Path(tempfile.mkdtemp(prefix="noexec-", dir="/var/tmp"))
    compile_plugin("marker.c", base / "payload.so")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def dlopen_outcome(path: Path) -> str:
    try:
        ctypes.CDLL(str(path))
    except OSError as error:
        return str(error)
    return "loaded"


def test_library_loads_before_the_mount(area: Path) -> None:
    assert not is_noexec(area)
    out = run_in_child(lambda: {}, lambda _: dlopen_outcome(area / "payload.so"))
    assert out["result"] == "loaded"


def test_written_library_cannot_be_mapped(area: Path) -> None:
    def confine() -> dict[str, object]:
        report = mount_noexec([area])
        return {"mounted": [str(p) for p in report.mounted], "noexec": is_noexec(area)}

    out = run_in_child(confine, lambda _: dlopen_outcome(area / "payload.so"))
    assert out["report"] == {"mounted": [str(area)], "noexec": True}
    assert "failed to map segment" in out["result"]


def test_files_stay_writable_and_host_unchanged(area: Path) -> None:
    def probe(_: int) -> str:
        (area / "written.txt").write_text("still writable")
        return (area / "written.txt").read_text()

    out = run_in_child(lambda: {"mounted": len(mount_noexec([area]).mounted)}, probe)
    assert out["result"] == "still writable"
    assert not is_noexec(area), "the child's mount leaked into the host's namespace"
    assert str(area) not in Path("/proc/self/mountinfo").read_text()


def test_already_noexec_path_needs_no_namespace(area: Path) -> None:
    def confine() -> dict[str, object]:
        first = mount_noexec([area])
        second = mount_noexec([area])
        return {"first": len(first.mounted), "already": [str(p) for p in second.already]}

    out = run_in_child(confine, lambda _: os.getpid())
    assert out["report"] == {"first": 1, "already": [str(area)]}


def test_second_mount_of_directory_is_noexec_too(area: Path) -> None:
    """A bind mount elsewhere would let a plugin map through it what it wrote through the first."""
    data, alias = area / "data", area / "alias"
    data.mkdir()
    alias.mkdir()
    shutil.copy(area / "payload.so", data / "payload.so")
    # A second copy for the check before the mount: dlopen would reuse a loaded path.
    shutil.copy(area / "payload.so", data / "before.so")

    def confine() -> dict[str, object]:
        libc = ctypes.CDLL(None, use_errno=True)
        # A namespace of the test's own, so that the bind mount stays out of the host's.
        assert libc.unshare(0x00020000) == 0
        assert libc.mount(None, b"/", None, (1 << 14) | (1 << 18), None) == 0
        assert libc.mount(os.fsencode(data), os.fsencode(alias), None, 4096, None) == 0
        before = dlopen_outcome(alias / "before.so")
        report = mount_noexec([data])
        return {"before": before, "mounted": [str(p) for p in report.mounted]}

    out = run_in_child(confine, lambda _: dlopen_outcome(alias / "payload.so"))
    assert out["report"] == {"before": "loaded", "mounted": [str(data), str(alias)]}
    assert "failed to map segment" in out["result"]
