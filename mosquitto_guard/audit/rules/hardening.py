"""Audit rules: limits and logging that the broker's defaults leave off.

The defaults below were read from the Mosquitto 2.0 source. Two differ from the man page:
`check_retain_source` is false unless set (seen on the Debian 12 build of 2.0.11), and
`max_keepalive` is 0, which the broker does not enforce.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mosquitto_guard.audit.context import AuditContext
from mosquitto_guard.audit.model import Finding, Rule, Severity
from mosquitto_guard.config.model import BrokerConfig, Location, Option

# Mosquitto 2.0 logs "Loading plugin: <path>" at the information level, and "Client <id>
# disconnected, not authorised." at the notice level and only with connection_messages true.
# Without log_type lines the broker logs error, warning, notice and information, so both.
NEEDED_LOG_TYPES = frozenset({"information", "notice"})
# 2.1 limits packets to 2,000,000 bytes by default, but 2.0 accepts the MQTT maximum of 256 MB.
PACKET_LIMIT_DEFAULT_SINCE = (2, 1)


def _is_false(option: Option) -> bool:
    return option.args[:1] in (("false",), ("0",))


def _main_file(config: BrokerConfig) -> Path:
    return config.main_files[0]


def _retain_source(context: AuditContext) -> Iterator[Finding]:
    config = context.config
    option = config.last("check_retain_source")
    if option is not None and not _is_false(option):
        return
    evidence = (
        "check_retain_source is not set, and its default is false in the code (the man page "
        "says true)"
        if option is None
        else "'check_retain_source false'"
    )
    yield RETAIN_SOURCE.finding(
        f"{evidence}: a retained message stays readable to subscribers after its publisher "
        "loses write access to the topic",
        "add `check_retain_source true` to the main config file",
        at=_where(option, config),
    )


def _max_keepalive(context: AuditContext) -> Iterator[Finding]:
    config = context.config
    if config.last("max_keepalive") is not None:
        return
    yield KEEPALIVE.finding(
        "max_keepalive is not set, so a client may send keepalive 0 and hold its connection "
        "open for good (the default 0 is not enforced, although the man page says 65535)",
        "add `max_keepalive 300` (seconds) to the main config file",
        at=_main_file(config),
    )


def _max_packet_size(context: AuditContext) -> Iterator[Finding]:
    config = context.config
    if config.version >= PACKET_LIMIT_DEFAULT_SINCE or config.last("max_packet_size") is not None:
        return
    yield PACKET_SIZE.finding(
        "max_packet_size is not set, so each client may send packets of up to 256 MB, which "
        "the broker holds in memory",
        "add `max_packet_size 2000000` (bytes, the 2.1 default) to the main config file",
        at=_main_file(config),
    )


def _log_types(options: list[Option]) -> set[str]:
    """Return the message levels the broker logs after reading these `log_type` lines."""
    logged: set[str] = set()
    for option in options:
        if not option.args:
            continue  # 2.0 ignores an empty log_type
        level = option.args[0]
        if level == "none":
            logged = set()  # the broker replaces its mask here, where other values add to it
        else:
            logged.add(level)
    return logged


def _log_type(context: AuditContext) -> Iterator[Finding]:
    destinations = [option for option in context.config.find("log_dest") if option.args]
    if destinations and all(option.args[0] == "none" for option in destinations):
        yield LOG_TYPE.finding(
            "'log_dest none': the broker logs nothing, plugin loading and failed logins included",
            "log to a file, syslog or stderr: `log_dest syslog`, for example",
            at=destinations[-1].location,
        )
        return
    options = [option for option in context.config.find("log_type") if option.args]
    if not options:
        return
    logged = _log_types(options)
    missing = sorted(NEEDED_LOG_TYPES - logged)
    if "all" in logged or not missing:
        return
    yield LOG_TYPE.finding(
        f"the log_type lines log {', '.join(sorted(logged)) or 'nothing'}, without "
        f"{' and '.join(missing)}: plugin loading is logged at information and failed "
        "logins at notice",
        "add `log_type information` and `log_type notice`, or remove every log_type line",
        at=options[-1].location,
    )


def _connection_messages(context: AuditContext) -> Iterator[Finding]:
    option = context.config.last("connection_messages")
    if option is None or not _is_false(option):
        return
    yield CONNECTION_MESSAGES.finding(
        "'connection_messages false': connections, disconnections and failed logins "
        "('not authorised') are not logged",
        "remove the line, or write `connection_messages true`",
        at=option.location,
    )


def _where(option: Option | None, config: BrokerConfig) -> Location | Path:
    return option.location if option is not None else _main_file(config)


RETAIN_SOURCE = Rule(
    "HARD-001",
    Severity.LOW,
    "retained messages are not checked against their publisher's access",
    _retain_source,
)
KEEPALIVE = Rule("HARD-002", Severity.LOW, "max_keepalive is not set", _max_keepalive)
PACKET_SIZE = Rule("HARD-003", Severity.LOW, "max_packet_size is not set", _max_packet_size)
LOG_TYPE = Rule(
    "HARD-004",
    Severity.MEDIUM,
    "log_type hides plugin loading or failed logins",
    _log_type,
)
CONNECTION_MESSAGES = Rule(
    "HARD-005",
    Severity.MEDIUM,
    "connection and login failure messages are off",
    _connection_messages,
)

RULES = [RETAIN_SOURCE, KEEPALIVE, PACKET_SIZE, LOG_TYPE, CONNECTION_MESSAGES]
