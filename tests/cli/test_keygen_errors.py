"""Key errors: `keygen` into a missing directory, `sign` given a public key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mosquitto_guard.cli import main


def test_keygen_missing_directory_names_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "absent" / "key"
    assert main(["keygen", "--no-passphrase", str(target)]) == 3
    err = capsys.readouterr().err
    assert (
        f"cannot write {target}: directory {target.parent} does not exist; "
        f"fix: create it first: install -d -m 0700 {target.parent}"
    ) in err
    assert not target.parent.exists()


@pytest.mark.parametrize("kind", ["ssh", "minisign"])
def test_sign_with_public_key_names_private_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    key = tmp_path / "signing"
    assert main(["keygen", "--type", kind, "--no-passphrase", str(key)]) == 0
    plugin = tmp_path / "plugin.so"
    plugin.write_bytes(b"\x7fELF")
    argv = ["sign", str(plugin), "--key", f"{key}.pub", "--name", "p", "--version", "1"]
    assert main([*argv, "--output", str(tmp_path / "p.toml")]) == 1
    err = capsys.readouterr().err
    assert f"{key}.pub is a public key; signing needs the private key" in err
    assert f"fix: pass the private key, such as {key}" in err
