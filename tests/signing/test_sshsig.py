"""SSHSIG signing and verification, against OpenSSH's own `ssh-keygen -Y` on real keys."""

from __future__ import annotations

import base64
import struct
import subprocess
from pathlib import Path

import pytest

from mosquitto_guard.errors import SignatureError
from mosquitto_guard.signing import MANIFEST_NAMESPACE, sshsig
from mosquitto_guard.signing.keys import load_private_key, load_public_key, parse_public_key

MESSAGE = b'format = "mosquitto-guard-manifest"\nname = "example"\n'

KEY_TYPES = [
    pytest.param(["-t", "ed25519"], id="ed25519"),
    pytest.param(["-t", "ecdsa", "-b", "256"], id="ecdsa-p256"),
    pytest.param(["-t", "ecdsa", "-b", "384"], id="ecdsa-p384"),
    pytest.param(["-t", "ecdsa", "-b", "521"], id="ecdsa-p521"),
    pytest.param(["-t", "rsa", "-b", "3072"], id="rsa-3072"),
]


def ssh_keygen_key(directory: Path, options: list[str], name: str = "key") -> Path:
    """Create an unencrypted key pair with ssh-keygen and return the private key path."""
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", *options, "-N", "", "-C", f"{name}@test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def ssh_keygen_sign(key: Path, message_path: Path, namespace: str, *extra: str) -> bytes:
    """Sign `message_path` with `ssh-keygen -Y sign` and return the signature file's bytes."""
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", namespace, *extra, str(message_path)],
        check=True,
        capture_output=True,
    )
    return Path(f"{message_path}.sig").read_bytes()


def ssh_keygen_verify(public_key_line: str, signature: Path, message: bytes, tmp: Path) -> int:
    """Run `ssh-keygen -Y verify` and return its exit code."""
    allowed = tmp / "allowed_signers"
    allowed.write_text(f"signer@test {public_key_line}\n")
    result = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(allowed),
            "-I",
            "signer@test",
            "-n",
            MANIFEST_NAMESPACE,
            "-s",
            str(signature),
        ],
        input=message,
        capture_output=True,
    )
    return result.returncode


@pytest.mark.parametrize("options", KEY_TYPES)
def test_ssh_keygen_signature_verifies(tmp_path: Path, options: list[str]) -> None:
    key = ssh_keygen_key(tmp_path, options)
    message_path = tmp_path / "example.toml"
    message_path.write_bytes(MESSAGE)
    signature = ssh_keygen_sign(key, message_path, MANIFEST_NAMESPACE)

    public_key = load_public_key(Path(f"{key}.pub"))
    public_key.verify(MESSAGE, signature, MANIFEST_NAMESPACE)

    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{key}.pub"], check=True, capture_output=True, text=True
    ).stdout.split()[1]
    assert public_key.key_id == fingerprint


@pytest.mark.parametrize("options", KEY_TYPES)
def test_guard_signature_passes_ssh_keygen(tmp_path: Path, options: list[str]) -> None:
    key = ssh_keygen_key(tmp_path, options)
    private_key = load_private_key(key)
    signature_path = tmp_path / "example.toml.sig"
    signature_path.write_bytes(private_key.sign(MESSAGE, MANIFEST_NAMESPACE))

    assert ssh_keygen_verify(private_key.public_key.text, signature_path, MESSAGE, tmp_path) == 0
    assert (
        ssh_keygen_verify(private_key.public_key.text, signature_path, MESSAGE + b"x", tmp_path)
        != 0
    )


def test_sha256_hash_algorithm_verifies(tmp_path: Path) -> None:
    key = ssh_keygen_key(tmp_path, ["-t", "ed25519"])
    message_path = tmp_path / "example.toml"
    message_path.write_bytes(MESSAGE)
    signature = ssh_keygen_sign(key, message_path, MANIFEST_NAMESPACE, "-O", "hashalg=sha256")

    assert sshsig.parse_signature(signature).hash_algorithm == "sha256"
    load_public_key(Path(f"{key}.pub")).verify(MESSAGE, signature, MANIFEST_NAMESPACE)


def test_signature_other_namespace_rejected(tmp_path: Path) -> None:
    key = ssh_keygen_key(tmp_path, ["-t", "ed25519"])
    message_path = tmp_path / "example.toml"
    message_path.write_bytes(MESSAGE)
    signature = ssh_keygen_sign(key, message_path, "file")

    with pytest.raises(SignatureError) as raised:
        load_public_key(Path(f"{key}.pub")).verify(MESSAGE, signature, MANIFEST_NAMESPACE)
    assert str(raised.value) == (
        "signature is for namespace 'file', expected 'mosquitto-guard-manifest'"
    )


def test_signature_other_bytes_rejected(tmp_path: Path) -> None:
    private_key = load_private_key(ssh_keygen_key(tmp_path, ["-t", "ed25519"]))
    signature = private_key.sign(MESSAGE, MANIFEST_NAMESPACE)

    with pytest.raises(SignatureError) as raised:
        private_key.public_key.verify(MESSAGE + b"\n", signature, MANIFEST_NAMESPACE)
    assert str(raised.value) == (
        f"signature by key {private_key.public_key.key_id} does not match the signed bytes"
    )


def test_signature_other_key_rejected(tmp_path: Path) -> None:
    signer = load_private_key(ssh_keygen_key(tmp_path, ["-t", "ed25519"], "signer"))
    other = load_public_key(Path(f"{ssh_keygen_key(tmp_path, ['-t', 'ed25519'], 'other')}.pub"))
    signature = signer.sign(MESSAGE, MANIFEST_NAMESPACE)

    with pytest.raises(SignatureError) as raised:
        other.verify(MESSAGE, signature, MANIFEST_NAMESPACE)
    assert str(raised.value) == (
        f"signature was made by key {signer.public_key.key_id}, not by {other.key_id}"
    )


def test_signature_armor_matches_ssh_keygen_layout(tmp_path: Path) -> None:
    key = ssh_keygen_key(tmp_path, ["-t", "rsa", "-b", "3072"])
    message_path = tmp_path / "example.toml"
    message_path.write_bytes(MESSAGE)
    theirs = ssh_keygen_sign(key, message_path, MANIFEST_NAMESPACE)

    assert sshsig.armor(sshsig.dearmor(theirs)) == theirs
    lines = theirs.decode().splitlines()
    assert all(len(line) == 70 for line in lines[1:-2])


# Hostile signatures. Each case is built from a valid blob and must raise its own error.


def blob_fields(public_blob: bytes, **overrides: bytes) -> bytes:
    """Build an SSHSIG blob; `overrides` replace the encoded fields by name."""
    fields = {
        "magic": b"SSHSIG",
        "version": struct.pack(">I", 1),
        "public_key": sshsig.encode_string(public_blob),
        "namespace": sshsig.encode_string(MANIFEST_NAMESPACE.encode()),
        "reserved": sshsig.encode_string(b""),
        "hash": sshsig.encode_string(b"sha512"),
        "signature": sshsig.encode_string(
            sshsig.encode_string(b"ssh-ed25519") + sshsig.encode_string(bytes(64))
        ),
    }
    fields.update(overrides)
    return b"".join(fields.values())


@pytest.fixture(scope="module")
def valid_signature(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    directory = tmp_path_factory.mktemp("valid")
    private_key = load_private_key(ssh_keygen_key(directory, ["-t", "ed25519"]))
    return private_key.sign(MESSAGE, MANIFEST_NAMESPACE)


ED25519_BLOB = sshsig.encode_string(b"ssh-ed25519") + sshsig.encode_string(bytes(range(32)))

HOSTILE_BLOBS = {
    "wrong magic": (
        blob_fields(ED25519_BLOB, magic=b"SSHSIH"),
        "SSH signature does not start with the SSHSIG magic bytes",
    ),
    "version 2": (
        blob_fields(ED25519_BLOB, version=struct.pack(">I", 2)),
        "SSH signature has version 2; only version 1 is supported",
    ),
    "huge public key length": (
        blob_fields(ED25519_BLOB, public_key=struct.pack(">I", 0xFFFFFFFF)),
        "SSH signature: public key is 4294967295 bytes long, more than the maximum of 4096",
    ),
    "unsupported key type": (
        blob_fields(sshsig.encode_string(b"ssh-dss") + sshsig.encode_string(b"x" * 20)),
        "SSH public key: unsupported key type 'ssh-dss' (supported: ssh-ed25519, "
        "ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, ssh-rsa)",
    ),
    "short ed25519 key": (
        blob_fields(sshsig.encode_string(b"ssh-ed25519") + sshsig.encode_string(bytes(31))),
        "SSH public key: ed25519 key is 31 bytes long, expected 32",
    ),
    "key with trailing bytes": (
        blob_fields(ED25519_BLOB + b"\x00"),
        "SSH public key has 1 unexpected trailing byte(s)",
    ),
    "empty namespace": (
        blob_fields(ED25519_BLOB, namespace=sshsig.encode_string(b"")),
        "SSH signature: namespace is empty or contains control characters",
    ),
    "binary namespace": (
        blob_fields(ED25519_BLOB, namespace=sshsig.encode_string(b"\xff\xfe")),
        "SSH signature: namespace is not ASCII text",
    ),
    "reserved not empty": (
        blob_fields(ED25519_BLOB, reserved=sshsig.encode_string(b"x")),
        "SSH signature: reserved field is not empty",
    ),
    "md5 hash": (
        blob_fields(ED25519_BLOB, hash=sshsig.encode_string(b"md5")),
        "SSH signature: unsupported hash algorithm 'md5'",
    ),
    "truncated": (
        blob_fields(ED25519_BLOB)[:-10],
        "SSH signature is truncated",
    ),
    "trailing bytes": (
        blob_fields(ED25519_BLOB) + b"abc",
        "SSH signature has 3 unexpected trailing byte(s)",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_BLOBS))
def test_hostile_blob_rejected(case: str) -> None:
    blob, message = HOSTILE_BLOBS[case]
    with pytest.raises(SignatureError) as raised:
        sshsig.parse_signature(sshsig.armor(blob))
    assert str(raised.value) == message


def rewrap(armored: bytes, width: int) -> bytes:
    encoded = b"".join(armored.splitlines()[1:-1])
    lines = [encoded[i : i + width] for i in range(0, len(encoded), width)]
    return b"\n".join([sshsig.ARMOR_BEGIN, *lines, sshsig.ARMOR_END]) + b"\n"


HOSTILE_ARMOR = {
    "not armored": (
        lambda valid: b"hello",
        "SSH signature does not start with -----BEGIN SSH SIGNATURE-----",
    ),
    "crlf line breaks": (
        lambda valid: valid.replace(b"\n", b"\r\n"),
        "SSH signature does not start with -----BEGIN SSH SIGNATURE-----",
    ),
    "no end line": (
        lambda valid: valid.rsplit(b"-----END", 1)[0],
        "SSH signature does not end with -----END SSH SIGNATURE-----",
    ),
    "text after end line": (
        lambda valid: valid + b"trailing\n",
        "SSH signature does not end with -----END SSH SIGNATURE-----",
    ),
    "two final line breaks": (
        lambda valid: valid + b"\n",
        "SSH signature does not end with -----END SSH SIGNATURE-----",
    ),
    "lines of 64 characters": (
        lambda valid: rewrap(valid, 64),
        "SSH signature armor is malformed: expected base64 lines of 70 characters between the "
        "BEGIN and END lines",
    ),
    "space inside base64": (
        lambda valid: valid.replace(b"\n", b"\n ", 2).replace(b"\n -----END", b"\n-----END"),
        "SSH signature armor contains invalid base64",
    ),
    "empty body": (
        lambda valid: sshsig.ARMOR_BEGIN + b"\n\n" + sshsig.ARMOR_END + b"\n",
        "SSH signature armor is empty",
    ),
    "utf-16": (
        lambda valid: valid.decode().encode("utf-16"),
        "SSH signature contains NUL bytes",
    ),
    "latin-1 byte": (
        lambda valid: valid.replace(b"SSH SIGNATURE-----\n", b"SSH SIGNATURE-----\n\xe9", 1),
        "SSH signature is not ASCII text",
    ),
    "huge file": (
        lambda valid: sshsig.armor(bytes(20_000)),
        "SSH signature is 27107 bytes long, more than the maximum of 16384",
    ),
    "truncated file": (
        lambda valid: valid[: len(valid) // 2],
        "SSH signature does not end with -----END SSH SIGNATURE-----",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ARMOR))
def test_hostile_armor_rejected(case: str, valid_signature: bytes) -> None:
    mutate, message = HOSTILE_ARMOR[case]
    with pytest.raises(SignatureError) as raised:
        sshsig.parse_signature(mutate(valid_signature))
    assert str(raised.value) == message


def test_valid_signature_without_final_newline_parses(valid_signature: bytes) -> None:
    parsed = sshsig.parse_signature(valid_signature.rstrip(b"\n"))
    assert parsed.namespace == MANIFEST_NAMESPACE


def rsa_blob(exponent: bytes, modulus: bytes) -> bytes:
    return (
        sshsig.encode_string(b"ssh-rsa")
        + sshsig.encode_string(exponent)
        + sshsig.encode_string(modulus)
    )


HOSTILE_KEYS = {
    "negative rsa exponent": (
        rsa_blob(b"\x81", b"\x00" + b"\xc1" * 256),
        "SSH public key: rsa exponent is negative",
    ),
    "rsa exponent with leading zero": (
        rsa_blob(b"\x00\x01\x00\x01", b"\x00" + b"\xc1" * 256),
        "SSH public key: rsa exponent has a superfluous leading zero byte",
    ),
    "rsa 1024 bits": (
        rsa_blob(b"\x01\x00\x01", b"\x00" + b"\xc1" * 128),
        "SSH public key: rsa key has 1024 bits, fewer than the minimum of 2048",
    ),
    "ecdsa curve mismatch": (
        sshsig.encode_string(b"ecdsa-sha2-nistp256")
        + sshsig.encode_string(b"nistp384")
        + sshsig.encode_string(b"\x04" + bytes(64)),
        "SSH public key: curve 'nistp384' does not match key type 'ecdsa-sha2-nistp256'",
    ),
    "ecdsa point off curve": (
        sshsig.encode_string(b"ecdsa-sha2-nistp256")
        + sshsig.encode_string(b"nistp256")
        + sshsig.encode_string(b"\x04" + bytes(64)),
        "SSH public key: ecdsa point is not on curve nistp256",
    ),
    "ecdsa compressed point": (
        sshsig.encode_string(b"ecdsa-sha2-nistp256")
        + sshsig.encode_string(b"nistp256")
        + sshsig.encode_string(b"\x02" + bytes(32)),
        "SSH public key: ecdsa point is not in uncompressed form",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_KEYS))
def test_hostile_public_key_rejected(case: str) -> None:
    blob, message = HOSTILE_KEYS[case]
    with pytest.raises(SignatureError) as raised:
        sshsig.parse_public_key_blob(blob)
    assert str(raised.value) == message


def test_public_key_line_type_mismatch_rejected(tmp_path: Path) -> None:
    key = ssh_keygen_key(tmp_path, ["-t", "ed25519"])
    encoded = Path(f"{key}.pub").read_text().split()[1]
    with pytest.raises(SignatureError) as raised:
        parse_public_key(f"ssh-rsa {encoded}")
    assert str(raised.value) == (
        "SSH public key line names type 'ssh-rsa', but the key is 'ssh-ed25519'"
    )


def test_public_key_line_bad_base64_rejected() -> None:
    with pytest.raises(SignatureError) as raised:
        parse_public_key("ssh-ed25519 AAAA*AAA comment")
    assert str(raised.value) == "SSH public key is not valid base64"


def test_rsa_sha1_signature_type_rejected(tmp_path: Path) -> None:
    private_key = load_private_key(ssh_keygen_key(tmp_path, ["-t", "rsa", "-b", "2048"]))
    parsed = sshsig.parse_signature(private_key.sign(MESSAGE, MANIFEST_NAMESPACE))
    reader = sshsig.WireReader(parsed.signature, "inner")
    reader.read_text("type", 64)
    raw = reader.read_string("value", 4096)
    inner = sshsig.encode_string(b"ssh-rsa") + sshsig.encode_string(raw)
    forged = sshsig.armor(
        blob_fields(parsed.public_key.blob, signature=sshsig.encode_string(inner))
    )

    with pytest.raises(SignatureError) as raised:
        private_key.public_key.verify(MESSAGE, forged, MANIFEST_NAMESPACE)
    assert str(raised.value) == (
        "SSH signature type 'ssh-rsa' does not fit the key (expected rsa-sha2-512 or rsa-sha2-256)"
    )


def test_fingerprint_is_unpadded_base64() -> None:
    fingerprint = sshsig.fingerprint(ED25519_BLOB)
    assert fingerprint.startswith("SHA256:")
    assert len(fingerprint) == len("SHA256:") + 43
    assert base64.b64decode(fingerprint[7:] + "=") is not None
