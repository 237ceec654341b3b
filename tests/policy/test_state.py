"""Rollback state: recorded versions, corrupt state files, and concurrent recorders."""

from __future__ import annotations

import json
import multiprocessing
import stat
from pathlib import Path

import pytest

from mosquitto_guard.errors import HostError, ManifestError
from mosquitto_guard.policy.state import VersionState

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64


def test_empty_state_accepts_anything(tmp_path: Path) -> None:
    state = VersionState(tmp_path / "state")
    state.check("marker", 1, DIGEST_A)
    assert state.recorded("marker") is None
    assert not (tmp_path / "state").exists()


def test_record_then_check(tmp_path: Path) -> None:
    state = VersionState(tmp_path / "state")
    state.record("marker", 3, DIGEST_A)

    state.check("marker", 3, DIGEST_A)
    state.check("marker", 4, DIGEST_B)
    assert state.recorded("marker") is not None
    assert stat.S_IMODE((tmp_path / "state" / "versions.json").stat().st_mode) == 0o600


def test_lower_version_rejected(tmp_path: Path) -> None:
    state = VersionState(tmp_path)
    state.record("marker", 3, DIGEST_A)

    with pytest.raises(ManifestError) as raised:
        state.check("marker", 2, DIGEST_B)
    assert str(raised.value) == (
        f"rollback rejected: plugin 'marker' version 2 is older than version 3, which was "
        f"already accepted (state file {tmp_path / 'versions.json'}); fix: install version 3 "
        "or later of marker"
    )


def test_same_version_other_digest_rejected(tmp_path: Path) -> None:
    state = VersionState(tmp_path)
    state.record("marker", 3, DIGEST_A)

    with pytest.raises(ManifestError) as raised:
        state.check("marker", 3, DIGEST_B)
    assert str(raised.value) == (
        f"plugin 'marker' version 3 has sha256 {DIGEST_B}, but version 3 was accepted with "
        f"sha256 {DIGEST_A} (state file {tmp_path / 'versions.json'}); fix: sign the new build "
        "with a higher version: mosquitto-guard sign PLUGIN.so --name marker --version 4 "
        "--key KEY"
    )


def test_record_keeps_highest_version(tmp_path: Path) -> None:
    state = VersionState(tmp_path)
    state.record("marker", 3, DIGEST_A)
    state.record("marker", 5, DIGEST_B)

    with pytest.raises(ManifestError):
        state.record("marker", 4, DIGEST_A)
    recorded = state.recorded("marker")
    assert recorded is not None
    assert recorded.version == 5
    assert recorded.sha256 == DIGEST_B


CORRUPT_STATES = {
    "not json": (
        b"{",
        "not valid JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
    ),
    "not utf-8": (
        b"\xff",
        "not valid JSON: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
    ),
    "list": (b"[]", "expected an object with format_version and plugins"),
    "format 2": (
        b'{"format_version": 2, "plugins": {}}',
        "unsupported format_version 2",
    ),
    "plugins list": (
        b'{"format_version": 1, "plugins": []}',
        "plugins is not an object",
    ),
    "version string": (
        json.dumps(
            {"format_version": 1, "plugins": {"m": {"version": "3", "sha256": DIGEST_A}}}
        ).encode(),
        "entry 'm' has an invalid version '3'",
    ),
    "bad digest": (
        json.dumps({"format_version": 1, "plugins": {"m": {"version": 3, "sha256": "x"}}}).encode(),
        "entry 'm' has an invalid sha256 'x'",
    ),
    "extra key": (
        json.dumps(
            {"format_version": 1, "plugins": {"m": {"version": 3, "sha256": DIGEST_A, "x": 1}}}
        ).encode(),
        "entry 'm' must have exactly version and sha256",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_STATES))
def test_corrupt_state_rejected(tmp_path: Path, case: str) -> None:
    data, problem = CORRUPT_STATES[case]
    state_file = tmp_path / "versions.json"
    state_file.write_bytes(data)
    state = VersionState(tmp_path)

    for action in (state.check, state.record):
        with pytest.raises(HostError) as raised:
            action("marker", 1, DIGEST_A)
        assert str(raised.value) == (
            f"state file {state_file} is corrupt: {problem}; fix: restore {state_file} from a "
            "backup; deleting it turns off rollback protection until each plugin is accepted "
            "again"
        )
    assert state_file.read_bytes() == data


def record_many(state_dir: str, worker: int, count: int) -> None:
    state = VersionState(Path(state_dir))
    for index in range(count):
        state.record(f"plugin-{worker}-{index}", 1, DIGEST_A)


def test_concurrent_records_lose_nothing(tmp_path: Path) -> None:
    workers, count = 4, 25
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=record_many, args=(str(tmp_path), worker, count))
        for worker in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()

    assert [process.exitcode for process in processes] == [0] * workers
    document = json.loads((tmp_path / "versions.json").read_text())
    assert len(document["plugins"]) == workers * count
