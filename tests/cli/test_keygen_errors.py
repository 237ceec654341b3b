"""`mosquitto-guard keygen` into a directory that does not exist."""

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
