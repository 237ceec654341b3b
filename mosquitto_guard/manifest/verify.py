"""Verifying manifests against the trust policy, and plugins against their manifests.

Signature files sit beside the manifest `NAME.toml`:

- `NAME.toml.sig`: an SSHSIG signature, as `ssh-keygen -Y sign -f KEY -n
  mosquitto-guard-manifest NAME.toml` writes it;
- `NAME.toml.minisig`: a minisign signature, as `minisign -S -m NAME.toml -t
  'namespace:mosquitto-guard-manifest file:NAME.toml'` writes it;
- `NAME.toml.LABEL.sig` and `NAME.toml.LABEL.minisig`: signatures by further signers, for a
  policy whose threshold is above 1. LABEL is 1 to 64 letters, digits, '_' or '-'.

Each signature file is at most 16 KiB. `verify_manifest` checks one manifest,
`find_manifest` picks the manifest for a plugin's digest from the policy's manifest
directory, and `check_against_manifest` checks a plugin file and the broker that will load it
against a verified manifest.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from packaging.version import InvalidVersion, Version

from mosquitto_guard.errors import GuardError, HostError, ManifestError, SignatureError
from mosquitto_guard.manifest.model import MAX_MANIFEST_BYTES, Manifest, parse_manifest
from mosquitto_guard.policy.model import Policy
from mosquitto_guard.policy.state import VersionState
from mosquitto_guard.signing import MANIFEST_NAMESPACE
from mosquitto_guard.signing.keys import KeyKind, inspect_signature

logger = logging.getLogger(__name__)

MAX_SIGNATURE_FILE_BYTES = 16 * 1024
SIGNATURE_SUFFIXES: dict[str, KeyKind] = {".sig": "ssh", ".minisig": "minisign"}
LABEL_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MANIFEST_SUFFIX = ".toml"
# A bound on the manifests indexed from one directory, so a full directory cannot stall a launch.
MAX_MANIFESTS = 4096


@dataclass(frozen=True)
class SignerInfo:
    """A trusted key whose signature on a manifest verified, and the file that held it."""

    name: str
    key_id: str
    signature_path: Path

    def __str__(self) -> str:
        return f"{self.name} ({self.key_id})"


@dataclass(frozen=True)
class VerifiedManifest:
    """A manifest whose signatures met the policy's threshold.

    `signers` lists each signer as `NAME (KEY_ID)`, `signer_details` the same signers with
    their signature files. `state_dir` is the rollback state directory of the policy that
    verified the manifest.
    """

    path: Path
    manifest: Manifest
    signer_details: tuple[SignerInfo, ...]
    state_dir: Path

    @property
    def signers(self) -> tuple[str, ...]:
        return tuple(str(signer) for signer in self.signer_details)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(signer.key_id for signer in self.signer_details)

    @property
    def signer_names(self) -> tuple[str, ...]:
        return tuple(signer.name for signer in self.signer_details)


def signature_paths(manifest_path: Path) -> list[tuple[Path, KeyKind]]:
    """Return the signature files beside `manifest_path` with the kind of key each expects.

    Files that start with the manifest's name but match neither naming pattern are skipped
    with a warning, because they cannot add trust.
    """
    prefix = manifest_path.name + "."
    found: list[tuple[Path, KeyKind]] = []
    try:
        candidates = sorted(manifest_path.parent.iterdir())
    except OSError as error:
        raise HostError(f"cannot list {manifest_path.parent}: {error.strerror}") from None
    for candidate in candidates:
        if not candidate.name.startswith(prefix):
            continue
        rest = candidate.name[len(prefix) - 1 :]
        kind = _signature_kind(rest)
        if kind is None:
            logger.warning(
                "ignoring %s: not a signature file name for %s", candidate, manifest_path
            )
            continue
        found.append((candidate, kind))
    return found


def _signature_kind(rest: str) -> KeyKind | None:
    """Classify `.sig`, `.minisig`, `.LABEL.sig` and `.LABEL.minisig`; None for anything else."""
    for suffix, kind in SIGNATURE_SUFFIXES.items():
        if rest == suffix:
            return kind
        if rest.endswith(suffix) and rest.startswith("."):
            label = rest[1 : -len(suffix)]
            if LABEL_PATTERN.fullmatch(label):
                return kind
    return None


def sign_fix(manifest_path: Path) -> str:
    """Return the command that adds a signature to an existing manifest."""
    return f"mosquitto-guard sign --manifest {manifest_path} --key KEY"


def resign_fix(manifest: Manifest, manifest_dir: Path) -> str:
    """Return the command that writes and signs a new manifest for the same plugin."""
    return (
        f"mosquitto-guard sign PATH/{manifest.file.name} --key KEY --name {manifest.name} "
        f"--version {manifest.version} --manifest-dir {manifest_dir}"
    )


def verify_manifest(path: Path, policy: Policy, now: datetime) -> VerifiedManifest:
    """Verify the manifest at `path` and its signatures against `policy` at time `now` (aware).

    Raises `ManifestError` when the manifest is malformed, expired, or signed by fewer distinct
    trusted keys than the threshold. Raises `SignatureError` when a signature file is malformed,
    is for another namespace, or does not match the manifest. Raises `HostError` when a file
    cannot be read.
    """
    # Verification steps; any failure raises, so nothing unchecked is ever returned:
    #  1. Read the manifest, at most 64 KiB.
    #  2. Parse and validate it.
    #  3. Collect the signature files beside it; none at all is an error.
    #  4. For each signature: read at most 16 KiB, parse it, check its namespace, and find its
    #     key in the policy.
    #  5. Skip (with a warning) signatures by revoked keys and by keys the policy does not trust.
    #  6. Verify each remaining signature over the manifest's exact bytes.
    #  7. Count distinct trusted, non-revoked signers and compare with the threshold.
    #  8. Check that the manifest has not expired.
    path = Path(path)
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")

    # Steps 1 and 2: read and parse.
    data = _read_limited(path, MAX_MANIFEST_BYTES, "manifest", ManifestError)
    manifest = parse_manifest(data, str(path))

    # Step 3: collect signatures.
    signatures = signature_paths(path)
    if not signatures:
        raise ManifestError(
            f"{path}: no signature file found (expected {path.name}.sig or {path.name}.minisig)",
            fix=sign_fix(path),
        )

    # Steps 4 to 6: check each signature.
    signers: dict[str, SignerInfo] = {}
    skipped: list[str] = []
    for signature_path, kind in signatures:
        signer = _check_signature(path, data, signature_path, kind, policy, skipped)
        if signer is None:
            continue
        # Distinct signers are distinct keys, not distinct key ids or formats.
        material = policy.trusted_key(signer.key_id)
        identity = material.key.material if material is not None else signer.key_id
        signers.setdefault(identity, signer)

    # Step 7: threshold.
    if len(signers) < policy.threshold:
        raise ManifestError(
            _threshold_message(path, policy, list(signers.values()), skipped), fix=sign_fix(path)
        )

    # Step 8: expiry.
    if now >= manifest.expires:
        raise ManifestError(
            f"{path}: manifest expired at {_format_time(manifest.expires)} "
            f"(now {_format_time(now)}); signed by "
            f"{', '.join(signer.key_id for signer in signers.values())}",
            fix=resign_fix(manifest, path.parent),
        )
    return VerifiedManifest(
        path=path,
        manifest=manifest,
        signer_details=tuple(signers.values()),
        state_dir=policy.state_dir,
    )


def _check_signature(
    manifest_path: Path,
    data: bytes,
    signature_path: Path,
    kind: KeyKind,
    policy: Policy,
    skipped: list[str],
) -> SignerInfo | None:
    """Return the signer when the signature counts, None when it is skipped; raise otherwise."""
    raw = _read_limited(signature_path, MAX_SIGNATURE_FILE_BYTES, "signature", SignatureError)
    try:
        info = inspect_signature(kind, raw)
    except SignatureError as error:
        raise SignatureError(
            f"{signature_path}: invalid signature file: {error.message}",
            fix=f"remove {signature_path}, then: {sign_fix(manifest_path)}",
        ) from None
    if info.namespace != MANIFEST_NAMESPACE:
        found = "no namespace" if info.namespace is None else f"namespace {info.namespace!r}"
        raise SignatureError(
            f"{signature_path}: signature by key {info.key_id} has {found}, "
            f"expected {MANIFEST_NAMESPACE!r}",
            fix=f"remove {signature_path}, then: {sign_fix(manifest_path)}",
        )
    if policy.is_revoked(info.key_id):
        reason = f"signature {signature_path.name} is by revoked key {info.key_id}"
        logger.warning("%s: ignoring %s", manifest_path, reason)
        skipped.append(reason)
        return None
    trusted = policy.trusted_key(info.key_id)
    if trusted is None:
        reason = (
            f"signature {signature_path.name} is by key {info.key_id}, which the policy "
            "does not trust"
        )
        logger.warning("%s: ignoring %s", manifest_path, reason)
        skipped.append(reason)
        return None
    try:
        trusted.key.verify(data, raw, MANIFEST_NAMESPACE)
    except SignatureError as error:
        raise SignatureError(
            f"{signature_path}: signature by key {info.key_id} ({trusted.name}) does not verify: "
            f"{error.message}; the manifest changed after it was signed",
            fix=f"remove {signature_path}, then: {sign_fix(manifest_path)}",
        ) from None
    return SignerInfo(name=trusted.name, key_id=info.key_id, signature_path=signature_path)


def _threshold_message(
    path: Path, policy: Policy, signers: list[SignerInfo], skipped: list[str]
) -> str:
    if signers:
        valid = f"signed by {len(signers)} trusted key(s) ({', '.join(map(str, signers))})"
    else:
        valid = "signed by no trusted key"
    message = f"{path}: {valid}, but the policy {policy.path} requires {policy.threshold}"
    if skipped:
        message += "; ignored: " + "; ".join(skipped)
    return message


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_limited(
    path: Path, limit: int, description: str, error_type: type[ManifestError] | type[SignatureError]
) -> bytes:
    """Read `path`, raising `error_type` when it contains more than `limit` bytes."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise HostError(f"{description} not found: {path}") from None
    except OSError as error:
        raise HostError(f"cannot read {description} {path}: {error.strerror}") from None
    if len(data) > limit:
        raise error_type(
            f"{path}: {description} file is larger than the maximum of {limit} bytes",
            fix=f"replace {path} with the file the signer produced",
        )
    return data


@dataclass(frozen=True)
class ManifestIndex:
    """Every manifest of one directory, parsed but not yet verified, and the errors of the rest.

    Building it once lets a launch that checks several plugins read the directory once. The
    signatures are still verified for each plugin, over bytes read again at that time.
    """

    manifests: tuple[tuple[Path, Manifest], ...]
    unreadable: tuple[GuardError, ...]


def index_manifests(manifest_dir: Path) -> ManifestIndex:
    """Parse every `*.toml` in `manifest_dir`, listing the ones that cannot be parsed as unreadable.

    Raises `HostError` when the directory is missing, cannot be listed, or contains more than
    `MAX_MANIFESTS` manifests.
    """
    manifests, unreadable = _index(manifest_dir)
    return ManifestIndex(tuple(manifests), tuple(unreadable))


def find_manifest(
    plugin_path: Path,
    sha256: str,
    policy: Policy,
    now: datetime,
    *,
    index: ManifestIndex | None = None,
) -> VerifiedManifest:
    """Return the verified manifest in `policy.manifest_dir` for a plugin with digest `sha256`.

    Among the manifests for this digest that verify, the highest version wins. `index` is the
    directory's index when the caller built one with `index_manifests`; otherwise the directory
    is read here. Raises `ManifestError` when none matches the digest (naming a manifest for the
    same file name, if one exists, with both digests), or the error of the best matching
    manifest when none of the matching manifests verifies.
    """
    plugin_path = Path(plugin_path)
    if index is None:
        index = index_manifests(policy.manifest_dir)
    manifests, unreadable = list(index.manifests), list(index.unreadable)
    matching = [(path, manifest) for path, manifest in manifests if manifest.file.sha256 == sha256]
    matching.sort(key=lambda item: item[1].version, reverse=True)
    first_error: GuardError | None = None
    for path, _ in matching:
        try:
            return verify_manifest(path, policy, now)
        except GuardError as error:
            # Only the first error is raised, and the caller reports it; log the others.
            if first_error is None:
                first_error = error
            else:
                logger.warning("%s", error)
    if first_error is not None:
        raise first_error
    same_name = [item for item in manifests if item[1].file.name == plugin_path.name]
    if same_name:
        same_name.sort(key=lambda item: item[1].version, reverse=True)
        raise _digest_mismatch(plugin_path, sha256, same_name[0], policy, now)
    skipped = "".join(f"; skipped {error.message}" for error in unreadable)
    raise ManifestError(
        f"{plugin_path}: no manifest in {policy.manifest_dir} for this plugin (sha256 {sha256})"
        + skipped,
        fix=f"mosquitto-guard sign {plugin_path} --key KEY --name NAME --version 1 "
        f"--manifest-dir {policy.manifest_dir}",
    )


def _index(manifest_dir: Path) -> tuple[list[tuple[Path, Manifest]], list[GuardError]]:
    """Parse every `*.toml` in `manifest_dir`; return the manifests and the errors of the rest.

    A manifest that cannot be read or parsed is skipped with a warning, so one damaged file
    does not stop every other plugin from loading.
    """
    if not manifest_dir.is_dir():
        raise HostError(
            f"manifest directory {manifest_dir} not found",
            fix="create it, or set manifest_dir in the policy",
        )
    try:
        paths = sorted(manifest_dir.glob("*" + MANIFEST_SUFFIX))
    except OSError as error:
        raise HostError(
            f"cannot list manifest directory {manifest_dir}: {error.strerror}"
        ) from None
    if len(paths) > MAX_MANIFESTS:
        raise HostError(
            f"manifest directory {manifest_dir} contains {len(paths)} manifests, more than the "
            f"maximum of {MAX_MANIFESTS}"
        )
    manifests: list[tuple[Path, Manifest]] = []
    errors: list[GuardError] = []
    for path in paths:
        try:
            data = _read_limited(path, MAX_MANIFEST_BYTES, "manifest", ManifestError)
            manifests.append((path, parse_manifest(data, str(path))))
        except GuardError as error:
            logger.warning("skipping unreadable manifest: %s", error)
            errors.append(error)
    return manifests, errors


def _digest_mismatch(
    plugin_path: Path,
    sha256: str,
    candidate: tuple[Path, Manifest],
    policy: Policy,
    now: datetime,
) -> ManifestError:
    manifest_path, manifest = candidate
    try:
        signed_by = ", ".join(verify_manifest(manifest_path, policy, now).key_ids)
    except GuardError as error:
        logger.debug("manifest %s does not verify either: %s", manifest_path, error)
        signed_by = "no valid signer"
    return ManifestError(
        f"{plugin_path}: sha256 {sha256} does not match manifest {manifest_path} "
        f"(version {manifest.version}, signed by {signed_by}), which expects sha256 "
        f"{manifest.file.sha256}",
        fix=f"if this build is genuine, sign it: mosquitto-guard sign {plugin_path} --key KEY "
        f"--name {manifest.name} --version {manifest.version + 1} "
        f"--manifest-dir {manifest_path.parent}",
    )


def check_against_manifest(
    verified: VerifiedManifest,
    plugin_path: Path,
    sha256: str,
    size: int,
    broker_version: str | tuple[int, ...],
    plugin_options: list[str] | tuple[str, ...] | set[str],
    *,
    state: VersionState | None = None,
) -> None:
    """Check a plugin file and the broker that loads it against a verified manifest.

    Checks, in order: the size, the SHA-256 digest, the broker version against
    `plugin.mosquitto`, the `plugin_opt_` keys (without prefix) against `plugin.options`, and
    the rollback state (`state`, by default the state directory of the verifying policy).
    Raises `ManifestError` for the first check that fails and `HostError` when the rollback
    state cannot be read.
    """
    manifest = verified.manifest
    where = f"{plugin_path}: manifest {verified.path}"
    if size != manifest.file.size:
        raise ManifestError(
            f"{where} expects {manifest.file.size} bytes, the file has {size}",
            fix=resign_fix(manifest, verified.path.parent),
        )
    if sha256 != manifest.file.sha256:
        raise ManifestError(
            f"{where} expects sha256 {manifest.file.sha256}, the file has {sha256}",
            fix=resign_fix(manifest, verified.path.parent),
        )
    version = _broker_version(broker_version)
    if not manifest.plugin.specifier.contains(version, prereleases=True):
        raise ManifestError(
            f"{where} accepts Mosquitto {manifest.plugin.mosquitto}, but the broker is {version}",
            fix=f"install a plugin build for Mosquitto {version} and sign it",
        )
    unknown = sorted(set(plugin_options) - set(manifest.plugin.options))
    if unknown:
        accepted = ", ".join(manifest.plugin.options) or "none"
        raise ManifestError(
            f"{where} does not accept option plugin_opt_{unknown[0]} (accepted: {accepted})",
            fix="remove the option from the broker config, or sign a manifest that lists it "
            "with --option",
        )
    (state or VersionState(verified.state_dir)).check(manifest.name, manifest.version, sha256)


def _broker_version(value: str | tuple[int, ...]) -> Version:
    text = ".".join(str(part) for part in value) if isinstance(value, tuple) else value
    try:
        return Version(text)
    except InvalidVersion:
        raise ValueError(f"invalid broker version {value!r}") from None


def record_accepted(verified: VerifiedManifest, sha256: str) -> None:
    """Record the manifest's version as accepted, so older versions are rejected from now on."""
    VersionState(verified.state_dir).record(
        verified.manifest.name, verified.manifest.version, sha256
    )
