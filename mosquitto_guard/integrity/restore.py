"""Put a watched file back the way the signed baseline recorded it, and record that it did.

What happens depends on the baseline's record of the path:

- a regular file: the known-good copy is streamed into a new file beside it and hashed on
  the way. The new file replaces the old one atomically, with the recorded mode and owner,
  only when the digest matches the signed record;
- a symlink: a new link to the recorded target replaces it atomically. When the target's
  content also differs and a copy of it was kept, the target is put back too;
- a directory: its recorded mode and owner are set again;
- missing, or a file in a watched directory that the baseline does not list: the file is
  quarantined, moved out of the broker's reach.

`restore` runs as root, and an attacker may write some of the directories it works in and
change them while it runs. So every step is done through file descriptors:

1. The parent directory is opened one component at a time from `/`, with O_NOFOLLOW. A path
   with a symlink among its directories is rejected.
2. Every later call is relative to that directory descriptor: the temporary file is created
   with O_EXCL, its owner and mode are set with fchown/fchmod, it is renamed with
   `os.replace(..., src_dir_fd=, dst_dir_fd=)`, a quarantined file is unlinked with `dir_fd`.
3. A directory is opened with O_DIRECTORY|O_NOFOLLOW, and fchown/fchmod set its owner and
   mode, so a symlink swapped in for it is never followed.
4. The known-good copy is read once, from one O_NOFOLLOW descriptor: the bytes that were
   hashed are the bytes that were written.

Whatever was replaced or quarantined is first copied to the evidence directory (mode 0600, so
a replaced plugin cannot be run from there), and one JSON line per action is appended to the
restore log. `check` reads that log, so the new inode of a restored file is an expected
change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from mosquitto_guard.errors import HostError, VerificationError
from mosquitto_guard.integrity.baseline import Baseline
from mosquitto_guard.integrity.record import TARGET_PREFIX, Record, record_file
from mosquitto_guard.integrity.store import (
    Evidence,
    append_restore_log,
    copy_path,
    evidence_dir,
    keep_file_evidence,
    keep_link_evidence,
    write_all,
)

_T = TypeVar("_T")

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO swapped in after the lstat does not hang restore.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMPORARY_ATTEMPTS = 16


class RestoreRejected(VerificationError):
    """A path restore cannot put back: not listed, no intact copy, or a symlink on its path."""


@dataclass(frozen=True)
class Action:
    """One thing `restore` did to one path, as written to the restore log."""

    path: str
    action: str
    evidence: str | None
    record: Record
    evidence_truncated: bool = False

    def log_entry(self) -> dict[str, object]:
        """Return the restore log line's fields."""
        return {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "path": self.path,
            "action": self.action,
            "evidence": self.evidence,
            "evidence_truncated": self.evidence_truncated,
            "sha256": self.record.get("sha256"),
            "inode": self.record.get("inode"),
            "uid": os.getuid(),
        }


def restore(path: Path, baseline: Baseline, baseline_path: Path) -> list[Action]:
    """Restore `path` from `baseline`; return what was done, [] when it already matched.

    Raises `RestoreRejected` when the baseline neither lists the path nor watches its directory,
    when no intact known-good copy exists, or when a directory on the path is a symlink. Raises
    `HostError` when a file cannot be read or written.
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
        return [_put_file(path, recorded, baseline_path, "")]
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


# The actions.


def _put_file(path: Path, recorded: Record, baseline_path: Path, prefix: str) -> Action:
    digest = str(recorded.get(prefix + "sha256"))
    mode = int(str(recorded[prefix + "mode"]), 8)
    uid, gid = int(str(recorded[prefix + "uid"])), int(str(recorded[prefix + "gid"]))
    with _parent_directory(path) as parent:
        if prefix == TARGET_PREFIX and _entry_type(parent, path.name) == "symlink":
            raise _chained_symlink(path)
        temporary = _write_verified_copy(parent, path, digest, baseline_path, (uid, gid, mode))
        try:
            evidence = _keep_evidence(parent, path, baseline_path)
            _rename_at(parent, temporary, path)
        except BaseException:
            _remove_at(parent, temporary, path)
            raise
    return _action(path, "replaced", evidence, record_file(path))


def _put_symlink(
    path: Path, recorded: Record, current: Record, baseline_path: Path
) -> list[Action]:
    actions: list[Action] = []
    link_target = str(recorded.get("link_target"))
    if current.get("type") != "symlink" or current.get("link_target") != link_target:
        with _parent_directory(path) as parent:
            evidence = _keep_evidence(parent, path, baseline_path)
            _replace_with_symlink(parent, path, link_target)
        actions.append(_action(path, "relinked", evidence, record_file(path)))
    now = record_file(path)
    target_type = recorded.get(TARGET_PREFIX + "type")
    if target_type == "file" and now.get(TARGET_PREFIX + "sha256") != recorded.get(
        TARGET_PREFIX + "sha256"
    ):
        target = _link_target_path(path, link_target)
        actions.append(_put_file(target, recorded, baseline_path, TARGET_PREFIX))
    return actions


def _put_directory(path: Path, recorded: Record, current: Record) -> Action:
    kind = current.get("type")
    if kind not in {"missing", "directory"}:
        raise _not_a_directory(path, str(kind))
    uid, gid = int(str(recorded["uid"])), int(str(recorded["gid"]))
    mode = int(str(recorded["mode"]), 8)
    with _parent_directory(path) as parent:
        if kind == "missing":
            _make_directory_at(parent, path)
        descriptor = _open_watched_directory(parent, path)
        try:
            os.fchown(descriptor, uid, gid)
            os.fchmod(descriptor, mode)
        except OSError as error:
            raise HostError(
                f"cannot set the owner and mode of the directory {path}: {error.strerror}"
            ) from None
        finally:
            os.close(descriptor)
    return Action(str(path), "permissions", None, record_file(path))


def _quarantine(path: Path, current: Record, baseline_path: Path) -> Action:
    if current.get("type") == "directory":
        raise RestoreRejected(
            f"{path} is a directory the baseline does not list",
            fix=f"inspect it and move it away by hand: mv {path} {evidence_dir(baseline_path)}/",
        )
    with _parent_directory(path) as parent:
        evidence = _keep_evidence(parent, path, baseline_path)
        try:
            os.unlink(path.name, dir_fd=parent)
        except OSError as error:
            raise HostError(f"cannot remove {path}: {error.strerror}") from None
    return _action(path, "quarantined", evidence, current)


def _action(path: Path, done: str, evidence: Evidence | None, record: Record) -> Action:
    if evidence is None:
        return Action(str(path), done, None, record)
    return Action(str(path), done, str(evidence.path), record, evidence.truncated)


def _link_target_path(link: Path, link_target: str) -> Path:
    """Return the file a symlink with `link_target` names, without resolving any symlink.

    `os.path.realpath` would follow a symlink that an attacker put at the target, and restore
    would then write there. The lexical path is walked like any other, so a symlink on it or
    at its end is rejected.
    """
    return Path(os.path.normpath(os.path.join(link.parent, link_target)))


def _chained_symlink(target: Path) -> RestoreRejected:
    # A chain of links (as /etc/alternatives makes) and a link planted by an attacker look the
    # same, and the baseline records only the file at the end of the chain.
    return RestoreRejected(
        f"{target}, the target of a watched symlink, is itself a symlink, which restore does not "
        "follow or replace",
        fix=f"inspect {target} and put it back by hand, or run restore {target} if the baseline "
        "lists it",
    )


# Opening directories without following symlinks.


@contextlib.contextmanager
def _parent_directory(path: Path) -> Iterator[int]:
    """Yield a descriptor of the directory containing `path`, opened without following links.

    Raises `RestoreRejected` when a directory on the way is a symlink or not a directory, and
    `HostError` when one is missing or cannot be opened.
    """
    if not path.name:
        raise RestoreRejected(f"{path}: restore cannot act on the root directory")
    descriptor = os.open("/", _DIRECTORY_FLAGS)
    try:
        directory = Path("/")
        for component in path.parent.parts[1:]:
            directory = directory / component
            child = _open_parent_component(descriptor, directory, path)
            os.close(descriptor)
            descriptor = child
        yield descriptor
    finally:
        os.close(descriptor)


def _open_parent_component(parent: int, directory: Path, path: Path) -> int:
    try:
        return os.open(directory.name, _DIRECTORY_FLAGS, dir_fd=parent)
    except OSError as error:
        kind = _entry_type(parent, directory.name)
        if kind == "symlink":
            raise RestoreRejected(
                f"cannot restore {path}: the directory {directory} on its path is a symlink",
                fix=f"replace {directory} with the real directory or remove it, then run "
                "restore again; restore does not write through symlinked directories",
            ) from None
        if kind == "missing":
            raise HostError(
                f"cannot restore {path}: the directory {directory} does not exist",
                fix=f"restore or create {directory} first, then run restore again",
            ) from None
        if kind != "directory":
            raise RestoreRejected(
                f"cannot restore {path}: {directory} on its path is not a directory",
                fix=f"move {directory} away by hand, then run restore again",
            ) from None
        raise HostError(f"cannot open the directory {directory}: {error.strerror}") from None


def _open_watched_directory(parent: int, path: Path) -> int:
    try:
        return os.open(path.name, _DIRECTORY_FLAGS, dir_fd=parent)
    except OSError as error:
        kind = _entry_type(parent, path.name)
        if kind not in {"directory", "unreadable"}:
            raise _not_a_directory(path, kind) from None
        raise HostError(f"cannot open the directory {path}: {error.strerror}") from None


def _make_directory_at(parent: int, path: Path) -> None:
    try:
        os.mkdir(path.name, 0o700, dir_fd=parent)
    except FileExistsError:
        pass  # The O_NOFOLLOW open that follows checks what was created meanwhile.
    except OSError as error:
        raise HostError(f"cannot create the directory {path}: {error.strerror}") from None


def _entry_type(parent: int, name: str) -> str:
    """Return the type of `name` in the directory `parent`, as a record names it."""
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    if stat.S_ISLNK(info.st_mode):
        return "symlink"
    if stat.S_ISDIR(info.st_mode):
        return "directory"
    if stat.S_ISREG(info.st_mode):
        return "file"
    return "other"


def _not_a_directory(path: Path, kind: str) -> RestoreRejected:
    return RestoreRejected(
        f"{path} should be a directory but is of type {kind}",
        fix=f"move {path} away by hand, then run restore again",
    )


# Writing files relative to the parent directory.


def _write_verified_copy(
    parent: int, path: Path, digest: str, baseline_path: Path, owner: tuple[int, int, int]
) -> str:
    """Stream the known-good copy of `digest` into a new temporary file in `parent`.

    `owner` is (uid, gid, mode), set once the digest matched. Returns the temporary file's
    name. Raises `RestoreRejected` when there is no copy or its digest is not `digest`, and
    `HostError` when the file cannot be written. The temporary file is removed on any error.
    """
    source = copy_path(baseline_path, digest)
    copy = _open_copy(source, path, digest)
    try:
        temporary, out = _create_temporary(parent, path, _create_file_at(parent))
    except BaseException:
        os.close(copy)
        raise
    try:
        _fill_verified(copy, out, source, path, digest, owner)
    except OSError as error:
        _remove_at(parent, temporary, path)
        raise HostError(
            f"cannot write the new copy of {path}: {error.strerror}",
            fix=f"run restore as root, with free space in {path.parent}",
        ) from None
    except BaseException:
        _remove_at(parent, temporary, path)
        raise
    finally:
        os.close(out)
        os.close(copy)
    return temporary


def _fill_verified(
    copy: int, out: int, source: Path, path: Path, digest: str, owner: tuple[int, int, int]
) -> None:
    found = _copy_hashing(copy, out, source, path)
    if found != digest:
        raise RestoreRejected(
            f"{path}: the known-good copy {source} is damaged (sha256 {found}, expected {digest})",
            fix=f"find out who changed {source}; restore {path} from a backup",
        )
    uid, gid, mode = owner
    # fchown first: it clears set-user-ID and set-group-ID bits that fchmod then sets.
    os.fchown(out, uid, gid)
    os.fchmod(out, mode)
    os.fsync(out)


def _open_copy(source: Path, path: Path, digest: str) -> int:
    try:
        descriptor = os.open(source, _READ_FLAGS)
    except FileNotFoundError:
        raise RestoreRejected(
            f"{path}: no known-good copy with sha256 {digest} in {source.parent}",
            fix="baseline keeps copies of plugins, config files, the files the config names, "
            f"the unit and the policy only. If a package owns {path} (dpkg -S {path}), "
            "reinstall it; otherwise restore it from a backup",
        ) from None
    except OSError as error:
        raise HostError(f"cannot read the known-good copy {source}: {error.strerror}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise RestoreRejected(
            f"{path}: the known-good copy {source} is not a regular file",
            fix=f"find out who changed {source}; restore {path} from a backup",
        )
    return descriptor


def _copy_hashing(copy: int, out: int, source: Path, path: Path) -> str:
    """Copy `copy` to `out` and return the SHA-256 of the bytes that were written."""
    digest = hashlib.sha256()
    while True:
        try:
            chunk = os.read(copy, _CHUNK)
        except OSError as error:
            raise HostError(
                f"cannot read the known-good copy {source} of {path}: {error.strerror}"
            ) from None
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)
        write_all(out, chunk)


def _keep_evidence(parent: int, path: Path, baseline_path: Path) -> Evidence | None:
    """Copy what is at `path` now into the evidence directory, if anything.

    Returns None when nothing is kept. Regular files and symlinks are kept, never followed.
    A file is read in chunks from one O_NOFOLLOW descriptor, up to the store's
    `EVIDENCE_LIMIT`.
    """
    kind = _entry_type(parent, path.name)
    if kind == "symlink":
        link_target = _call_at(os.readlink, f"read the symlink {path}", path.name, dir_fd=parent)
        return keep_link_evidence(baseline_path, path, link_target)
    if kind != "file":
        return None
    source = _open_regular_at(parent, path)
    try:
        return keep_file_evidence(baseline_path, path, source)
    finally:
        os.close(source)


def _open_regular_at(parent: int, path: Path) -> int:
    descriptor = _call_at(os.open, f"read {path}", path.name, _READ_FLAGS, dir_fd=parent)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise RestoreRejected(
            f"{path} changed from a regular file to another type while restore read it",
            fix="find out what is changing it, then run restore again",
        )
    return descriptor


def _replace_with_symlink(parent: int, path: Path, link_target: str) -> None:
    def create_link(name: str) -> None:
        os.symlink(link_target, name, dir_fd=parent)

    temporary, _ = _create_temporary(parent, path, create_link)
    try:
        if _entry_type(parent, path.name) == "directory":
            raise HostError(f"cannot put back the symlink {path}: a directory is in its place")
        _rename_at(parent, temporary, path)
    except BaseException:
        _remove_at(parent, temporary, path)
        raise


def _create_file_at(parent: int) -> Callable[[str], int]:
    def create(name: str) -> int:
        return os.open(name, _CREATE_FLAGS, 0o600, dir_fd=parent)

    return create


def _create_temporary(parent: int, path: Path, create: Callable[[str], _T]) -> tuple[str, _T]:
    """Create a new entry under a random name in `parent` with `create`.

    Returns the name and the result of `create`.
    `create` must fail with FileExistsError when the name is taken (O_EXCL, symlink), so a
    name an attacker created first is never used: another random name is tried instead.
    """
    for _ in range(_TEMPORARY_ATTEMPTS):
        name = f".mosquitto-guard-{secrets.token_hex(8)}.tmp"
        try:
            return name, create(name)
        except FileExistsError:
            logger.warning("temporary name %s beside %s exists; trying another", name, path)
        except OSError as error:
            raise HostError(
                f"cannot create a temporary file beside {path}: {error.strerror}",
                fix=f"free space in {path.parent} or make it writable by root, then run "
                "restore again",
            ) from None
    raise HostError(
        f"cannot create a temporary file beside {path}: every random name tried exists",
        fix=f"remove the .mosquitto-guard-*.tmp files in {path.parent}, then run restore again",
    )


def _rename_at(parent: int, temporary: str, path: Path) -> None:
    try:
        os.replace(temporary, path.name, src_dir_fd=parent, dst_dir_fd=parent)
    except OSError as error:
        raise HostError(f"cannot put back {path}: {error.strerror}") from None
    try:
        os.fsync(parent)
    except OSError as error:
        # The rename is done and visible, so only its survival of a crash is in doubt.
        logger.warning("cannot fsync the directory of %s: %s", path, error.strerror)


def _remove_at(parent: int, temporary: str, path: Path) -> None:
    try:
        os.unlink(temporary, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError as error:
        logger.warning(
            "cannot remove the temporary file %s beside %s: %s", temporary, path, error.strerror
        )


def _call_at(function: Callable[..., _T], operation: str, *args: object, **kwargs: object) -> _T:
    """Call `function`, turning an OSError into a one-line `HostError` naming `operation`."""
    try:
        return function(*args, **kwargs)
    except OSError as error:
        raise HostError(f"cannot {operation}: {error.strerror}") from None


def _log(baseline_path: Path, actions: list[Action]) -> None:
    if not actions:
        return
    lines = "".join(json.dumps(action.log_entry(), sort_keys=True) + "\n" for action in actions)
    append_restore_log(baseline_path, lines)
