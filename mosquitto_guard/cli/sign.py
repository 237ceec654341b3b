"""`mosquitto-guard sign`: write and sign a manifest for a plugin, or co-sign a manifest.

Two forms:

    mosquitto-guard sign PLUGIN.so --key KEY --name NAME --version N [options]
    mosquitto-guard sign --manifest FILE --key KEY [--label LABEL]

The first writes `NAME.toml` (or `--output FILE`) and its signature `NAME.toml.sig` (SSH key) or
`NAME.toml.minisig` (minisign key), and removes the signature files of the manifest it
replaces, because they sign bytes that no longer exist. The second adds a signature to an
existing manifest without changing it, for policies that need more than one signer. stdout
lists the files written.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.construct.core import ConstructError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from mosquitto_guard.errors import GuardError, HostError, ManifestError, UsageError
from mosquitto_guard.fsutil import write_atomic
from mosquitto_guard.manifest.model import (
    MAX_MANIFEST_BYTES,
    Manifest,
    Permissions,
    PluginFile,
    PluginRequirements,
    parse_manifest,
    render_manifest,
)
from mosquitto_guard.manifest.verify import LABEL_PATTERN, signature_paths
from mosquitto_guard.policy.model import DEFAULT_POLICY_PATH
from mosquitto_guard.signing import MANIFEST_NAMESPACE
from mosquitto_guard.signing.keys import PrivateKey, inspect_signature, load_private_key

logger = logging.getLogger(__name__)

DEFAULT_MANIFEST_DIR = DEFAULT_POLICY_PATH.parent / "manifests"
DEFAULT_VALID_DAYS = 365
# The oldest Mosquitto release that loads each plugin API version.
DEFAULT_MOSQUITTO = {5: ">=2.0", 4: ">=1.6", 3: ">=1.5", 2: ">=1.4"}
V5_SYMBOL = "mosquitto_plugin_version"
LEGACY_SYMBOL = "mosquitto_auth_plugin_version"
SIGNATURE_EXTENSIONS = {"ssh": ".sig", "minisign": ".minisig"}


def add_parser(subparsers: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """Add the `sign` subcommand to `subparsers`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help_text,
        description="Write and sign a manifest for PLUGIN, or with --manifest add a signature "
        "to an existing manifest. An encrypted key's passphrase comes from "
        "MOSQUITTO_GUARD_PASSPHRASE or is asked for on the terminal.",
    )
    parser.add_argument("plugin", nargs="?", type=Path, metavar="PLUGIN", help="the plugin .so")
    parser.add_argument("--key", type=Path, required=True, help="OpenSSH or minisign private key")
    parser.add_argument(
        "--manifest", type=Path, metavar="FILE", help="co-sign this existing manifest"
    )
    parser.add_argument(
        "--label",
        help="with --manifest: name the signature FILE.LABEL.sig (default: from the key id)",
    )
    parser.add_argument("--name", help="plugin name: a-z, 0-9, '.', '_', '-'")
    parser.add_argument(
        "--version", type=int, help="manifest version, higher than any signed before"
    )
    parser.add_argument(
        "--connect",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a network endpoint the plugin may connect to (repeatable)",
    )
    parser.add_argument(
        "--read", action="append", default=[], metavar="PATH", help="a path it may read"
    )
    parser.add_argument(
        "--write", action="append", default=[], metavar="PATH", help="a path it may write"
    )
    parser.add_argument(
        "--read-option",
        action="append",
        default=[],
        metavar="KEY",
        help="a plugin_opt_ key whose value names a file the plugin reads (repeatable)",
    )
    parser.add_argument(
        "--write-option",
        action="append",
        default=[],
        metavar="KEY",
        help="a plugin_opt_ key whose value names a file the plugin writes (repeatable)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY",
        help="a plugin_opt_ key it accepts, without the prefix (repeatable)",
    )
    parser.add_argument(
        "--mosquitto",
        metavar="SPEC",
        help="broker versions it supports, such as '>=2.0,<2.2' (default: from the API version)",
    )
    parser.add_argument(
        "--api-version",
        type=int,
        choices=range(2, 6),
        metavar="N",
        help="plugin API version 2 to 5 (default: 5 when the plugin exports "
        f"{V5_SYMBOL}; required for the legacy API)",
    )
    lifetime = parser.add_mutually_exclusive_group()
    lifetime.add_argument("--expires", metavar="YYYY-MM-DD", help="expiry date, at 00:00 UTC")
    lifetime.add_argument(
        "--valid-days",
        type=int,
        default=DEFAULT_VALID_DAYS,
        metavar="N",
        help=f"days until the manifest expires (default: {DEFAULT_VALID_DAYS})",
    )
    destination = parser.add_mutually_exclusive_group()
    destination.add_argument(
        "--manifest-dir",
        type=Path,
        metavar="DIR",
        help=f"write DIR/NAME.toml (default: {DEFAULT_MANIFEST_DIR})",
    )
    destination.add_argument("--output", type=Path, metavar="FILE", help="write the manifest here")
    return parser


def run(args: argparse.Namespace) -> int:
    """Sign a plugin or co-sign a manifest, and print the files written."""
    if args.manifest is not None:
        return _cosign(args)
    return _sign_plugin(args)


# Creating a manifest.


def _sign_plugin(args: argparse.Namespace) -> int:
    if args.plugin is None:
        raise UsageError("give the plugin to sign, or --manifest FILE to co-sign a manifest")
    if args.label is not None:
        raise UsageError("--label applies only with --manifest")
    if args.name is None or args.version is None:
        raise UsageError("--name and --version are required to sign a plugin")
    key = load_private_key(args.key)
    manifest = _build_manifest(args, args.plugin)
    try:
        data = render_manifest(manifest)
    except ManifestError as error:
        raise UsageError(error.message) from None
    if args.output is not None:
        manifest_path: Path = args.output
    else:
        manifest_path = (args.manifest_dir or DEFAULT_MANIFEST_DIR) / f"{manifest.name}.toml"
    _check_replacement(manifest_path, manifest)
    signature_path = _write_signed(manifest_path, data, key)
    print(manifest_path)
    print(signature_path)
    return 0


def _build_manifest(args: argparse.Namespace, plugin: Path) -> Manifest:
    sha256, size = _hash_file(plugin)
    api_version = detect_api_version(plugin, args.api_version)
    now = datetime.now(UTC).replace(microsecond=0)
    return Manifest(
        name=args.name,
        version=args.version,
        file=PluginFile(name=plugin.name, sha256=sha256, size=size),
        plugin=PluginRequirements(
            api_version=api_version,
            mosquitto=args.mosquitto or DEFAULT_MOSQUITTO[api_version],
            # A key named by --read-option or --write-option is an accepted option too.
            options=tuple(dict.fromkeys([*args.option, *args.read_option, *args.write_option])),
        ),
        permissions=Permissions(
            connect=tuple(args.connect),
            read=tuple(args.read),
            write=tuple(args.write),
            read_options=tuple(args.read_option),
            write_options=tuple(args.write_option),
        ),
        signed_at=now,
        expires=_expiry(args, now),
    )


def _write_signed(manifest_path: Path, data: bytes, key: PrivateKey) -> Path:
    """Write the manifest and its signature, and remove signatures of the replaced manifest."""
    stale = []
    if manifest_path.parent.is_dir():
        stale = [path for path, _ in signature_paths(manifest_path)]
    write_atomic(manifest_path, data)
    signature_path = manifest_path.with_name(manifest_path.name + SIGNATURE_EXTENSIONS[key.kind])
    for path in stale:
        if path != signature_path:
            path.unlink()
            print(
                f"mosquitto-guard: removed {path}: it signed the replaced manifest", file=sys.stderr
            )
    write_atomic(signature_path, _sign(key, data, manifest_path))
    return signature_path


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        raise HostError(f"plugin not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a plugin file") from None
    except OSError as error:
        raise HostError(f"cannot read plugin {path}: {error.strerror}") from None
    return digest.hexdigest(), size


def exported_symbols(path: Path) -> set[str]:
    """Return the names of the functions and objects that the shared object `path` defines.

    Raises `UsageError` when the file is not an ELF shared object that can be read.
    """
    try:
        with open(path, "rb") as handle:
            elf = ELFFile(handle)
            names: set[str] = set()
            for section in elf.iter_sections():
                if not isinstance(section, SymbolTableSection):
                    continue
                if section["sh_type"] != "SHT_DYNSYM":
                    continue
                for symbol in section.iter_symbols():
                    defined = symbol["st_shndx"] != "SHN_UNDEF"
                    if defined and symbol["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK"):
                        names.add(symbol.name)
            return names
    except (ELFError, ConstructError, ValueError, KeyError, IndexError) as error:
        raise UsageError(f"{path} is not a readable ELF shared object: {error}") from None
    except OSError as error:
        raise HostError(f"cannot read plugin {path}: {error.strerror}") from None


def detect_api_version(path: Path, requested: int | None) -> int:
    """Return the plugin API version: `requested` if given, else 5 for a v5 plugin.

    A plugin that exports only `mosquitto_auth_plugin_version` uses the legacy API, whose
    version the ELF does not show, so `requested` is then required. Raises `UsageError` when
    the plugin exports neither symbol or the requested version does not fit the symbols.
    """
    symbols = exported_symbols(path)
    has_v5, has_legacy = V5_SYMBOL in symbols, LEGACY_SYMBOL in symbols
    if not has_v5 and not has_legacy:
        raise UsageError(
            f"{path} exports neither {V5_SYMBOL} nor {LEGACY_SYMBOL}: it is not a Mosquitto plugin"
        )
    if requested is None:
        if has_v5:
            return 5
        raise UsageError(
            f"{path} exports only {LEGACY_SYMBOL} (the legacy plugin API)",
            fix="give its API version with --api-version 2, 3 or 4",
        )
    # An explicit version is taken as given: the value that mosquitto_plugin_version returns
    # may select any API from 2 to 5, and mosquitto_auth_plugin_version returning 5 selects v5.
    return requested


def _expiry(args: argparse.Namespace, now: datetime) -> datetime:
    if args.expires is not None:
        try:
            day = date.fromisoformat(args.expires)
        except ValueError:
            raise UsageError(
                f"--expires {args.expires!r} is not a date in YYYY-MM-DD form"
            ) from None
        expires = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if expires <= now:
            raise UsageError(f"--expires {args.expires} is not in the future")
        return expires
    if args.valid_days < 1:
        raise UsageError(f"--valid-days must be at least 1, not {args.valid_days}")
    return now + timedelta(days=args.valid_days)


def _check_replacement(manifest_path: Path, manifest: Manifest) -> None:
    """Reject replacing a manifest with one whose version does not go up."""
    try:
        existing = parse_manifest(manifest_path.read_bytes(), str(manifest_path))
    except FileNotFoundError:
        return
    except (OSError, GuardError) as error:
        logger.warning("replacing unreadable manifest %s: %s", manifest_path, error)
        return
    if existing.name != manifest.name:
        return
    if existing.version > manifest.version or (
        existing.version == manifest.version and existing.file.sha256 != manifest.file.sha256
    ):
        raise UsageError(
            f"{manifest_path} already contains {manifest.name} version {existing.version} "
            f"(sha256 {existing.file.sha256}); a new build needs a higher version",
            fix=f"use --version {existing.version + 1}",
        )


def _sign(key: PrivateKey, data: bytes, manifest_path: Path) -> bytes:
    try:
        return key.sign(data, MANIFEST_NAMESPACE, file_name=manifest_path.name)
    except ValueError as error:
        raise UsageError(f"cannot sign {manifest_path}: {error}") from None


# Co-signing an existing manifest.


def _cosign(args: argparse.Namespace) -> int:
    building = [
        flag
        for flag, value in (
            ("PLUGIN", args.plugin),
            ("--name", args.name),
            ("--version", args.version),
            ("--mosquitto", args.mosquitto),
            ("--api-version", args.api_version),
            ("--expires", args.expires),
            ("--manifest-dir", args.manifest_dir),
            ("--output", args.output),
        )
        if value is not None
    ]
    building += [
        flag
        for flag, values in (
            ("--connect", args.connect),
            ("--read", args.read),
            ("--write", args.write),
            ("--option", args.option),
        )
        if values
    ]
    if building:
        raise UsageError(f"--manifest signs an existing manifest; {building[0]} does not apply")
    manifest_path: Path = args.manifest
    key = load_private_key(args.key)
    data = _read_manifest(manifest_path)
    parse_manifest(data, str(manifest_path))
    target = _cosignature_path(manifest_path, key, data, args.label)
    if target is None:
        print(
            f"mosquitto-guard: {manifest_path} is already signed by key {key.public_key.key_id}",
            file=sys.stderr,
        )
        return 0
    write_atomic(target, _sign(key, data, manifest_path))
    print(target)
    return 0


def _read_manifest(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise HostError(f"manifest not found: {path}") from None
    except OSError as error:
        raise HostError(f"cannot read manifest {path}: {error.strerror}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    return data


def _cosignature_path(
    manifest_path: Path, key: PrivateKey, data: bytes, label: str | None
) -> Path | None:
    """Choose the file for this key's signature; None when the key has signed these bytes."""
    key_id = key.public_key.key_id
    for path, kind in signature_paths(manifest_path):
        if kind != key.kind:
            continue
        try:
            info = inspect_signature(kind, path.read_bytes())
        except (OSError, GuardError):
            continue
        if info.key_id != key_id:
            continue
        try:
            key.public_key.verify(data, path.read_bytes(), MANIFEST_NAMESPACE)
        except GuardError:
            return path  # this key's signature of older bytes: replace it
        return None
    extension = SIGNATURE_EXTENSIONS[key.kind]
    primary = manifest_path.with_name(manifest_path.name + extension)
    if label is None and not primary.exists():
        return primary
    chosen = label if label is not None else _default_label(key_id)
    if not LABEL_PATTERN.fullmatch(chosen):
        raise UsageError(f"--label {chosen!r} is invalid: use 1 to 64 letters, digits, '_' or '-'")
    target = manifest_path.with_name(f"{manifest_path.name}.{chosen}{extension}")
    if target.exists():
        raise UsageError(
            f"{target} already exists and contains another key's signature",
            fix="choose another name with --label",
        )
    return target


def _default_label(key_id: str) -> str:
    """Derive a file label from a key id: the minisign id, or the start of an SSH fingerprint."""
    cleaned = re.sub(r"[^A-Za-z0-9]", "", key_id.removeprefix("SHA256:"))
    return cleaned[:16]
