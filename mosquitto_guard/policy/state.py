"""Rollback protection: the highest manifest version accepted so far for each plugin name.

Without it, an attacker who can write to the manifest and plugin directories could put back an
older release, with its still-valid signature, to bring back a fixed bug. The state directory
contains `versions.json`:

    {"format_version": 1,
     "plugins": {"auth-ldap": {"version": 3, "sha256": "9f86d08..."}}}

A version lower than the recorded one is rejected, and so is the same version with another
digest. Writers hold an exclusive `fcntl.flock` on `versions.lock` across read, update and the
atomic rewrite, so two launches that record at once cannot lose an update. Readers hold a
shared lock. A state file that cannot be parsed raises `HostError` and is never reset silently,
because a reset would accept every older version again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosquitto_guard.errors import HostError, ManifestError

logger = logging.getLogger(__name__)

STATE_FILE = "versions.json"
LOCK_FILE = "versions.lock"
STATE_FORMAT_VERSION = 1
MAX_STATE_BYTES = 16 * 1024 * 1024
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class AcceptedVersion:
    """The highest version accepted for one plugin name, and the digest of its file."""

    version: int
    sha256: str


class VersionState:
    """The rollback state kept in `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / STATE_FILE
        self.lock_path = self.state_dir / LOCK_FILE

    def check(self, name: str, version: int, sha256: str) -> None:
        """Raise `ManifestError` if accepting this version of `name` would be a rollback.

        Raises `HostError` when the state file is corrupt or cannot be read.
        """
        with self._locked(fcntl.LOCK_SH, create=False):
            recorded = self._read().get(name)
        self._compare(name, version, sha256, recorded)

    def record(self, name: str, version: int, sha256: str) -> None:
        """Store `version` and `sha256` for `name` when the version is higher than the recorded one.

        Recording the recorded version with its own digest changes nothing. Raises
        `ManifestError` for a rollback, found again under the lock, and `HostError` when the
        state cannot be read or written.
        """
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._locked(fcntl.LOCK_EX, create=True):
            plugins = self._read()
            recorded = plugins.get(name)
            self._compare(name, version, sha256, recorded)
            if recorded is not None and recorded.version == version:
                return
            plugins[name] = AcceptedVersion(version=version, sha256=sha256)
            self._write(plugins)
        logger.info("recorded %s version %d (sha256 %s)", name, version, sha256)

    def recorded(self, name: str) -> AcceptedVersion | None:
        """Return the highest version accepted for `name`, or None."""
        with self._locked(fcntl.LOCK_SH, create=False):
            return self._read().get(name)

    def _compare(
        self, name: str, version: int, sha256: str, recorded: AcceptedVersion | None
    ) -> None:
        if recorded is None:
            return
        if version < recorded.version:
            raise ManifestError(
                f"rollback rejected: plugin {name!r} version {version} is older than version "
                f"{recorded.version}, which was already accepted (state file {self.path})",
                fix=f"install version {recorded.version} or later of {name}",
            )
        if version == recorded.version and sha256 != recorded.sha256:
            raise ManifestError(
                f"plugin {name!r} version {version} has sha256 {sha256}, but version {version} "
                f"was accepted with sha256 {recorded.sha256} (state file {self.path})",
                fix=f"sign the new build with a higher version: mosquitto-guard sign PLUGIN.so "
                f"--name {name} --version {version + 1} --key KEY",
            )

    @contextlib.contextmanager
    def _locked(self, operation: int, *, create: bool) -> Iterator[None]:
        if not create and not self.lock_path.exists():
            # Nothing was ever recorded here, and a reader must not create the directory.
            yield
            return
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise HostError(f"cannot open lock file {self.lock_path}: {error.strerror}") from None
        try:
            fcntl.flock(fd, operation)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict[str, AcceptedVersion]:
        try:
            with open(self.path, "rb") as handle:
                data = handle.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise HostError(f"cannot read state file {self.path}: {error.strerror}") from None
        return self._parse(data)

    def _parse(self, data: bytes) -> dict[str, AcceptedVersion]:
        if len(data) > MAX_STATE_BYTES:
            raise self._corrupt(f"larger than {MAX_STATE_BYTES} bytes")
        try:
            document: Any = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise self._corrupt(f"not valid JSON: {error}") from None
        if not isinstance(document, dict) or set(document) != {"format_version", "plugins"}:
            raise self._corrupt("expected an object with format_version and plugins")
        if document["format_version"] != STATE_FORMAT_VERSION:
            raise self._corrupt(f"unsupported format_version {document['format_version']!r}")
        plugins = document["plugins"]
        if not isinstance(plugins, dict):
            raise self._corrupt("plugins is not an object")
        accepted: dict[str, AcceptedVersion] = {}
        for name, entry in plugins.items():
            if not isinstance(entry, dict) or set(entry) != {"version", "sha256"}:
                raise self._corrupt(f"entry {name!r} must have exactly version and sha256")
            version, sha256 = entry["version"], entry["sha256"]
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise self._corrupt(f"entry {name!r} has an invalid version {version!r}")
            if not isinstance(sha256, str) or not SHA256_PATTERN.fullmatch(sha256):
                raise self._corrupt(f"entry {name!r} has an invalid sha256 {sha256!r}")
            accepted[name] = AcceptedVersion(version=version, sha256=sha256)
        return accepted

    def _corrupt(self, problem: str) -> HostError:
        return HostError(
            f"state file {self.path} is corrupt: {problem}",
            fix=f"restore {self.path} from a backup; deleting it turns off rollback protection "
            "until each plugin is accepted again",
        )

    def _write(self, plugins: dict[str, AcceptedVersion]) -> None:
        document = {
            "format_version": STATE_FORMAT_VERSION,
            "plugins": {
                name: {"version": entry.version, "sha256": entry.sha256}
                for name, entry in sorted(plugins.items())
            },
        }
        data = json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        # Imported here because a launch that accepts no new version never writes.
        from mosquitto_guard.fsutil import write_atomic

        write_atomic(self.path, data, mode=0o600)
