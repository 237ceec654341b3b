"""Build, sign, write and verify the integrity baseline.

The baseline is a JSON document, rendered with sorted keys so the same files always give the
same bytes:

    {"format_version": 1,
     "files": {"/etc/mosquitto/mosquitto.conf":
                 {"reasons": ["main config file"],
                  "record": {"type": "file", "sha256": "...", "size": 1234, ...}}}}

Its signature sits beside it: `FILE.sig` (SSHSIG) or `FILE.minisig` (minisign), made in the
namespace `mosquitto-guard-baseline`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosquitto_guard.errors import HostError, SignatureError, VerificationError
from mosquitto_guard.fsutil import read_bounded, sync_directory, write_atomic
from mosquitto_guard.integrity import BASELINE_NAMESPACE
from mosquitto_guard.integrity.record import Record
from mosquitto_guard.policy.model import Policy
from mosquitto_guard.signing.keys import KeyKind, PrivateKey, inspect_signature

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_BASELINE_PATH = Path("/var/lib/mosquitto-guard/baseline.json")
SIGNATURE_SUFFIXES: dict[KeyKind, str] = {"ssh": ".sig", "minisign": ".minisig"}
# An estimate: a record takes about 500 bytes, so this allows some 100,000 files.
MAX_BASELINE_BYTES = 64 * 1024 * 1024
MAX_SIGNATURE_BYTES = 16 * 1024
PENDING_SUFFIX = ".pending"


class BaselineError(VerificationError):
    """The baseline or its signature failed verification: it must not be trusted."""


@dataclass(frozen=True)
class Entry:
    """One watched file in a baseline: why it is watched, and its record."""

    reasons: tuple[str, ...]
    record: Record


@dataclass(frozen=True)
class Baseline:
    """A baseline: each watched path mapped to its entry, and the key ids that signed it."""

    entries: dict[str, Entry]
    signers: tuple[str, ...] = ()


def render_baseline(baseline: Baseline) -> bytes:
    """Return the baseline as JSON bytes: sorted keys, two-space indent, final newline."""
    document = {
        "format_version": FORMAT_VERSION,
        "files": {
            path: {"reasons": list(entry.reasons), "record": entry.record}
            for path, entry in baseline.entries.items()
        },
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def signature_path(baseline_path: Path, kind: KeyKind) -> Path:
    """Return where a signature of `kind` over `baseline_path` is stored."""
    return baseline_path.with_name(baseline_path.name + SIGNATURE_SUFFIXES[kind])


def pending_path(baseline_path: Path, kind: KeyKind) -> Path:
    """Return where `write_signed` puts the new signature before the new baseline."""
    return baseline_path.with_name(baseline_path.name + SIGNATURE_SUFFIXES[kind] + PENDING_SUFFIX)


def write_signed(baseline_path: Path, data: bytes, key: PrivateKey) -> Path:
    """Write the baseline bytes and their signature by `key` so that a crash leaves a valid pair.

    Each step replaces one file atomically, and `load_verified` accepts the baseline with its
    signature or with its pending signature. A crash after any step leaves the old pair or the
    new one:

     1. write the new signature to `FILE.sig.pending` (old baseline, old signature: valid);
     2. replace FILE (new baseline, pending signature: valid);
     3. rename the pending signature to `FILE.sig` (new pair: valid);
     4. remove signatures of the other kind, which sign older bytes.

    Returns the signature's path. Raises `HostError` when a file cannot be written.
    """
    signature = key.sign(data, BASELINE_NAMESPACE, file_name=baseline_path.name)
    pending = pending_path(baseline_path, key.kind)
    target = signature_path(baseline_path, key.kind)
    write_atomic(pending, signature)
    write_atomic(baseline_path, data)
    try:
        os.replace(pending, target)
        sync_directory(baseline_path.parent)
    except OSError as error:
        raise HostError(f"cannot rename {pending} to {target}: {error.strerror}") from None
    for kind in SIGNATURE_SUFFIXES:
        if kind == key.kind:
            continue
        for stale in (signature_path(baseline_path, kind), pending_path(baseline_path, kind)):
            try:
                stale.unlink(missing_ok=True)
            except OSError as error:
                raise HostError(
                    f"cannot remove stale signature {stale}: {error.strerror}"
                ) from None
    return target


def load_verified(baseline_path: Path, policy: Policy) -> Baseline:
    """Read the baseline, verify its signature against `policy`, and parse it.

    Raises `BaselineError` when no signature file exists, a signature is malformed, made for
    another namespace or by a key the policy does not trust, or does not match the bytes, or
    when the signed document is malformed. Raises `HostError` when the baseline or a
    signature cannot be read.
    """
    # Verification steps; every failure raises, so nothing unverified is parsed:
    #  1. Read the baseline bytes, at most MAX_BASELINE_BYTES.
    #  2. Collect FILE.sig, FILE.minisig and their pending copies; none is an error.
    #  3. For each: check its namespace, skip revoked and untrusted keys, verify the bytes.
    #     A pending signature that does not match is left over from a write that stopped
    #     before it replaced the baseline, and is skipped.
    #  4. Require at least one trusted signature that verified.
    #  5. Parse the JSON and check its structure.
    # NOTE: one trusted signature is enough; the policy's threshold applies to manifests only.

    # Step 1.
    try:
        data = read_bounded(baseline_path, MAX_BASELINE_BYTES, "baseline")
    except VerificationError as error:
        raise BaselineError(error.message) from None

    # Step 2.
    signatures = [
        (path, kind)
        for kind in SIGNATURE_SUFFIXES
        for path in (signature_path(baseline_path, kind), pending_path(baseline_path, kind))
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
    for path, kind in signatures:
        signer = _check_signature(baseline_path, data, path, kind, policy, skipped)
        if signer is not None:
            signers.append(signer)
    if not signers:
        raise BaselineError(
            f"{baseline_path}: signed by no key the policy {policy.path} trusts; "
            + "; ".join(skipped),
            fix=_rebuild_fix(baseline_path),
        )

    # Step 5.
    return Baseline(entries=parse_baseline(data, baseline_path), signers=tuple(signers))


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
        if path.name.endswith(PENDING_SUFFIX):
            skipped.append(f"{path.name} signs other bytes (left by an interrupted write)")
            return None
        raise BaselineError(
            f"{path}: signature by key {info.key_id} ({trusted.name}) does not verify: "
            f"{error.message}; the baseline changed after it was signed",
            fix=f"find out who changed {baseline_path}, then: {_rebuild_fix(baseline_path)}",
        ) from None
    return info.key_id


def parse_baseline(data: bytes, where: Path) -> dict[str, Entry]:
    """Parse baseline bytes; raises `BaselineError` when they are not a baseline document."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BaselineError(f"{where}: not valid JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format_version") != FORMAT_VERSION:
        raise BaselineError(f"{where}: not a baseline with format_version {FORMAT_VERSION}")
    files = document.get("files")
    if not isinstance(files, dict):
        raise BaselineError(f"{where}: 'files' must be an object")
    return {path: _parse_entry(where, path, value) for path, value in files.items()}


def _parse_entry(where: Path, path: str, value: Any) -> Entry:
    if not isinstance(value, dict):
        raise BaselineError(f"{where}: entry {path!r} must be an object")
    reasons = value.get("reasons")
    record = value.get("record")
    if not isinstance(reasons, list) or not all(isinstance(item, str) for item in reasons):
        raise BaselineError(f"{where}: entry {path!r}: 'reasons' must be a list of strings")
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        raise BaselineError(f"{where}: entry {path!r}: 'record' must be an object with a type")
    for key, attribute in record.items():
        if attribute is not None and not isinstance(attribute, str | int):
            raise BaselineError(f"{where}: entry {path!r}: attribute {key!r} is invalid")
    return Entry(reasons=tuple(reasons), record=record)


def _rebuild_fix(baseline_path: Path) -> str:
    return (
        "after checking the files by other means, write a new baseline: mosquitto-guard "
        f"baseline --policy POLICY --key KEY --output {baseline_path}"
    )
