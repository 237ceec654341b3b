"""The audit command: exit codes, formats and the threshold, on real config files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mosquitto_guard.cli import main


def audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["audit", *args])
    return code, capsys.readouterr().out


def test_root_user_fails_with_location(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\nuser root\n")
    code, out = audit(capsys, "-c", str(config))
    assert code == 1
    assert f"CRITICAL PRIV-001    {config}:2: the broker runs as root" in out


def test_threshold_hides_lower_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\nplugin /usr/lib/x.so#comment\n")
    code, out = audit(capsys, "-c", str(config), "--min-severity", "critical", "--format", "json")
    assert code == 0
    assert json.loads(out)["findings"] == []


def test_missing_config_is_operational_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "-c", str(tmp_path / "absent.conf")]) == 3
    assert "config file" in capsys.readouterr().err


def test_bad_format_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--format", "yaml"]) == 2


def test_list_rules_names_every_area(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = audit(capsys, "--list-rules")
    ids = [line.split()[0] for line in out.splitlines()]
    assert code == 0
    assert len(ids) == len(set(ids))
    for prefix in ("SYNTAX", "PLUGIN", "PRIV", "FILE", "NET", "HARD", "VER"):
        assert any(rule_id.startswith(f"{prefix}-") for rule_id in ids), prefix


def test_rejected_secret_line_is_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\nplugin_opt_password hunter2\n")
    code, out = audit(capsys, "-c", str(config), "--format", "json")
    assert code == 1
    assert "hunter2" not in out
    [syntax] = [f for f in json.loads(out)["findings"] if f["id"] == "SYNTAX-001"]
    assert (syntax["path"], syntax["line"]) == (str(config), 2)


def test_skipped_rules_share_one_line_per_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\nnot_an_option 1\n")
    _, out = audit(capsys, "-c", str(config))
    reason = f"the broker rejects the config at {config}:2 (see SYNTAX-001)"
    assert len([line for line in out.splitlines() if line.endswith(reason)]) == 1


def test_every_rejected_line_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The broker stops at the first bad line; the audit goes on, so all can be fixed at once."""
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\nbogus 1\nallow_anonymous maybe\nmax_keepalive 60\n")
    code, out = audit(capsys, "-c", str(config), "--format", "json")
    syntax = [f for f in json.loads(out)["findings"] if f["id"] == "SYNTAX-001"]
    assert code == 1
    assert [finding["line"] for finding in syntax] == [2, 3]
    assert "passed over" not in syntax[0]["evidence"]
    assert syntax[1]["evidence"].endswith(
        "found once the lines rejected before it were passed over"
    )
