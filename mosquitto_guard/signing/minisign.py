"""minisign keys and signatures, bound to a namespace through the trusted comment.

Parsing and the Ed25519 arithmetic come from the `py-minisign` package (import name `minisign`).
This module adds what that package leaves to its caller: strict checks on the text layout of
hostile files, key ids printed as minisign 0.11 prints them, and namespaces.

minisign has no namespace field, so the namespace goes into the signed trusted comment, which
must start with the token `namespace:NAME`. Further tokens, separated by tabs or spaces, are
free; this module writes `namespace:NAME<TAB>file:FILE<TAB>timestamp:SECONDS`. Because the
namespace token must come first, a signature that `minisign -S` makes with its default trusted
comment (`timestamp:...<TAB>file:...`) never passes as a manifest signature, whatever the file
name. To sign a manifest with the minisign tool itself:

    minisign -S -s KEY -m NAME.toml -t 'namespace:mosquitto-guard-manifest file:NAME.toml'

A minisign key id is 8 bytes stored little-endian. minisign 0.11 prints it as the upper-case
hex of that little-endian number, so the bytes appear in reverse order, and it drops leading
zeros. This module always writes all 16 digits.

`minisign` is imported by the functions that parse, verify or create minisign data, never at
import time, so that a policy with only SSH keys does not load it.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mosquitto_guard.errors import SignatureError
from mosquitto_guard.signing import MINISIGN_UNTRUSTED_PREFIX

if TYPE_CHECKING:
    import minisign

UNTRUSTED_PREFIX = MINISIGN_UNTRUSTED_PREFIX
TRUSTED_PREFIX = "trusted comment: "
NAMESPACE_PREFIX = "namespace:"

# The largest signature file accepted: minisign's own limit on a trusted comment is 8 KiB.
MAX_SIGNATURE_FILE_BYTES = 16 * 1024

# scrypt limits that minisign 0.11 writes into the keys it encrypts (checked with `minisign -G`):
# about 1 GiB of memory and a few seconds for each decryption.
SCRYPT_OPSLIMIT = 33_554_432
SCRYPT_MEMLIMIT = 1_073_741_824

PUBLIC_KEY_BYTES = 42  # "Ed" + 8-byte key id + 32-byte Ed25519 key
SIGNATURE_LINE_BYTES = 74  # algorithm + key id + 64-byte signature


def _decode_canonical_base64(text: str, description: str) -> bytes:
    """Decode base64 that has exactly one accepted spelling, so no two files mean the same."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{description} is not valid base64") from None
    # b64decode ignores the unused low bits of the last character, which would let one
    # signature be written in several ways.
    if base64.b64encode(raw).decode("ascii") != text:
        raise SignatureError(f"{description} is not canonical base64")
    return raw


def format_key_id(raw: bytes) -> str:
    """Return the key id as 16 upper-case hex digits, the form minisign prints with zeros added."""
    return raw[::-1].hex().upper()


@dataclass(frozen=True)
class MinisignPublicKey:
    """A minisign public key: its base64 line and its key id as minisign prints it."""

    text: str
    key_id: str
    key: minisign.PublicKey


def parse_public_key_line(line: str) -> MinisignPublicKey:
    """Parse the base64 line of a minisign public key (`RW...`); raises `SignatureError`."""
    text = line.strip()
    raw = _decode_canonical_base64(text, "minisign public key")
    if len(raw) != PUBLIC_KEY_BYTES:
        raise SignatureError(
            f"minisign public key is {len(raw)} bytes long, expected {PUBLIC_KEY_BYTES}"
        )
    if raw[:2] != b"Ed":
        raise SignatureError(f"minisign public key has unsupported algorithm {raw[:2]!r}")
    import minisign

    try:
        key = minisign.PublicKey.from_base64(text)
    except minisign.Error as error:
        raise SignatureError(f"invalid minisign public key: {error}") from None
    return MinisignPublicKey(text=text, key_id=format_key_id(raw[2:10]), key=key)


def parse_public_key_file(text: str) -> MinisignPublicKey:
    """Parse a minisign `.pub` file: an `untrusted comment:` line, then the key line."""
    lines = _split_lines(text, 2, "minisign public key file")
    if not lines[0].startswith(UNTRUSTED_PREFIX):
        raise SignatureError(
            f"minisign public key file does not start with {UNTRUSTED_PREFIX.strip()!r}"
        )
    return parse_public_key_line(lines[1])


def _split_lines(text: str, count: int, description: str) -> list[str]:
    body = text[:-1] if text.endswith("\n") else text
    lines = body.split("\n")
    if len(lines) != count:
        raise SignatureError(f"{description} has {len(lines)} line(s), expected {count}")
    for line in lines:
        if any(char != "\t" and not char.isprintable() for char in line):
            raise SignatureError(f"{description} contains control characters")
    return lines


@dataclass(frozen=True)
class MinisignSignature:
    """A parsed minisign signature; `trusted_comment` is authentic only after verification."""

    key_id: str
    trusted_comment: str
    signature: minisign.Signature

    @property
    def namespace(self) -> str | None:
        """The namespace named by the first token of the trusted comment, or None."""
        return namespace_of(self.trusted_comment)


def namespace_of(trusted_comment: str) -> str | None:
    """Return the value of a leading `namespace:` token of a trusted comment, or None."""
    tokens = trusted_comment.split()
    if not tokens or not tokens[0].startswith(NAMESPACE_PREFIX):
        return None
    return tokens[0][len(NAMESPACE_PREFIX) :]


def parse_signature(data: bytes) -> MinisignSignature:
    """Parse a minisign signature file without verifying it; raises `SignatureError`.

    The file must be UTF-8 text of exactly four lines: the untrusted comment, the signature,
    the trusted comment and the global signature, with or without a final line break.
    """
    description = "minisign signature"
    if len(data) > MAX_SIGNATURE_FILE_BYTES:
        raise SignatureError(
            f"{description} is {len(data)} bytes long, more than the maximum of "
            f"{MAX_SIGNATURE_FILE_BYTES}"
        )
    if b"\x00" in data:
        raise SignatureError(f"{description} contains NUL bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError(f"{description} is not UTF-8 text") from None
    lines = _split_lines(text, 4, description)
    if not lines[0].startswith(UNTRUSTED_PREFIX):
        raise SignatureError(
            f"{description}: line 1 does not start with {UNTRUSTED_PREFIX.strip()!r}"
        )
    if not lines[2].startswith(TRUSTED_PREFIX):
        raise SignatureError(
            f"{description}: line 3 does not start with {TRUSTED_PREFIX.strip()!r}"
        )
    raw = _decode_canonical_base64(lines[1], f"{description}: line 2")
    _decode_canonical_base64(lines[3], f"{description}: line 4")
    if len(raw) != SIGNATURE_LINE_BYTES:
        raise SignatureError(
            f"{description}: line 2 is {len(raw)} bytes long, expected {SIGNATURE_LINE_BYTES}"
        )
    if raw[:2] not in (b"Ed", b"ED"):
        raise SignatureError(f"{description}: unsupported algorithm {raw[:2]!r}")
    import minisign

    try:
        signature = minisign.Signature.from_bytes(text.encode("utf-8"))
    except minisign.Error as error:
        raise SignatureError(f"{description} is malformed: {error}") from None
    return MinisignSignature(
        key_id=format_key_id(raw[2:10]),
        trusted_comment=lines[2][len(TRUSTED_PREFIX) :],
        signature=signature,
    )


def verify_signature(
    public_key: MinisignPublicKey, message: bytes, signature_data: bytes, namespace: str
) -> None:
    """Check a minisign signature over `message` and the namespace in its trusted comment.

    Raises `SignatureError` when the signature is malformed, was made by another key, does not
    verify, or names another namespace (or none).
    """
    parsed = parse_signature(signature_data)
    if parsed.key_id != public_key.key_id:
        raise SignatureError(
            f"signature was made by key {parsed.key_id}, not by {public_key.key_id}"
        )
    import minisign

    try:
        public_key.key.verify(message, parsed.signature)
    except minisign.Error:
        raise SignatureError(
            f"signature by key {public_key.key_id} does not match the signed bytes"
        ) from None
    check_namespace(parsed, namespace)


def check_namespace(parsed: MinisignSignature, namespace: str) -> None:
    """Raise `SignatureError` unless the trusted comment names `namespace` first."""
    found = parsed.namespace
    if found is None:
        raise SignatureError(
            f"signature has no namespace: its trusted comment must start with "
            f"'{NAMESPACE_PREFIX}{namespace}'"
        )
    if found != namespace:
        raise SignatureError(f"signature is for namespace {found!r}, expected {namespace!r}")


@dataclass
class MinisignSecretKey:
    """A decrypted minisign secret key, ready to sign."""

    secret_key: minisign.SecretKey
    public_key: MinisignPublicKey

    def sign(self, message: bytes, namespace: str, file_name: str | None) -> bytes:
        """Sign `message`, naming `namespace` and `file_name` (if any) in the trusted comment.

        Raises `ValueError` when the namespace or the file name contains whitespace or control
        characters, because either would change how the trusted comment splits into tokens.
        """
        tokens = [f"{NAMESPACE_PREFIX}{namespace}"]
        if file_name is not None:
            tokens.append(f"file:{file_name}")
        tokens.append(f"timestamp:{int(time.time())}")
        for value in (namespace, file_name or "-"):
            if not value or any(char.isspace() or not char.isprintable() for char in value):
                raise ValueError(f"cannot put {value!r} into a minisign trusted comment")
        signature = self.secret_key.sign(
            message,
            prehash=True,
            trusted_comment="\t".join(tokens),
            untrusted_comment=f"signature from mosquitto-guard, key {self.public_key.key_id}",
        )
        return bytes(signature) + b"\n"


def is_secret_key_file(text: str) -> bool:
    """Return True when `text` looks like a minisign secret key file."""
    return text.startswith(UNTRUSTED_PREFIX) and "\nRW" in text


def parse_secret_key(text: str, description: str) -> minisign.SecretKey:
    """Parse a minisign secret key file, named by `description` in errors.

    Raises `SignatureError` when the file is malformed.
    """
    lines = _split_lines(text, 2, description)
    if not lines[0].startswith(UNTRUSTED_PREFIX):
        raise SignatureError(f"{description} does not start with {UNTRUSTED_PREFIX.strip()!r}")
    import minisign

    try:
        return minisign.SecretKey.from_base64(lines[1])
    except minisign.Error as error:
        raise SignatureError(f"{description} is not a valid minisign secret key: {error}") from None


def secret_key_is_encrypted(secret_key: minisign.SecretKey) -> bool:
    """Return True when the secret key needs a passphrase before it can sign."""
    return bool(secret_key.is_encrypted())


def unlock_secret_key(
    secret_key: minisign.SecretKey, passphrase: str | None, description: str
) -> MinisignSecretKey:
    """Decrypt the key when it is encrypted and return it ready to sign.

    Raises `SignatureError` when the passphrase is wrong or the key data is inconsistent.
    """
    import minisign

    if secret_key.is_encrypted():
        if passphrase is None:
            raise ValueError("an encrypted minisign key needs a passphrase")
        try:
            secret_key.decrypt(passphrase)
        except minisign.Error:
            raise SignatureError(f"cannot decrypt {description}: wrong passphrase") from None
    public = secret_key.get_public_key()
    public_key = parse_public_key_line(public.to_base64().decode("ascii"))
    return MinisignSecretKey(secret_key=secret_key, public_key=public_key)


def generate(comment: str, passphrase: str | None) -> tuple[bytes, bytes, MinisignPublicKey]:
    """Create a key pair and return the secret key file, the public key file and the key.

    Both files use the layout `minisign -G` writes. With a passphrase, the secret key is
    encrypted with scrypt at minisign's own cost settings.
    """
    import minisign

    pair = minisign.KeyPair.generate()
    public_key = parse_public_key_line(pair.public_key.to_base64().decode("ascii"))
    secret = pair.secret_key
    if passphrase is not None:
        secret.encrypt(passphrase, opslimit=SCRYPT_OPSLIMIT, memlimit=SCRYPT_MEMLIMIT)
        header_comment = "minisign encrypted secret key"
    else:
        header_comment = "minisign secret key"
    secret_text = f"{UNTRUSTED_PREFIX}{header_comment}\n{secret.to_base64().decode('ascii')}\n"
    secret.wipe()
    public_comment = comment or f"minisign public key {public_key.key_id}"
    public_text = f"{UNTRUSTED_PREFIX}{public_comment}\n{public_key.text}\n"
    return secret_text.encode("utf-8"), public_text.encode("utf-8"), public_key
