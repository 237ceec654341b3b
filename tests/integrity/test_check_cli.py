"""`mosquitto-guard check` on a bad command line."""

from __future__ import annotations

import json

import pytest

from mosquitto_guard.cli import main


def test_bad_command_line_is_could_not_check(capsys: pytest.CaptureFixture[str]) -> None:
    """2 means "files removed" in check's bitmask, so a usage error must not return it."""
    assert main(["check", "--format", "yaml"]) == 16
    assert "invalid choice" in capsys.readouterr().err


def test_usage_error_with_json_format_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--format", "json", "--no-such-option"]) == 16
    document = json.loads(capsys.readouterr().out)
    assert document["status"] == "check_failed"
