"""SSHSIG signatures, the format that `ssh-keygen -Y sign` writes and `ssh-keygen -Y verify` reads.

This module signs and verifies SSHSIG itself, on top of the primitives in `cryptography`,
because no maintained Python library creates SSHSIG signatures. The PyPI `sshsig` package only
verifies, and it accepts loosely formed armor, which a parser of hostile input must reject.

The format follows OpenSSH's PROTOCOL.sshsig. All integers are big-endian, and a "string" is a
uint32 length followed by that many bytes. The signature blob is:

    byte[6]  "SSHSIG"
    uint32   version (1)
    string   public key (the SSH wire encoding of the signer's key)
    string   namespace
    string   reserved (empty)
    string   hash algorithm ("sha512" or "sha256")
    string   signature (the SSH encoding of a signature over the data below)

and the bytes that the key signs are:

    byte[6]  "SSHSIG"
    string   namespace
    string   reserved
    string   hash algorithm
    string   H(message)

The blob is armored as `-----BEGIN SSH SIGNATURE-----`, base64 in lines of 70 characters, and
`-----END SSH SIGNATURE-----`. Parsing accepts exactly that layout (with or without the final
line break), so every valid signature has one accepted encoding.

Keys: ed25519 signs and verifies. ecdsa-sha2-nistp256/384/521 and ssh-rsa (with rsa-sha2-512 or
rsa-sha2-256 signatures) also sign and verify. Every failure raises `SignatureError`.

`cryptography`'s ECDSA, RSA and serialization modules are imported only by the functions that
handle such keys, so that verifying an ed25519 signature, the common case at every broker
start, imports just the ed25519 module.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519

from mosquitto_guard.errors import SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

MAGIC = b"SSHSIG"
SIGNATURE_VERSION = 1
ARMOR_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
ARMOR_END = b"-----END SSH SIGNATURE-----"
ARMOR_LINE_LENGTH = 70

# The largest armored signature accepted. A 16384-bit RSA signature, the largest that OpenSSH
# makes, armors to about 3 KiB.
MAX_SIGNATURE_FILE_BYTES = 16 * 1024
MAX_PUBLIC_KEY_BLOB_BYTES = 4096
MAX_NAMESPACE_BYTES = 256
MAX_INNER_SIGNATURE_BYTES = 4096

# Digests come from `cryptography`, which verifying loads anyway. hashlib, and hmac, which
# imports it, would also load the system's libcrypto, about 3 ms of every broker start
# (`python -X importtime`).
HASH_ALGORITHMS: dict[str, type[hashes.SHA512 | hashes.SHA256]] = {
    "sha512": hashes.SHA512,
    "sha256": hashes.SHA256,
}
SIGNING_HASH_ALGORITHM = "sha512"

ED25519 = "ssh-ed25519"
RSA = "ssh-rsa"
# Key type -> (curve name in the key blob, `cryptography` curve class, hash class), by name so
# that the ECDSA module is imported only for an ECDSA key; `_ecdsa_curve` looks them up.
ECDSA_CURVES: dict[str, tuple[str, str, str]] = {
    "ecdsa-sha2-nistp256": ("nistp256", "SECP256R1", "SHA256"),
    "ecdsa-sha2-nistp384": ("nistp384", "SECP384R1", "SHA384"),
    "ecdsa-sha2-nistp521": ("nistp521", "SECP521R1", "SHA512"),
}
# RSA signature type -> `cryptography` hash class name.
RSA_SIGNATURE_HASHES: dict[str, str] = {
    "rsa-sha2-512": "SHA512",
    "rsa-sha2-256": "SHA256",
}
# OpenSSH accepts RSA keys from 1024 bits; 1024-bit keys are too weak to trust a plugin with.
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 16384
SUPPORTED_KEY_TYPES = (ED25519, *ECDSA_CURVES, RSA)

VerifyingKey: TypeAlias = "ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey"
SigningKey: TypeAlias = "ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey"


def _digest(algorithm: type[hashes.SHA512 | hashes.SHA256], data: bytes) -> bytes:
    context = hashes.Hash(algorithm())
    context.update(data)
    return context.finalize()


def _ecdsa_curve(key_type: str) -> tuple[str, ec.EllipticCurve, hashes.HashAlgorithm]:
    """Return the curve name, curve and hash of ECDSA key type `key_type`."""
    from cryptography.hazmat.primitives.asymmetric import ec

    curve_name, curve_class, hash_class = ECDSA_CURVES[key_type]
    curve: ec.EllipticCurve = getattr(ec, curve_class)()
    hash_algorithm: hashes.HashAlgorithm = getattr(hashes, hash_class)()
    return curve_name, curve, hash_algorithm


def _rsa_signature_hash(signature_type: str) -> hashes.HashAlgorithm:
    hash_algorithm: hashes.HashAlgorithm = getattr(hashes, RSA_SIGNATURE_HASHES[signature_type])()
    return hash_algorithm


class WireReader:
    """A cursor over SSH wire-format bytes that raises `SignatureError` on any malformed field."""

    def __init__(self, data: bytes, description: str) -> None:
        self.data = data
        self.offset = 0
        self.description = description

    def read_bytes(self, count: int) -> bytes:
        end = self.offset + count
        if end > len(self.data):
            raise SignatureError(f"{self.description} is truncated")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def read_uint32(self) -> int:
        value: int = struct.unpack(">I", self.read_bytes(4))[0]
        return value

    def read_string(self, field: str, max_length: int) -> bytes:
        length = self.read_uint32()
        if length > max_length:
            raise SignatureError(
                f"{self.description}: {field} is {length} bytes long, more than the maximum of "
                f"{max_length}"
            )
        return self.read_bytes(length)

    def read_text(self, field: str, max_length: int) -> str:
        raw = self.read_string(field, max_length)
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise SignatureError(f"{self.description}: {field} is not ASCII text") from None
        if not text.isprintable():
            raise SignatureError(f"{self.description}: {field} contains control characters")
        return text

    def read_mpint(self, field: str, max_length: int) -> int:
        """Read a non-negative multiple-precision integer in its minimal encoding."""
        raw = self.read_string(field, max_length)
        if raw and raw[0] & 0x80:
            raise SignatureError(f"{self.description}: {field} is negative")
        if len(raw) >= 2 and raw[0] == 0 and not raw[1] & 0x80:
            raise SignatureError(f"{self.description}: {field} has a superfluous leading zero byte")
        if raw == b"\x00":
            raise SignatureError(f"{self.description}: {field} has a superfluous leading zero byte")
        return int.from_bytes(raw, "big")

    def finish(self) -> None:
        if self.offset != len(self.data):
            extra = len(self.data) - self.offset
            raise SignatureError(f"{self.description} has {extra} unexpected trailing byte(s)")


def encode_string(value: bytes) -> bytes:
    """Encode `value` as an SSH string: a uint32 length, then the bytes."""
    return struct.pack(">I", len(value)) + value


def encode_mpint(value: int) -> bytes:
    """Encode a non-negative integer as an SSH mpint in its minimal form."""
    if value == 0:
        return encode_string(b"")
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    if raw[0] & 0x80:
        raw = b"\x00" + raw
    return encode_string(raw)


def fingerprint(blob: bytes) -> str:
    """Return the key's fingerprint as `ssh-keygen -l` prints it: `SHA256:` and unpadded base64."""
    digest = _digest(hashes.SHA256, blob)
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class SshPublicKey:
    """A parsed SSH public key: its type name, its wire encoding and the `cryptography` key."""

    key_type: str
    blob: bytes
    key: VerifyingKey

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)

    def to_line(self, comment: str = "") -> str:
        """Return the one-line OpenSSH form: `TYPE BASE64 [COMMENT]`."""
        line = f"{self.key_type} {base64.b64encode(self.blob).decode('ascii')}"
        return f"{line} {comment}" if comment else line


def parse_public_key_blob(blob: bytes) -> SshPublicKey:
    """Parse the SSH wire encoding of a public key; raises `SignatureError` if it is invalid."""
    description = "SSH public key"
    if len(blob) > MAX_PUBLIC_KEY_BLOB_BYTES:
        raise SignatureError(f"{description} is larger than {MAX_PUBLIC_KEY_BLOB_BYTES} bytes")
    reader = WireReader(blob, description)
    key_type = reader.read_text("key type", 64)
    key: VerifyingKey
    if key_type == ED25519:
        raw = reader.read_string("ed25519 key", 32)
        if len(raw) != 32:
            raise SignatureError(
                f"{description}: ed25519 key is {len(raw)} bytes long, expected 32"
            )
        try:
            key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise SignatureError(f"{description}: ed25519 key is invalid") from None
    elif key_type in ECDSA_CURVES:
        key = _read_ecdsa_key(reader, key_type)
    elif key_type == RSA:
        key = _read_rsa_key(reader)
    else:
        supported = ", ".join(SUPPORTED_KEY_TYPES)
        raise SignatureError(
            f"{description}: unsupported key type {key_type!r} (supported: {supported})"
        )
    reader.finish()
    return SshPublicKey(key_type=key_type, blob=blob, key=key)


def _read_ecdsa_key(reader: WireReader, key_type: str) -> ec.EllipticCurvePublicKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    curve_name, curve, _ = _ecdsa_curve(key_type)
    identifier = reader.read_text("curve name", 64)
    if identifier != curve_name:
        raise SignatureError(
            f"{reader.description}: curve {identifier!r} does not match key type {key_type!r}"
        )
    point = reader.read_string("ecdsa point", 256)
    if not point or point[0] != 0x04:
        raise SignatureError(f"{reader.description}: ecdsa point is not in uncompressed form")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    except ValueError:
        raise SignatureError(
            f"{reader.description}: ecdsa point is not on curve {curve_name}"
        ) from None


def _read_rsa_key(reader: WireReader) -> rsa.RSAPublicKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import rsa

    exponent = reader.read_mpint("rsa exponent", 16)
    modulus = reader.read_mpint("rsa modulus", RSA_MAX_BITS // 8 + 1)
    bits = modulus.bit_length()
    if bits < RSA_MIN_BITS:
        raise SignatureError(
            f"{reader.description}: rsa key has {bits} bits, fewer than the minimum of "
            f"{RSA_MIN_BITS}"
        )
    try:
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError(f"{reader.description}: rsa exponent or modulus is invalid") from None


def parse_public_key_line(line: str) -> tuple[SshPublicKey, str]:
    """Parse `TYPE BASE64 [COMMENT]` into the key and its comment.

    Raises `SignatureError` when the line is malformed or the type name in front does not match
    the type inside the encoded key.
    """
    fields = line.strip().split(maxsplit=2)
    if len(fields) < 2:
        raise SignatureError("SSH public key line must be 'TYPE BASE64 [COMMENT]'")
    key_type, encoded = fields[0], fields[1]
    comment = fields[2] if len(fields) == 3 else ""
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("SSH public key is not valid base64") from None
    key = parse_public_key_blob(blob)
    if key.key_type != key_type:
        raise SignatureError(
            f"SSH public key line names type {key_type!r}, but the key is {key.key_type!r}"
        )
    return key, comment


@dataclass(frozen=True)
class SshSignature:
    """The fields of a parsed SSHSIG blob; `signature` is the SSH-encoded inner signature."""

    public_key: SshPublicKey
    namespace: str
    hash_algorithm: str
    signature: bytes


def armor(blob: bytes) -> bytes:
    """Armor a signature blob exactly as `ssh-keygen -Y sign` does."""
    encoded = base64.b64encode(blob)
    lines = [
        encoded[start : start + ARMOR_LINE_LENGTH]
        for start in range(0, len(encoded), ARMOR_LINE_LENGTH)
    ]
    return b"\n".join([ARMOR_BEGIN, *lines, ARMOR_END]) + b"\n"


def dearmor(data: bytes) -> bytes:
    """Return the blob inside an armored signature, accepting only the layout `armor` writes."""
    if len(data) > MAX_SIGNATURE_FILE_BYTES:
        raise SignatureError(
            f"SSH signature is {len(data)} bytes long, more than the maximum of "
            f"{MAX_SIGNATURE_FILE_BYTES}"
        )
    if b"\x00" in data:
        raise SignatureError("SSH signature contains NUL bytes")
    try:
        data.decode("ascii")
    except UnicodeDecodeError:
        raise SignatureError("SSH signature is not ASCII text") from None
    if not data.startswith(ARMOR_BEGIN + b"\n"):
        raise SignatureError(f"SSH signature does not start with {ARMOR_BEGIN.decode()}")
    body = data[:-1] if data.endswith(b"\n") else data
    if not body.endswith(b"\n" + ARMOR_END):
        raise SignatureError(f"SSH signature does not end with {ARMOR_END.decode()}")
    encoded_lines = body[len(ARMOR_BEGIN) + 1 : -len(ARMOR_END) - 1].split(b"\n")
    encoded = b"".join(encoded_lines)
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("SSH signature armor contains invalid base64") from None
    if not blob:
        raise SignatureError("SSH signature armor is empty")
    # Comparing with a fresh armoring rejects short or long lines, blank lines, stray spaces and
    # non-canonical base64 padding in one check.
    if armor(blob) != body + b"\n":
        raise SignatureError(
            f"SSH signature armor is malformed: expected base64 lines of {ARMOR_LINE_LENGTH} "
            "characters between the BEGIN and END lines"
        )
    return blob


def parse_signature(data: bytes) -> SshSignature:
    """Parse an armored SSHSIG signature without verifying it; raises `SignatureError`."""
    blob = dearmor(data)
    reader = WireReader(blob, "SSH signature")
    if reader.read_bytes(len(MAGIC)) != MAGIC:
        raise SignatureError("SSH signature does not start with the SSHSIG magic bytes")
    version = reader.read_uint32()
    if version != SIGNATURE_VERSION:
        raise SignatureError(
            f"SSH signature has version {version}; only version {SIGNATURE_VERSION} is supported"
        )
    public_key = parse_public_key_blob(reader.read_string("public key", MAX_PUBLIC_KEY_BLOB_BYTES))
    namespace_raw = reader.read_string("namespace", MAX_NAMESPACE_BYTES)
    try:
        namespace = namespace_raw.decode("ascii")
    except UnicodeDecodeError:
        raise SignatureError("SSH signature: namespace is not ASCII text") from None
    if not namespace or not namespace.isprintable():
        raise SignatureError("SSH signature: namespace is empty or contains control characters")
    reserved = reader.read_string("reserved field", 1024)
    if reserved:
        raise SignatureError("SSH signature: reserved field is not empty")
    hash_algorithm = reader.read_text("hash algorithm", 32)
    if hash_algorithm not in HASH_ALGORITHMS:
        raise SignatureError(f"SSH signature: unsupported hash algorithm {hash_algorithm!r}")
    signature = reader.read_string("signature", MAX_INNER_SIGNATURE_BYTES)
    reader.finish()
    return SshSignature(
        public_key=public_key,
        namespace=namespace,
        hash_algorithm=hash_algorithm,
        signature=signature,
    )


def signed_data(namespace: str, hash_algorithm: str, message: bytes) -> bytes:
    """Return the bytes that the key signs for `message` in `namespace`."""
    digest = _digest(HASH_ALGORITHMS[hash_algorithm], message)
    return (
        MAGIC
        + encode_string(namespace.encode("ascii"))
        + encode_string(b"")
        + encode_string(hash_algorithm.encode("ascii"))
        + encode_string(digest)
    )


def verify_signature(
    public_key: SshPublicKey, message: bytes, signature_data: bytes, namespace: str
) -> None:
    """Check that `signature_data` is an SSHSIG by `public_key` over `message` in `namespace`.

    Raises `SignatureError` when the signature is malformed, was made by another key or for
    another namespace, or does not verify.
    """
    parsed = parse_signature(signature_data)
    # Both blobs are public keys, so comparing them in variable time reveals nothing secret.
    if parsed.public_key.blob != public_key.blob:
        raise SignatureError(
            f"signature was made by key {parsed.public_key.fingerprint}, "
            f"not by {public_key.fingerprint}"
        )
    if parsed.namespace != namespace:
        raise SignatureError(
            f"signature is for namespace {parsed.namespace!r}, expected {namespace!r}"
        )
    to_verify = signed_data(parsed.namespace, parsed.hash_algorithm, message)
    _verify_inner(public_key, parsed.signature, to_verify)


def _verify_inner(public_key: SshPublicKey, encoded: bytes, to_verify: bytes) -> None:
    reader = WireReader(encoded, "SSH signature")
    signature_type = reader.read_text("signature type", 64)
    raw = reader.read_string("signature value", MAX_INNER_SIGNATURE_BYTES)
    reader.finish()
    key = public_key.key
    failure = SignatureError(
        f"signature by key {public_key.fingerprint} does not match the signed bytes"
    )
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            _expect_type(signature_type, (ED25519,))
            key.verify(raw, to_verify)
        elif public_key.key_type in ECDSA_CURVES:
            _verify_ecdsa(public_key, signature_type, raw, to_verify)
        else:
            _verify_rsa(public_key, signature_type, raw, to_verify, failure)
    except InvalidSignature:
        raise failure from None


def _verify_ecdsa(
    public_key: SshPublicKey, signature_type: str, raw: bytes, to_verify: bytes
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = public_key.key
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureError(f"SSH key of type {public_key.key_type} is not an ECDSA key")
    _expect_type(signature_type, (public_key.key_type,))
    _, _, hash_algorithm = _ecdsa_curve(public_key.key_type)
    key.verify(_decode_ecdsa(raw), to_verify, ec.ECDSA(hash_algorithm))


def _verify_rsa(
    public_key: SshPublicKey,
    signature_type: str,
    raw: bytes,
    to_verify: bytes,
    failure: SignatureError,
) -> None:
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = public_key.key
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError(f"SSH key of type {public_key.key_type} is not an RSA key")
    _expect_type(signature_type, tuple(RSA_SIGNATURE_HASHES))
    modulus_bytes = (key.key_size + 7) // 8
    if len(raw) > modulus_bytes:
        raise failure
    # OpenSSH pads a short RSA signature to the modulus length before checking it.
    padded = raw.rjust(modulus_bytes, b"\x00")
    key.verify(padded, to_verify, padding.PKCS1v15(), _rsa_signature_hash(signature_type))


def _expect_type(signature_type: str, allowed: tuple[str, ...]) -> None:
    if signature_type not in allowed:
        raise SignatureError(
            f"SSH signature type {signature_type!r} does not fit the key "
            f"(expected {' or '.join(allowed)})"
        )


def _decode_ecdsa(raw: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    reader = WireReader(raw, "ecdsa signature")
    r = reader.read_mpint("r", 67)
    s = reader.read_mpint("s", 67)
    reader.finish()
    return encode_dss_signature(r, s)


def public_key_of(private_key: SigningKey) -> SshPublicKey:
    """Return the SSH public key of a `cryptography` private key."""
    from cryptography.hazmat.primitives import serialization

    line = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    key, _ = parse_public_key_line(line)
    return key


def sign(private_key: SigningKey, message: bytes, namespace: str) -> bytes:
    """Sign `message` in `namespace` and return the armored SSHSIG signature.

    Raises `ValueError` for an empty or non-ASCII namespace and `SignatureError` when the key is
    of an unsupported type or size.
    """
    if not namespace or not namespace.isascii() or not namespace.isprintable():
        raise ValueError(f"invalid SSHSIG namespace {namespace!r}")
    public_key = public_key_of(private_key)
    to_sign = signed_data(namespace, SIGNING_HASH_ALGORITHM, message)
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        inner = encode_string(ED25519.encode()) + encode_string(private_key.sign(to_sign))
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        _, _, hash_algorithm = _ecdsa_curve(public_key.key_type)
        r, s = decode_dss_signature(private_key.sign(to_sign, ec.ECDSA(hash_algorithm)))
        inner = encode_string(public_key.key_type.encode()) + encode_string(
            encode_mpint(r) + encode_mpint(s)
        )
    else:
        raw = private_key.sign(to_sign, padding.PKCS1v15(), hashes.SHA512())
        inner = encode_string(b"rsa-sha2-512") + encode_string(raw)
    blob = (
        MAGIC
        + struct.pack(">I", SIGNATURE_VERSION)
        + encode_string(public_key.blob)
        + encode_string(namespace.encode("ascii"))
        + encode_string(b"")
        + encode_string(SIGNING_HASH_ALGORITHM.encode("ascii"))
        + encode_string(inner)
    )
    return armor(blob)
