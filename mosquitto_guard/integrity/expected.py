"""Decide which differences from the baseline are expected, and explain each one.

A changed file is expected, and raises no alert, when only its content changed (digest, size,
inode, ctime, build id: never its type, mode or owner) and one of these explains the new
content:

- a manifest in the policy's manifest directory that verifies now, names the file and the new
  digest, was signed after the baseline was written, and passes the rollback state: a newly
  signed plugin. When a verified manifest of the old digest exists, the new one must have the
  same plugin name and a higher version;
- dpkg's checksum of the file, from the package that owns it (`dpkg-query -S`), equals the MD5
  of the new content, and dpkg installed that package after the baseline was written: a
  package upgrade. The MD5 and the SHA-256 come from one read, so the file cannot be swapped
  between the check's digest and dpkg's;
- the restore log of this baseline, owned by root and writable by no one else, shows
  `mosquitto-guard restore` put back the recorded content after the baseline was written,
  and only the inode and ctime differ.

dpkg's checksums are MD5 and root can edit them; they explain an upgrade, they do not prove
one. An admin who does not accept that leaves the change to be reviewed by hand: `check`
lists expected changes separately, with their explanation.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import stat
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from mosquitto_guard.errors import GuardError
from mosquitto_guard.integrity.baseline import Baseline
from mosquitto_guard.integrity.compare import Change, Difference, Report
from mosquitto_guard.integrity.store import restore_log_path
from mosquitto_guard.policy.model import Policy

logger = logging.getLogger(__name__)

# The attributes an upgrade of the content may change.
CONTENT_ATTRIBUTES = frozenset({"sha256", "size", "inode", "ctime", "build_id", "build_id_error"})
# A restore writes a new file, so the inode and ctime of the path, or of a symlink's target,
# are new.
TARGET_INODE = "target.inode"
RESTORE_ATTRIBUTES = frozenset({"inode", "ctime", TARGET_INODE, "target.ctime"})
# Directories that Debian's merged /usr makes aliases of /usr/...; dpkg may know either name.
_MERGED = ("/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/")
_DPKG_TIMEOUT = 30
# About 40,000 restores at some 250 bytes a line.
MAX_RESTORE_LOG_BYTES = 10 * 1024 * 1024


def explain_expected(
    report: Report, baseline: Baseline, baseline_path: Path, policy: Policy
) -> Report:
    """Return `report` with the expected changes moved from `changed` to `expected`.

    A baseline without a creation time (written by an older version) explains nothing.
    """
    if not report.changed or baseline.created is None:
        return report
    restored = _restored(baseline_path, baseline.created)
    changed: list[Difference] = []
    expected: list[Difference] = []
    for difference in report.changed:
        explanation = _explain(difference, restored, policy, baseline.created)
        if explanation is None:
            changed.append(difference)
        else:
            expected.append(replace(difference, explanation=explanation))
    return replace(report, changed=tuple(changed), expected=report.expected + tuple(expected))


def _explain(
    difference: Difference,
    restored: dict[tuple[str, int], dict[str, object]],
    policy: Policy,
    created: datetime,
) -> str | None:
    attributes = {change.attribute for change in difference.changes}
    values = {change.attribute: change for change in difference.changes}
    if attributes <= RESTORE_ATTRIBUTES:
        entry = _restore_entry(difference.path, values, restored)
        if entry is not None:
            return f"put back by mosquitto-guard restore at {entry.get('time')}"
    if not attributes <= CONTENT_ATTRIBUTES or "sha256" not in values:
        return None
    new_digest = values["sha256"].new
    old_digest = values["sha256"].old
    if not isinstance(new_digest, str):
        return None
    signed = _signed_plugin(Path(difference.path), new_digest, old_digest, policy, created)
    if signed is not None:
        return signed
    return _dpkg_upgrade(difference.path, new_digest, created)


def _restore_entry(
    path: str, values: dict[str, Change], restored: dict[tuple[str, int], dict[str, object]]
) -> dict[str, object] | None:
    """Return the restore log entry that explains a new inode of `path` or of its target."""
    if "inode" in values:
        return restored.get((path, _int(values["inode"].new)))
    if TARGET_INODE in values:
        target = os.path.realpath(path)
        return restored.get((target, _int(values[TARGET_INODE].new)))
    return None


def _int(value: object) -> int:
    return value if isinstance(value, int) else -1


def _signed_plugin(
    path: Path, new: str, old: object, policy: Policy, created: datetime
) -> str | None:
    from mosquitto_guard.manifest.verify import find_manifest, index_manifests
    from mosquitto_guard.policy.state import VersionState

    now = datetime.now(UTC)
    try:
        index = index_manifests(policy.manifest_dir)
        verified = find_manifest(path, new, policy, now, index=index)
        manifest = verified.manifest
        # The rollback rule of `run`: no lower version, no other file for the same version.
        VersionState(policy.state_dir).check(manifest.name, manifest.version, new)
    except GuardError:
        return None
    if manifest.file.name != path.name or manifest.signed_at <= created:
        return None
    if isinstance(old, str):
        try:
            previous = find_manifest(path, old, policy, now, index=index).manifest
        except GuardError:
            previous = None
        if previous is not None and (
            previous.name != manifest.name or previous.version >= manifest.version
        ):
            return None
    signers = ", ".join(verified.signers)
    return (
        f"matches manifest {verified.path.name} ({manifest.name} version "
        f"{manifest.version}), signed by {signers}"
    )


def _dpkg_upgrade(path: str, sha256: str, created: datetime) -> str | None:
    for name in _dpkg_names(path):
        package = _dpkg_owner(name)
        if package is None:
            continue
        expected = _dpkg_md5(package, name)
        if expected is None or not _installed_after(package, created):
            return None
        digests = _digests(path)
        if digests is None or digests[0] != sha256:
            return None  # changed again since the check read it
        if digests[1] == expected:
            return f"content matches the checksum dpkg recorded for package {package}"
        return None
    return None


def _digests(path: str) -> tuple[str, str] | None:
    """Return the SHA-256 and MD5 of `path`, both from one read."""
    sha256 = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        while chunk := handle.read(1 << 20):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def _installed_after(package: str, created: datetime) -> bool:
    """Return True when dpkg wrote the package's file list after `created`.

    dpkg rewrites `PACKAGE.list` in its database each time it installs or upgrades the
    package, so its mtime is the time of the last installation.
    """
    info = Path(os.environ.get("DPKG_ADMINDIR", "/var/lib/dpkg")) / "info"
    for candidate in (info / f"{package}.list", info / f"{package.split(':')[0]}.list"):
        try:
            mtime = candidate.stat().st_mtime
        except OSError:
            continue
        return datetime.fromtimestamp(mtime, UTC) > created
    return False


def _dpkg_names(path: str) -> list[str]:
    """Return the names dpkg may know `path` by: itself, and its merged-/usr alias."""
    names = [path]
    if path.startswith("/usr/") and path[4:].startswith(_MERGED):
        names.append(path[4:])
    elif path.startswith(_MERGED):
        names.append("/usr" + path)
    return names


@functools.lru_cache(maxsize=4096)
def _dpkg_owner(path: str) -> str | None:
    # Cached: `watch` looks the owner up again for each change of a file, and a file rarely
    # changes package.
    output = _dpkg_query("-S", path)
    if output is None:
        return None
    for line in output.splitlines():
        packages, _, owned = line.partition(": ")
        if owned == path and "," not in packages and not packages.startswith("diversion"):
            return packages.strip()
    return None


def _dpkg_md5(package: str, path: str) -> str | None:
    control = _dpkg_query("--control-path", package, "md5sums")
    relative = path.lstrip("/")
    if control:
        try:
            text = Path(control.strip()).read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            digest, _, name = line.partition("  ")
            if name == relative:
                return digest
    conffiles = _dpkg_query("-W", "-f=${Conffiles}\\n", package) or ""
    for line in conffiles.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == path:
            return fields[1]
    return None


def _dpkg_query(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["dpkg-query", *args],
            capture_output=True,
            text=True,
            timeout=_DPKG_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def _restored(baseline_path: Path, created: datetime) -> dict[tuple[str, int], dict[str, object]]:
    """Read the restore log: (path, inode) of each file restore wrote after `created`.

    A log that is not a regular file, is larger than `MAX_RESTORE_LOG_BYTES`, or that someone
    other than root (or this user) could write, explains nothing, with a warning.
    """
    log = restore_log_path(baseline_path)
    try:
        data = _read_restore_log(log)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        logger.warning("restore log %s ignored: %s", log, error)
        return {}
    found: dict[tuple[str, int], dict[str, object]] = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            when = datetime.fromisoformat(entry["time"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        if isinstance(entry.get("inode"), int) and when.tzinfo is not None and when > created:
            found[(str(entry.get("path")), entry["inode"])] = entry
    return found


def _read_restore_log(log: Path) -> bytes:
    descriptor = os.open(log, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_uid not in (0, os.geteuid()) or info.st_mode & 0o022:
            raise ValueError("writable by another user")
        data = handle.read(MAX_RESTORE_LOG_BYTES + 1)
    if len(data) > MAX_RESTORE_LOG_BYTES:
        raise ValueError(f"larger than {MAX_RESTORE_LOG_BYTES} bytes")
    return data
