"""Audit rules: plugins and other code the broker loads."""

from __future__ import annotations

from collections.abc import Iterator

from mosquitto_guard.audit.context import AuditContext
from mosquitto_guard.audit.model import Finding, Rule, Severity


def _relative_plugin(context: AuditContext) -> Iterator[Finding]:
    for entry in context.config.plugins:
        path = entry.path.strip()
        if not path.startswith("/"):
            yield RELATIVE.finding(
                f"{entry.kind} {entry.path!r}: the loader searches for it through "
                "LD_LIBRARY_PATH, the RUNPATH and the system directories",
                "give the absolute path of the plugin file",
                at=entry.option.location,
            )


def _hash_in_plugin(context: AuditContext) -> Iterator[Finding]:
    for entry in context.config.plugins:
        if "#" in entry.path:
            yield HASH.finding(
                f"{entry.kind} {entry.path!r}: the broker reads the trailing comment as part "
                "of the path",
                "put the comment on its own line, with # in column 0",
                at=entry.option.location,
            )


RELATIVE = Rule(
    "PLUGIN-002",
    Severity.HIGH,
    "a plugin named by a relative path or a bare name",
    _relative_plugin,
)
HASH = Rule(
    "PLUGIN-006",
    Severity.MEDIUM,
    "a plugin value containing '#', where a trailing comment becomes part of the path",
    _hash_in_plugin,
)

RULES = [RELATIVE, HASH]
