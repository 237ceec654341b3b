"""A private mount namespace in which every directory the broker may write is mounted noexec.

Landlock's execute right covers `execve` only. A plugin that writes a shared object into a
writable directory can still `dlopen` it, because mapping a file as code is not an exec. On a
mount with the noexec flag the kernel refuses `mmap(PROT_EXEC)` of any file, so nothing the
broker writes can ever run as code.

`mount_noexec(paths)` makes the process's mount namespace private, then bind-mounts each path
onto itself with noexec, nosuid and nodev. Other processes keep the host's mounts. New mounts
on the host still reach the namespace (it is a slave of the host), while the namespace's own
mounts never leak out. Read-only mounts stay read-only.

Python 3.11 has no `os.unshare` and no `mount`, so both are called through `ctypes`; no
maintained package wraps them.

NOTE: this needs CAP_SYS_ADMIN, which a launcher started as root has. Call it before Landlock,
which forbids mounting once applied.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mosquitto_guard.errors import HostError

_CLONE_NEWNS = 0x00020000
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_SLAVE = 1 << 19


@dataclass(frozen=True)
class MountReport:
    """The paths mounted noexec, and those that already were (where nothing needed doing)."""

    mounted: tuple[Path, ...]
    already: tuple[Path, ...]


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise HostError(f"{what} failed: {os.strerror(error)}")


def is_noexec(path: Path) -> bool:
    """Return True when `path` is on a mount that forbids executing and mapping code."""
    return bool(os.statvfs(path).f_flag & os.ST_NOEXEC)


def mount_noexec(paths: Sequence[Path]) -> MountReport:
    """Enter a private mount namespace and bind-mount each path onto itself, noexec.

    Raises `HostError` when the namespace or a mount cannot be made; the namespace may then
    already be private, which changes nothing for other processes.
    """
    pending = [path for path in paths if not is_noexec(path)]
    already = tuple(path for path in paths if path not in pending)
    if not pending:
        return MountReport(mounted=(), already=already)
    lib = _lib()
    ctypes.set_errno(0)
    _check(lib.unshare(_CLONE_NEWNS), "creating a private mount namespace")
    _check(
        lib.mount(None, b"/", None, _MS_REC | _MS_SLAVE, None),
        "making the mount namespace private",
    )
    for path in pending:
        target = os.fsencode(path)
        read_only = os.statvfs(path).f_flag & os.ST_RDONLY
        flags = _MS_BIND | _MS_REMOUNT | _MS_NOEXEC | _MS_NOSUID | _MS_NODEV
        if read_only:
            flags |= _MS_RDONLY
        _check(lib.mount(target, target, None, _MS_BIND, None), f"bind-mounting {path}")
        _check(lib.mount(None, target, None, flags, None), f"mounting {path} noexec")
    return MountReport(mounted=tuple(pending), already=already)
