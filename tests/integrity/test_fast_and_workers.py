"""`check --fast` trusts unchanged stat data and still reports every change; --workers agrees."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from baseline_setup import Setup, changes_of

from mosquitto_guard.cli import main
from mosquitto_guard.integrity import record


def fast_check(setup: Setup, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["check", *setup.target_args(), "--baseline", str(setup.baseline), "--fast"])
    return code, capsys.readouterr().out


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every file whose content is read and hashed."""
    calls: list[Path] = []
    original = record._hash

    def spy(descriptor: int) -> tuple[str, int, bytes]:
        calls.append(Path(os.readlink(f"/proc/self/fd/{descriptor}")))
        return original(descriptor)

    monkeypatch.setattr(record, "_hash", spy)
    return calls


def test_fast_check_reads_nothing_on_unchanged_tree(
    setup: Setup, capsys: pytest.CaptureFixture[str], hashed: list[Path]
) -> None:
    assert setup.write_baseline() == 0
    hashed.clear()
    assert fast_check(setup, capsys)[0] == 0
    assert hashed == []


def test_fast_check_reads_and_reports_a_written_file(
    setup: Setup, capsys: pytest.CaptureFixture[str], hashed: list[Path]
) -> None:
    assert setup.write_baseline() == 0
    passwd = setup.root / "passwd"
    passwd.write_text("admin:$7$101$YWJj$ZGVm\n")
    hashed.clear()
    code, output = fast_check(setup, capsys)
    assert code == 4
    assert f"changed: {passwd}" in output
    assert hashed == [passwd]


def test_fast_check_rehashes_after_same_size_rewrite(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    # Same size, same inode, same mode: only the ctime differs, so --fast must read the file.
    acl = setup.root / "acl"
    assert setup.write_baseline() == 0
    size = acl.stat().st_size
    with open(acl, "r+b") as handle:
        handle.write(b"T")
    assert acl.stat().st_size == size
    code, document = setup.check(capsys)
    assert code == 4
    assert "sha256" in changes_of(document, acl)
    assert fast_check(setup, capsys)[0] == 4


def test_workers_give_the_same_baseline(setup: Setup) -> None:
    outputs = []
    for workers in ("1", "4"):
        output = setup.root / "state" / f"baseline-{workers}.json"
        assert (
            main(
                [
                    "baseline",
                    *setup.target_args(),
                    "--key",
                    str(setup.guard.keys["alice"]),
                    "--output",
                    str(output),
                    "--workers",
                    workers,
                ]
            )
            == 0
        )
        document = json.loads(output.read_bytes())
        del document["created"]
        outputs.append(document)
    assert outputs[0] == outputs[1]


def test_workers_must_be_positive(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", *setup.target_args(), "--workers", "0"])
    assert code == 16
    assert "must be at least 1" in capsys.readouterr().err


def test_policy_tree_is_walked(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    tree = setup.root / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "deep.txt").write_text("deep\n")
    with setup.guard.policy.open("a") as handle:
        handle.write(f'\n[integrity]\npaths = ["{tree}"]\n')
    assert setup.write_baseline() == 0
    new = tree / "a" / "new.txt"
    new.write_text("new\n")
    os.chmod(tree / "a" / "b" / "deep.txt", 0o666)
    code, document = setup.check(capsys)
    assert code == 1 | 4
    assert [item["path"] for item in document["added"]] == [str(new)]
    changed = [item["path"] for item in document["changed"]]
    assert str(tree / "a" / "b" / "deep.txt") in changed
