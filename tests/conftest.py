"""Fixtures shared by the whole suite. The helpers they use live in `support.py`."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import SAFE_BASE, Guard, free_port, stop_process


@pytest.fixture(scope="session", autouse=True)
def remove_safe_base() -> Iterator[None]:
    """Remove the shared parent of the `safe_dir` directories once the session ends."""
    yield
    with contextlib.suppress(OSError):
        SAFE_BASE.rmdir()  # only when empty: another test run may be using it


@pytest.fixture
def safe_dir() -> Iterator[Path]:
    """A fresh root-owned directory, mode 0755, on a path that passes the ownership checks."""
    SAFE_BASE.mkdir(mode=0o755, exist_ok=True)
    os.chmod(SAFE_BASE, 0o755)
    directory = Path(tempfile.mkdtemp(dir=SAFE_BASE))
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """A list of processes that are stopped when the test ends, whatever its outcome."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop_process(process)


@pytest.fixture
def guard(safe_dir: Path) -> Guard:
    """A policy trusting one SSH key `alice`, with an empty manifest directory."""
    setup = Guard(root=safe_dir, port=free_port())
    for name in ("keys", "manifests", "state", "plugins"):
        (safe_dir / name).mkdir(mode=0o755)
    setup.keygen("alice")
    setup.write_policy(["alice"])
    return setup
