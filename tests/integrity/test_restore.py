"""`mosquitto-guard restore`: tamper with real files, put them back, and prove what was kept."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import stat
from pathlib import Path
from typing import Any

import pytest
from baseline_setup import Setup
from review_support import guard_cli, restore_args, watch_paths

from mosquitto_guard.cli import main
from mosquitto_guard.integrity import restore as restore_module
from mosquitto_guard.integrity import store


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


def test_restore_puts_back_symlink_target_content(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    target = setup.root / "tls" / "key-a.pem"
    content = target.read_bytes()
    assert setup.write_baseline() == 0
    target.write_text("attacker key\n")
    assert restore(setup, setup.root / "tls" / "key.pem") == 0
    assert target.read_bytes() == content
    # The target's new inode is explained by the restore log.
    code, document = setup.check(capsys)
    assert code == 0, document
    assert str(setup.root / "tls" / "key.pem") in [item["path"] for item in document["expected"]]


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


def test_restore_log_records_untruncated_evidence(setup: Setup) -> None:
    assert setup.write_baseline() == 0
    setup.config.write_text("listener 1\n")
    assert restore(setup, setup.config) == 0
    entry = log_entries(setup)[-1]
    assert entry["evidence_truncated"] is False
    assert Path(entry["evidence"]).read_text() == "listener 1\n"


def test_restore_cuts_evidence_at_limit(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "EVIDENCE_LIMIT", 16)
    assert setup.write_baseline() == 0
    dropped = setup.root / "conf.d" / "big.conf"
    dropped.write_bytes(b"x" * 100)
    assert restore(setup, dropped) == 0
    assert not dropped.exists()
    entry = log_entries(setup)[-1]
    assert entry["evidence_truncated"] is True
    assert Path(entry["evidence"]).read_bytes() == b"x" * 16


def test_restore_evidence_name_is_short(setup: Setup) -> None:
    assert setup.write_baseline() == 0
    dropped = setup.root / "conf.d" / ("\u00e9" * 120)
    dropped.write_text("dropped\n")
    assert restore(setup, dropped) == 0
    entry = log_entries(setup)[-1]
    assert entry["path"] == str(dropped)
    name = Path(entry["evidence"]).name
    assert len(os.fsencode(name)) <= 255
    # 100 bytes of the name, cut at a character boundary: 50 two-byte characters.
    assert name.endswith("-" + "\u00e9" * 50)
    assert Path(entry["evidence"]).read_text() == "dropped\n"


def test_quarantine_rejects_symlinked_directory(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup.write_baseline() == 0
    include = setup.root / "conf.d"
    elsewhere = setup.root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.me").write_text("not the guard's file\n")
    include.rename(setup.root / "conf.d-moved")
    include.symlink_to(elsewhere)
    capsys.readouterr()
    assert restore(setup, include / "keep.me") == 1
    error = capsys.readouterr().err
    assert f"the directory {include} on its path is a symlink" in error
    assert "Traceback" not in error
    assert (elsewhere / "keep.me").read_text() == "not the guard's file\n"


def test_restore_rejects_symlink_at_link_target(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    target = setup.root / "tls" / "key-a.pem"
    assert setup.write_baseline() == 0
    victim = setup.root / "victim"
    victim.write_text("not a key\n")
    target.unlink()
    target.symlink_to(victim)
    capsys.readouterr()
    assert restore(setup, setup.root / "tls" / "key.pem") == 1
    assert "is itself a symlink" in capsys.readouterr().err
    assert victim.read_text() == "not a key\n"
    assert target.is_symlink()


def test_restore_symlink_skips_existing_temporary_name(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = setup.root / "tls" / "key.pem"
    assert setup.write_baseline() == 0
    link.unlink()
    link.symlink_to("key-b.pem")
    existing = link.parent / ".mosquitto-guard-existing.tmp"
    existing.symlink_to(setup.root / "acl")
    names = iter(["existing", "free"])
    monkeypatch.setattr(restore_module.secrets, "token_hex", lambda size: next(names))
    assert restore(setup, link) == 0
    assert os.readlink(link) == "key-a.pem"
    assert os.readlink(existing) == str(setup.root / "acl")
    assert not (link.parent / ".mosquitto-guard-free.tmp").exists()


def test_restore_recreates_missing_directory(setup: Setup) -> None:
    watched = setup.root / "data"
    watched.mkdir()
    os.chmod(watched, 0o750)
    watch_paths(setup, watched)
    assert setup.write_baseline() == 0
    watched.rmdir()
    assert restore(setup, watched) == 0
    info = os.lstat(watched)
    assert stat.S_ISDIR(info.st_mode)
    assert info.st_mode & 0o777 == 0o750
    assert log_entries(setup)[-1]["action"] == "permissions"


def test_restore_rejects_directory_made_symlink(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    watched = setup.root / "data"
    watched.mkdir()
    watch_paths(setup, watched)
    assert setup.write_baseline() == 0
    secret = setup.root / "secret.key"
    secret.write_text("private\n")
    os.chmod(secret, 0o600)
    watched.rmdir()
    watched.symlink_to(secret)
    capsys.readouterr()
    assert restore(setup, watched) == 1
    assert "should be a directory but is of type symlink" in capsys.readouterr().err
    assert os.stat(secret).st_mode & 0o777 == 0o600


def test_damaged_copy_leaves_no_temporary_file(setup: Setup) -> None:
    assert setup.write_baseline() == 0
    for copy in (setup.baseline.parent / "known-good").iterdir():
        copy.write_bytes(b"plugin /tmp/evil.so\n")
    setup.config.write_text("listener 1\n")
    before = sorted(path.name for path in setup.config.parent.iterdir())
    assert restore(setup, setup.config) == 1
    assert sorted(path.name for path in setup.config.parent.iterdir()) == before


def test_full_disk_leaves_no_partial_log_line(setup: Setup) -> None:
    assert setup.write_baseline() == 0
    log = setup.baseline.parent / "restore.log"
    # RLIMIT_FSIZE (1 MiB) lets the small evidence file and the copy through, and stops the
    # append to this log a few bytes in.
    log.write_bytes(b"\n" * ((1 << 20) - 8))
    setup.config.write_text("listener 1\n")
    result = guard_cli(*restore_args(setup, setup.config), limits={resource.RLIMIT_FSIZE: 1 << 20})
    assert result.returncode == 3, result.stderr
    assert "cannot append to the restore log" in result.stderr
    assert "Traceback" not in result.stderr
    assert log.stat().st_size == (1 << 20) - 8
