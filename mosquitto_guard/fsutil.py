"""File helpers shared by every module that writes: atomic replacement and bounded reads."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from mosquitto_guard.errors import HostError, VerificationError


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one.

    The bytes go to a temporary file in the same directory, are flushed with fsync, and replace
    the target with `os.replace`. The directory is then synced, so the rename survives a crash.
    Raises `HostError` when the directory is missing or not writable.
    """
    directory = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except FileNotFoundError as error:
        raise HostError(
            f"cannot write {path}: directory {directory} does not exist",
            fix=f"create it first: install -d -m 0700 {directory}",
        ) from error
    except OSError as error:
        raise HostError(f"cannot write {path}: {error.strerror}") from error
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise HostError(f"cannot write {path}: {error.strerror}") from error
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    sync_directory(directory)


def sync_directory(directory: Path) -> None:
    """fsync `directory`, so that renames in it survive a crash."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """Read at most `limit` bytes of `path`, raising `VerificationError` when the file is larger.

    `what` names the kind of file in the error ("manifest", "signature"). The file is opened
    without blocking and must be a regular file, so a FIFO or a device in its place raises
    `HostError` instead of hanging or reading forever. Raises `HostError` when the file cannot
    be opened.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as error:
        raise HostError(f"{what} not found: {path}") from error
    except OSError as error:
        raise HostError(f"cannot read {what} {path}: {error.strerror}") from error
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise HostError(
                f"{what} {path} is not a regular file",
                fix=f"replace {path} with the file itself",
            )
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise HostError(f"cannot read {what} {path}: {error.strerror}") from error
    if len(data) > limit:
        raise VerificationError(
            f"{what} {path} is larger than the maximum of {limit} bytes",
            fix=f"replace {path} with the file the signer produced",
        )
    return data
