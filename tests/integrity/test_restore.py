"""`mosquitto-guard restore`: tamper with real files, put them back, and prove what was kept."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from baseline_setup import Setup

from mosquitto_guard.cli import main


def restore(setup: Setup, *paths: Path) -> int:
    return main(
        [
            "restore",
            "--policy",
            str(setup.guard.policy),
            "--baseline",
            str(setup.baseline),
            *(str(path) for path in paths),
        ]
    )


def log_entries(setup: Setup) -> list[dict[str, Any]]:
    log = setup.baseline.parent / "restore.log"
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_restore_config_edit_and_check_is_clean(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    original = setup.config.read_bytes()
    assert setup.write_baseline() == 0
    setup.config.write_text(original.decode() + "plugin /tmp/evil.so\n")
    assert setup.check(capsys)[0] == 4

    assert restore(setup, setup.config) == 0
    assert setup.config.read_bytes() == original
    output = capsys.readouterr().out
    assert f"replaced: {setup.config}" in output
    entry = log_entries(setup)[-1]
    assert entry["path"] == str(setup.config)
    assert entry["action"] == "replaced"
    assert entry["inode"] == os.stat(setup.config).st_ino
    evidence = Path(entry["evidence"])
    assert evidence.read_bytes().endswith(b"plugin /tmp/evil.so\n")
    assert evidence.stat().st_mode & 0o777 == 0o600

    # The new inode is explained by the restore log: an expected change, exit 0.
    code, document = setup.check(capsys)
    assert code == 0, document
    assert [item["path"] for item in document["expected"]] == [str(setup.config)]
    assert "restore" in document["expected"][0]["explanation"]


def test_restore_puts_back_mode_and_owner(setup: Setup) -> None:
    acl = setup.root / "acl"
    os.chmod(acl, 0o600)
    assert setup.write_baseline() == 0
    os.chmod(acl, 0o666)
    os.chown(acl, 1234, 1234)
    assert restore(setup, acl) == 0
    info = os.stat(acl)
    assert (info.st_mode & 0o777, info.st_uid, info.st_gid) == (0o600, 0, 0)


def test_restore_recreates_deleted_password_file(setup: Setup) -> None:
    passwd = setup.root / "passwd"
    content = passwd.read_bytes()
    assert setup.write_baseline() == 0
    passwd.unlink()
    assert restore(setup, passwd) == 0
    assert passwd.read_bytes() == content


def test_restore_relinks_swapped_symlink(setup: Setup) -> None:
    link = setup.root / "tls" / "key.pem"
    assert setup.write_baseline() == 0
    link.unlink()
    link.symlink_to("key-b.pem")
    assert restore(setup, link) == 0
    assert os.readlink(link) == "key-a.pem"
    assert log_entries(setup)[-1]["action"] == "relinked"


def test_restore_puts_back_symlink_target_content(setup: Setup) -> None:
    target = setup.root / "tls" / "key-a.pem"
    content = target.read_bytes()
    assert setup.write_baseline() == 0
    target.write_text("attacker key\n")
    assert restore(setup, setup.root / "tls" / "key.pem") == 0
    assert target.read_bytes() == content


def test_restore_quarantines_file_dropped_into_include_dir(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup.write_baseline() == 0
    dropped = setup.root / "conf.d" / "zz-evil.conf"
    dropped.write_text("plugin /tmp/evil.so\n")
    assert setup.check(capsys)[0] == 1
    assert restore(setup, dropped) == 0
    assert not dropped.exists()
    entry = log_entries(setup)[-1]
    assert entry["action"] == "quarantined"
    assert Path(entry["evidence"]).read_text() == "plugin /tmp/evil.so\n"
    assert setup.check(capsys)[0] == 0


def test_restore_refuses_a_damaged_copy(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    original = setup.config.read_bytes()
    assert setup.write_baseline() == 0
    copies = list((setup.baseline.parent / "known-good").iterdir())
    assert copies
    for copy in copies:
        copy.write_bytes(b"plugin /tmp/evil.so\n")
    setup.config.write_text("listener 1\n")
    capsys.readouterr()
    assert restore(setup, setup.config) == 1
    error = capsys.readouterr().err
    assert "is damaged" in error
    assert "Traceback" not in error
    assert setup.config.read_text() == "listener 1\n"
    assert original != setup.config.read_bytes()


def test_restore_refuses_a_file_outside_the_baseline(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup.write_baseline() == 0
    stray = setup.root / "stray.txt"
    stray.write_text("x\n")
    capsys.readouterr()
    assert restore(setup, stray) == 1
    assert "is not in the baseline" in capsys.readouterr().err
    assert stray.exists()


def test_restore_refuses_an_edited_baseline(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup.write_baseline() == 0
    setup.config.write_text("listener 1\n")
    data = setup.baseline.read_bytes()
    setup.baseline.write_bytes(data.replace(b'"main config file"', b'"main config fil3"'))
    capsys.readouterr()
    assert restore(setup, setup.config) == 1
    assert "does not verify" in capsys.readouterr().err
    assert setup.config.read_text() == "listener 1\n"


def test_restore_without_copy_names_the_package_route(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = setup.root / "extra.bin"
    extra.write_bytes(b"one")
    with setup.guard.policy.open("a") as handle:
        handle.write(f'\n[integrity]\npaths = ["{extra}"]\n')
    assert setup.write_baseline() == 0
    extra.write_bytes(b"two")
    capsys.readouterr()
    assert restore(setup, extra) == 1
    error = capsys.readouterr().err
    assert "no known-good copy" in error
    assert "dpkg -S" in error


def test_restore_of_unchanged_file_does_nothing(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup.write_baseline() == 0
    inode = os.stat(setup.config).st_ino
    capsys.readouterr()
    assert restore(setup, setup.config) == 0
    assert "already matches" in capsys.readouterr().out
    assert os.stat(setup.config).st_ino == inode
    assert not (setup.baseline.parent / "restore.log").exists()


def test_known_good_copies_are_private(setup: Setup) -> None:
    assert setup.write_baseline() == 0
    store = setup.baseline.parent / "known-good"
    assert store.stat().st_mode & 0o777 == 0o700
    names = {path.name for path in store.iterdir()}
    assert hashlib.sha256(setup.config.read_bytes()).hexdigest() in names
    assert hashlib.sha256((setup.root / "passwd").read_bytes()).hexdigest() in names
    for copy in store.iterdir():
        assert copy.stat().st_mode & 0o777 == 0o600
