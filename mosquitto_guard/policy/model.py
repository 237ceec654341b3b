"""The trust policy: which keys may sign manifests, how many must, and where things live.

The policy is one TOML file, by default `/etc/mosquitto-guard/policy.toml`:

    format_version = 1
    threshold = 1                          # distinct trusted keys that must sign; >= 1
    plugin_dirs = ["/usr/lib/mosquitto-guard/plugins"]
    manifest_dir = "manifests"             # default: "manifests" beside the policy file
    state_dir = "/var/lib/mosquitto-guard" # default
    revoked = ["SHA256:...", "RWQ...", "4DD1E74BE1AF4F63"]

    [[keys]]
    name = "release"
    key = "ssh-ed25519 AAAA... release@example.org"

    [[keys]]
    name = "ops"
    file = "keys/ops.pub"                  # an SSH or minisign .pub file

    [run]
    permissive = false

    [sandbox]
    mode = "enforce"                       # or "require", or "off"
    read = ["/etc/ssl/certs"]              # further paths the broker may read
    write = []                             # further directories it may write
    connect = ["db.example.com:5432"]      # further endpoints it may connect to

    [integrity]
    paths = ["/etc/mosquitto/extra.key"]   # further files or trees the baseline watches
    baseline = "baseline.json"             # default: baseline.json in state_dir
    require_clean_check = false            # true: run refuses to start on a failed check

Relative paths resolve against the directory of the policy file. `revoked` entries are key ids
(`SHA256:...` fingerprints or minisign hex ids) or public key lines.

Loading fails closed. `load_policy` raises `PolicyError`, naming the file and the key, for a
missing or malformed file and for an unknown key. It also raises for a policy without trusted
keys, a threshold above the number of trusted keys, a key that is both trusted and revoked, and
two keys with the same name or the same key id.

The policy file and key files must not be writable by group or others, and must be owned by
root or the current user, because whoever can write them decides what loads. docs/policy.md
describes every field.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosquitto_guard.errors import GuardError, PolicyError
from mosquitto_guard.manifest.model import check_endpoint
from mosquitto_guard.signing.keys import PublicKey, load_public_key, parse_public_key

DEFAULT_POLICY_PATH = Path("/etc/mosquitto-guard/policy.toml")
DEFAULT_MANIFEST_DIR = "manifests"
DEFAULT_BASELINE_NAME = "baseline.json"
DEFAULT_STATE_DIR = "/var/lib/mosquitto-guard"
FORMAT_VERSION = 1
MAX_POLICY_BYTES = 256 * 1024
KEY_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._+-]{0,63}")
SSH_KEY_ID_PATTERN = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
# minisign prints key ids without leading zeros, so shorter ids are padded to 16 digits.
MINISIGN_KEY_ID_PATTERN = re.compile(r"[0-9A-Fa-f]{1,16}")

TOP_LEVEL_FIELDS = {
    "format_version",
    "threshold",
    "keys",
    "revoked",
    "plugin_dirs",
    "manifest_dir",
    "state_dir",
    "run",
    "sandbox",
    "integrity",
}

SANDBOX_MODES = ("enforce", "require", "off")


@dataclass(frozen=True)
class SandboxSettings:
    """The `[sandbox]` table.

    `mode` is "enforce" (apply every layer the kernel offers and warn about the others),
    "require" (reject the launch when a layer is missing) or "off". `read`, `write` and
    `connect` add to what the broker config and the manifests grant.
    """

    mode: str = "enforce"
    read: tuple[Path, ...] = ()
    write: tuple[Path, ...] = ()
    connect: tuple[str, ...] = ()


@dataclass(frozen=True)
class IntegritySettings:
    """The `[integrity]` table.

    `paths` adds files, or directory trees, to the baseline. `baseline` is the signed baseline
    `check`, `watch`, `restore` and `run` read. With `require_clean_check`, `run` refuses to start
    the broker unless that baseline verifies and every difference from it is expected.
    """

    baseline: Path
    paths: tuple[Path, ...] = ()
    require_clean_check: bool = False


@dataclass(frozen=True)
class TrustedKey:
    """A key the policy trusts: its name in the policy, the key, and where it was written."""

    name: str
    key: PublicKey
    source: str

    @property
    def key_id(self) -> str:
        return self.key.key_id


@dataclass(frozen=True)
class Policy:
    """A loaded trust policy. All paths are absolute, and `revoked` contains key ids."""

    path: Path
    threshold: int
    keys: tuple[TrustedKey, ...]
    revoked: frozenset[str]
    plugin_dirs: tuple[Path, ...]
    manifest_dir: Path
    state_dir: Path
    integrity: IntegritySettings
    permissive: bool = False
    sandbox: SandboxSettings = SandboxSettings()

    def trusted_key(self, key_id: str) -> TrustedKey | None:
        """Return the trusted key with this id, or None."""
        for trusted in self.keys:
            if trusted.key_id == key_id:
                return trusted
        return None

    def is_revoked(self, key_id: str) -> bool:
        return key_id in self.revoked


def load_policy(path: Path) -> Policy:
    """Read, check and return the policy at `path`.

    Raises `PolicyError` naming the file and the key at fault for every malformed, unsafe or
    fail-open policy (see the module docstring).
    """
    path = Path(path).absolute()
    document = _read_document(path)
    loader = _PolicyLoader(path, document)
    return loader.load()


def _read_document(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            _check_file_safety(path, os.fstat(handle.fileno()), "policy file")
            data = handle.read(MAX_POLICY_BYTES + 1)
    except FileNotFoundError:
        raise PolicyError(
            f"policy file {path} not found",
            fix="write one as described in docs/policy.md, or give its path with --policy",
        ) from None
    except IsADirectoryError:
        raise PolicyError(
            f"policy file {path} is a directory", fix="give the path of the policy.toml inside it"
        ) from None
    except OSError as error:
        raise PolicyError(
            f"cannot read policy file {path}: {error.strerror}", fix="check its permissions"
        ) from None
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(f"{path}: policy file is larger than {MAX_POLICY_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PolicyError(
            f"{path}: policy file is not UTF-8 (invalid byte at offset {error.start})"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"{path}: TOML syntax error: {error}") from None


def _check_file_safety(path: Path, info: os.stat_result, what: str) -> None:
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = stat.S_IMODE(info.st_mode)
        raise PolicyError(
            f"{path}: {what} is writable by group or others (mode {mode:04o})",
            fix=f"chmod go-w {path}",
        )
    if info.st_uid not in (0, os.geteuid()):
        raise PolicyError(
            f"{path}: {what} is owned by uid {info.st_uid}, not by root or the current user",
            fix=f"chown root {path}",
        )


class _PolicyLoader:
    """Builds a `Policy` from a parsed TOML document, naming the file and key in every error."""

    def __init__(self, path: Path, document: dict[str, Any]) -> None:
        self.path = path
        self.base = path.parent
        self.document = document

    def error(self, key: str, problem: str, fix: str | None = None) -> PolicyError:
        return PolicyError(f"{self.path}: {key}: {problem}", fix=fix)

    def load(self) -> Policy:
        unknown = sorted(set(self.document) - TOP_LEVEL_FIELDS)
        if unknown:
            raise self.error(unknown[0], "unknown field")
        self._check_format_version()
        keys = self._load_keys()
        revoked = self._load_revoked()
        threshold = self._integer("threshold", default=1)
        if threshold < 1:
            raise self.error("threshold", f"must be at least 1, not {threshold}")
        if threshold > len(keys):
            raise self.error(
                "threshold",
                f"{threshold} signatures required, but only {len(keys)} trusted key(s) are listed",
                fix="add [[keys]] entries or lower the threshold",
            )
        for index, trusted in enumerate(keys):
            if trusted.key_id in revoked:
                raise self.error(
                    f"keys[{index}]",
                    f"key {trusted.name!r} ({trusted.key_id}) is also listed in revoked",
                    fix="remove it from [[keys]] or from revoked",
                )
        state_dir = self._directory("state_dir", DEFAULT_STATE_DIR)
        return Policy(
            path=self.path,
            threshold=threshold,
            keys=tuple(keys),
            revoked=frozenset(revoked),
            plugin_dirs=tuple(self._plugin_dirs()),
            manifest_dir=self._directory("manifest_dir", DEFAULT_MANIFEST_DIR),
            state_dir=state_dir,
            permissive=self._permissive(),
            sandbox=self._sandbox(),
            integrity=self._integrity(state_dir),
        )

    def _check_format_version(self) -> None:
        if "format_version" not in self.document:
            raise self.error("format_version", f"missing; add format_version = {FORMAT_VERSION}")
        version = self._integer("format_version", default=None)
        if version != FORMAT_VERSION:
            raise self.error(
                "format_version", f"unsupported version {version}, expected {FORMAT_VERSION}"
            )

    def _integer(self, key: str, default: int | None) -> int:
        value = self.document.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, not {value!r}")
        return value

    def _string(self, table: dict[str, Any], key: str, where: str) -> str:
        value = table[key]
        if not isinstance(value, str):
            raise self.error(where, f"must be a string, not {value!r}")
        if not value or not value.isprintable():
            raise self.error(where, "must be a non-empty string without control characters")
        return value

    def _resolve(self, value: str) -> Path:
        return Path(os.path.normpath(self.base / value))

    def _load_keys(self) -> list[TrustedKey]:
        entries = self.document.get("keys", [])
        if not isinstance(entries, list) or not all(isinstance(item, dict) for item in entries):
            raise self.error("keys", "must be an array of tables ([[keys]])")
        if not entries:
            raise self.error(
                "keys",
                "no trusted keys: a policy without keys would accept nothing",
                fix="add a [[keys]] entry with the public key that signs your manifests",
            )
        keys: list[TrustedKey] = []
        for index, entry in enumerate(entries):
            trusted = self._load_key(index, entry)
            for earlier in keys:
                if earlier.name == trusted.name:
                    raise self.error(f"keys[{index}].name", f"duplicate key name {trusted.name!r}")
                if earlier.key_id == trusted.key_id or earlier.key.material == trusted.key.material:
                    raise self.error(
                        f"keys[{index}]",
                        f"key {trusted.key_id} is already listed as {earlier.name!r}",
                    )
            keys.append(trusted)
        return keys

    def _load_key(self, index: int, entry: dict[str, Any]) -> TrustedKey:
        where = f"keys[{index}]"
        unknown = sorted(set(entry) - {"name", "key", "file"})
        if unknown:
            raise self.error(f"{where}.{unknown[0]}", "unknown field")
        if "name" not in entry:
            raise self.error(f"{where}.name", "missing")
        name = self._string(entry, "name", f"{where}.name")
        if not KEY_NAME_PATTERN.fullmatch(name):
            raise self.error(
                f"{where}.name",
                f"invalid key name {name!r}: use up to 64 letters, digits and '@._+-'",
            )
        if ("key" in entry) == ("file" in entry):
            raise self.error(where, f"key {name!r} needs exactly one of 'key' or 'file'")
        try:
            if "key" in entry:
                line = self._string(entry, "key", f"{where}.key")
                return TrustedKey(name=name, key=parse_public_key(line), source=f"{where}.key")
            key_path = self._resolve(self._string(entry, "file", f"{where}.file"))
            self._check_key_file(key_path, f"{where}.file")
            return TrustedKey(name=name, key=load_public_key(key_path), source=str(key_path))
        except PolicyError:
            raise
        except GuardError as error:
            raise self.error(where, f"key {name!r}: {error.message}") from None

    def _check_key_file(self, key_path: Path, where: str) -> None:
        try:
            info = key_path.stat()
        except FileNotFoundError:
            raise self.error(where, f"key file {key_path} not found") from None
        except OSError as error:
            raise self.error(where, f"cannot read key file {key_path}: {error.strerror}") from None
        try:
            _check_file_safety(key_path, info, "key file")
        except PolicyError as error:
            raise self.error(where, error.message, fix=error.fix) from None

    def _load_revoked(self) -> set[str]:
        entries = self.document.get("revoked", [])
        if not isinstance(entries, list):
            raise self.error("revoked", "must be an array of key ids or public key lines")
        revoked: set[str] = set()
        for index, entry in enumerate(entries):
            where = f"revoked[{index}]"
            if not isinstance(entry, str):
                raise self.error(where, f"must be a string, not {entry!r}")
            revoked.add(self._revoked_key_id(entry.strip(), where))
        return revoked

    def _revoked_key_id(self, entry: str, where: str) -> str:
        if SSH_KEY_ID_PATTERN.fullmatch(entry):
            return entry
        if MINISIGN_KEY_ID_PATTERN.fullmatch(entry):
            return entry.upper().zfill(16)
        try:
            return parse_public_key(entry).key_id
        except GuardError as error:
            raise self.error(
                where,
                f"{entry[:60]!r} is neither a key id (SHA256:... or up to 16 hex digits) "
                f"nor a valid public key: {error.message}",
            ) from None

    def _paths(self, key: str, value: object) -> list[Path]:
        if not isinstance(value, list):
            raise self.error(key, "must be an array of paths")
        paths: list[Path] = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item or not item.isprintable():
                raise self.error(f"{key}[{index}]", f"must be a non-empty path, not {item!r}")
            paths.append(self._resolve(item))
        return paths

    def _plugin_dirs(self) -> list[Path]:
        return self._paths("plugin_dirs", self.document.get("plugin_dirs", []))

    def _directory(self, key: str, default: str) -> Path:
        value = self.document.get(key, default)
        if not isinstance(value, str) or not value or not value.isprintable():
            raise self.error(key, f"must be a non-empty path, not {value!r}")
        return self._resolve(value)

    def _permissive(self) -> bool:
        run = self.document.get("run", {})
        if not isinstance(run, dict):
            raise self.error("run", "must be a table ([run])")
        unknown = sorted(set(run) - {"permissive"})
        if unknown:
            raise self.error(f"run.{unknown[0]}", "unknown field")
        permissive = run.get("permissive", False)
        if not isinstance(permissive, bool):
            raise self.error("run.permissive", f"must be true or false, not {permissive!r}")
        return permissive

    def _sandbox(self) -> SandboxSettings:
        table = self.document.get("sandbox", {})
        if not isinstance(table, dict):
            raise self.error("sandbox", "must be a table ([sandbox])")
        unknown = sorted(set(table) - {"mode", "read", "write", "connect"})
        if unknown:
            raise self.error(f"sandbox.{unknown[0]}", "unknown field")
        mode = table.get("mode", "enforce")
        if mode not in SANDBOX_MODES:
            choices = ", ".join(repr(choice) for choice in SANDBOX_MODES)
            raise self.error("sandbox.mode", f"must be one of {choices}, not {mode!r}")
        connect = table.get("connect", [])
        if not isinstance(connect, list):
            raise self.error("sandbox.connect", "must be an array of host:port strings")
        for index, endpoint in enumerate(connect):
            where = f"sandbox.connect[{index}]"
            if not isinstance(endpoint, str):
                raise self.error(where, f"must be a host:port string, not {endpoint!r}")
            try:
                check_endpoint(endpoint, where)
            except GuardError as error:
                raise PolicyError(f"{self.path}: {error}") from None
        return SandboxSettings(
            mode=mode,
            read=tuple(self._paths("sandbox.read", table.get("read", []))),
            write=tuple(self._paths("sandbox.write", table.get("write", []))),
            connect=tuple(connect),
        )

    def _integrity(self, state_dir: Path) -> IntegritySettings:
        table = self.document.get("integrity", {})
        if not isinstance(table, dict):
            raise self.error("integrity", "must be a table ([integrity])")
        unknown = sorted(set(table) - {"paths", "baseline", "require_clean_check"})
        if unknown:
            raise self.error(f"integrity.{unknown[0]}", "unknown field")
        baseline = table.get("baseline")
        if baseline is None:
            baseline_path = state_dir / DEFAULT_BASELINE_NAME
        elif isinstance(baseline, str) and baseline and baseline.isprintable():
            baseline_path = self._resolve(baseline)
        else:
            raise self.error("integrity.baseline", f"must be a non-empty path, not {baseline!r}")
        require = table.get("require_clean_check", False)
        if not isinstance(require, bool):
            raise self.error(
                "integrity.require_clean_check", f"must be true or false, not {require!r}"
            )
        return IntegritySettings(
            baseline=baseline_path,
            paths=tuple(self._paths("integrity.paths", table.get("paths", []))),
            require_clean_check=require,
        )
