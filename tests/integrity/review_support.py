"""Helpers of the review tests: child processes, atomic swaps, and an inotify trigger."""

from __future__ import annotations

import ctypes
import os
import resource
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

from baseline_setup import Setup
from support import c_string, compile_plugin

LIBC = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_EXCHANGE = 2
IN_CLOSE_NOWRITE = 0x10
IN_MOVED_TO = 0x80
TIMEOUT = 60


# Helpers.


def guard_cli(
    *args: str, timeout: float = TIMEOUT, limits: dict[int, int] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `mosquitto-guard ARGS` in a child process, with optional resource limits."""

    def apply_limits() -> None:
        for limit, value in (limits or {}).items():
            resource.setrlimit(limit, (value, value))

    return subprocess.run(
        [sys.executable, "-m", "mosquitto_guard", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=apply_limits if limits else None,
    )


def check_args(setup: Setup, *extra: str) -> list[str]:
    return ["check", *setup.target_args(), "--baseline", str(setup.baseline), *extra]


def restore_args(setup: Setup, *paths: Path) -> list[str]:
    return [
        "restore",
        "--policy",
        str(setup.guard.policy),
        "--baseline",
        str(setup.baseline),
        *(str(path) for path in paths),
    ]


def watch_paths(setup: Setup, *paths: Path) -> None:
    """Add `paths` to the policy's `[integrity] paths`."""
    quoted = ", ".join(f'"{path}"' for path in paths)
    with setup.guard.policy.open("a") as handle:
        handle.write(f"\n[integrity]\npaths = [{quoted}]\n")


def exchange(first: Path, second: Path) -> None:
    """Swap two directory entries atomically with renameat2(RENAME_EXCHANGE)."""
    result = LIBC.renameat2(
        AT_FDCWD, os.fsencode(str(first)), AT_FDCWD, os.fsencode(str(second)), RENAME_EXCHANGE
    )
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), str(first))


def keep_exchanging(first: Path, second: Path, stop: ProcessEvent) -> None:
    """Swap `first` and `second` until `stop` is set; runs in its own process."""
    while not stop.is_set():
        exchange(first, second)


class AfterFirstRead:
    """Run `action` in a thread as soon as a process closes `path` that it opened read-only.

    This is how an attacker with inotify learns that a checker has just read a file.
    """

    def __init__(self, path: Path, action: Callable[[], None]) -> None:
        self.action = action
        self.fired = threading.Event()
        self.stop = threading.Event()
        self.fd = LIBC.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        watch = LIBC.inotify_add_watch(self.fd, os.fsencode(str(path)), IN_CLOSE_NOWRITE)
        assert watch >= 0, os.strerror(ctypes.get_errno())
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self) -> None:
        while not self.stop.is_set():
            readable, _, _ = select.select([self.fd], [], [], 0.05)
            if readable:
                os.read(self.fd, 4096)
                self.action()
                self.fired.set()
                return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        os.close(self.fd)


def is_tmpfs(path: Path) -> bool:
    """Return True when `path` is the mount point of a tmpfs."""
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return any(line.split()[1] == str(path) and line.split()[2] == "tmpfs" for line in mounts)


def replace_content(path: Path, data: bytes) -> None:
    """Replace `path` with a new file holding `data`, keeping its mode, the way `mv` does."""
    temporary = path.with_name(f".{path.name}.swap")
    temporary.write_bytes(data)
    os.chmod(temporary, os.stat(path).st_mode & 0o7777)
    os.replace(temporary, path)


def build_marker(setup: Setup, output: Path, text: str) -> Path:
    mark = setup.root / "mark"
    defines = {"MARKER_FILE": c_string(str(mark)), "MARKER_TEXT": c_string(text)}
    output.parent.mkdir(parents=True, exist_ok=True)
    return compile_plugin("marker.c", output, defines)
