"""Known-good copies kept beside the baseline, and the record of what `restore` did.

Beside a baseline `DIR/baseline.json`:

- `DIR/known-good/SHA256`: the content of each file marked `keep_copy`, named by its digest.
  A copy is trusted only through the signed baseline: `restore` hashes it again and uses it
  only when the digest matches the baseline's record.
- `DIR/evidence/`: what `restore` replaced or removed, kept for forensics, never executed.
- `DIR/restore.log`: one JSON line per file `restore` wrote.

Every directory is created with mode 0700 and every file with mode 0600: the copies include
password files and private keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from mosquitto_guard.errors import HostError
from mosquitto_guard.fsutil import sync_directory

KNOWN_GOOD_DIR = "known-good"
EVIDENCE_DIR = "evidence"
RESTORE_LOG = "restore.log"
_CHUNK = 1 << 20


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
