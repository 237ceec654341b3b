"""Describe one file as the baseline records it: type, owner, mode, inode, size, digest.

A record is a flat dict of JSON values, so two records compare attribute by attribute. The
file is read with `lstat`: a symlink is recorded as `type` "symlink" with `link_target`, and
the file it resolves to is recorded under keys prefixed with `target.`. A missing path is
`{"type": "missing"}`. An ELF file also gets its GNU `build_id`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from mosquitto_guard.inventory.elf import ElfError, read_build_id

Record = dict[str, str | int | None]

ELF_MAGIC = b"\x7fELF"
TARGET_PREFIX = "target."


def record_file(path: Path) -> Record:
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
    resolved = Path(os.path.realpath(path))
    try:
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


def _metadata(kind: str, info: os.stat_result) -> Record:
    return {
        "type": kind,
        "mode": f"{stat.S_IMODE(info.st_mode):04o}",
        "uid": info.st_uid,
        "gid": info.st_gid,
        "inode": info.st_ino,
    }


def _describe(path: Path, info: os.stat_result) -> Record:
    """Describe the file `info` belongs to; only regular files are read."""
    if stat.S_ISDIR(info.st_mode):
        return _metadata("directory", info)
    if not stat.S_ISREG(info.st_mode):
        return _metadata("other", info)
    record = _metadata("file", info)
    try:
        digest, size, magic = _hash(path)
    except OSError as error:
        record["error"] = error.strerror
        return record
    record["sha256"] = digest
    record["size"] = size
    if magic == ELF_MAGIC:
        try:
            record["build_id"] = read_build_id(path)
        except ElfError as error:
            record["build_id_error"] = error.message
    return record


def _hash(path: Path) -> tuple[str, int, bytes]:
    # O_NOFOLLOW: a symlink swapped in after the lstat is not followed here.
    digest = hashlib.sha256()
    size = 0
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        magic = handle.read(4)
        digest.update(magic)
        size += len(magic)
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size, magic
