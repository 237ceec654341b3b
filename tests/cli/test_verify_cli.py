"""`mosquitto-guard verify`: the launch checks without a launch."""

from __future__ import annotations

import pytest
from support import Guard

from mosquitto_guard.cli import main


def test_verify_plugin_reports_signer(guard: Guard, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    capsys.readouterr()
    assert main(["verify", "--policy", str(guard.policy), str(plugin)]) == 0
    out = capsys.readouterr().out
    assert f"ok: {plugin}: manifest good version 1, signed by alice (SHA256:" in out


def test_verify_plugin_rejects_unsigned(guard: Guard, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = guard.build("unsigned.so")
    assert main(["verify", "--policy", str(guard.policy), str(plugin)]) == 1
    err = capsys.readouterr().err
    assert f"mosquitto-guard: rejected: {plugin}: no manifest in" in err


def test_verify_config_checks_without_starting(
    guard: Guard, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    config = guard.config(f"plugin {plugin}")
    capsys.readouterr()
    assert main(["verify", "--policy", str(guard.policy), "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert "ok: good version 1 sha256 " in out
    assert f"ok: {config}: every loaded file verified" in out
    # verify records nothing, so a later launch still finds no accepted version
    assert not (guard.root / "state" / "versions.json").exists()


def test_verify_without_targets_is_usage_error(guard: Guard) -> None:
    assert main(["verify", "--policy", str(guard.policy)]) == 2


def test_verify_warns_of_expiring_manifest(
    guard: Guard, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice", "--valid-days", "10")
    config = guard.config(f"plugin {plugin}")
    capsys.readouterr()
    assert main(["verify", "--policy", str(guard.policy), "-c", str(config)]) == 0
    err = capsys.readouterr().err
    assert f"{config}:5: manifest good version 1 expires on " in err
    assert f"and the broker will then not start; fix: sign {plugin} again" in err


def test_verify_finds_missing_broker_directory(
    guard: Guard, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = guard.root / "absent"
    config = guard.config("persistence true", f"persistence_location {absent}/")
    assert main(["verify", "--policy", str(guard.policy), "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert (
        f"rejected: sandbox: {config}:6: persistence_location {absent}/: {absent} does not exist"
        in err
    )
