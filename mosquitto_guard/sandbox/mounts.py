"""A private mount namespace in which every directory the broker may write is mounted noexec.

Landlock's execute right covers `execve` only. A plugin that writes a shared object into a
writable directory can still `dlopen` it, because mapping a file as code is not an exec. On a
mount with the noexec flag the kernel refuses `mmap(PROT_EXEC)` of any file, so nothing the
broker writes can ever run as code.

`mount_noexec(paths)` makes the process's mount namespace private, then bind-mounts each path
onto itself with noexec, nosuid and nodev. A directory can also be reachable through another
mount of the same file system, such as a bind mount of a data disk. Each such alias is
mounted noexec too, or a plugin could write a library through one path and map it through the
other. Other processes keep the host's mounts. New mounts
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
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mosquitto_guard.errors import HostError
from mosquitto_guard.sandbox.libc import libc

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
class _Mount:
    device: str
    root: str
    point: str


def _unescape(field: str) -> str:
    """Decode the octal escapes (`\\040` for a space) of a /proc/self/mountinfo field."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def _mounts() -> list[_Mount]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mounts.append(_Mount(fields[2], _unescape(fields[3]), _unescape(fields[4])))
    return mounts


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def aliases(path: Path) -> list[Path]:
    """Return every path at which the directory `path` is mounted, `path` itself included."""
    real = os.path.realpath(path)
    mounts = _mounts()
    holders = [mount for mount in mounts if _inside(real, mount.point)]
    if not holders:
        return [Path(real)]
    holder = max(holders, key=lambda mount: len(mount.point))
    # The directory's path inside its file system, as the mount table's root field writes it.
    inner = holder.root.rstrip("/") + real[len(holder.point.rstrip("/")) :]
    found = [Path(real)]
    for mount in mounts:
        if mount.device != holder.device or not _inside(inner, mount.root):
            continue
        alias = Path(mount.point.rstrip("/") + inner[len(mount.root.rstrip("/")) :])
        if alias not in found and os.path.lexists(alias):
            found.append(alias)
    return found


@dataclass(frozen=True)
class MountReport:
    """The paths mounted noexec, and those that already were (where nothing needed doing)."""

    mounted: tuple[Path, ...]
    already: tuple[Path, ...]


def _check(result: int, action: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise HostError(f"{action} failed: {os.strerror(error)}")


def is_noexec(path: Path) -> bool:
    """Return True when `path` is on a mount that forbids executing and mapping code."""
    return bool(os.statvfs(path).f_flag & os.ST_NOEXEC)


def mount_noexec(paths: Sequence[Path]) -> MountReport:
    """Enter a private mount namespace and bind-mount each path onto itself, noexec.

    Raises `HostError` when the namespace or a mount cannot be made; the namespace may then
    already be private, which changes nothing for other processes.
    """
    every = [alias for path in paths for alias in aliases(path)]
    every = list(dict.fromkeys(every))
    pending = [path for path in every if not is_noexec(path)]
    already = tuple(path for path in every if path not in pending)
    if not pending:
        return MountReport(mounted=(), already=already)
    lib = libc()
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
