"""Put a watched file back the way the signed baseline recorded it, and record that it did.

What happens depends on the baseline's record of the path:

- a regular file: the known-good copy (hashed again, and used only when its digest matches
  the signed record) replaces the file atomically, with the recorded mode and owner;
- a symlink: a new link to the recorded target replaces it atomically. When the target's
  content also differs and a copy of it was kept, the target is put back too;
- a directory: its recorded mode and owner are set again;
- missing, or a file in a watched directory that the baseline does not list: the file is
  quarantined, moved out of the broker's reach.

Whatever was replaced or quarantined is first copied to the evidence directory (mode 0600, so
a replaced plugin cannot be run from there), and one JSON line per action is appended to the
restore log. `check` reads that log, so the new inode of a restored file is an expected
change.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from mosquitto_guard.errors import HostError, VerificationError
from mosquitto_guard.integrity.baseline import Baseline
from mosquitto_guard.integrity.record import TARGET_PREFIX, Record, record_file
from mosquitto_guard.integrity.store import (
    copy_path,
    evidence_dir,
    file_sha256,
    private_directory,
    restore_log_path,
)

_T = TypeVar("_T")


class RestoreRejected(VerificationError):
    """The file cannot be restored from this baseline: not listed, or no good copy."""


@dataclass(frozen=True)
class Action:
    """One thing `restore` did to one path, as written to the restore log."""

    path: str
    action: str
    evidence: str | None
    record: Record

    def log_entry(self) -> dict[str, object]:
        """Return the restore log line's fields."""
        return {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "path": self.path,
            "action": self.action,
            "evidence": self.evidence,
            "sha256": self.record.get("sha256"),
            "inode": self.record.get("inode"),
            "uid": os.getuid(),
        }


def restore(path: Path, baseline: Baseline, baseline_path: Path) -> list[Action]:
    """Restore `path` from `baseline`; return what was done, [] when it already matched.

    Raises `RestoreRejected` when the baseline neither lists the path nor watches its directory,
    or when no intact known-good copy exists, and `HostError` when a file cannot be written.
    """
    key = os.path.normpath(os.path.abspath(path))
    entry = baseline.entries.get(key)
    if entry is None:
        actions = _quarantine_unlisted(Path(key), baseline, baseline_path)
    else:
        actions = _restore_entry(Path(key), entry.record, baseline_path)
    _log(baseline_path, actions)
    return actions


def matches(recorded: Record, current: Record) -> bool:
    """Return True when `current` equals `recorded` but for the inode and ctime."""
    ignored = {"inode", "ctime", TARGET_PREFIX + "inode", TARGET_PREFIX + "ctime"}
    keys = (set(recorded) | set(current)) - ignored
    return all(recorded.get(key) == current.get(key) for key in keys)


def _restore_entry(path: Path, recorded: Record, baseline_path: Path) -> list[Action]:
    current = record_file(path)
    if matches(recorded, current):
        return []
    kind = recorded.get("type")
    if kind == "file":
        return [_put_file(path, recorded, current, baseline_path, "")]
    if kind == "symlink":
        return _put_symlink(path, recorded, current, baseline_path)
    if kind == "directory":
        return [_put_directory(path, recorded, current)]
    if kind == "missing":
        return [_quarantine(path, current, baseline_path)]
    raise RestoreRejected(
        f"{path}: the baseline recorded it as {kind!r}, which restore cannot recreate",
        fix=f"put {path} back by hand, then run mosquitto-guard check",
    )


def _quarantine_unlisted(path: Path, baseline: Baseline, baseline_path: Path) -> list[Action]:
    parent = baseline.entries.get(str(path.parent))
    if parent is None or parent.record.get("type") != "directory":
        raise RestoreRejected(
            f"{path} is not in the baseline {baseline_path}, and neither is its directory",
            fix="name a file that mosquitto-guard check reports",
        )
    current = record_file(path)
    if current.get("type") == "missing":
        return []
    return [_quarantine(path, current, baseline_path)]


def _put_file(
    path: Path, recorded: Record, current: Record, baseline_path: Path, prefix: str
) -> Action:
    digest = str(recorded.get(prefix + "sha256"))
    source = _intact_copy(path, digest, baseline_path)
    evidence = _keep_evidence(path, current, baseline_path)
    mode = int(str(recorded[prefix + "mode"]), 8)
    uid, gid = int(str(recorded[prefix + "uid"])), int(str(recorded[prefix + "gid"]))
    _replace_with_copy(path, source, mode, uid, gid)
    return Action(str(path), "replaced", evidence, record_file(path))


def _put_symlink(
    path: Path, recorded: Record, current: Record, baseline_path: Path
) -> list[Action]:
    actions: list[Action] = []
    link_target = str(recorded.get("link_target"))
    if current.get("type") != "symlink" or current.get("link_target") != link_target:
        evidence = _keep_evidence(path, current, baseline_path)
        _replace_with_symlink(path, link_target)
        actions.append(Action(str(path), "relinked", evidence, record_file(path)))
    now = record_file(path)
    target_type = recorded.get(TARGET_PREFIX + "type")
    if target_type == "file" and now.get(TARGET_PREFIX + "sha256") != recorded.get(
        TARGET_PREFIX + "sha256"
    ):
        target = Path(os.path.realpath(path))
        target_now = record_file(target)
        actions.append(_put_file(target, recorded, target_now, baseline_path, TARGET_PREFIX))
    return actions


def _put_directory(path: Path, recorded: Record, current: Record) -> Action:
    kind = current.get("type")
    if kind == "missing":
        _guard(os.mkdir, path, 0o700)
    elif kind != "directory":
        raise RestoreRejected(
            f"{path} should be a directory but is of type {kind}",
            fix=f"move {path} away by hand, then run restore again",
        )
    _guard(os.chown, path, int(str(recorded["uid"])), int(str(recorded["gid"])))
    _guard(os.chmod, path, int(str(recorded["mode"]), 8))
    return Action(str(path), "permissions", None, record_file(path))


def _quarantine(path: Path, current: Record, baseline_path: Path) -> Action:
    evidence = _keep_evidence(path, current, baseline_path)
    if current.get("type") == "directory":
        raise RestoreRejected(
            f"{path} is a directory the baseline does not list",
            fix=f"inspect it and move it away by hand: mv {path} {evidence_dir(baseline_path)}/",
        )
    _guard(os.unlink, path)
    return Action(str(path), "quarantined", evidence, current)


def _intact_copy(path: Path, digest: str, baseline_path: Path) -> Path:
    source = copy_path(baseline_path, digest)
    try:
        found = file_sha256(source)
    except FileNotFoundError:
        raise RestoreRejected(
            f"{path}: no known-good copy with sha256 {digest} in {source.parent}",
            fix="copies are kept for plugins and config files only; reinstall the package "
            f"that owns {path} (dpkg -S {path}), or restore it from a backup",
        ) from None
    except OSError as error:
        raise HostError(f"cannot read the known-good copy {source}: {error.strerror}") from None
    if found != digest:
        raise RestoreRejected(
            f"{path}: the known-good copy {source} is damaged (sha256 {found}, expected {digest})",
            fix=f"find out who changed {source}; restore {path} from a backup",
        )
    return source


def _keep_evidence(path: Path, current: Record, baseline_path: Path) -> str | None:
    """Copy what is at `path` now into the evidence directory; return the copy's path."""
    kind = current.get("type")
    if kind not in {"file", "symlink"}:
        return None
    directory = private_directory(evidence_dir(baseline_path))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = directory / f"{stamp}{str(path).replace('/', '_')}"
    if kind == "symlink":
        target = target.with_name(target.name + ".symlink")
        data = os.fsencode(str(current.get("link_target")))
    else:
        data = _read_nofollow(path)
    descriptor = _guard(os.open, target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return str(target)


def _read_nofollow(path: Path) -> bytes:
    descriptor = _guard(os.open, path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        return handle.read()


def _replace_with_copy(path: Path, source: Path, mode: int, uid: int, gid: int) -> None:
    fd, temporary = _guard(tempfile.mkstemp, prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as copy:
            shutil.copyfileobj(copy, out)
            out.flush()
            os.fchown(out.fileno(), uid, gid)
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise HostError(f"cannot put back {path}: {error.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _replace_with_symlink(path: Path, link_target: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.link")
    try:
        os.symlink(link_target, temporary)
        if os.path.isdir(path) and not os.path.islink(path):
            raise HostError(f"cannot put back the symlink {path}: a directory is in its place")
        os.replace(temporary, path)
    except OSError as error:
        raise HostError(f"cannot put back the symlink {path}: {error.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _log(baseline_path: Path, actions: list[Action]) -> None:
    if not actions:
        return
    log = restore_log_path(baseline_path)
    lines = "".join(json.dumps(action.log_entry(), sort_keys=True) + "\n" for action in actions)
    descriptor = _guard(os.open, log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
        handle.write(lines)
        handle.flush()
        os.fsync(handle.fileno())


def _guard(function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Call `function`; turn an OSError into a `HostError` that names the path."""
    try:
        return function(*args, **kwargs)
    except OSError as error:
        where = args[0] if args else kwargs.get("dir")
        raise HostError(f"cannot {function.__name__} {where}: {error.strerror}") from None
