"""Audit rules: the user the broker and its plugins run as."""

from __future__ import annotations

from collections.abc import Iterator

from mosquitto_guard.audit.context import AuditContext
from mosquitto_guard.audit.model import Finding, Rule, Severity


def _user_root(context: AuditContext) -> Iterator[Finding]:
    user = context.config.last("user")
    if user is not None and user.value.strip() == "root":
        yield ROOT.finding(
            "'user root' keeps the broker, and every plugin it loads, running as root",
            "remove the line, or name an unprivileged account such as mosquitto",
            at=user.location,
        )


ROOT = Rule("PRIV-001", Severity.CRITICAL, "the broker runs as root", _user_root)

RULES = [ROOT]
