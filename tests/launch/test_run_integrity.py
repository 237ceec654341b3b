"""`run` with `[integrity] require_clean_check`: the broker starts only on a clean check."""

from __future__ import annotations

import subprocess

import pytest
from support import Guard, start_run, stop_process

from mosquitto_guard.cli import main


@pytest.fixture(autouse=True)
def verification_only(guard: Guard) -> None:
    guard.sandbox = False


def require_clean_check(guard: Guard) -> None:
    with guard.policy.open("a") as handle:
        handle.write("\n[integrity]\nrequire_clean_check = true\n")


def write_baseline(guard: Guard, config_path: str) -> None:
    assert (
        main(
            [
                "baseline",
                "--policy",
                str(guard.policy),
                "-c",
                config_path,
                "--unit",
                str(guard.root / "none.service"),
                "--key",
                str(guard.keys["alice"]),
            ]
        )
        == 0
    )


def test_run_starts_broker_when_check_is_clean(
    guard: Guard, processes: list[subprocess.Popen[bytes]]
) -> None:
    config = guard.config()
    require_clean_check(guard)
    write_baseline(guard, str(config))
    process = start_run(guard, config, processes)
    stop_process(process)
    assert process.stderr is not None
    assert "every watched file matches the baseline" in process.stderr.read().decode()


def test_run_refuses_when_a_watched_file_changed(guard: Guard) -> None:
    acl = guard.root / "acl"
    acl.write_text("topic read #\n")
    config = guard.config(f"acl_file {acl}")
    require_clean_check(guard)
    write_baseline(guard, str(config))
    acl.write_text("topic readwrite #\n")
    result = guard.run(config)
    assert result.returncode == 1
    assert "integrity: changed since the baseline" in result.stderr
    assert str(acl) in result.stderr
    assert "broker was not started" in result.stderr


def test_run_refuses_without_a_baseline(guard: Guard) -> None:
    config = guard.config()
    require_clean_check(guard)
    result = guard.run(config)
    assert result.returncode == 1
    assert "baseline check could not pass" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_a_tampered_baseline(guard: Guard) -> None:
    config = guard.config()
    require_clean_check(guard)
    write_baseline(guard, str(config))
    baseline = guard.root / "state" / "baseline.json"
    baseline.write_bytes(
        baseline.read_bytes().replace(b'"format_version": 1', b'"format_version":1')
    )
    result = guard.run(config)
    assert result.returncode == 1
    assert "does not verify" in result.stderr


def test_run_permissive_starts_despite_change(
    guard: Guard, processes: list[subprocess.Popen[bytes]]
) -> None:
    acl = guard.root / "acl"
    acl.write_text("topic read #\n")
    config = guard.config(f"acl_file {acl}")
    require_clean_check(guard)
    write_baseline(guard, str(config))
    acl.write_text("topic readwrite #\n")
    process = start_run(guard, config, processes, "--permissive")
    stop_process(process)
    assert process.stderr is not None
    assert "permissive, starting anyway" in process.stderr.read().decode()


def test_run_ignores_baseline_when_policy_does_not_ask(
    guard: Guard, processes: list[subprocess.Popen[bytes]]
) -> None:
    acl = guard.root / "acl"
    acl.write_text("topic read #\n")
    config = guard.config(f"acl_file {acl}")
    write_baseline(guard, str(config))
    acl.write_text("topic readwrite #\n")
    process = start_run(guard, config, processes)
    stop_process(process)
    assert process.stderr is not None
    assert "integrity:" not in process.stderr.read().decode()
