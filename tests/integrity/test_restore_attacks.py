"""Attacks on `restore` found in review: each test reproduces one problem.

The attacker can write some watched files or directories, and races `restore`, which runs as
root, to make it write or change a file outside the watched path.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import resource
import time

import pytest
from baseline_setup import Setup
from review_support import (
    AfterFirstRead,
    guard_cli,
    keep_exchanging,
    replace_content,
    restore_args,
    watch_paths,
)

from mosquitto_guard.cli import main
from mosquitto_guard.errors import GuardError
from mosquitto_guard.integrity.baseline import (
    load_verified,
)
from mosquitto_guard.integrity.restore import restore as restore_path
from mosquitto_guard.policy.model import load_policy

# Restore.


def test_restore_copies_the_copy_it_hashed(setup: Setup) -> None:
    """restore must copy the bytes it verified, not reopen the known-good copy by name.

    `_intact_copy` hashes the copy, closes it, and `_replace_with_copy` opens it again. A copy
    replaced in between is written to the broker's config unverified.
    """
    original = setup.config.read_bytes()
    assert setup.write_baseline() == 0
    copy = setup.baseline.parent / "known-good" / hashlib.sha256(original).hexdigest()
    # A big tampered file makes the evidence copy, between the hash and the copy, take a while.
    tampered = original + b"#" * (4 << 20) + b"\n"
    setup.config.write_bytes(tampered)
    evil = original + b"plugin /tmp/evil.so\n"
    attacker = AfterFirstRead(copy, lambda: replace_content(copy, evil))
    try:
        main(restore_args(setup, setup.config))
    finally:
        attacker.close()
    assert attacker.fired.is_set()
    # Restored from the verified bytes, or left alone when restore noticed the swap.
    assert setup.config.read_bytes() in {original, tampered}


def test_restore_through_symlinked_parent_stays_inside(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    """restore writes as root to the path's parent, even when that is now a symlink.

    The attacker can write the directory that contains tls/, so they move tls/ away and put a
    symlink to a directory of their choice in its place. Restoring tls/ca.pem, which the check
    reports as removed, writes the file (owner and mode from the baseline) into that
    directory.
    """
    assert setup.write_baseline() == 0
    tls = setup.root / "tls"
    elsewhere = setup.root / "elsewhere"
    elsewhere.mkdir()
    tls.rename(setup.root / "tls-moved")
    tls.symlink_to(elsewhere)
    _, document = setup.check(capsys)
    assert str(tls / "ca.pem") in [item["path"] for item in document["removed"]]

    main(restore_args(setup, tls / "ca.pem"))
    assert list(elsewhere.iterdir()) == []


def test_restore_directory_does_not_follow_swapped_symlink(setup: Setup) -> None:
    """restore sets a directory's owner and mode by path, so a symlink swapped in is followed.

    Between the lstat in `record_file` and `os.chown`/`os.chmod`, the attacker (who can write
    the directory's parent) exchanges the directory with a symlink to a root-owned secret.
    The secret then gets the directory's owner (uid 1234, the attacker) and mode 0755.
    """
    watched = setup.root / "data" / "certs"
    watched.mkdir(parents=True)
    os.chown(watched, 1234, 1234)
    os.chmod(watched, 0o755)
    secret = setup.root / "secret.key"
    secret.write_text("private\n")
    os.chmod(secret, 0o600)
    decoy = setup.root / "data" / "decoy"
    decoy.symlink_to(secret)
    watch_paths(setup, watched)
    assert setup.write_baseline() == 0
    baseline = load_verified(setup.baseline, load_policy(setup.guard.policy))

    handle = os.open(watched, os.O_RDONLY | os.O_DIRECTORY)
    stop = multiprocessing.Event()
    swapper = multiprocessing.Process(target=keep_exchanging, args=(watched, decoy, stop))
    swapper.start()
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            os.fchmod(handle, 0o777)
            # A swap at another moment fails the restore. The raw OSError is tested separately.
            with contextlib.suppress(GuardError, OSError):
                restore_path(watched, baseline, setup.baseline)
            info = os.stat(secret)
            if (info.st_mode & 0o777, info.st_uid) != (0o600, 0):
                break
    finally:
        stop.set()
        swapper.join()
        os.close(handle)
    info = os.stat(secret)
    assert info.st_uid == 0
    assert info.st_mode & 0o777 == 0o600


def test_restore_quarantines_file_with_long_name(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file with a 255-byte name dropped into conf.d cannot be quarantined.

    The evidence file is named after the whole path, which is then longer than the 255-byte
    name limit, so restore fails and the dropped file stays.
    """
    assert setup.write_baseline() == 0
    dropped = setup.root / "conf.d" / ("z" * 255)
    dropped.write_text("dropped\n")
    assert setup.check(capsys)[0] == 1
    capsys.readouterr()
    code = main(restore_args(setup, dropped))
    error = capsys.readouterr().err
    assert code == 0, error
    assert not dropped.exists()


def test_restore_evidence_of_huge_file_is_bounded(setup: Setup) -> None:
    """restore reads the whole file it replaces into memory to keep it as evidence.

    A sparse file of 2 GiB dropped into conf.d costs the attacker no disk space. Under a 1 GiB
    address space limit, restore then dies with MemoryError. On a host without a limit, a big
    enough file wakes the OOM killer.
    """
    assert setup.write_baseline() == 0
    dropped = setup.root / "conf.d" / "huge"
    with dropped.open("wb") as handle:
        handle.truncate(2 << 30)
    result = guard_cli(
        *restore_args(setup, dropped), limits={resource.RLIMIT_AS: 1 << 30}, timeout=300
    )
    assert "MemoryError" not in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]


def test_restore_full_disk_leaves_no_partial_evidence(setup: Setup) -> None:
    """A write error while keeping evidence ends restore with a traceback and half a file.

    RLIMIT_FSIZE simulates a full disk, so the evidence write fails with EFBIG after 1 MiB.
    """
    original = setup.config.read_bytes()
    assert setup.write_baseline() == 0
    setup.config.write_bytes(original + b"#" * (2 << 20) + b"\n")
    result = guard_cli(*restore_args(setup, setup.config), limits={resource.RLIMIT_FSIZE: 1 << 20})
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    evidence = setup.baseline.parent / "evidence"
    partial = [path.name for path in evidence.iterdir()] if evidence.exists() else []
    assert partial == []
