"""Known-good copies kept beside the baseline, and the record of what `restore` did.

Beside a baseline `DIR/baseline.json`:

- `DIR/known-good/SHA256`: the content of each file marked `keep_copy`, named by its digest.
  A copy is trusted only through the signed baseline: `restore` hashes it again and uses it
  only when the digest matches the baseline's record.
- `DIR/evidence/`: what `restore` replaced or removed, kept for forensics, never executed.
  An attacker chooses the size and name of what is dropped into a watched directory, so each
  evidence file contains at most `EVIDENCE_LIMIT` bytes and has a short name. The full path is
  in the restore log.
- `DIR/restore.log`: one JSON line per file `restore` wrote.

Every directory is created with mode 0700 and every file with mode 0600: the copies include
password files and private keys. A write that fails removes what it wrote, so a full disk
leaves no half-written evidence file and no partial log line.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mosquitto_guard.errors import HostError
from mosquitto_guard.fsutil import sync_directory

KNOWN_GOOD_DIR = "known-good"
EVIDENCE_DIR = "evidence"
RESTORE_LOG = "restore.log"
# The maximum number of bytes of one replaced or removed file kept as evidence. Plugins and
# config files are far smaller, and a sparse file of any size costs an attacker no disk space.
EVIDENCE_LIMIT = 256 << 20
_CHUNK = 1 << 20
# Evidence names: timestamp, then this many hex digits of the SHA-256 of the full path, then at
# most this many bytes of the file name. With ".symlink" that is at most 145 bytes, below the
# 255-byte NAME_MAX of Linux file systems.
_PATH_DIGEST_LENGTH = 12
_NAME_BYTES = 100
_NAME_ATTEMPTS = 8
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evidence:
    """A copy of what `restore` replaced or removed, kept in the evidence directory."""

    path: Path
    truncated: bool


def known_good_dir(baseline_path: Path) -> Path:
    """Return the directory of known-good copies that belongs to `baseline_path`."""
    return baseline_path.parent / KNOWN_GOOD_DIR


def evidence_dir(baseline_path: Path) -> Path:
    """Return the directory where `restore` keeps what it replaced."""
    return baseline_path.parent / EVIDENCE_DIR


def restore_log_path(baseline_path: Path) -> Path:
    """Return the restore log that belongs to `baseline_path`."""
    return baseline_path.parent / RESTORE_LOG


def copy_path(baseline_path: Path, sha256: str) -> Path:
    """Return where the known-good copy with digest `sha256` is kept."""
    return known_good_dir(baseline_path) / sha256


def keep_copies(baseline_path: Path, files: Iterable[tuple[Path, str]]) -> int:
    """Store a copy of each (path, sha256) whose copy is not stored yet; return how many.

    Each file is hashed while it is copied. Raises `HostError` when a file's digest is no
    longer the one recorded (it changed during the baseline) or the store cannot be written.
    """
    store = private_directory(known_good_dir(baseline_path))
    written = 0
    for path, sha256 in files:
        target = store / sha256
        if target.exists() and file_sha256(target) == sha256:
            continue
        _copy_checked(path, target, sha256)
        written += 1
    if written:
        sync_directory(store)
    return written


def private_directory(path: Path) -> Path:
    """Create `path` with mode 0700 when missing, and return it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise HostError(f"cannot create {path}: {error.strerror}") from None
    return path


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of `path` without following a final symlink."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _copy_checked(source: Path, target: Path, sha256: str) -> None:
    digest = hashlib.sha256()
    fd, temporary = tempfile.mkstemp(prefix=".copy.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(descriptor, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise HostError(
                f"{source} changed while the baseline was written",
                fix="find out what changed it, then run mosquitto-guard baseline again",
            )
        os.replace(temporary, target)
    except OSError as error:
        raise HostError(f"cannot keep a copy of {source}: {error.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def keep_file_evidence(baseline_path: Path, path: Path, source: int) -> Evidence:
    """Copy the open regular file `source`, which is `path`, into the evidence directory.

    At most `EVIDENCE_LIMIT` bytes are copied, in chunks. Raises `HostError` when `source`
    cannot be read or the copy cannot be written, and then leaves no evidence file.
    """

    def copy_bounded(out: int) -> bool:
        remaining = EVIDENCE_LIMIT
        while remaining:
            chunk = _read_evidence(source, min(_CHUNK, remaining), path)
            if not chunk:
                return False
            write_all(out, chunk)
            remaining -= len(chunk)
        return bool(_read_evidence(source, 1, path))

    return _write_evidence(baseline_path, path, "", copy_bounded)


def keep_link_evidence(baseline_path: Path, path: Path, link_target: str) -> Evidence:
    """Write the target of the symlink `path` into the evidence directory.

    Raises `HostError` when the file cannot be written, and then leaves no evidence file.
    """
    data = os.fsencode(link_target)

    def write_target(out: int) -> bool:
        write_all(out, data)
        return False

    return _write_evidence(baseline_path, path, ".symlink", write_target)


def evidence_name(path: Path, suffix: str) -> str:
    """Return a file name for evidence of `path` that fits NAME_MAX however long `path` is."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path_digest = hashlib.sha256(os.fsencode(str(path))).hexdigest()[:_PATH_DIGEST_LENGTH]
    # Cutting at a byte count can split a UTF-8 character, so the broken tail is dropped.
    label = os.fsencode(path.name)[:_NAME_BYTES].decode("utf-8", "ignore")
    return f"{stamp}-{path_digest}-{label}{suffix}"


def append_restore_log(baseline_path: Path, lines: str) -> None:
    """Append `lines` to the restore log and fsync it.

    Raises `HostError` when the log cannot be written. A partly written append is cut off
    again, so the log never ends in half a line.
    """
    log = restore_log_path(baseline_path)
    fix = (
        f"free space in {log.parent}. The files were already put back, so check reports "
        "their new inodes as changes"
    )
    try:
        descriptor = os.open(
            log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except OSError as error:
        raise HostError(f"cannot open the restore log {log}: {error.strerror}", fix=fix) from None
    try:
        # The lock keeps a concurrent restore from appending while a failed append is cut off.
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        _append_whole(descriptor, lines.encode("utf-8"), log)
    except OSError as error:
        raise HostError(
            f"cannot append to the restore log {log}: {error.strerror}", fix=fix
        ) from None
    finally:
        os.close(descriptor)


def write_all(descriptor: int, data: bytes) -> None:
    """Write all of `data` to `descriptor`, which may take more than one `os.write`."""
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


def _append_whole(descriptor: int, data: bytes, log: Path) -> None:
    size = os.fstat(descriptor).st_size
    try:
        write_all(descriptor, data)
        os.fsync(descriptor)
    except OSError:
        try:
            os.ftruncate(descriptor, size)
        except OSError as error:
            logger.warning("cannot cut the partial line off %s: %s", log, error.strerror)
        raise


def _write_evidence(
    baseline_path: Path, path: Path, suffix: str, fill: Callable[[int], bool]
) -> Evidence:
    """Create an evidence file for `path`, let `fill` write it, and fsync it.

    `fill` returns True when it cut the content short. The evidence file is removed again
    when anything fails.
    """
    directory = private_directory(evidence_dir(baseline_path))
    target, descriptor = _create_evidence_file(directory, path, suffix)
    try:
        try:
            truncated = fill(descriptor)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as error:
        _remove_partial(target)
        raise HostError(
            f"cannot write the evidence file {target} for {path}: {error.strerror}",
            fix=f"free space in {directory}, then run restore again",
        ) from None
    except BaseException:
        _remove_partial(target)
        raise
    return Evidence(target, truncated)


def _create_evidence_file(directory: Path, path: Path, suffix: str) -> tuple[Path, int]:
    # The name starts with a microsecond timestamp, so a name in use is free again on a retry.
    for _ in range(_NAME_ATTEMPTS):
        target = directory / evidence_name(path, suffix)
        try:
            return target, os.open(target, _WRITE_FLAGS, 0o600)
        except FileExistsError:
            continue
        except OSError as error:
            raise HostError(
                f"cannot create the evidence file {target}: {error.strerror}",
                fix=f"make {directory} writable by root, then run restore again",
            ) from None
    raise HostError(
        f"cannot create an evidence file for {path} in {directory}: every name tried exists",
        fix="run restore again",
    )


def _read_evidence(source: int, size: int, path: Path) -> bytes:
    try:
        return os.read(source, size)
    except OSError as error:
        raise HostError(f"cannot read {path} to keep it as evidence: {error.strerror}") from None


def _remove_partial(target: Path) -> None:
    try:
        target.unlink()
    except FileNotFoundError:
        pass
    except OSError as error:
        logger.warning("cannot remove the partial evidence file %s: %s", target, error.strerror)
