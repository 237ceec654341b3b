"""minisign signatures, against the `minisign` tool itself on real keys."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mosquitto_guard.errors import SignatureError
from mosquitto_guard.signing import MANIFEST_NAMESPACE
from mosquitto_guard.signing import minisign as minisign_format
from mosquitto_guard.signing.keys import (
    generate_keypair,
    load_private_key,
    load_public_key,
    parse_public_key,
)

MESSAGE = b'format = "mosquitto-guard-manifest"\nname = "example"\n'
TRUSTED = f"namespace:{MANIFEST_NAMESPACE} file:example.toml"


def minisign_keypair(directory: Path, name: str = "key") -> tuple[Path, Path]:
    """Create an unencrypted key pair with `minisign -G -W`; return (secret, public) paths."""
    secret, public = directory / f"{name}.key", directory / f"{name}.pub"
    subprocess.run(
        ["minisign", "-G", "-W", "-s", str(secret), "-p", str(public)],
        check=True,
        capture_output=True,
    )
    return secret, public


def minisign_sign(secret: Path, message_path: Path, trusted_comment: str | None) -> bytes:
    """Sign with `minisign -S` and return the signature file's bytes."""
    command = ["minisign", "-S", "-s", str(secret), "-m", str(message_path)]
    if trusted_comment is not None:
        command += ["-t", trusted_comment]
    subprocess.run(command, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return Path(f"{message_path}.minisig").read_bytes()


def minisign_verify(public: Path, message_path: Path, signature: Path) -> int:
    """Run `minisign -V` and return its exit code."""
    result = subprocess.run(
        ["minisign", "-V", "-p", str(public), "-m", str(message_path), "-x", str(signature)],
        capture_output=True,
    )
    return result.returncode


@pytest.fixture
def message_path(tmp_path: Path) -> Path:
    path = tmp_path / "example.toml"
    path.write_bytes(MESSAGE)
    return path


def test_minisign_signature_verifies(tmp_path: Path, message_path: Path) -> None:
    secret, public = minisign_keypair(tmp_path)
    signature = minisign_sign(secret, message_path, TRUSTED)

    public_key = load_public_key(public)
    public_key.verify(MESSAGE, signature, MANIFEST_NAMESPACE)


def test_key_id_matches_minisign_output(tmp_path: Path) -> None:
    _, public = minisign_keypair(tmp_path)
    # minisign drops leading zeros from the key id it prints.
    printed_id = public.read_text().splitlines()[0].rsplit(" ", 1)[1].zfill(16)

    assert load_public_key(public).key_id == printed_id
    assert parse_public_key(public.read_text().splitlines()[1]).key_id == printed_id


def test_guard_signature_passes_minisign(tmp_path: Path, message_path: Path) -> None:
    secret, public = minisign_keypair(tmp_path)
    signature_path = tmp_path / "example.toml.minisig"
    signature = load_private_key(secret).sign(MESSAGE, MANIFEST_NAMESPACE, file_name="example.toml")
    signature_path.write_bytes(signature)

    assert minisign_verify(public, message_path, signature_path) == 0
    message_path.write_bytes(MESSAGE + b"#")
    assert minisign_verify(public, message_path, signature_path) != 0


def test_trusted_comment_names_namespace_and_file(tmp_path: Path) -> None:
    secret, _ = minisign_keypair(tmp_path)
    signature = load_private_key(secret).sign(MESSAGE, MANIFEST_NAMESPACE, file_name="example.toml")
    comment = minisign_format.parse_signature(signature).trusted_comment

    tokens = comment.split("\t")
    assert tokens[0] == f"namespace:{MANIFEST_NAMESPACE}"
    assert tokens[1] == "file:example.toml"
    assert tokens[2].startswith("timestamp:")


def test_keygen_key_signs_with_minisign(tmp_path: Path, message_path: Path) -> None:
    public_key = generate_keypair("minisign", tmp_path / "guard-key", comment="")
    signature = minisign_sign(tmp_path / "guard-key", message_path, TRUSTED)

    public_key.verify(MESSAGE, signature, MANIFEST_NAMESPACE)
    assert (
        minisign_verify(tmp_path / "guard-key.pub", message_path, Path(f"{message_path}.minisig"))
        == 0
    )


def test_encrypted_keygen_key_signs_with_minisign(tmp_path: Path, message_path: Path) -> None:
    generate_keypair("minisign", tmp_path / "guard-key", comment="", passphrase="correct horse")
    subprocess.run(
        [
            "minisign",
            "-S",
            "-s",
            str(tmp_path / "guard-key"),
            "-m",
            str(message_path),
            "-t",
            TRUSTED,
        ],
        check=True,
        capture_output=True,
        input=b"correct horse\n",
    )
    signature = Path(f"{message_path}.minisig").read_bytes()

    load_public_key(tmp_path / "guard-key.pub").verify(MESSAGE, signature, MANIFEST_NAMESPACE)
    private_key = load_private_key(tmp_path / "guard-key", passphrase="correct horse")
    assert private_key.public_key.key_id == load_public_key(tmp_path / "guard-key.pub").key_id


def test_default_trusted_comment_rejected(tmp_path: Path, message_path: Path) -> None:
    secret, public = minisign_keypair(tmp_path)
    signature = minisign_sign(secret, message_path, None)

    with pytest.raises(SignatureError) as raised:
        load_public_key(public).verify(MESSAGE, signature, MANIFEST_NAMESPACE)
    assert str(raised.value) == (
        "signature has no namespace: its trusted comment must start with "
        "'namespace:mosquitto-guard-manifest'"
    )


def test_file_name_cannot_smuggle_namespace(tmp_path: Path) -> None:
    secret, public = minisign_keypair(tmp_path)
    tricky = tmp_path / f"x namespace:{MANIFEST_NAMESPACE}"
    tricky.write_bytes(MESSAGE)
    signature = minisign_sign(secret, tricky, None)

    with pytest.raises(SignatureError) as raised:
        load_public_key(public).verify(MESSAGE, signature, MANIFEST_NAMESPACE)
    assert str(raised.value).startswith("signature has no namespace")


def test_other_namespace_rejected(tmp_path: Path, message_path: Path) -> None:
    secret, public = minisign_keypair(tmp_path)
    signature = minisign_sign(secret, message_path, "namespace:release file:example.toml")

    with pytest.raises(SignatureError) as raised:
        load_public_key(public).verify(MESSAGE, signature, MANIFEST_NAMESPACE)
    assert str(raised.value) == (
        "signature is for namespace 'release', expected 'mosquitto-guard-manifest'"
    )


def test_edited_trusted_comment_rejected(tmp_path: Path, message_path: Path) -> None:
    secret, public = minisign_keypair(tmp_path)
    signature = minisign_sign(secret, message_path, "namespace:release")
    edited = signature.replace(b"namespace:release", f"namespace:{MANIFEST_NAMESPACE}".encode())
    public_key = load_public_key(public)

    with pytest.raises(SignatureError) as raised:
        public_key.verify(MESSAGE, edited, MANIFEST_NAMESPACE)
    assert str(raised.value) == (
        f"signature by key {public_key.key_id} does not match the signed bytes"
    )


def test_other_key_rejected(tmp_path: Path, message_path: Path) -> None:
    secret, public = minisign_keypair(tmp_path, "signer")
    _, other_public = minisign_keypair(tmp_path, "other")
    signature = minisign_sign(secret, message_path, TRUSTED)
    other = load_public_key(other_public)

    with pytest.raises(SignatureError) as raised:
        other.verify(MESSAGE, signature, MANIFEST_NAMESPACE)
    assert str(raised.value) == (
        f"signature was made by key {load_public_key(public).key_id}, not by {other.key_id}"
    )


@pytest.fixture(scope="module")
def valid_signature(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    directory = tmp_path_factory.mktemp("valid")
    secret, _ = minisign_keypair(directory)
    return load_private_key(secret).sign(MESSAGE, MANIFEST_NAMESPACE, file_name="example.toml")


def replace_line(signature: bytes, index: int, line: bytes) -> bytes:
    lines = signature.split(b"\n")
    lines[index] = line
    return b"\n".join(lines)


HOSTILE_SIGNATURES = {
    "three lines": (
        lambda valid: b"\n".join(valid.split(b"\n")[:3]),
        "minisign signature has 3 line(s), expected 4",
    ),
    "five lines": (
        lambda valid: valid + b"extra\n",
        "minisign signature has 5 line(s), expected 4",
    ),
    "crlf line breaks": (
        lambda valid: valid.replace(b"\n", b"\r\n"),
        "minisign signature contains control characters",
    ),
    "no untrusted comment": (
        lambda valid: replace_line(valid, 0, b"comment: x"),
        "minisign signature: line 1 does not start with 'untrusted comment:'",
    ),
    "no trusted comment": (
        lambda valid: replace_line(valid, 2, b"comment: x"),
        "minisign signature: line 3 does not start with 'trusted comment:'",
    ),
    "invalid base64": (
        lambda valid: replace_line(valid, 1, b"RUT*"),
        "minisign signature: line 2 is not valid base64",
    ),
    "short signature line": (
        lambda valid: replace_line(valid, 1, b"RUQAAAAA"),
        "minisign signature: line 2 is 6 bytes long, expected 74",
    ),
    "unknown algorithm": (
        lambda valid: replace_line(valid, 1, b"WHg" + valid.split(b"\n")[1][3:]),
        "minisign signature: unsupported algorithm b'Xx'",
    ),
    "short global signature": (
        lambda valid: replace_line(valid, 3, b"AAAA"),
        "minisign signature is malformed: invalid encoded length",
    ),
    "nul byte": (
        lambda valid: valid.replace(b"namespace", b"name\x00space"),
        "minisign signature contains NUL bytes",
    ),
    "utf-16": (
        lambda valid: valid.decode().encode("utf-16"),
        "minisign signature contains NUL bytes",
    ),
    "invalid utf-8": (
        lambda valid: valid.replace(b"untrusted comment: ", b"untrusted comment: \xff"),
        "minisign signature is not UTF-8 text",
    ),
    "huge file": (
        lambda valid: (valid * 60)[:20_000],
        "minisign signature is 20000 bytes long, more than the maximum of 16384",
    ),
    "truncated": (
        lambda valid: valid[:100],
        "minisign signature has 2 line(s), expected 4",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SIGNATURES))
def test_hostile_signature_rejected(case: str, valid_signature: bytes) -> None:
    mutate, message = HOSTILE_SIGNATURES[case]
    with pytest.raises(SignatureError) as raised:
        minisign_format.parse_signature(mutate(valid_signature))
    assert str(raised.value) == message


HOSTILE_PUBLIC_KEYS = {
    "bad base64": ("RW*", "minisign public key is not valid base64"),
    "short key": ("RWQAAAAA", "minisign public key is 6 bytes long, expected 42"),
    "prehashed algorithm": (
        "RUQ" + "A" * 53,
        "minisign public key has unsupported algorithm b'ED'",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_PUBLIC_KEYS))
def test_hostile_public_key_rejected(case: str) -> None:
    line, message = HOSTILE_PUBLIC_KEYS[case]
    with pytest.raises(SignatureError) as raised:
        parse_public_key(line)
    assert str(raised.value) == message
