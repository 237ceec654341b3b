"""Build, sign, write and verify the integrity baseline.

The baseline is a JSON document, rendered with sorted keys so the same files always give the
same bytes:

    {"format_version": 1,
     "targets": {"configs": ["/etc/mosquitto/mosquitto.conf"], "broker": "/usr/sbin/mosquitto",
                 "unit": "/lib/systemd/system/mosquitto.service"},
     "files": {"/etc/mosquitto/mosquitto.conf":
                 {"reasons": ["main config file"],
                  "record": {"type": "file", "sha256": "...", "size": 1234, ...}}}}

Its signature sits beside it: `FILE.sig` (SSHSIG) or `FILE.minisig` (minisign), made in the
namespace `mosquitto-guard-baseline`.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from mosquitto_guard.errors import HostError, SignatureError, VerificationError
from mosquitto_guard.fsutil import read_bounded, sync_directory, write_atomic
from mosquitto_guard.integrity import BASELINE_NAMESPACE
from mosquitto_guard.integrity.record import Record
from mosquitto_guard.integrity.watchlist import Targets
from mosquitto_guard.policy.model import Policy
from mosquitto_guard.signing.keys import KeyKind, PrivateKey, inspect_signature

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_BASELINE_PATH = Path("/var/lib/mosquitto-guard/baseline.json")
SIGNATURE_SUFFIXES: dict[KeyKind, str] = {"ssh": ".sig", "minisign": ".minisig"}
# An estimate: a record takes about 500 bytes, so this allows some 100,000 files.
MAX_BASELINE_BYTES = 64 * 1024 * 1024
MAX_SIGNATURE_BYTES = 16 * 1024
# Hex digits of the baseline's SHA-256 in the name of a pending signature.
PENDING_DIGEST_LENGTH = 16
LOCK_SUFFIX = ".lock"


class BaselineError(VerificationError):
    """The baseline or its signature failed verification: it must not be trusted."""


class _Mismatch(BaselineError):
    """A trusted key's signature does not match the baseline bytes."""


class Entry(NamedTuple):
    """One watched file in a baseline: why it is watched, and its record.

    A named tuple, because a baseline parse creates one per file and a tuple is built several
    times faster than a frozen dataclass.
    """

    reasons: tuple[str, ...]
    record: Record


@dataclass(frozen=True)
class Baseline:
    """A baseline: each watched path mapped to its entry, the targets the watch list was
    derived from, and the key ids that signed it."""

    entries: dict[str, Entry]
    signers: tuple[str, ...] = ()
    targets: Targets | None = None
    # When the baseline was written (UTC). Changes explained by something older, such as a
    # manifest signed before it, are not expected.
    created: datetime | None = None


def render_baseline(baseline: Baseline) -> bytes:
    """Return the baseline as JSON bytes: one file per line, sorted by path, keys sorted.

    One entry per line keeps the document easy to diff, and lets each line go through the C
    JSON encoder: `indent` would switch `json` to its far slower Python encoder.
    """
    header: dict[str, object] = {"format_version": FORMAT_VERSION}
    if baseline.created is not None:
        header["created"] = baseline.created.isoformat(timespec="microseconds")
    if baseline.targets is not None:
        header["targets"] = baseline.targets.to_dict()
    lines = [
        json.dumps(path)
        + ": "
        + json.dumps({"reasons": list(entry.reasons), "record": entry.record}, sort_keys=True)
        for path, entry in sorted(baseline.entries.items())
    ]
    head = json.dumps(header, sort_keys=True)[:-1]
    body = ",\n".join(lines)
    return f'{head}, "files": {{\n{body}\n}}}}\n'.encode()


def signature_path(baseline_path: Path, kind: KeyKind) -> Path:
    """Return where a signature of `kind` over `baseline_path` is stored."""
    return baseline_path.with_name(baseline_path.name + SIGNATURE_SUFFIXES[kind])


def pending_path(baseline_path: Path, kind: KeyKind, data: bytes) -> Path:
    """Return where `write_signed` puts the signature of `data` before `data` replaces the
    baseline. The name contains a digest of the bytes, so it never names a signature of others."""
    digest = hashlib.sha256(data).hexdigest()[:PENDING_DIGEST_LENGTH]
    return baseline_path.with_name(f"{baseline_path.name}{SIGNATURE_SUFFIXES[kind]}.{digest}")


def write_signed(baseline_path: Path, data: bytes, key: PrivateKey) -> Path:
    """Write the baseline bytes and their signature by `key` so that a crash leaves a valid pair.

    `load_verified` accepts a baseline signed by `FILE.sig` or by the pending signature named
    for its bytes. Each step changes one file atomically, so a crash after any step leaves the
    old pair or the new one:

     1. write the new signature to `FILE.sig.DIGEST` (old baseline, old signature: valid);
     2. replace FILE (new baseline, pending signature: valid);
     3. rename the pending signature to `FILE.sig` (new pair: valid);
     4. remove the other kind's signature and any pending ones, which sign older bytes.

    Returns the signature's path. Raises `HostError` when a file cannot be written.
    """
    check_target(baseline_path)
    signature = key.sign(data, BASELINE_NAMESPACE, file_name=baseline_path.name)
    with _writer_lock(baseline_path):
        return _write_pair(baseline_path, data, signature, key.kind)


def check_target(baseline_path: Path) -> None:
    """Raise `HostError` when `baseline_path` cannot name a baseline file: a directory."""
    if baseline_path.is_dir():
        raise HostError(
            f"cannot write the baseline {baseline_path}: it is a directory",
            fix=f"name a file, for example --output {baseline_path / 'baseline.json'}",
        )


@contextmanager
def _writer_lock(baseline_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `FILE.lock`, so two writers never interleave their steps."""
    lock_path = baseline_path.with_name(baseline_path.name + LOCK_SUFFIX)
    try:
        descriptor = os.open(
            lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except OSError as error:
        raise HostError(f"cannot open the lock file {lock_path}: {error.strerror}") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _write_pair(baseline_path: Path, data: bytes, signature: bytes, kind: KeyKind) -> Path:
    pending = pending_path(baseline_path, kind, data)
    target = signature_path(baseline_path, kind)
    write_atomic(pending, signature)
    write_atomic(baseline_path, data)
    try:
        os.replace(pending, target)
        sync_directory(target.parent)
    except OSError as error:
        raise HostError(f"cannot rename {pending} to {target}: {error.strerror}") from None
    stale = [signature_path(baseline_path, kind) for kind in SIGNATURE_SUFFIXES]
    stale += [
        path
        for kind in SIGNATURE_SUFFIXES
        for path in baseline_path.parent.glob(f"{baseline_path.name}{SIGNATURE_SUFFIXES[kind]}.*")
        if _is_pending_name(path.name, baseline_path.name)
    ]
    for path in stale:
        if path == target:
            continue
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            raise HostError(f"cannot remove stale signature {path}: {error.strerror}") from None
    return target


def _is_pending_name(name: str, baseline_name: str) -> bool:
    for suffix in SIGNATURE_SUFFIXES.values():
        prefix = baseline_name + suffix + "."
        rest = name[len(prefix) :] if name.startswith(prefix) else ""
        if len(rest) == PENDING_DIGEST_LENGTH and all(c in "0123456789abcdef" for c in rest):
            return True
    return False


def verified_targets(baseline_path: Path, policy: Policy) -> Targets | None:
    """Return the targets of the baseline at `baseline_path` once its signature verifies.

    Only the first line is parsed, where `render_baseline` puts the header, so that reading
    the targets of a large baseline costs little more than its signature check. Raises like
    `load_verified`.
    """
    data, _ = _verified_bytes(baseline_path, policy)
    first = data.split(b"\n", 1)[0]
    suffix = b', "files": {'
    if first.endswith(suffix):
        header = first[: -len(suffix)] + b"}"
        try:
            document = json.loads(header)
        except (UnicodeDecodeError, json.JSONDecodeError):
            document = None
        if isinstance(document, dict):
            return _parse_targets(baseline_path, document.get("targets"))
    return parse_baseline(data, baseline_path).targets


def load_verified(baseline_path: Path, policy: Policy) -> Baseline:
    """Read the baseline, verify its signature against `policy`, and parse it.

    Raises `BaselineError` when no signature file exists, a signature is malformed, made for
    another namespace or by a key the policy does not trust, or does not match the bytes, or
    when the signed document is malformed. Raises `HostError` when the baseline or a
    signature cannot be read.
    """
    # Verification steps; every failure raises, so nothing unverified is parsed:
    #  1. Read the baseline bytes, at most MAX_BASELINE_BYTES.
    #  2. Collect FILE.sig, FILE.minisig and the pending signatures named for these bytes;
    #     none is an error.
    #  3. For each: check its namespace, skip revoked and untrusted keys, verify the bytes.
    #  4. Require at least one trusted signature that verified. A trusted signature that does
    #     not match is an error only when none matched: a write that stopped between its
    #     steps leaves the other signature behind (see `write_signed`).
    #  5. Parse the JSON and check its structure.
    # NOTE: one trusted signature is enough; the policy's threshold applies to manifests only.

    data, signers = _verified_bytes(baseline_path, policy)
    # Step 5. The parse builds one dict per file and creates no reference cycles, so the
    # collector only slows it down: it would scan the new objects again and again.
    with _collector_paused():
        parsed = parse_baseline(data, baseline_path)
    return replace(parsed, signers=tuple(signers))


def _verified_bytes(baseline_path: Path, policy: Policy) -> tuple[bytes, list[str]]:
    """Run steps 1 to 4 of `load_verified`; return the bytes and the signers' key ids."""
    # Step 1.
    if not baseline_path.exists() and not baseline_path.is_symlink():
        raise HostError(
            f"baseline not found: {baseline_path}",
            fix="write one first: mosquitto-guard baseline --policy POLICY --key KEY -c CONFIG "
            f"--output {baseline_path}",
        )
    try:
        data = read_bounded(baseline_path, MAX_BASELINE_BYTES, "baseline")
    except VerificationError as error:
        raise BaselineError(error.message) from None

    # Step 2.
    signatures = [
        (path, kind)
        for kind in SIGNATURE_SUFFIXES
        for path in (signature_path(baseline_path, kind), pending_path(baseline_path, kind, data))
        if path.exists()
    ]
    if not signatures:
        raise BaselineError(
            f"{baseline_path}: no signature found (expected {baseline_path.name}.sig or "
            f"{baseline_path.name}.minisig)",
            fix=_rebuild_fix(baseline_path),
        )

    # Steps 3 and 4.
    signers: list[str] = []
    skipped: list[str] = []
    mismatched: list[BaselineError] = []
    for path, kind in signatures:
        try:
            signer = _check_signature(baseline_path, data, path, kind, policy, skipped)
        except _Mismatch as error:
            mismatched.append(error)
            continue
        if signer is not None:
            signers.append(signer)
    if not signers and mismatched:
        raise mismatched[0]
    if not signers:
        raise BaselineError(
            f"{baseline_path}: signed by no key the policy {policy.path} trusts; "
            + "; ".join(skipped),
            fix=_rebuild_fix(baseline_path),
        )

    return data, signers


def _check_signature(
    baseline_path: Path,
    data: bytes,
    path: Path,
    kind: KeyKind,
    policy: Policy,
    skipped: list[str],
) -> str | None:
    """Return the signer's key id, None when the signature is skipped; raise when invalid."""
    try:
        raw = read_bounded(path, MAX_SIGNATURE_BYTES, "baseline signature")
        info = inspect_signature(kind, raw)
    except VerificationError as error:
        raise BaselineError(f"{path}: invalid signature file: {error.message}") from None
    if info.namespace != BASELINE_NAMESPACE:
        found = "no namespace" if info.namespace is None else f"namespace {info.namespace!r}"
        raise BaselineError(
            f"{path}: signature by key {info.key_id} has {found}, expected {BASELINE_NAMESPACE!r}",
            fix=_rebuild_fix(baseline_path),
        )
    if policy.is_revoked(info.key_id):
        skipped.append(f"{path.name} is by revoked key {info.key_id}")
        return None
    trusted = policy.trusted_key(info.key_id)
    if trusted is None:
        skipped.append(f"{path.name} is by key {info.key_id}, which the policy does not trust")
        return None
    try:
        trusted.key.verify(data, raw, BASELINE_NAMESPACE)
    except SignatureError as error:
        raise _Mismatch(
            f"{path}: signature by key {info.key_id} ({trusted.name}) does not verify: "
            f"{error.message}; the baseline changed after it was signed",
            fix=f"find out who changed {baseline_path}, then: {_rebuild_fix(baseline_path)}",
        ) from None
    return info.key_id


def parse_baseline(data: bytes, where: Path) -> Baseline:
    """Parse baseline bytes, without signers; raises `BaselineError` when they are not a
    baseline document."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BaselineError(f"{where}: not valid JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format_version") != FORMAT_VERSION:
        raise BaselineError(f"{where}: not a baseline with format_version {FORMAT_VERSION}")
    files = document.get("files")
    if not isinstance(files, dict):
        raise BaselineError(f"{where}: 'files' must be an object")
    entries: dict[str, Entry] = {}
    for path, value in files.items():
        # The checks are inline, because a large baseline has tens of thousands of entries.
        reasons = value.get("reasons") if type(value) is dict else None
        record = value.get("record") if type(value) is dict else None
        if (
            type(reasons) is not list
            or type(record) is not dict
            or type(record.get("type")) is not str
            or not all(type(item) is str for item in reasons)
        ):
            raise _entry_error(where, path, value)
        entries[path] = Entry(tuple(reasons), record)
    return Baseline(
        entries=entries,
        targets=_parse_targets(where, document.get("targets")),
        created=_parse_created(where, document.get("created")),
    )


def _parse_created(where: Path, value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        created = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        created = None
    if created is None or created.tzinfo is None:
        raise BaselineError(f"{where}: 'created' must be an ISO 8601 time with a zone")
    return created


def _parse_targets(where: Path, value: Any) -> Targets | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BaselineError(f"{where}: 'targets' must be an object")
    configs = value.get("configs", [])
    broker = value.get("broker")
    unit = value.get("unit")
    cwd = value.get("cwd")
    if not isinstance(configs, list) or not all(isinstance(item, str) for item in configs):
        raise BaselineError(f"{where}: 'targets.configs' must be a list of paths")
    for name, item in (("broker", broker), ("unit", unit), ("cwd", cwd)):
        if item is not None and not isinstance(item, str):
            raise BaselineError(f"{where}: 'targets.{name}' must be a path or null")
    return Targets(
        configs=tuple(Path(item) for item in configs),
        broker=Path(broker) if broker else None,
        unit=Path(unit) if unit else None,
        cwd=Path(cwd) if cwd else None,
    )


def _entry_error(where: Path, path: str, value: Any) -> BaselineError:
    """Return the error that describes what is wrong with the malformed entry `value`."""
    if type(value) is not dict:
        return BaselineError(f"{where}: entry {path!r} must be an object")
    reasons = value.get("reasons")
    if type(reasons) is not list or not all(type(item) is str for item in reasons):
        return BaselineError(f"{where}: entry {path!r}: 'reasons' must be a list of strings")
    return BaselineError(f"{where}: entry {path!r}: 'record' must be an object with a type")


@contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _rebuild_fix(baseline_path: Path) -> str:
    return (
        "after checking the files by other means, write a new baseline: mosquitto-guard "
        f"baseline --policy POLICY --key KEY -c CONFIG --unit UNIT --output {baseline_path}"
    )
