"""Audit rules: lines the broker would reject, and template placeholders left in the config."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from mosquitto_guard.audit.context import AuditContext
from mosquitto_guard.audit.model import Finding, Rule, Severity, Skip
from mosquitto_guard.errors import ConfigError, GuardError

# How many rejected lines one audit reports; the broker itself stops at the first.
MAX_REJECTED = 50


def _rejected_lines(context: AuditContext) -> Iterator[Finding]:
    try:
        context.config  # noqa: B018 (reading it records the error)
    except Skip:
        error = context.config_error
        if error is None:
            raise
        yield _rejected(error, later=False)
        yield from _later_rejections(context, error)


def _later_rejections(context: AuditContext, first: ConfigError) -> Iterator[Finding]:
    """Read the config again past each rejected line, to report the next ones too."""
    from mosquitto_guard.config.reader import read_config

    skipped: frozenset[tuple[Path, int]] = frozenset()
    error = first
    for _ in range(MAX_REJECTED - 1):
        if not error.line:
            return  # a whole file is rejected: nothing to pass over
        skipped |= {(Path(error.path), error.line)}
        try:
            read_config(context.options.config_paths, version=context.version[:2], skip=skipped)
        except ConfigError as later:
            if (Path(later.path), later.line) in skipped:
                return
            error = later
            yield _rejected(error, later=True)
        except GuardError:
            return
        else:
            return


def _rejected(error: ConfigError, *, later: bool) -> Finding:
    # The line itself is never shown: a rejected line is often a misspelt password option.
    shown = error.reason
    if later:
        shown += "; found once the lines rejected before it were passed over"
    return SYNTAX.finding(shown, error.fix or "correct the line", at=error.path, line=error.line)


# Placeholders of common template tools: Jinja and Go `{{ x }}` and `{% if %}`, ERB `<%= x %>`,
# autoconf `@NAME@`, shell and envsubst `$NAME` and `${NAME}`, and `[name-with-dashes]`. The
# broker expands none of them. `$SYS` and `$CONTROL` are MQTT topic prefixes, not variables.
_PLACEHOLDER = re.compile(
    r"\{\{.*?\}\}|\{%.*?%\}|<%.*?%>|@[A-Z][A-Z0-9_]*@"
    r"|\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$(?!(?:SYS|CONTROL)\b)[A-Z_][A-Z0-9_]+"
    r"|\[[a-z][a-z0-9]*(?:[-_][a-z0-9]+)+\]"
)
# Keys whose values may be secrets; their placeholders are reported without the value.
_SECRET_KEY = re.compile(r"password|secret|token|psk|^plugin_opt_|^auth_opt_")


def _files_read(context: AuditContext) -> list[Path]:
    try:
        return list(context.config.files)
    except Skip:
        # The reader stopped early: scan the files named on the command line, and the
        # included file it stopped in.
        files = list(context.options.config_paths)
        error = context.config_error
        if error is not None and Path(error.path) not in files:
            files.append(Path(error.path))
        return files


def _placeholders(context: AuditContext) -> Iterator[Finding]:
    for path in _files_read(context):
        if not path.is_file():
            continue  # a FIFO or a device, which the reader rejects; reading it could block
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            raise Skip(f"{path} cannot be read: {error.strerror}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            found = _PLACEHOLDER.search(stripped)
            if found is None:
                continue
            key = stripped.split(maxsplit=1)[0]
            if _SECRET_KEY.search(key):
                shown = f"the value of {key!r} (not shown, as it may be a secret)"
            else:
                shown = f"{found.group(0)!r} in {stripped!r}"
            yield PLACEHOLDER.finding(
                f"a template placeholder in {shown}, which the broker reads as literal text",
                "fill in the template (render it) before the broker reads the file",
                at=path,
                line=number,
            )


SYNTAX = Rule(
    "SYNTAX-001",
    Severity.HIGH,
    "a line the broker rejects, so it does not start",
    _rejected_lines,
)

PLACEHOLDER = Rule(
    "SYNTAX-002",
    Severity.MEDIUM,
    "a template placeholder that was never filled in",
    _placeholders,
)

RULES = [SYNTAX, PLACEHOLDER]
