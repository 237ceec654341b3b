"""Findings, rules and the audit report.

A rule has a stable id (`PLUGIN-001`), a severity and a title, and a check that reads the
`AuditContext` and yields findings. A check that cannot run raises `Skip` with the reason; the
report then lists the rule as skipped rather than passed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mosquitto_guard.config.model import Location

if TYPE_CHECKING:
    from mosquitto_guard.audit.context import AuditContext


class Severity(enum.IntEnum):
    """The severity of a finding, which `--min-severity` compares."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls[text.upper()]


class Skip(Exception):
    """Raised by a check that cannot run here; the message is the reason."""


@dataclass(frozen=True)
class Finding:
    """One problem: the rule, the place, the evidence and the fix.

    `path` and `line` point at the config line or file at fault. Either may be None when the
    finding concerns the host, such as a running process or the installed package.
    """

    rule: str
    severity: Severity
    title: str
    path: str | None
    line: int | None
    evidence: str
    fix: str


@dataclass(frozen=True)
class Rule:
    """A check with its stable id, default severity and one-line title."""

    id: str
    severity: Severity
    title: str
    check: Callable[[AuditContext], Iterable[Finding]]

    def finding(
        self,
        evidence: str,
        fix: str,
        *,
        at: Location | Path | str | None = None,
        line: int | None = None,
        severity: Severity | None = None,
    ) -> Finding:
        """Return a finding of this rule at a config location, a file path, or nowhere."""
        path: str | None
        if isinstance(at, Location):
            path, line = str(at.path), at.line
        else:
            path = None if at is None else str(at)
        return Finding(self.id, severity or self.severity, self.title, path, line, evidence, fix)


@dataclass(frozen=True)
class Skipped:
    """A rule that could not run, and why."""

    rule: str
    title: str
    reason: str


@dataclass
class AuditReport:
    """Every finding and every skipped rule of one audit, with what was audited."""

    target: dict[str, str | None]
    rules: list[Rule] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def at_least(self, minimum: Severity) -> list[Finding]:
        """Return the findings of `minimum` severity or above."""
        return [finding for finding in self.findings if finding.severity >= minimum]
