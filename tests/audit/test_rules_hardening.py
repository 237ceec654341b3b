"""Hardening rules on real config files read through the real reader."""

from __future__ import annotations

from pathlib import Path

from mosquitto_guard.audit.context import AuditContext, AuditOptions
from mosquitto_guard.audit.model import Finding, Rule, Severity
from mosquitto_guard.audit.rules import hardening

LISTENER = "listener 1883 127.0.0.1\n"
LIMITS = "check_retain_source true\nmax_keepalive 300\nmax_packet_size 2000000\n"


def check(rule: Rule, tmp_path: Path, text: str) -> tuple[Path, list[Finding]]:
    config = tmp_path / "mosquitto.conf"
    config.write_text(text)
    context = AuditContext(AuditOptions(config_paths=[config], host=False))
    return config, list(rule.check(context))


def test_retain_source_unset_reported(tmp_path: Path) -> None:
    config, findings = check(hardening.RETAIN_SOURCE, tmp_path, LISTENER)
    assert len(findings) == 1
    assert findings[0].rule == "HARD-001"
    assert findings[0].path == str(config)
    assert findings[0].line is None
    assert "not set" in findings[0].evidence
    assert findings[0].fix == "add `check_retain_source true` to the main config file"


def test_retain_source_false_reported_at_line(tmp_path: Path) -> None:
    config, findings = check(
        hardening.RETAIN_SOURCE, tmp_path, LISTENER + "check_retain_source false\n"
    )
    assert [(f.path, f.line) for f in findings] == [(str(config), 2)]
    assert findings[0].evidence.startswith("'check_retain_source false'")


def test_retain_source_true_passes(tmp_path: Path) -> None:
    _, findings = check(hardening.RETAIN_SOURCE, tmp_path, LISTENER + "check_retain_source true\n")
    assert findings == []


def test_keepalive_unset_reported(tmp_path: Path) -> None:
    config, findings = check(hardening.KEEPALIVE, tmp_path, LISTENER)
    assert [(f.rule, f.path, f.line) for f in findings] == [("HARD-002", str(config), None)]
    assert "keepalive 0" in findings[0].evidence


def test_keepalive_set_passes(tmp_path: Path) -> None:
    _, findings = check(hardening.KEEPALIVE, tmp_path, LISTENER + "max_keepalive 60\n")
    assert findings == []


def test_packet_size_unset_reported(tmp_path: Path) -> None:
    config, findings = check(hardening.PACKET_SIZE, tmp_path, LISTENER)
    assert [(f.rule, f.path, f.line) for f in findings] == [("HARD-003", str(config), None)]
    assert "256 MB" in findings[0].evidence


def test_packet_size_set_passes(tmp_path: Path) -> None:
    _, findings = check(hardening.PACKET_SIZE, tmp_path, LISTENER + "max_packet_size 100000\n")
    assert findings == []


def test_log_type_without_information_reported(tmp_path: Path) -> None:
    text = LISTENER + "log_type error\nlog_type warning\n"
    config, findings = check(hardening.LOG_TYPE, tmp_path, text)
    assert len(findings) == 1
    assert findings[0].rule == "HARD-004"
    assert findings[0].severity is Severity.MEDIUM
    assert (findings[0].path, findings[0].line) == (str(config), 3)
    assert findings[0].evidence.startswith(
        "the log_type lines log error, warning, without information and notice"
    )


def test_log_type_none_clears_earlier_lines(tmp_path: Path) -> None:
    text = LISTENER + "log_type information\nlog_type notice\nlog_type none\nlog_type error\n"
    _, findings = check(hardening.LOG_TYPE, tmp_path, text)
    assert [f.line for f in findings] == [5]
    assert "log error, without information and notice" in findings[0].evidence


def test_log_type_missing_notice_reported(tmp_path: Path) -> None:
    _, findings = check(hardening.LOG_TYPE, tmp_path, LISTENER + "log_type information\n")
    assert len(findings) == 1
    assert "without notice:" in findings[0].evidence


def test_log_type_all_passes(tmp_path: Path) -> None:
    _, findings = check(hardening.LOG_TYPE, tmp_path, LISTENER + "log_type error\nlog_type all\n")
    assert findings == []


def test_log_type_needed_levels_pass(tmp_path: Path) -> None:
    text = LISTENER + "log_type notice\nlog_type information\n"
    _, findings = check(hardening.LOG_TYPE, tmp_path, text)
    assert findings == []


def test_log_type_unset_passes(tmp_path: Path) -> None:
    _, findings = check(hardening.LOG_TYPE, tmp_path, LISTENER)
    assert findings == []


def test_connection_messages_false_reported(tmp_path: Path) -> None:
    text = LISTENER + "connection_messages false\n"
    config, findings = check(hardening.CONNECTION_MESSAGES, tmp_path, text)
    assert [(f.rule, f.path, f.line) for f in findings] == [("HARD-005", str(config), 2)]
    assert "'not authorised'" in findings[0].evidence


def test_connection_messages_true_passes(tmp_path: Path) -> None:
    text = LISTENER + "connection_messages true\n"
    _, findings = check(hardening.CONNECTION_MESSAGES, tmp_path, text)
    assert findings == []


def test_hardened_config_has_no_findings(tmp_path: Path) -> None:
    config = tmp_path / "mosquitto.conf"
    config.write_text(LISTENER + LIMITS + "log_type all\nconnection_messages true\n")
    context = AuditContext(AuditOptions(config_paths=[config], host=False))
    for rule in hardening.RULES:
        assert list(rule.check(context)) == [], rule.id
