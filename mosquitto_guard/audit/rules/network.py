"""Audit rules: listeners, anonymous access, TLS and bridges.

A plugin that reads or rewrites messages gains the most from a broker that other hosts can
reach without TLS or without a password, and a bridge can send every message to another host
without any ACL check.

Listener settings are grouped the way Mosquitto 2.0 applies them. A listener option belongs to
the most recent `listener` line of the same file, or to the default listener before the first
one. Security options follow the same rule while `per_listener_settings` is true.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mosquitto_guard.audit.context import AuditContext
from mosquitto_guard.audit.model import Finding, Rule, Severity, Skip
from mosquitto_guard.config.model import BrokerConfig, Listener, Location, Option
from mosquitto_guard.config.options import Scope, canonical_name, find_option

# 2.0.21 applies `allow_anonymous false` in local-only mode, and earlier releases ignore it.
LOCAL_ONLY_ANONYMOUS_FIXED = (2, 0, 21)
WEAK_TLS_VERSIONS = frozenset({"tlsv1", "tlsv1.1"})
FORWARDING_DIRECTIONS = frozenset({"out", "both"})
# Options on the default listener that an administrator writes on purpose to use it.
DEFAULT_LISTENER_OPTIONS = frozenset({"port", "bind_address"})


@dataclass
class _ListenerSettings:
    """A listener with the options that apply to it, in reading order.

    `location` is the `listener` line, or for the default listener its first option.
    """

    listener: Listener
    location: Location | None
    options: list[Option] = field(default_factory=list)

    def last(self, key: str) -> Option | None:
        found = [option for option in self.options if option.key == key]
        return found[-1] if found else None

    def is_true(self, key: str) -> bool:
        return _is_true(self.last(key))

    def describe(self) -> str:
        if self.listener.option is None:
            return f"the default listener on port {self.listener.port}"
        address = self.listener.address or "all interfaces"
        return f"listener {self.listener.port} on {address}"


@dataclass
class _Bridge:
    """A `connection` line with the bridge options that follow it in the same file."""

    connection: Option
    options: list[Option] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.connection.args[0] if self.connection.args else "?"

    def find(self, key: str) -> list[Option]:
        return [option for option in self.options if option.key == key]

    def is_true(self, key: str) -> bool:
        found = self.find(key)
        return bool(found) and _is_true(found[-1])


# How the broker groups options.


def _is_true(option: Option | None) -> bool:
    """Return whether a boolean option is set and reads as true, as the broker reads it."""
    return option is not None and option.args[:1] in (("true",), ("1",))


def _canonical_key(option: Option, config: BrokerConfig) -> tuple[str, Scope] | None:
    spec = find_option(option.key, config.version)
    if spec is None:
        return None
    return canonical_name(spec), spec.scope


def _listener_settings(config: BrokerConfig) -> list[_ListenerSettings]:
    """Return every listener the broker opens, each with the options that apply to it."""
    buckets: dict[Location | None, list[Option]] = {None: []}
    current: dict[Path, Location | None] = {}
    per_listener = False
    for option in config.options:
        path = option.location.path
        if option.key == "listener":
            current[path] = option.location
            buckets[option.location] = []
            continue
        if option.key == "per_listener_settings":
            per_listener = _is_true(option)
        named = _canonical_key(option, config)
        if named is None:
            continue
        name, scope = named
        if scope is Scope.DEFAULT_LISTENER:
            buckets[None].append(option)
        elif scope is Scope.LISTENER or (
            scope is Scope.SECURITY and per_listener and name != "check_retain_source"
        ):
            buckets[current.get(path)].append(option)
    found = []
    for listener in config.listeners:
        if listener.option is None:
            options = buckets[None]
            location = options[0].location if options else None
        else:
            location = listener.option.location
            options = buckets.get(location, [])
        found.append(_ListenerSettings(listener, location, options))
    return found


def _bridges(config: BrokerConfig) -> list[_Bridge]:
    """Return every bridge with its options. A bridge option applies within its own file."""
    bridges: list[_Bridge] = []
    current: dict[Path, _Bridge] = {}
    for option in config.options:
        path = option.location.path
        if option.key == "connection":
            current[path] = _Bridge(option)
            bridges.append(current[path])
            continue
        named = _canonical_key(option, config)
        if named is not None and named[1] is Scope.BRIDGE and path in current:
            current[path].options.append(option)
    return bridges


def _is_local(settings: _ListenerSettings) -> bool:
    """Return whether only this host can reach the listener: loopback or a Unix socket."""
    listener = settings.listener
    if listener.port == 0:
        return True  # `listener 0 <path>` is a Unix socket
    interface = settings.last("bind_interface")
    if listener.address is None:
        return interface is not None and interface.value.strip() == "lo"
    if listener.address == "localhost":
        return True
    try:
        return ipaddress.ip_address(listener.address).is_loopback
    except ValueError:
        return False  # a host name, resolved at start-up


def _remote_listeners(context: AuditContext) -> list[_ListenerSettings]:
    return [s for s in _listener_settings(context.config) if not _is_local(s)]


def _is_unspecified(address: str) -> bool:
    """Return True for 0.0.0.0 and ::, which bind every interface like no address at all."""
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _at(settings: _ListenerSettings, context: AuditContext) -> Location | Path:
    """Return where to report a listener: its line, or the main file for the default one."""
    if settings.location is not None:
        return settings.location
    return context.config.main_files[0]


# Listeners.


def _all_interfaces(context: AuditContext) -> Iterator[Finding]:
    for settings in _listener_settings(context.config):
        listener = settings.listener
        wildcard = listener.address is not None and _is_unspecified(listener.address)
        named = listener.address is not None and not wildcard
        if named or settings.last("bind_interface") is not None or listener.port == 0:
            continue
        if listener.option is None and not _opened_on_purpose(settings):
            continue  # HIDDEN reports a default listener that no port or bind_address line opened
        what = f"binds {listener.address}" if wildcard else "has no bind address"
        yield ALL_INTERFACES.finding(
            f"{settings.describe()} {what}, so it accepts connections from every network "
            "the host is on",
            f"name the address to listen on: `listener {listener.port} 127.0.0.1`, or the "
            "address of the one interface clients use",
            at=_at(settings, context),
        )


def _no_tls(context: AuditContext) -> Iterator[Finding]:
    for settings in _remote_listeners(context):
        if settings.last("certfile") is not None or settings.last("psk_hint") is not None:
            continue
        yield NO_TLS.finding(
            f"{settings.describe()} has neither certfile nor psk_hint, so passwords and "
            "messages cross the network in clear text",
            "add cafile, certfile and keyfile to the listener, or bind it to 127.0.0.1",
            at=_at(settings, context),
        )


def _anonymous(context: AuditContext) -> Iterator[Finding]:
    config = context.config
    remote = _remote_listeners(context)
    if not config.per_listener_settings:
        allow = config.last("allow_anonymous")
        if allow is not None and _is_true(allow):
            exposed = [s for s in remote if not _denies_anonymous_itself(s)]
            if exposed:
                names = ", ".join(settings.describe() for settings in exposed)
                yield ANONYMOUS.finding(
                    f"'allow_anonymous true' applies to every listener, including {names}",
                    "set allow_anonymous false and give clients a password_file or plugin, "
                    "or bind the listeners to 127.0.0.1",
                    at=allow.location,
                )
        for settings in remote:
            yield from _listener_anonymous(settings, context)
        return
    for settings in remote:
        allow = settings.last("allow_anonymous")
        if allow is not None and _is_true(allow) and not _denies_anonymous_itself(settings):
            yield ANONYMOUS.finding(
                f"'allow_anonymous true' on {settings.describe()}",
                "set allow_anonymous false on this listener and give clients a password",
                at=allow.location,
            )
        yield from _listener_anonymous(settings, context)


def _denies_anonymous_itself(settings: _ListenerSettings) -> bool:
    """Return whether 2.1's `listener_allow_anonymous false` overrides the security option."""
    option = settings.last("listener_allow_anonymous")
    return option is not None and option.args[:1] in (("false",), ("0",))


def _listener_anonymous(settings: _ListenerSettings, context: AuditContext) -> Iterator[Finding]:
    option = settings.last("listener_allow_anonymous")
    if option is not None and settings.is_true("listener_allow_anonymous"):
        yield ANONYMOUS.finding(
            f"'listener_allow_anonymous true' on {settings.describe()}",
            "set listener_allow_anonymous false and give clients a password",
            at=option.location,
        )


def _local_only_anonymous(context: AuditContext) -> Iterator[Finding]:
    config = context.config
    deny = config.last("allow_anonymous")
    if config.listeners or deny is None or deny.args[:1] not in (("false",), ("0",)):
        return
    version = context.version
    if version >= LOCAL_ONLY_ANONYMOUS_FIXED:
        return
    # NOTE: context.version is 2.0.0 when the broker binary cannot run, so the evidence then
    # names 2.0.0 rather than the installed release.
    version_text = ".".join(str(part) for part in version)
    evidence = (
        f"no listener is defined, so the broker runs in local-only mode, where Mosquitto "
        f"{version_text} (before 2.0.21) ignores 'allow_anonymous false' and accepts anonymous "
        "clients on 127.0.0.1 and ::1"
    )
    package = _package_version(context)
    if package is not None:
        evidence += (
            f"; the Debian package {package} may carry a backported fix, so check its changelog"
        )
    yield LOCAL_ONLY.finding(
        evidence,
        "add `listener 1883 127.0.0.1` so that the security settings apply, or upgrade to "
        "2.0.21 or later",
        at=deny.location,
    )


def _package_version(context: AuditContext) -> str | None:
    try:
        return context.package_version
    except Skip:
        return None


def _opened_on_purpose(settings: _ListenerSettings) -> bool:
    return any(option.key in DEFAULT_LISTENER_OPTIONS for option in settings.options)


def _hidden_listener(context: AuditContext) -> Iterator[Finding]:
    config = context.config
    if config.version != (2, 0):
        return  # 2.1 rejects these options before a listener line
    for settings in _listener_settings(config):
        if settings.listener.option is not None or _opened_on_purpose(settings):
            continue
        for option in settings.options:
            if option.key == "allow_anonymous":
                continue  # the one security option that does not open the listener
            yield HIDDEN.finding(
                _hidden_evidence(option, config),
                "move the line below the `listener` line it belongs to, in the same file",
                at=option.location,
            )


def _hidden_evidence(option: Option, config: BrokerConfig) -> str:
    reason = (
        "with per_listener_settings true, it applies to the default listener"
        if config.per_listener_settings
        else "it applies to the default listener"
    )
    return (
        f"'{option.key}' comes before any listener line of its file, and {reason}, which "
        "Mosquitto 2.0 then opens on 0.0.0.0:1883 and [::]:1883, accepting anonymous clients"
    )


def _identity_without_certificate(context: AuditContext) -> Iterator[Finding]:
    for settings in _listener_settings(context.config):
        if settings.is_true("require_certificate"):
            continue
        if settings.last("psk_hint") is not None:
            continue  # the PSK identity is the username, and certificates do not apply
        for key in ("use_identity_as_username", "use_subject_as_username"):
            option = settings.last(key)
            if option is not None and settings.is_true(key):
                yield IDENTITY.finding(
                    f"'{key} true' on {settings.describe()} without 'require_certificate "
                    "true': the listener does not ask clients for a certificate",
                    "add `require_certificate true` and a cafile to the listener",
                    at=option.location,
                )


def _weak_tls(context: AuditContext) -> Iterator[Finding]:
    config = context.config
    for option in [*config.find("tls_version"), *config.find("bridge_tls_version")]:
        version = option.value.strip()
        if version in WEAK_TLS_VERSIONS:
            yield WEAK_TLS.finding(
                f"'{option.key} {version}' allows TLS versions that are deprecated (RFC 8996)",
                f"remove the line to allow TLS 1.2 and 1.3 only, or write `{option.key} tlsv1.2`",
                at=option.location,
            )


# Bridges.


def _bridge_destinations(context: AuditContext) -> Iterator[Finding]:
    for bridge in _bridges(context.config):
        for option in [*bridge.find("address"), *bridge.find("addresses")]:
            addresses = _addresses(option)
            yield BRIDGE.finding(
                f"bridge '{bridge.name}' connects to {', '.join(addresses)}, and messages sent "
                "over a bridge skip the ACL checks",
                "check that the destination is yours; remove the bridge if nobody added it on "
                "purpose",
                at=option.location,
            )


def _addresses(option: Option) -> list[str]:
    found = []
    for word in option.args:
        if word.startswith("#"):
            break
        found.append(word if ":" in word else f"{word}:1883")
    return found


def _bridge_without_tls(context: AuditContext) -> Iterator[Finding]:
    for bridge in _bridges(context.config):
        tls_keys = ("bridge_cafile", "bridge_capath", "bridge_psk", "bridge_tls_use_os_certs")
        if any(bridge.find(key) for key in tls_keys):
            continue
        yield BRIDGE_NO_TLS.finding(
            f"bridge '{bridge.name}' has no bridge_cafile, bridge_capath or bridge_psk, so it "
            "sends messages and its remote password in clear text",
            "add `bridge_cafile /etc/ssl/certs/ca-certificates.crt` (or the CA of the remote "
            "broker) and use its TLS port",
            at=bridge.connection.location,
        )


def _bridge_insecure(context: AuditContext) -> Iterator[Finding]:
    for bridge in _bridges(context.config):
        if bridge.is_true("bridge_insecure"):
            option = bridge.find("bridge_insecure")[-1]
            yield BRIDGE_INSECURE.finding(
                f"bridge '{bridge.name}' does not check that the remote certificate names the "
                "host it connects to, so anyone on the path can pose as the remote broker",
                "remove `bridge_insecure true` and connect to the name in the certificate",
                at=option.location,
            )


def _bridge_forwards_all(context: AuditContext) -> Iterator[Finding]:
    for bridge in _bridges(context.config):
        for option in bridge.find("topic"):
            if not option.args or "#" not in option.args[0].split("/"):
                continue
            direction = option.args[1].lower() if len(option.args) > 1 else "out"
            if direction in FORWARDING_DIRECTIONS:
                yield BRIDGE_ALL_TOPICS.finding(
                    f"bridge '{bridge.name}' sends '{option.args[0]}' ({direction}) to the "
                    "remote broker: every message under it leaves this broker",
                    "list the topics the remote broker needs, without the # wildcard",
                    at=option.location,
                )


# Web access.


def _websockets(context: AuditContext) -> Iterator[Finding]:
    for settings in _listener_settings(context.config):
        protocol = settings.last("protocol")
        if protocol is not None and protocol.args[:1] == ("websockets",):
            yield WEBSOCKETS.finding(
                f"{settings.describe()} speaks MQTT over websockets, which adds libwebsockets "
                "and its HTTP parser to what clients can reach",
                "remove the listener if no browser client needs it, or bind it to 127.0.0.1 "
                "behind a reverse proxy",
                at=protocol.location,
            )


def _http_dir(context: AuditContext) -> Iterator[Finding]:
    for option in context.config.find("http_dir"):
        directory = option.value.strip()
        yield HTTP_DIR.finding(
            f"'http_dir {directory}': every file in it is served over HTTP to anyone who "
            "reaches the websockets listener",
            "remove http_dir unless the broker must serve a web page, and keep the "
            "directory free of anything else",
            at=option.location,
        )


ALL_INTERFACES = Rule(
    "NET-001", Severity.MEDIUM, "a listener without a bind address", _all_interfaces
)
NO_TLS = Rule("NET-002", Severity.MEDIUM, "a network listener without TLS", _no_tls)
ANONYMOUS = Rule(
    "NET-003", Severity.HIGH, "anonymous clients allowed on a network listener", _anonymous
)
LOCAL_ONLY = Rule(
    "NET-004",
    Severity.MEDIUM,
    "'allow_anonymous false' ignored in local-only mode",
    _local_only_anonymous,
)
HIDDEN = Rule(
    "NET-005",
    Severity.HIGH,
    "options before any listener line open a hidden listener on 0.0.0.0:1883",
    _hidden_listener,
)
IDENTITY = Rule(
    "NET-006",
    Severity.MEDIUM,
    "certificate identity used as username without require_certificate",
    _identity_without_certificate,
)
WEAK_TLS = Rule("NET-007", Severity.MEDIUM, "TLS 1.0 or 1.1 allowed", _weak_tls)
BRIDGE = Rule("NET-008", Severity.MEDIUM, "a bridge to another broker", _bridge_destinations)
BRIDGE_NO_TLS = Rule("NET-009", Severity.HIGH, "a bridge without TLS", _bridge_without_tls)
BRIDGE_INSECURE = Rule(
    "NET-010", Severity.HIGH, "a bridge that skips the host name check", _bridge_insecure
)
BRIDGE_ALL_TOPICS = Rule(
    "NET-011", Severity.HIGH, "a bridge that sends # to the remote broker", _bridge_forwards_all
)
WEBSOCKETS = Rule("NET-012", Severity.LOW, "a websockets listener", _websockets)
HTTP_DIR = Rule("NET-013", Severity.MEDIUM, "files served over HTTP (http_dir)", _http_dir)

RULES = [
    ALL_INTERFACES,
    NO_TLS,
    ANONYMOUS,
    LOCAL_ONLY,
    HIDDEN,
    IDENTITY,
    WEAK_TLS,
    BRIDGE,
    BRIDGE_NO_TLS,
    BRIDGE_INSECURE,
    BRIDGE_ALL_TOPICS,
    WEBSOCKETS,
    HTTP_DIR,
]
