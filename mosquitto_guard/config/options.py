"""The options Mosquitto accepts in its config file, with where each one applies.

The table follows `config__read_file_core()` in Mosquitto 2.0 `src/conf.c`. It was checked
against the Debian 12 build of 2.0.11 (`/usr/sbin/mosquitto`): that broker accepts every 2.0
name below and rejects every 2.1 one, and the quirks noted on single entries were observed by
running it. Options first seen in the 2.1 development branch are marked with `since=(2, 1)`.

Scopes say what the broker changes when it reads the option:

- `GLOBAL`: the broker-wide config.
- `DEFAULT_LISTENER`: always the default listener, wherever the line is (`port`,
  `bind_address`).
- `LISTENER`: the current listener, which is the most recent `listener` line of the same file,
  or the default listener before the first one.
- `SECURITY`: the current security options. These are global, or belong to the current
  listener when `per_listener_settings true` is in force.
- `BRIDGE`: the current bridge, the most recent `connection` line of the same file.
- `PLUGIN`: the current plugin, the most recent plugin line of the same file.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Scope(Enum):
    """Part of the broker's state that an option changes, as the module docstring describes."""

    GLOBAL = "global"
    DEFAULT_LISTENER = "default listener"
    LISTENER = "listener"
    SECURITY = "security"
    BRIDGE = "bridge"
    PLUGIN = "plugin"


class Kind(Enum):
    """Syntax the broker expects for the value of an option."""

    STRING = "string"  # the rest of the line, leading and trailing whitespace removed
    RAW_STRING = "raw string"  # the rest of the line exactly as written
    INTEGER = "integer"  # the first word, read with C `atoi()`
    BOOLEAN = "boolean"  # the first word: `true`, `false`, `1` or `0`
    KEYWORD = "keyword"  # the first word, one of `keywords`
    TOKENS = "tokens"  # several words with their own rules
    IGNORED = "ignored"  # accepted and ignored, with or without a value


class Repeat(Enum):
    """Effect of a second occurrence of an option in the same scope."""

    LAST_WINS = "last wins"
    ADDS = "adds"  # each line adds one more entry (a listener, a plugin, a bridge topic)
    ONCE = "once"  # a second value is an error: "Duplicate ... value in configuration"


@dataclass(frozen=True)
class OptionSpec:
    """One option name and the rules the broker applies to it.

    `minimum` and `maximum` bound the integer values the broker accepts; values outside them
    stop the broker. Values that the broker silently clamps are not errors and are not bounded
    here. `empty_ok` is True where the broker logs an empty value and carries on.
    """

    name: str
    scope: Scope
    kind: Kind
    repeat: Repeat
    minimum: int | None = None
    maximum: int | None = None
    keywords: frozenset[str] = frozenset()
    since: tuple[int, int] = (2, 0)
    empty_ok: bool = False
    alias_of: str | None = None


PLUGIN_OPTION_PREFIXES = ("plugin_opt_", "auth_opt_")

PLUGIN_PATH_OPTIONS = frozenset({"plugin", "auth_plugin", "global_plugin", "plugin_load"})

# Options whose value is a file the broker reads: access lists, secrets and TLS material.
READ_FILE_OPTIONS = (
    "password_file",
    "acl_file",
    "psk_file",
    "cafile",
    "certfile",
    "keyfile",
    "crlfile",
    "dhparamfile",
    "bridge_cafile",
    "bridge_certfile",
    "bridge_keyfile",
)
# Options whose value is a directory of CA certificates the broker reads.
CERTIFICATE_DIRECTORY_OPTIONS = ("capath", "bridge_capath")
# The one plugin Debian ships, and the option naming the file it reads and rewrites.
DYNAMIC_SECURITY_PLUGIN = "mosquitto_dynamic_security.so"
DYNAMIC_SECURITY_OPTION = "config_file"

# 2.1 frees the old value before reading these string options, so repeating them replaces the
# value instead of stopping the broker.
REPLACED_IN_2_1 = frozenset(
    {
        "acl_file",
        "bridge_keyfile",
        "cafile",
        "capath",
        "certfile",
        "ciphers",
        "ciphers_tls1.3",
        "clientid_prefixes",
        "crlfile",
        "keyfile",
        "mount_point",
        "password_file",
        "psk_file",
        "user",
    }
)

# 2.1 rejects these options before any `listener` line of the same file ("The '%s' option
# requires a listener to be defined first."), where 2.0 applies them to the default listener.
NEED_LISTENER_IN_2_1 = frozenset(
    {
        "accept_protocol_versions",
        "cafile",
        "disable_client_cert_date_checks",
        "enable_proxy_protocol",
        "http_dir",
        "listener_allow_anonymous",
        "listener_auto_id_prefix",
        "max_topic_alias",
        "max_topic_alias_broker",
        "mount_point",
        "plugin_use",
        "proxy_protocol_v2_require_tls",
        "tls_version",
        "websockets_origin",
    }
)

_MQTT_MAX_PAYLOAD = 268435455


def _spec(
    name: str,
    scope: Scope,
    kind: Kind,
    repeat: Repeat = Repeat.LAST_WINS,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    keywords: frozenset[str] = frozenset(),
    since: tuple[int, int] = (2, 0),
    empty_ok: bool = False,
) -> OptionSpec:
    return OptionSpec(
        name, scope, kind, repeat, minimum, maximum, keywords, since, empty_ok, alias_of=None
    )


def _strings(scope: Scope, *names: str, since: tuple[int, int] = (2, 0)) -> list[OptionSpec]:
    return [_spec(name, scope, Kind.STRING, Repeat.ONCE, since=since) for name in names]


def _booleans(scope: Scope, *names: str, since: tuple[int, int] = (2, 0)) -> list[OptionSpec]:
    return [_spec(name, scope, Kind.BOOLEAN, since=since) for name in names]


def _integer(
    name: str,
    scope: Scope,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    since: tuple[int, int] = (2, 0),
    empty_ok: bool = False,
) -> OptionSpec:
    return _spec(
        name,
        scope,
        Kind.INTEGER,
        minimum=minimum,
        maximum=maximum,
        since=since,
        empty_ok=empty_ok,
    )


def _keyword(
    name: str,
    scope: Scope,
    *words: str,
    repeat: Repeat = Repeat.LAST_WINS,
    since: tuple[int, int] = (2, 0),
    empty_ok: bool = False,
) -> OptionSpec:
    return _spec(
        name,
        scope,
        Kind.KEYWORD,
        repeat,
        keywords=frozenset(words),
        since=since,
        empty_ok=empty_ok,
    )


def _alias(spec: OptionSpec, name: str) -> OptionSpec:
    return OptionSpec(
        name,
        spec.scope,
        spec.kind,
        spec.repeat,
        spec.minimum,
        spec.maximum,
        spec.keywords,
        spec.since,
        spec.empty_ok,
        alias_of=spec.name,
    )


_GLOBAL = [
    *_booleans(
        Scope.GLOBAL,
        "allow_duplicate_messages",
        "autosave_on_changes",
        "connection_messages",
        "log_timestamp",
        "persistence",
        "queue_qos0_messages",
        "retain_available",
        "set_tcp_nodelay",
        "upgrade_outgoing_qos",
        "per_listener_settings",
    ),
    *_strings(
        Scope.GLOBAL,
        "clientid_prefixes",
        "log_timestamp_format",
        "persistence_file",
        "persistence_location",
        "pid_file",
    ),
    # 2.0.11 rejects a second `user` line; later sources free the old value first.
    _spec("user", Scope.GLOBAL, Kind.STRING, Repeat.ONCE),
    _integer("autosave_interval", Scope.GLOBAL),
    _integer("log_facility", Scope.GLOBAL, 0, 7),
    _integer("max_inflight_bytes", Scope.GLOBAL),
    _integer("max_inflight_messages", Scope.GLOBAL, None, 65535),
    _integer("max_keepalive", Scope.GLOBAL, 10, 65535),
    _integer("max_packet_size", Scope.GLOBAL, 20, None),
    _integer("max_queued_bytes", Scope.GLOBAL),
    _integer("max_queued_messages", Scope.GLOBAL),
    # read with `atol()`, so the range is that of a 64-bit long
    _integer("memory_limit", Scope.GLOBAL, 0, None),
    # read as a signed int and compared unsigned, so negative values are rejected
    _integer("message_size_limit", Scope.GLOBAL, 0, _MQTT_MAX_PAYLOAD),
    _integer("sys_interval", Scope.GLOBAL, 0, 65535),
    _integer("websockets_log_level", Scope.GLOBAL),
    _integer("websockets_headers_size", Scope.GLOBAL, 0, 65535),
    _keyword(
        "log_dest",
        Scope.GLOBAL,
        "none",
        "syslog",
        "stdout",
        "stderr",
        "topic",
        "dlt",
        "file",
        repeat=Repeat.ADDS,
    ),
    _keyword(
        "log_type",
        Scope.GLOBAL,
        "none",
        "information",
        "notice",
        "warning",
        "error",
        "debug",
        "subscribe",
        "unsubscribe",
        "internal",
        "websockets",
        "all",
        repeat=Repeat.ADDS,
        empty_ok=True,
    ),
    _spec("persistent_client_expiration", Scope.GLOBAL, Kind.TOKENS, empty_ok=True),
    _spec("include_dir", Scope.GLOBAL, Kind.RAW_STRING, Repeat.ADDS),
    _spec("listener", Scope.GLOBAL, Kind.TOKENS, Repeat.ADDS),
    _spec("connection", Scope.GLOBAL, Kind.TOKENS, Repeat.ADDS),
    _spec("retry_interval", Scope.GLOBAL, Kind.IGNORED),
]

_DEFAULT_LISTENER = [
    _integer("port", Scope.DEFAULT_LISTENER, 1, 65535),
    _spec("bind_address", Scope.DEFAULT_LISTENER, Kind.STRING, Repeat.ONCE),
]

_LISTENER = [
    *_strings(
        Scope.LISTENER,
        "bind_interface",
        "cafile",
        "capath",
        "certfile",
        "keyfile",
        "ciphers",
        "ciphers_tls1.3",
        "crlfile",
        "dhparamfile",
        "http_dir",
        "psk_hint",
        "tls_engine",
        "tls_version",
        "mount_point",
        "tls_engine_kpass_sha1",
    ),
    # only `engine` changes anything; every other value means `pem`
    _spec("tls_keyform", Scope.LISTENER, Kind.STRING),
    *_booleans(
        Scope.LISTENER,
        "require_certificate",
        "use_identity_as_username",
        "use_subject_as_username",
        "use_username_as_clientid",
    ),
    _integer("max_connections", Scope.LISTENER, empty_ok=True),
    _integer("max_qos", Scope.LISTENER, 0, 2),
    _integer("max_topic_alias", Scope.LISTENER, 0, 65535),
    _keyword("protocol", Scope.LISTENER, "mqtt", "websockets", empty_ok=True),
    _keyword("socket_domain", Scope.LISTENER, "ipv4", "ipv6"),
]

_SECURITY = [
    *_strings(Scope.SECURITY, "acl_file", "password_file", "psk_file", "auto_id_prefix"),
    *_booleans(Scope.SECURITY, "allow_anonymous", "allow_zero_length_clientid"),
    # In 2.0 this marks the security options as used, although the value is broker-wide.
    _spec("check_retain_source", Scope.SECURITY, Kind.BOOLEAN),
    _spec("plugin", Scope.SECURITY, Kind.STRING, Repeat.ADDS),
]

_PLUGIN = [
    _spec("auth_plugin_deny_special_chars", Scope.PLUGIN, Kind.BOOLEAN),
]

_BRIDGE = [
    _spec("address", Scope.BRIDGE, Kind.TOKENS, Repeat.ONCE),
    *_strings(
        Scope.BRIDGE,
        "bridge_cafile",
        "bridge_capath",
        "bridge_certfile",
        "bridge_keyfile",
        "bridge_identity",
        "bridge_psk",
        "bridge_alpn",
        "bridge_bind_address",
        "bridge_tls_version",
        "remote_clientid",
        "local_clientid",
        "local_password",
        "local_username",
        "remote_password",
        "remote_username",
        "notification_topic",
    ),
    *_booleans(
        Scope.BRIDGE,
        "bridge_attempt_unsubscribe",
        "bridge_insecure",
        "bridge_require_ocsp",
        "bridge_outgoing_retain",
        "cleansession",
        "local_cleansession",
        "notifications",
        "notifications_local_only",
        "round_robin",
        "try_private",
    ),
    _integer("bridge_max_packet_size", Scope.BRIDGE),
    _integer("idle_timeout", Scope.BRIDGE),
    _integer("threshold", Scope.BRIDGE),
    _integer("keepalive_interval", Scope.BRIDGE, None, 65535),
    # the whole rest of the line must be one of the keywords, without extra spaces
    _spec(
        "bridge_protocol_version",
        Scope.BRIDGE,
        Kind.RAW_STRING,
        keywords=frozenset({"mqttv31", "mqttv311", "mqttv50"}),
    ),
    _spec("restart_timeout", Scope.BRIDGE, Kind.TOKENS),
    _keyword("start_type", Scope.BRIDGE, "automatic", "lazy", "once"),
    _spec("topic", Scope.BRIDGE, Kind.TOKENS, Repeat.ADDS),
]

_V21 = (2, 1)

# Read from the 2.1 development branch of `src/conf.c`.
# NOTE: some of these may have appeared after 2.1.0; none is in 2.0.
_ADDED_IN_2_1 = [
    _spec("global_plugin", Scope.GLOBAL, Kind.STRING, Repeat.ADDS, since=_V21),
    _spec("plugin_load", Scope.GLOBAL, Kind.TOKENS, Repeat.ADDS, since=_V21),
    _spec("plugin_use", Scope.LISTENER, Kind.STRING, Repeat.ADDS, since=_V21),
    _spec("accept_protocol_versions", Scope.LISTENER, Kind.TOKENS, since=_V21),
    _spec("listener_auto_id_prefix", Scope.LISTENER, Kind.STRING, Repeat.ONCE, since=_V21),
    _spec("websockets_origin", Scope.LISTENER, Kind.STRING, Repeat.ADDS, since=_V21),
    *_booleans(
        Scope.LISTENER,
        "listener_allow_anonymous",
        "disable_client_cert_date_checks",
        "proxy_protocol_v2_require_tls",
        since=_V21,
    ),
    _integer("enable_proxy_protocol", Scope.LISTENER, 1, 2, since=_V21),
    _integer("max_topic_alias_broker", Scope.LISTENER, 0, 65535, since=_V21),
    _spec("enable_control_api", Scope.GLOBAL, Kind.BOOLEAN, since=_V21),
    _integer("global_max_clients", Scope.GLOBAL, since=_V21),
    _integer("global_max_connections", Scope.GLOBAL, since=_V21),
    _integer("packet_buffer_size", Scope.GLOBAL, 0, 65535, since=_V21),
    _integer("retain_expiry_interval", Scope.GLOBAL, 1, None, since=_V21),
    *_strings(Scope.BRIDGE, "bridge_ciphers", "bridge_ciphers_tls1.3", since=_V21),
    _spec("bridge_tls_use_os_certs", Scope.BRIDGE, Kind.BOOLEAN, since=_V21),
    _integer("bridge_max_topic_alias", Scope.BRIDGE, 0, 65535, since=_V21),
    _integer("bridge_receive_maximum", Scope.BRIDGE, 1, 65535, since=_V21),
    _integer("bridge_session_expiry_interval", Scope.BRIDGE, 0, 2**32 - 1, since=_V21),
    _integer("bridge_tcp_user_timeout", Scope.BRIDGE, 0, None, since=_V21),
    _spec("bridge_tcp_keepalive", Scope.BRIDGE, Kind.TOKENS, since=_V21),
    _keyword("bridge_reload_type", Scope.BRIDGE, "lazy", "immediate", since=_V21),
]


def _build_table() -> dict[str, OptionSpec]:
    table: dict[str, OptionSpec] = {}
    groups = (_GLOBAL, _DEFAULT_LISTENER, _LISTENER, _SECURITY, _PLUGIN, _BRIDGE, _ADDED_IN_2_1)
    for group in groups:
        for spec in group:
            table[spec.name] = spec
    aliases = {
        "retained_persistence": "persistence",
        "maximum_qos": "max_qos",
        "auth_plugin": "plugin",
        "addresses": "address",
        "clientid": "remote_clientid",
        "password": "remote_password",
        "username": "remote_username",
    }
    for alias, target in aliases.items():
        table[alias] = _alias(table[target], alias)
    return table


OPTIONS: dict[str, OptionSpec] = _build_table()


def find_option(key: str, version: tuple[int, int]) -> OptionSpec | None:
    """Return the rules for option `key` in broker `version`, or None if it is unknown.

    `plugin_opt_<name>` and `auth_opt_<name>` keys return a `PLUGIN` scope entry named after
    their prefix.
    """
    for prefix in PLUGIN_OPTION_PREFIXES:
        if key.startswith(prefix):
            return OptionSpec(prefix, Scope.PLUGIN, Kind.RAW_STRING, Repeat.ADDS)
    spec = OPTIONS.get(key)
    if spec is None or spec.since > version:
        return None
    return spec


def canonical_name(spec: OptionSpec) -> str:
    """Return the name under which the broker stores `spec` (`auth_plugin` -> `plugin`)."""
    return spec.alias_of or spec.name


# Value readers that reproduce the C library calls the broker uses.

C_WHITESPACE = " \t\n\v\f\r"  # what C `isspace()` accepts in the C locale
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_TOPIC_HIERARCHY_LIMIT = 200  # TOPIC_HIERARCHY_LIMIT in the 2.0 broker
_TOPIC_MAX_BYTES = 65535


def _c_strtol_prefix(text: str, base: int) -> tuple[int | None, str]:
    """Read a number the way glibc `strtol()` does; return it (None if no digits) and the rest."""
    rest = text.lstrip(C_WHITESPACE)
    sign = 1
    if rest[:1] in ("+", "-"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if base == 0:
        if rest[:2].lower() == "0x" and rest[2:3] and rest[2] in "0123456789abcdefABCDEF":
            base, rest = 16, rest[2:]
        elif rest[:1] == "0":
            base = 8
        else:
            base = 10
    digits = set("0123456789abcdef"[:base] + "0123456789ABCDEF"[:base])
    length = 0
    while length < len(rest) and rest[length] in digits:
        length += 1
    if length == 0:
        return None, text
    value = sign * int(rest[:length], base)
    return max(_LONG_MIN, min(_LONG_MAX, value)), rest[length:]


def c_atol(text: str) -> int:
    """Return what glibc `atol()` gives for `text`: leading digits only, 0 if there are none."""
    value, _ = _c_strtol_prefix(text, 10)
    return value or 0


def c_atoi(text: str) -> int:
    """Return what glibc `atoi()` gives for `text`: `atol()` truncated to a 32-bit int."""
    value = c_atol(text) & 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


def c_strtol_strict(text: str) -> int | None:
    """Return `text` read as a whole C integer literal (decimal, 0x hex or 0 octal), or None.

    This is how 2.1 reads integer options: trailing characters are an error there.
    """
    value, rest = _c_strtol_prefix(text, 0)
    if value is None or rest:
        return None
    return value


def _topic_size_ok(topic: str) -> bool:
    return (
        len(topic.encode("utf-8", "surrogateescape")) <= _TOPIC_MAX_BYTES
        and topic.count("/") <= _TOPIC_HIERARCHY_LIMIT
    )


def is_publish_topic(topic: str) -> bool:
    """Return True if the broker accepts `topic` as a topic name (no `+` or `#` wildcard)."""
    return "+" not in topic and "#" not in topic and _topic_size_ok(topic)


def is_subscribe_topic(topic: str) -> bool:
    """Return True if the broker accepts `topic` as a topic filter.

    A `+` must fill a whole level, and a `#` must fill the last level.
    """
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if "+" in level and level != "+":
            return False
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return False
    return _topic_size_ok(topic)
