"""Describe one file as the baseline records it: type, owner, mode, inode, size, digest.

A record is a flat dict of JSON values, so two records compare attribute by attribute. The
file is read with `lstat`: a symlink is recorded as `type` "symlink" with `link_target`, and
the file it resolves to is recorded under keys prefixed with `target.`. A missing path is
`{"type": "missing"}`. An ELF file also gets its GNU `build_id`.

`ctime` (nanoseconds) is recorded so that `check --fast` can trust a file whose ctime, inode
and size are unchanged without reading it. The kernel sets ctime on every write, chmod, chown
and rename of the inode, and a process cannot set it back without changing the clock.
"""

from __future__ import annotations

import hashlib
import os
import stat
from operator import itemgetter
from pathlib import Path

from mosquitto_guard.inventory.elf import ElfError, read_build_id

Record = dict[str, str | int | None]

ELF_MAGIC = b"\x7fELF"
TARGET_PREFIX = "target."
_CHUNK = 1 << 20
# The recorded text of each permission mode, looked up rather than formatted for each file.
_MODE_TEXT = tuple(f"{mode:04o}" for mode in range(0o10000))
# Reads of a file that keeps changing before it is recorded with an error.
_ATTEMPTS = 3
# The recorded attributes `is_unchanged` compares with fresh stat data, in this order.
_STAT_FIELDS = ("type", "ctime", "inode", "size", "mode", "uid", "gid")
_STAT_KEYS = {
    prefix: itemgetter(*(prefix + field for field in _STAT_FIELDS))
    for prefix in ("", TARGET_PREFIX)
}


def record_file(path: Path | str) -> Record:
    """Return the record of `path`; a file that cannot be read has an `error` attribute."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return {"type": "missing"}
    except OSError as error:
        return {"type": "unreadable", "error": error.strerror}
    if not stat.S_ISLNK(info.st_mode):
        return _describe(path, info)
    record = _metadata("symlink", info)
    try:
        record["link_target"] = os.readlink(path)
    except OSError as error:
        record["error"] = error.strerror
    try:
        resolved = Path(os.path.realpath(path))
        target_info = os.stat(resolved)
    except FileNotFoundError:
        target: Record = {"type": "missing"}
    except OSError as error:
        target = {"type": "unreadable", "error": error.strerror}
    else:
        target = _describe(resolved, target_info)
    for key, value in target.items():
        record[TARGET_PREFIX + key] = value
    return record


def is_unchanged(path: Path | str, known: Record) -> bool:
    """Return True when the stat data of `path` shows it unchanged since `known`.

    A regular file is unchanged when its type, ctime, inode, size, mode and owner all equal
    `known`'s. A symlink is unchanged when its own ctime and inode and its target's stat data
    are. The content is not read: `check --fast` trusts the digest in `known`.
    """
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(info.st_mode):
        return known.get("type") == "symlink" and _link_unchanged(path, known, info)
    return _unchanged(known, info, "")


def _unchanged(known: Record, info: os.stat_result, prefix: str) -> bool:
    """Return True when `info` is a regular file whose stat data matches `known` (under
    `prefix`), so its recorded digest can be trusted."""
    if not stat.S_ISREG(info.st_mode) or prefix + "error" in known:
        return False
    try:
        recorded: tuple[object, ...] = _STAT_KEYS[prefix](known)
    except KeyError:
        return False
    return recorded == (
        "file",
        info.st_ctime_ns,
        info.st_ino,
        info.st_size,
        _MODE_TEXT[stat.S_IMODE(info.st_mode)],
        info.st_uid,
        info.st_gid,
    )


def _link_unchanged(path: Path | str, known: Record, info: os.stat_result) -> bool:
    if known.get("ctime") != info.st_ctime_ns or known.get("inode") != info.st_ino:
        return False
    try:
        target = os.stat(os.path.realpath(path))
    except (OSError, ValueError):
        return False
    return _unchanged(known, target, TARGET_PREFIX)


def _metadata(kind: str, info: os.stat_result) -> Record:
    return {
        "type": kind,
        "mode": _MODE_TEXT[stat.S_IMODE(info.st_mode)],
        "uid": info.st_uid,
        "gid": info.st_gid,
        "inode": info.st_ino,
        "ctime": info.st_ctime_ns,
    }


def _describe(path: Path | str, info: os.stat_result) -> Record:
    """Describe the file `info` belongs to; only regular files are read."""
    if stat.S_ISDIR(info.st_mode):
        return _metadata("directory", info)
    if not stat.S_ISREG(info.st_mode):
        return _metadata("other", info)
    for _ in range(_ATTEMPTS):
        # O_NOFOLLOW: a symlink swapped in after the lstat is not followed here.
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            return _failed(info, error.strerror)
        try:
            record = _read_open_file(descriptor)
        except OSError as error:
            return _failed(info, error.strerror)
        finally:
            os.close(descriptor)
        if record is not None:
            return record
    return _failed(info, "changed each time it was read")


def _read_open_file(descriptor: int) -> Record | None:
    """Describe the open file: stat data, digest and build id all from this one descriptor.

    Returns None when the file changed while it was read (its ctime moved), so the caller
    reads it again.
    """
    before = os.fstat(descriptor)
    if not stat.S_ISREG(before.st_mode):
        return _metadata("other", before)
    digest, size, magic = _hash(descriptor)
    if os.fstat(descriptor).st_ctime_ns != before.st_ctime_ns:
        return None
    record = _metadata("file", before)
    record["sha256"] = digest
    record["size"] = size
    if magic == ELF_MAGIC:
        try:
            record["build_id"] = read_build_id(Path(f"/proc/self/fd/{descriptor}"))
        except ElfError as error:
            record["build_id_error"] = error.message
    return record


def _failed(info: os.stat_result, reason: str | None) -> Record:
    record = _metadata("file", info)
    record["error"] = reason
    return record


def _hash(descriptor: int) -> tuple[str, int, bytes]:
    """Return the SHA-256, the size and the first four bytes of the open file."""
    # Plain os.read calls, without a buffered file object, keep the cost per small file low.
    digest = hashlib.sha256()
    chunk = os.read(descriptor, _CHUNK)
    magic = chunk[:4]
    size = 0
    while chunk:
        digest.update(chunk)
        size += len(chunk)
        chunk = os.read(descriptor, _CHUNK)
    return digest.hexdigest(), size, magic
