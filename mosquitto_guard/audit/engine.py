"""Running the rules over one context and collecting the report."""

from __future__ import annotations

from collections.abc import Sequence

from mosquitto_guard.audit.context import AuditContext
from mosquitto_guard.audit.model import AuditReport, Rule, Skip, Skipped
from mosquitto_guard.errors import GuardError


def run_audit(context: AuditContext, rules: Sequence[Rule]) -> AuditReport:
    """Run every rule and return the findings, most severe first, and the rules skipped.

    A rule that raises `Skip`, a `GuardError` or an `OSError` is reported as skipped with the
    reason, so one unreadable file never hides the other rules' findings.
    """
    options = context.options
    report = AuditReport(
        target={
            "config": ", ".join(str(path) for path in options.config_paths),
            "host": "yes" if options.host else "no",
            "policy": None if options.policy_path is None else str(options.policy_path),
        },
        rules=list(rules),
    )
    for rule in rules:
        try:
            report.findings += list(rule.check(context))
        except Skip as skip:
            report.skipped.append(Skipped(rule.id, rule.title, str(skip)))
        except (GuardError, OSError) as error:
            report.skipped.append(Skipped(rule.id, rule.title, f"the check failed: {error}"))
    report.findings.sort(key=lambda f: (-f.severity, f.path or "", f.line or 0, f.rule, f.evidence))
    return report
