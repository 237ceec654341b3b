"""Audit rules: the user and the privileges the broker and its plugins run with.

Mosquitto 2.0 starts as root and drops to `user` (default mosquitto) before it loads plugins.
On Debian 12's 2.0.11, both `user root` and the environment variable `SNAP_NAME=mosquitto` skip
that drop, but any other `SNAP_NAME` value does not. Mosquitto 2.1 also keeps root when `PUID`
or `PGID` is 0, while the 2.0.11 binary does not read either variable. Debian's service unit
sets no `User=` and no sandboxing directives.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mosquitto_guard.audit.context import AuditContext, ServiceUnit, UnitLine
from mosquitto_guard.audit.model import Finding, Rule, Severity
from mosquitto_guard.sandbox.capabilities import CAPABILITIES as CAPABILITY_ORDER

# Capability names by bit number, lower case as the capabilities(7) man page writes them.
CAPABILITY_NAMES = tuple(name.lower() for name in CAPABILITY_ORDER)
SYSTEMD_TRUE = ("1", "yes", "true", "on")
ROOT_NAMES = ("root", "0")


# PRIV-001


def _user_root(context: AuditContext) -> Iterator[Finding]:
    user = context.config.last("user")
    if user is None:
        return
    name = user.value.strip()
    account = context.broker_user
    if name == "root":
        evidence = "'user root' keeps the broker, and every plugin it loads, running as root"
    elif account is not None and account.pw_uid == 0:
        evidence = (
            f"'user {name}' names an account with uid 0, so the broker, and every plugin it "
            "loads, keeps running as root"
        )
    else:
        return
    yield ROOT.finding(
        evidence,
        "remove the line, or name an unprivileged account such as mosquitto",
        at=user.location,
    )


# PRIV-002


def _running_as_root(context: AuditContext) -> Iterator[Finding]:
    for process in context.processes:
        if process.uid == 0:
            yield RUNNING_ROOT.finding(
                f"broker pid {process.pid} runs with effective uid 0, so every plugin it loads "
                "runs as root",
                "remove 'user root' from the config and SNAP_NAME=mosquitto from the broker's "
                "environment, then restart the broker",
            )


# PRIV-003


@dataclass(frozen=True)
class Hardening:
    """A systemd directive the unit should set, and the test its value must pass."""

    key: str
    recommended: str
    reason: str
    accepts: Callable[[ServiceUnit], bool]


def _last_true(key: str, *extra: str) -> Callable[[ServiceUnit], bool]:
    def accepts(unit: ServiceUnit) -> bool:
        line = unit.last(key)
        return line is not None and line.value.lower() in (*SYSTEMD_TRUE, *extra)

    return accepts


def _any_line(key: str) -> Callable[[ServiceUnit], bool]:
    # An empty CapabilityBoundingSet= empties the bounding set, the strictest value. So any
    # line counts here, although `ServiceUnit.values` treats an empty value as a reset.
    def accepts(unit: ServiceUnit) -> bool:
        return any(line.key == key for line in unit.lines)

    return accepts


def _non_empty_list(key: str) -> Callable[[ServiceUnit], bool]:
    def accepts(unit: ServiceUnit) -> bool:
        return bool(unit.values(key))

    return accepts


HARDENING = (
    Hardening(
        "NoNewPrivileges",
        "NoNewPrivileges=yes",
        "a plugin can gain privileges through setuid programs",
        _last_true("NoNewPrivileges"),
    ),
    Hardening(
        "ProtectSystem",
        "ProtectSystem=strict",
        "a plugin can write /usr and /etc, including other plugins and the config",
        _last_true("ProtectSystem", "full", "strict"),
    ),
    Hardening(
        "ProtectHome",
        "ProtectHome=yes",
        "a plugin can read and write home directories",
        _last_true("ProtectHome", "read-only", "tmpfs"),
    ),
    Hardening(
        "PrivateTmp",
        "PrivateTmp=yes",
        "a plugin shares /tmp with every other service",
        _last_true("PrivateTmp"),
    ),
    Hardening(
        "CapabilityBoundingSet",
        "CapabilityBoundingSet=CAP_SETUID CAP_SETGID",
        "a plugin running as root keeps every capability",
        _any_line("CapabilityBoundingSet"),
    ),
    Hardening(
        "SystemCallFilter",
        "SystemCallFilter=@system-service",
        "a plugin can make any system call",
        _non_empty_list("SystemCallFilter"),
    ),
    Hardening(
        "RestrictAddressFamilies",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "a plugin can open any kind of socket",
        _non_empty_list("RestrictAddressFamilies"),
    ),
)


def _unit_hardening(context: AuditContext) -> Iterator[Finding]:
    unit = context.unit
    yield from _unit_user(unit)
    for directive in HARDENING:
        if directive.accepts(unit):
            continue
        line = unit.last(directive.key)
        seen = f"{directive.key}={line.value}" if line is not None else f"no {directive.key}="
        yield UNIT.finding(
            f"{seen}: {directive.reason}",
            f"add {directive.recommended} to the [Service] section, for example in a drop-in "
            f"/etc/systemd/system/{unit.path.name}.d/hardening.conf (mosquitto-guard "
            "systemd-unit prints one)",
            at=line.path if line is not None else unit.path,
            line=line.line if line is not None else None,
        )


def _unit_user(unit: ServiceUnit) -> Iterator[Finding]:
    dynamic = unit.last("DynamicUser")
    if dynamic is not None and dynamic.value.lower() in SYSTEMD_TRUE:
        return
    user = unit.last("User")
    if user is not None and user.value not in ROOT_NAMES:
        return
    seen = f"User={user.value}" if user is not None else "no User="
    yield UNIT.finding(
        f"{seen}: the service starts as root, so the OpenSSL config modules and the "
        "name-service modules load as root before the broker drops privileges",
        "add User=mosquitto and Group=mosquitto to the [Service] section",
        at=user.path if user is not None else unit.path,
        line=user.line if user is not None else None,
    )


# PRIV-004


def _root_environment(context: AuditContext) -> Iterator[Finding]:
    unit = context.unit
    for line in unit.values("Environment"):
        for name, value in _assignments(line.value):
            yield from _environment_finding(name, value, line.path, line.line)
    for line in unit.values("EnvironmentFile"):
        yield from _environment_file(context, line)


def _environment_file(context: AuditContext, line: UnitLine) -> Iterator[Finding]:
    # A leading '-' makes systemd ignore a missing file.
    written = line.value.removeprefix("-")
    path = context.options.host_file(written)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        for name, value in _assignments(stripped):
            yield from _environment_finding(name, value, path, number)


def _assignments(text: str) -> list[tuple[str, str]]:
    """Split `A=1 "B=two words"` into names and values, with systemd's quoting."""
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    return [(word.partition("=")[0], word.partition("=")[2]) for word in words if "=" in word]


def _environment_finding(name: str, value: str, path: Path, line: int) -> Iterator[Finding]:
    if name == "SNAP_NAME" and value == "mosquitto":
        yield ENVIRONMENT.finding(
            "SNAP_NAME=mosquitto: the broker skips its privilege drop, with no warning, and "
            "runs every plugin as root",
            "remove SNAP_NAME from the unit's environment",
            at=path,
            line=line,
        )
    elif name in ("PUID", "PGID"):
        keeps_root = value.strip() == "0"
        effect = (
            "keeps Mosquitto 2.1 and later running as root"
            if keeps_root
            else "replaces the config's user in Mosquitto 2.1 and later (2.0 ignores it)"
        )
        yield ENVIRONMENT.finding(
            f"{name}={value}: {effect}",
            f"remove {name} from the unit's environment, and set the account with 'user'",
            at=path,
            line=line,
            severity=None if keeps_root else Severity.LOW,
        )


# PRIV-005


def _effective_capabilities(context: AuditContext) -> Iterator[Finding]:
    for process in context.processes:
        if not process.effective_caps:
            continue
        names = ", ".join(capability_names(process.effective_caps))
        yield CAPABILITIES.finding(
            f"broker pid {process.pid} (uid {process.uid}) has effective capabilities: {names}",
            "run it as an unprivileged user, and remove AmbientCapabilities= from the unit or "
            "empty its CapabilityBoundingSet=",
        )


def capability_names(mask: int) -> list[str]:
    """Return the names of the capabilities set in `mask`, lowest bit first."""
    names = []
    for bit in range(mask.bit_length()):
        if mask >> bit & 1:
            known = bit < len(CAPABILITY_NAMES)
            names.append(CAPABILITY_NAMES[bit] if known else f"cap_{bit}")
    return names


ROOT = Rule("PRIV-001", Severity.CRITICAL, "the broker runs as root", _user_root)
RUNNING_ROOT = Rule(
    "PRIV-002", Severity.CRITICAL, "a running broker whose user is root", _running_as_root
)
UNIT = Rule(
    "PRIV-003",
    Severity.MEDIUM,
    "a service unit without User= or without sandboxing directives",
    _unit_hardening,
)
ENVIRONMENT = Rule(
    "PRIV-004",
    Severity.CRITICAL,
    "a service environment that keeps the broker root (SNAP_NAME, PUID, PGID)",
    _root_environment,
)
CAPABILITIES = Rule(
    "PRIV-005",
    Severity.HIGH,
    "a running broker that holds effective capabilities",
    _effective_capabilities,
)

RULES = [ROOT, RUNNING_ROOT, UNIT, ENVIRONMENT, CAPABILITIES]
