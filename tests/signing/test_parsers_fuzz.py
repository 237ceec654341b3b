"""Property tests: parsers of untrusted bytes raise only their own error type, on any input."""

from __future__ import annotations

import contextlib
from datetime import UTC, timedelta, timezone
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mosquitto_guard.errors import ManifestError, SignatureError
from mosquitto_guard.manifest.model import parse_manifest
from mosquitto_guard.signing import MANIFEST_NAMESPACE, sshsig
from mosquitto_guard.signing import minisign as minisign_format
from mosquitto_guard.signing.keys import (
    KEY_KINDS,
    KeyKind,
    PublicKey,
    generate_keypair,
    load_private_key,
    parse_public_key,
)

FUZZ_SETTINGS = settings(max_examples=300, deadline=None)


@FUZZ_SETTINGS
@given(st.binary(max_size=4096))
def test_manifest_parser_on_bytes(data: bytes) -> None:
    with contextlib.suppress(ManifestError):
        parse_manifest(data, "fuzz.toml")


@FUZZ_SETTINGS
@given(st.text(max_size=2048))
def test_manifest_parser_on_text(text: str) -> None:
    with contextlib.suppress(ManifestError):
        parse_manifest(text.encode("utf-8"), "fuzz.toml")


FIELD_NAMES = st.sampled_from(
    [
        "format",
        "format_version",
        "name",
        "version",
        "signed_at",
        "expires",
        "file",
        "plugin",
        "permissions",
        "sha256",
        "size",
        "api_version",
        "mosquitto",
        "options",
        "connect",
        "read",
        "write",
        "extra",
    ]
)
TOML_SCALARS = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | st.text(max_size=40)
    | st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=2))]))
    | st.floats(allow_nan=False)
    | st.sampled_from(["mosquitto-guard-manifest", ">=2.0", "/etc", "[::1]:1883", "a" * 64])
)
TOML_DOCUMENTS = st.recursive(
    st.dictionaries(FIELD_NAMES, TOML_SCALARS, max_size=8),
    lambda children: st.dictionaries(
        FIELD_NAMES, children | st.lists(TOML_SCALARS, max_size=4), max_size=8
    ),
    max_leaves=30,
)


@FUZZ_SETTINGS
@given(TOML_DOCUMENTS)
def test_manifest_parser_on_toml_documents(document: dict[str, object]) -> None:
    data = tomli_w.dumps(document).encode("utf-8")
    with contextlib.suppress(ManifestError):
        parse_manifest(data, "fuzz.toml")


@FUZZ_SETTINGS
@given(st.binary(max_size=4096))
def test_sshsig_parser_on_bytes(data: bytes) -> None:
    with contextlib.suppress(SignatureError):
        sshsig.parse_signature(data)


@FUZZ_SETTINGS
@given(st.binary(max_size=2048))
def test_sshsig_parser_on_armored_blobs(blob: bytes) -> None:
    with contextlib.suppress(SignatureError):
        sshsig.parse_signature(sshsig.armor(blob))


@FUZZ_SETTINGS
@given(st.binary(max_size=4096))
def test_minisign_parser_on_bytes(data: bytes) -> None:
    with contextlib.suppress(SignatureError):
        minisign_format.parse_signature(data)


@FUZZ_SETTINGS
@given(st.text(max_size=512))
def test_public_key_parser_on_text(line: str) -> None:
    with contextlib.suppress(SignatureError):
        parse_public_key(line)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[KeyKind, tuple[PublicKey, bytes]]:
    """A valid signature of each kind, with the key that made it."""
    directory: Path = tmp_path_factory.mktemp("fuzz-keys")
    result: dict[KeyKind, tuple[PublicKey, bytes]] = {}
    for kind in KEY_KINDS:
        public_key = generate_keypair(kind, directory / kind, comment="")
        signature = load_private_key(directory / kind).sign(b"message", MANIFEST_NAMESPACE)
        result[kind] = (public_key, signature)
    return result


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_mutated_signature_never_verifies(
    signed: dict[KeyKind, tuple[PublicKey, bytes]], position: int, value: int
) -> None:
    for public_key, signature in signed.values():
        index = position % len(signature)
        if signature[index] == value:
            continue
        mutated = signature[:index] + bytes([value]) + signature[index + 1 :]
        try:
            public_key.verify(b"message", mutated, MANIFEST_NAMESPACE)
        except SignatureError:
            continue
        # A change in the untrusted comment line of a minisign signature is not signed.
        assert public_key.kind == "minisign"
        assert index < mutated.index(b"\n")
