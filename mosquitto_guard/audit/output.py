"""The audit report as text for a terminal, as JSON, and as SARIF 2.1.0 for code scanning.

JSON document (`format_version` 1; tests pin its shape):

    {"format_version": 1,
     "tool": {"name": "mosquitto-guard", "version": "..."},
     "target": {"config": "...", "host": "yes"|"no", "policy": "..."|null},
     "summary": {"findings": N, "skipped": N,
                 "by_severity": {"critical": N, "high": N, "medium": N, "low": N, "info": N}},
     "findings": [{"id", "severity", "title", "path", "line", "evidence", "fix"}],
     "skipped": [{"id", "title", "reason"}]}

`path` and `line` are null for a finding about the host rather than a file. SARIF results
carry the same id as `ruleId`; critical and high map to the level "error", medium to
"warning", low and info to "note". Skipped rules become tool execution notifications.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mosquitto_guard import __version__
from mosquitto_guard.audit.model import AuditReport, Finding, Severity
from mosquitto_guard.terminal import printable

FORMAT_VERSION = 1
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVELS = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}


def _finding_dict(finding: Finding) -> dict[str, Any]:
    return {
        "id": finding.rule,
        "severity": finding.severity.label,
        "title": finding.title,
        "path": finding.path,
        "line": finding.line,
        "evidence": finding.evidence,
        "fix": finding.fix,
    }


def to_json(report: AuditReport, findings: list[Finding]) -> str:
    """Return the report with `findings` (the ones at or above the threshold) as JSON."""
    by_severity = {severity.label: 0 for severity in sorted(Severity, reverse=True)}
    for finding in findings:
        by_severity[finding.severity.label] += 1
    document = {
        "format_version": FORMAT_VERSION,
        "tool": {"name": "mosquitto-guard", "version": __version__},
        "target": report.target,
        "summary": {
            "findings": len(findings),
            "skipped": len(report.skipped),
            "by_severity": by_severity,
        },
        "findings": [_finding_dict(finding) for finding in findings],
        "skipped": [
            {"id": skipped.rule, "title": skipped.title, "reason": skipped.reason}
            for skipped in report.skipped
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def to_text(report: AuditReport, findings: list[Finding]) -> str:
    """Return the report as lines for a terminal: one block per finding, then a summary.

    Control characters are escaped, because evidence quotes config values.
    """
    lines = []
    for finding in findings:
        where = finding.path or "host"
        if finding.line:
            where += f":{finding.line}"
        lines.append(
            f"{finding.severity.label.upper():8} {finding.rule:11} {where}: {finding.title}"
        )
        lines.append(f"         {finding.evidence}")
        lines.append(f"         fix: {finding.fix}")
    # Many rules share one reason (an unreadable config, no host): one line per reason.
    reasons: dict[str, list[str]] = {}
    for skipped in report.skipped:
        reasons.setdefault(skipped.reason, []).append(skipped.rule)
    for reason, rules in reasons.items():
        lines.append(f"skipped  {', '.join(rules)}: {reason}")
    counts = {severity.label: 0 for severity in sorted(Severity, reverse=True)}
    for finding in findings:
        counts[finding.severity.label] += 1
    shown = ", ".join(f"{count} {label}" for label, count in counts.items() if count)
    lines.append(
        f"{len(findings)} finding(s){': ' + shown if shown else ''}; "
        f"{len(report.skipped)} check(s) skipped; {len(report.rules)} rule(s)"
    )
    return "\n".join(printable(line) for line in lines) + "\n"


def to_sarif(report: AuditReport, findings: list[Finding]) -> str:
    """Return the report as a SARIF 2.1.0 log with one run."""
    index = {rule.id: number for number, rule in enumerate(report.rules)}
    rules = [
        {
            "id": rule.id,
            "shortDescription": {"text": rule.title},
            "defaultConfiguration": {"level": _SARIF_LEVELS[rule.severity]},
            "properties": {"severity": rule.severity.label},
        }
        for rule in report.rules
    ]
    results = [_sarif_result(finding, index) for finding in findings]
    notifications = [
        {
            "level": "note",
            "message": {"text": f"skipped: {skipped.reason}"},
            "descriptor": {"id": skipped.rule},
        }
        for skipped in report.skipped
    ]
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "mosquitto-guard",
                        "version": __version__,
                        "rules": rules,
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "toolExecutionNotifications": notifications,
                    }
                ],
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"


def _sarif_result(finding: Finding, index: dict[str, int]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": finding.rule,
        "level": _SARIF_LEVELS[finding.severity],
        "message": {"text": f"{finding.title}: {finding.evidence} Fix: {finding.fix}"},
        "properties": {"severity": finding.severity.label},
    }
    if finding.rule in index:
        result["ruleIndex"] = index[finding.rule]
    if finding.path is not None:
        location: dict[str, Any] = {
            "artifactLocation": {"uri": Path(finding.path).absolute().as_uri()}
        }
        if finding.line:
            location["region"] = {"startLine": finding.line}
        result["locations"] = [{"physicalLocation": location}]
    return result
