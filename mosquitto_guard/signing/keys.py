"""Public and private keys of both supported kinds, SSH and minisign, behind one interface.

A `PublicKey` is parsed from one line (`ssh-ed25519 AAAA... comment` or a minisign `RW...`
line) or from a `.pub` file, and verifies signatures of its kind. A `PrivateKey` is loaded from
an OpenSSH private key file or a minisign secret key file and signs. `generate_keypair` writes
new key pairs that `ssh-keygen` and `minisign` can use.

Key ids are what the usual tools print: for SSH the fingerprint `SHA256:...` of `ssh-keygen -l`,
for minisign the hex id that `minisign` shows, padded with zeros to 16 upper-case digits.

The passphrase of an encrypted private key comes from the caller, else from the environment
variable `MOSQUITTO_GUARD_PASSPHRASE`, else from a prompt when stdin is a terminal.

What only `sign` and `keygen` need (`cryptography`'s serialization, RSA and ECDSA modules, and
file writing) is imported inside the functions that use it, so that `run`, which only verifies,
does not load it. The minisign code is imported only for minisign keys and signatures.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mosquitto_guard.errors import HostError, SignatureError, UsageError
from mosquitto_guard.signing import MINISIGN_UNTRUSTED_PREFIX, sshsig

if TYPE_CHECKING:
    from mosquitto_guard.signing import minisign as minisign_format

KeyKind = Literal["ssh", "minisign"]
KEY_KINDS: tuple[KeyKind, ...] = ("ssh", "minisign")
PASSPHRASE_ENV = "MOSQUITTO_GUARD_PASSPHRASE"  # noqa: S105 (a variable name)

# Key files are small: a 16384-bit RSA private key, the largest OpenSSH makes, is about 13 KiB.
MAX_KEY_FILE_BYTES = 64 * 1024

OPENSSH_PRIVATE_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
OPENSSH_PRIVATE_END = "-----END OPENSSH PRIVATE KEY-----"
OPENSSH_PRIVATE_MAGIC = b"openssh-key-v1\x00"
SSH_KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-")


@dataclass(frozen=True)
class PublicKey:
    """A public key that verifies signatures.

    `kind` is "ssh" or "minisign". `key_id` is the SSH fingerprint (`SHA256:...`) or the
    minisign key id (16 upper-case hex digits). `text` is the key as one line without a
    comment: `TYPE BASE64` for SSH, the base64 `RW...` line for minisign. Two keys are equal
    when their kind, id and text are.
    """

    kind: KeyKind
    key_id: str
    text: str
    comment: str = field(default="", compare=False)
    parsed: sshsig.SshPublicKey | minisign_format.MinisignPublicKey | None = field(
        default=None, compare=False, repr=False
    )

    @property
    def material(self) -> str:
        """The key itself, independent of its format: what makes two signers distinct.

        An Ed25519 key gives the same value whether it is written as an SSH key or as a
        minisign key. Two minisign lines that differ only in their key id give the same value
        too, so one key cannot count as two signers.
        """
        if self.kind == "ssh":
            blob = base64.b64decode(self.text.split()[1])
            if self.text.startswith("ssh-ed25519 "):
                return "ed25519:" + blob[-32:].hex()
            return "ssh:" + blob.hex()
        raw = base64.b64decode(self.text)
        return "ed25519:" + raw[10:].hex()

    def verify(self, data: bytes, signature: bytes, namespace: str) -> None:
        """Check that `signature` is this key's signature over `data` in `namespace`.

        Raises `SignatureError` when the signature is malformed, was made by another key or for
        another namespace, or does not match `data`.
        """
        if isinstance(self.parsed, sshsig.SshPublicKey):
            sshsig.verify_signature(self.parsed, data, signature, namespace)
            return
        from mosquitto_guard.signing import minisign as minisign_format

        if isinstance(self.parsed, minisign_format.MinisignPublicKey):
            minisign_format.verify_signature(self.parsed, data, signature, namespace)
        else:
            raise ValueError("PublicKey was built without a parsed key; use parse_public_key")


def _ssh_public_key(key: sshsig.SshPublicKey, comment: str) -> PublicKey:
    return PublicKey(
        kind="ssh", key_id=key.fingerprint, text=key.to_line(), comment=comment, parsed=key
    )


def _minisign_public_key(key: minisign_format.MinisignPublicKey, comment: str) -> PublicKey:
    return PublicKey(kind="minisign", key_id=key.key_id, text=key.text, comment=comment, parsed=key)


def parse_public_key(line: str) -> PublicKey:
    """Parse a public key line: `ssh-ed25519 AAAA... [comment]` or a minisign `RW...` line.

    Raises `SignatureError` when the line is neither, or the key inside is malformed.
    """
    fields = line.split()
    if not fields:
        raise SignatureError("public key line is empty")
    if fields[0].startswith(SSH_KEY_PREFIXES):
        key, comment = sshsig.parse_public_key_line(line)
        return _ssh_public_key(key, comment)
    if len(fields) == 1:
        from mosquitto_guard.signing import minisign as minisign_format

        return _minisign_public_key(minisign_format.parse_public_key_line(fields[0]), "")
    raise SignatureError(
        "unrecognized public key: expected 'ssh-ed25519 AAAA... [comment]' "
        "or a minisign key line 'RW...'"
    )


def read_key_file(path: Path, description: str) -> str:
    """Read a small key file as UTF-8 text; raises `HostError` or `SignatureError`."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise HostError(f"{description} not found: {path}") from None
    except OSError as error:
        raise HostError(f"cannot read {description} {path}: {error.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise SignatureError(f"{description} {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError(f"{description} {path} is not UTF-8 text") from None


def load_public_key(path: Path) -> PublicKey:
    """Load a public key from a `.pub` file of either kind.

    An SSH `.pub` file contains one key line. A minisign `.pub` file contains an
    `untrusted comment:` line, then the key line. Raises `HostError` when the file cannot be
    read and `SignatureError` when it contains no valid key.
    """
    text = read_key_file(path, "public key file")
    try:
        if text.startswith(MINISIGN_UNTRUSTED_PREFIX):
            from mosquitto_guard.signing import minisign as minisign_format

            key = minisign_format.parse_public_key_file(text)
            comment = text.split("\n", 1)[0][len(MINISIGN_UNTRUSTED_PREFIX) :]
            return _minisign_public_key(key, comment)
        lines = [line for line in text.split("\n") if line.strip()]
        if len(lines) != 1:
            raise SignatureError(f"expected one key line, found {len(lines)}")
        return parse_public_key(lines[0])
    except SignatureError as error:
        raise SignatureError(f"public key file {path}: {error.message}") from None


@dataclass(frozen=True)
class SignatureInfo:
    """The key id and namespace that a signature file claims, read before verification.

    `namespace` is None for a minisign signature whose trusted comment names none.
    """

    kind: KeyKind
    key_id: str
    namespace: str | None


def inspect_signature(kind: KeyKind, data: bytes) -> SignatureInfo:
    """Parse a signature of `kind` and return its key id and namespace, without verifying it.

    Raises `SignatureError` when the signature is malformed.
    """
    if kind == "ssh":
        parsed = sshsig.parse_signature(data)
        return SignatureInfo(
            kind="ssh", key_id=parsed.public_key.fingerprint, namespace=parsed.namespace
        )
    from mosquitto_guard.signing import minisign as minisign_format

    signature = minisign_format.parse_signature(data)
    return SignatureInfo(kind="minisign", key_id=signature.key_id, namespace=signature.namespace)


def resolve_passphrase(
    description: str, passphrase: str | None = None, *, confirm: bool = False
) -> str:
    """Return the passphrase for `description` from the argument, the environment or a prompt.

    The order is: `passphrase`, then a non-empty `MOSQUITTO_GUARD_PASSPHRASE`, then a `getpass`
    prompt when stdin is a terminal (asked twice when `confirm` is set). Raises `UsageError`
    when none of them gives a passphrase, or the two prompted entries differ.
    """
    if passphrase is not None:
        return passphrase
    from_environment = os.environ.get(PASSPHRASE_ENV)
    if from_environment:
        return from_environment
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass

        entered = getpass.getpass(f"Passphrase for {description}: ")
        if confirm and getpass.getpass("Repeat the passphrase: ") != entered:
            raise UsageError("the two passphrases differ")
        return entered
    raise UsageError(
        f"no passphrase for {description}",
        fix=f"set {PASSPHRASE_ENV}, or run the command in a terminal to be prompted",
    )


class PrivateKey:
    """A loaded private key that signs; `public_key` is its public half."""

    def __init__(
        self,
        path: Path,
        public_key: PublicKey,
        signer: sshsig.SigningKey | minisign_format.MinisignSecretKey,
    ) -> None:
        self.path = path
        self.public_key = public_key
        self.kind: KeyKind = public_key.kind
        self._signer = signer

    def __repr__(self) -> str:
        return f"PrivateKey(kind={self.kind!r}, key_id={self.public_key.key_id!r})"

    def sign(self, data: bytes, namespace: str, *, file_name: str | None = None) -> bytes:
        """Sign `data` in `namespace` and return the signature file's bytes.

        SSH keys produce an armored SSHSIG signature. minisign keys produce a minisign
        signature whose trusted comment names the namespace and, if given, `file_name`.
        """
        from mosquitto_guard.signing import minisign as minisign_format

        if isinstance(self._signer, minisign_format.MinisignSecretKey):
            return self._signer.sign(data, namespace, file_name)
        return sshsig.sign(self._signer, data, namespace)


def load_private_key(path: Path, passphrase: str | None = None) -> PrivateKey:
    """Load an OpenSSH private key or a minisign secret key, decrypting it when needed.

    A passphrase is asked for (see `resolve_passphrase`) only when the key is encrypted.
    Raises `HostError` when the file cannot be read, `UsageError` when an encrypted key has no
    passphrase, and `SignatureError` when the file is not a supported key or the passphrase is
    wrong.
    """
    from mosquitto_guard.signing import minisign as minisign_format

    text = read_key_file(path, "private key file")
    if _looks_public(text):
        private = path.with_suffix("") if path.suffix == ".pub" else path
        raise SignatureError(
            f"{path} is a public key; signing needs the private key",
            fix=f"pass the private key, such as {private}",
        )
    if text.startswith(OPENSSH_PRIVATE_BEGIN):
        return _load_ssh_private_key(path, text, passphrase)
    if minisign_format.is_secret_key_file(text):
        return _load_minisign_secret_key(path, text, passphrase)
    raise SignatureError(
        f"{path} is neither an OpenSSH private key nor a minisign secret key",
        fix=f"create a key with: mosquitto-guard keygen {path}",
    )


def _looks_public(text: str) -> bool:
    """Return True for the text of an SSH or minisign public key file."""
    first = text.lstrip().split("\n", 1)[0]
    return first.startswith(("ssh-", "ecdsa-", "untrusted comment: minisign public key")) or (
        first.startswith("RW") and " " not in first.strip()
    )


def _openssh_cipher(path: Path, text: str) -> str:
    """Return the cipher name from an OpenSSH private key's envelope ("none" if unencrypted)."""
    body = text.strip()
    if not body.endswith(OPENSSH_PRIVATE_END):
        raise SignatureError(f"{path}: OpenSSH private key has no END line")
    encoded = "".join(body[len(OPENSSH_PRIVATE_BEGIN) : -len(OPENSSH_PRIVATE_END)].split())
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{path}: OpenSSH private key is not valid base64") from None
    if not raw.startswith(OPENSSH_PRIVATE_MAGIC):
        raise SignatureError(f"{path}: OpenSSH private key has an unknown format")
    reader = sshsig.WireReader(raw[len(OPENSSH_PRIVATE_MAGIC) :], f"{path}: OpenSSH private key")
    return reader.read_text("cipher name", 64)


def _load_ssh_private_key(path: Path, text: str, passphrase: str | None) -> PrivateKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    password: bytes | None = None
    if _openssh_cipher(path, text) != "none":
        password = resolve_passphrase(str(path), passphrase).encode("utf-8")
    try:
        key = serialization.load_ssh_private_key(text.encode("ascii"), password)
    except UnsupportedAlgorithm as error:
        raise SignatureError(f"{path}: unsupported OpenSSH private key: {error}") from None
    except (ValueError, TypeError):
        if password is not None:
            raise SignatureError(
                f"cannot decrypt {path}: wrong passphrase or damaged key"
            ) from None
        raise SignatureError(f"{path} is not a valid OpenSSH private key") from None
    supported = (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)
    if not isinstance(key, supported):
        raise SignatureError(
            f"{path}: unsupported key type {type(key).__name__}; use ed25519, ecdsa or rsa"
        )
    try:
        ssh_public = sshsig.public_key_of(key)
    except ValueError as error:
        raise SignatureError(f"{path}: unsupported key: {error}") from None
    return PrivateKey(path, _ssh_public_key(ssh_public, ""), key)


def _load_minisign_secret_key(path: Path, text: str, passphrase: str | None) -> PrivateKey:
    from mosquitto_guard.signing import minisign as minisign_format

    secret = minisign_format.parse_secret_key(text, f"minisign secret key {path}")
    needed: str | None = None
    if minisign_format.secret_key_is_encrypted(secret):
        needed = resolve_passphrase(str(path), passphrase)
    unlocked = minisign_format.unlock_secret_key(secret, needed, f"minisign secret key {path}")
    return PrivateKey(path, _minisign_public_key(unlocked.public_key, ""), unlocked)


def generate_keypair(
    kind: KeyKind, path: Path, *, comment: str, passphrase: str | None = None
) -> PublicKey:
    """Create a key pair: the private key at `path` (mode 0600) and the public key at `path.pub`.

    SSH keys are ed25519 in the OpenSSH format, encrypted with bcrypt-pbkdf and aes256-ctr when a
    passphrase is given. minisign keys use minisign's own file layout. Both files are written
    atomically. Raises `UsageError` when either file exists already or the comment contains
    control characters, and `HostError` when the files cannot be written.
    """
    public_path = path.with_name(path.name + ".pub")
    for target in (path, public_path):
        if target.exists() or target.is_symlink():
            raise UsageError(f"{target} already exists; choose another path or remove it first")
    if not comment.isprintable():
        raise UsageError(f"key comment {comment!r} contains control characters")
    if passphrase == "":
        raise UsageError("the passphrase is empty; pass None for a key without a passphrase")
    from mosquitto_guard.fsutil import write_atomic

    if kind == "ssh":
        private_bytes, public_bytes, public_key = _generate_ssh(comment, passphrase)
    elif kind == "minisign":
        from mosquitto_guard.signing import minisign as minisign_format

        private_bytes, public_bytes, minisign_public = minisign_format.generate(comment, passphrase)
        public_key = _minisign_public_key(minisign_public, comment)
    else:
        raise ValueError(f"unknown key kind {kind!r}")
    # NOTE: another process could create `path` between the check above and this write; the
    # write would then replace it.
    write_atomic(path, private_bytes, mode=0o600)
    write_atomic(public_path, public_bytes, mode=0o644)
    return public_key


def _generate_ssh(comment: str, passphrase: str | None) -> tuple[bytes, bytes, PublicKey]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption
    if passphrase is not None:
        encryption = serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
    else:
        encryption = serialization.NoEncryption()
    private_bytes = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    )
    ssh_public = sshsig.public_key_of(private)
    public_bytes = (ssh_public.to_line(comment) + "\n").encode("utf-8")
    return private_bytes, public_bytes, _ssh_public_key(ssh_public, comment)
