"""Audit rule: lines the broker would reject."""

from __future__ import annotations

from collections.abc import Iterator

from mosquitto_guard.audit.context import AuditContext
from mosquitto_guard.audit.model import Finding, Rule, Severity, Skip


def _rejected_lines(context: AuditContext) -> Iterator[Finding]:
    try:
        context.config  # noqa: B018 (reading it records the error)
    except Skip:
        error = context.config_error
        if error is None:
            raise
        yield SYNTAX.finding(
            f"{error.reason}: {error.text!r}" if error.text else error.reason,
            error.fix or "correct the line",
            at=error.path,
            line=error.line,
        )


SYNTAX = Rule(
    "SYNTAX-001",
    Severity.HIGH,
    "a line the broker rejects, so it does not start",
    _rejected_lines,
)

RULES = [SYNTAX]
