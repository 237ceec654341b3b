"""Key generation and loading: file layout, modes, passphrases, and what the usual tools read."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mosquitto_guard.errors import HostError, SignatureError, UsageError
from mosquitto_guard.signing import MANIFEST_NAMESPACE
from mosquitto_guard.signing.keys import (
    PASSPHRASE_ENV,
    KeyKind,
    generate_keypair,
    inspect_signature,
    load_private_key,
    load_public_key,
    parse_public_key,
)

MESSAGE = b"manifest bytes\n"


@pytest.fixture
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with stdin that is not a terminal and without the passphrase variable."""
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    with open(os.devnull) as devnull:
        monkeypatch.setattr(sys, "stdin", devnull)
        yield


def test_ssh_keygen_files_and_modes(tmp_path: Path) -> None:
    path = tmp_path / "signer"
    public_key = generate_keypair("ssh", path, comment="ops@example")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{path}.pub").stat().st_mode) == 0o644
    assert Path(f"{path}.pub").read_text() == f"{public_key.text} ops@example\n"
    assert public_key.kind == "ssh"
    assert public_key.text.startswith("ssh-ed25519 ")


def test_ssh_keygen_reads_generated_key(tmp_path: Path) -> None:
    path = tmp_path / "signer"
    public_key = generate_keypair("ssh", path, comment="ops@example")

    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(path)], check=True, capture_output=True, text=True
    ).stdout
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{path}.pub"], check=True, capture_output=True, text=True
    ).stdout
    assert derived.split()[:2] == public_key.text.split()
    assert fingerprint.split()[1] == public_key.key_id


def test_ssh_keygen_reads_encrypted_key(tmp_path: Path) -> None:
    path = tmp_path / "signer"
    public_key = generate_keypair("ssh", path, comment="", passphrase="s3cret words")

    wrong = subprocess.run(
        ["ssh-keygen", "-y", "-P", "wrong", "-f", str(path)], capture_output=True, text=True
    )
    right = subprocess.run(
        ["ssh-keygen", "-y", "-P", "s3cret words", "-f", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode != 0
    assert right.stdout.split()[:2] == public_key.text.split()


def test_encrypted_key_loads_with_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "signer"
    public_key = generate_keypair("ssh", path, comment="", passphrase="s3cret words")

    private_key = load_private_key(path, passphrase="s3cret words")
    signature = private_key.sign(MESSAGE, MANIFEST_NAMESPACE)
    public_key.verify(MESSAGE, signature, MANIFEST_NAMESPACE)


def test_encrypted_key_wrong_passphrase_rejected(tmp_path: Path) -> None:
    path = tmp_path / "signer"
    generate_keypair("ssh", path, comment="", passphrase="s3cret words")

    with pytest.raises(SignatureError) as raised:
        load_private_key(path, passphrase="wrong")
    assert str(raised.value) == f"cannot decrypt {path}: wrong passphrase or damaged key"


def test_passphrase_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "signer"
    public_key = generate_keypair("ssh", path, comment="", passphrase="from env")
    monkeypatch.setenv(PASSPHRASE_ENV, "from env")

    assert load_private_key(path).public_key == public_key


@pytest.mark.usefixtures("no_terminal")
def test_missing_passphrase_rejected(tmp_path: Path) -> None:
    path = tmp_path / "signer"
    generate_keypair("ssh", path, comment="", passphrase="s3cret words")

    with pytest.raises(UsageError) as raised:
        load_private_key(path)
    assert str(raised.value) == (
        f"no passphrase for {path}; fix: set MOSQUITTO_GUARD_PASSPHRASE, or run the command "
        "in a terminal to be prompted"
    )


@pytest.mark.usefixtures("no_terminal")
def test_unencrypted_key_needs_no_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "signer"
    public_key = generate_keypair("ssh", path, comment="")

    assert load_private_key(path).public_key == public_key


@pytest.mark.parametrize("kind", ["ssh", "minisign"])
def test_keygen_refuses_existing_files(tmp_path: Path, kind: KeyKind) -> None:
    path = tmp_path / "signer"
    Path(f"{path}.pub").write_text("keep me\n")

    with pytest.raises(UsageError) as raised:
        generate_keypair(kind, path, comment="")
    assert str(raised.value) == f"{path}.pub already exists; choose another path or remove it first"
    assert Path(f"{path}.pub").read_text() == "keep me\n"
    assert not path.exists()


def test_minisign_keygen_files(tmp_path: Path) -> None:
    path = tmp_path / "signer"
    public_key = generate_keypair("minisign", path, comment="")

    lines = Path(f"{path}.pub").read_text().splitlines()
    assert lines == [f"untrusted comment: minisign public key {public_key.key_id}", public_key.text]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_public_key(Path(f"{path}.pub")) == public_key
    assert load_private_key(path).public_key == public_key


def test_minisign_wrong_passphrase_rejected(tmp_path: Path) -> None:
    path = tmp_path / "signer"
    generate_keypair("minisign", path, comment="", passphrase="right")

    with pytest.raises(SignatureError) as raised:
        load_private_key(path, passphrase="wrong")
    assert str(raised.value) == f"cannot decrypt minisign secret key {path}: wrong passphrase"


def test_private_key_of_unknown_format_rejected(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")

    with pytest.raises(SignatureError) as raised:
        load_private_key(path)
    assert str(raised.value) == (
        f"{path} is neither an OpenSSH private key nor a minisign secret key; "
        f"fix: create a key with: mosquitto-guard keygen {path}"
    )


def test_missing_key_file_is_host_error(tmp_path: Path) -> None:
    with pytest.raises(HostError) as raised:
        load_private_key(tmp_path / "absent")
    assert str(raised.value) == f"private key file not found: {tmp_path / 'absent'}"


def test_public_key_file_with_two_keys_rejected(tmp_path: Path) -> None:
    first = generate_keypair("ssh", tmp_path / "a", comment="")
    second = generate_keypair("ssh", tmp_path / "b", comment="")
    path = tmp_path / "both.pub"
    path.write_text(f"{first.text}\n{second.text}\n")

    with pytest.raises(SignatureError) as raised:
        load_public_key(path)
    assert str(raised.value) == f"public key file {path}: expected one key line, found 2"


def test_public_key_line_errors() -> None:
    with pytest.raises(SignatureError) as empty:
        parse_public_key("   ")
    with pytest.raises(SignatureError) as unknown:
        parse_public_key("pgp-key AAAA comment")
    assert str(empty.value) == "public key line is empty"
    assert str(unknown.value) == (
        "unrecognized public key: expected 'ssh-ed25519 AAAA... [comment]' "
        "or a minisign key line 'RW...'"
    )


def test_public_key_equality_ignores_comment(tmp_path: Path) -> None:
    public_key = generate_keypair("ssh", tmp_path / "k", comment="first")
    assert parse_public_key(f"{public_key.text} second") == public_key


@pytest.mark.parametrize("kind", ["ssh", "minisign"])
def test_inspect_signature_reports_key_and_namespace(tmp_path: Path, kind: KeyKind) -> None:
    public_key = generate_keypair(kind, tmp_path / "k", comment="")
    signature = load_private_key(tmp_path / "k").sign(MESSAGE, "other-namespace")

    info = inspect_signature(public_key.kind, signature)
    assert info.key_id == public_key.key_id
    assert info.namespace == "other-namespace"
