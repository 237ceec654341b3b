"""Decide which differences from the baseline are expected, and explain each one.

A changed file is expected, and raises no alert, when only its content changed (digest, size,
inode, ctime, build id: never its type, mode or owner) and one of these explains the new
content:

- a manifest in the policy's manifest directory that verifies now, lists the new digest, and
  is of a higher version than any verified manifest of the old digest: a newly signed plugin;
- dpkg's checksum of the file, from the package that owns it (`dpkg-query -S`), equals the MD5
  of the new content: a package upgrade;
- the restore log of this baseline shows `mosquitto-guard restore` put back the recorded
  content, and only the inode and ctime differ.

dpkg's checksums are MD5 and root can edit them; they explain an upgrade, they do not prove
one. An admin who does not accept that leaves the change to be reviewed by hand: `check`
lists expected changes separately, with their explanation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from mosquitto_guard.errors import GuardError
from mosquitto_guard.integrity.compare import Difference, Report
from mosquitto_guard.integrity.store import restore_log_path
from mosquitto_guard.policy.model import Policy

logger = logging.getLogger(__name__)

# The attributes an upgrade of the content may change.
CONTENT_ATTRIBUTES = frozenset({"sha256", "size", "inode", "ctime", "build_id", "build_id_error"})
RESTORE_ATTRIBUTES = frozenset({"inode", "ctime"})
# Directories that Debian's merged /usr makes aliases of /usr/...; dpkg may know either name.
_MERGED = ("/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/")
_DPKG_TIMEOUT = 30


def explain_expected(report: Report, baseline_path: Path, policy: Policy) -> Report:
    """Return `report` with the expected changes moved from `changed` to `expected`."""
    if not report.changed:
        return report
    restored = _restored(baseline_path)
    changed: list[Difference] = []
    expected: list[Difference] = []
    for difference in report.changed:
        explanation = _explain(difference, restored, policy)
        if explanation is None:
            changed.append(difference)
        else:
            expected.append(replace(difference, explanation=explanation))
    return replace(report, changed=tuple(changed), expected=report.expected + tuple(expected))


def _explain(
    difference: Difference, restored: dict[tuple[str, int], dict[str, object]], policy: Policy
) -> str | None:
    attributes = {change.attribute for change in difference.changes}
    values = {change.attribute: change for change in difference.changes}
    if attributes <= RESTORE_ATTRIBUTES and "inode" in values:
        entry = restored.get((difference.path, _int(values["inode"].new)))
        if entry is not None:
            return f"put back by mosquitto-guard restore at {entry.get('time')}"
    if not attributes <= CONTENT_ATTRIBUTES or "sha256" not in values:
        return None
    new_digest = values["sha256"].new
    old_digest = values["sha256"].old
    if not isinstance(new_digest, str):
        return None
    signed = _signed_plugin(Path(difference.path), new_digest, old_digest, policy)
    if signed is not None:
        return signed
    return _dpkg_upgrade(difference.path)


def _int(value: object) -> int:
    return value if isinstance(value, int) else -1


def _signed_plugin(path: Path, new: str, old: object, policy: Policy) -> str | None:
    from mosquitto_guard.manifest.verify import find_manifest, index_manifests

    now = datetime.now(UTC)
    try:
        index = index_manifests(policy.manifest_dir)
        verified = find_manifest(path, new, policy, now, index=index)
    except GuardError:
        return None
    if verified.manifest.file.name != path.name:
        return None
    if isinstance(old, str):
        try:
            previous = find_manifest(path, old, policy, now, index=index)
        except GuardError:
            previous = None
        if previous is not None and previous.manifest.version >= verified.manifest.version:
            return None
    signers = ", ".join(verified.signers)
    return (
        f"matches manifest {verified.path.name} ({verified.manifest.name} version "
        f"{verified.manifest.version}), signed by {signers}"
    )


def _dpkg_upgrade(path: str) -> str | None:
    for name in _dpkg_names(path):
        package = _dpkg_owner(name)
        if package is None:
            continue
        expected = _dpkg_md5(package, name)
        if expected is None:
            continue
        try:
            with open(path, "rb") as handle:
                actual = hashlib.file_digest(handle, "md5").hexdigest()
        except OSError:
            return None
        if actual == expected:
            return f"content matches the checksum dpkg recorded for package {package}"
        return None
    return None


def _dpkg_names(path: str) -> list[str]:
    """Return the names dpkg may know `path` by: itself, and its merged-/usr alias."""
    names = [path]
    if path.startswith("/usr/") and path[4:].startswith(_MERGED):
        names.append(path[4:])
    elif path.startswith(_MERGED):
        names.append("/usr" + path)
    return names


def _dpkg_owner(path: str) -> str | None:
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


def _restored(baseline_path: Path) -> dict[tuple[str, int], dict[str, object]]:
    """Read the restore log: (path, inode) of each file restore wrote, with its log entry."""
    log = restore_log_path(baseline_path)
    found: dict[tuple[str, int], dict[str, object]] = {}
    try:
        with open(log, encoding="utf-8") as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        return found
    except OSError as error:
        logger.warning("cannot read the restore log %s: %s", log, os.strerror(error.errno or 0))
        return found
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("inode"), int):
            found[(str(entry.get("path")), entry["inode"])] = entry
    return found
