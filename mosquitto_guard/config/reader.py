"""Read Mosquitto config files into a `BrokerConfig`, the way the broker itself reads them.

The rules follow `config__read_file_core()` in Mosquitto 2.0 `src/conf.c` and were checked
against the Debian 12 build of the 2.0.11 broker:

1. A file is read line by line, each line ending at `\\n`. Trailing `\\r` and `\\n` characters
   are removed. A line is skipped if it is empty, if its first character is `#` or `\\r`, or if
   it contains only spaces. A `#` anywhere else starts no comment: `   # x` is the unknown option
   `#`.
2. Words are separated by spaces only. Spaces before the first word are skipped, but a tab is
   part of a word, so a line that starts with a tab names an unknown option.
3. The first word is the option name. Its value is the rest of the line after the name and one
   space (`Option.value`). String options take the whole value with leading and trailing
   whitespace removed, so a trailing `# comment` is part of it. Integers are read with C
   `atoi()`, so `12abc` is 12 and `abc` is 0, and only the range check can fail. Booleans must
   be `true`, `false`, `1` or `0`. Words after the first are ignored for integers, booleans and
   keywords.
4. Each file starts with the default listener, no bridge and no plugin as current (2.1: no
   listener). A `listener`, `connection` or plugin line becomes current for the rest of its
   file only, so an included file never continues the listener, bridge or plugin of the file
   that included it. Security options go to the global set, or with `per_listener_settings
   true` to the current listener. Setting `per_listener_settings true` after any security
   option is an error.
5. `include_dir` is only read in a main file: in an included file 2.0 ignores it and 2.1 rejects
   it. The directory's files whose names end in `.conf` (case-sensitive) and are longer than 5
   characters are read in place of the line, hidden files included, symlinks followed,
   subdirectories not searched. They are sorted case-insensitively, with an uppercase letter
   before the same letter in lowercase. A directory named `*.conf` is an error.
6. Each path given is read in turn into the same config, like repeated `-c` options. Relative
   paths resolve against the current working directory, as in the broker.
7. The broker stops at the first error, and so does `read_config`.

Stricter than the broker: a NUL byte or text that is not UTF-8 anywhere in a file is an error
here, where 2.0.11 cuts the line at a NUL and checks UTF-8 only in string values. Files that are
not regular files (FIFOs, devices) are rejected instead of read, where the broker would block on
a FIFO.

NOTE: the 2.1 rules cover the options added in 2.1, `global_plugin`, `plugin_load` and
`plugin_use`, the listener requirements, strict integers and repeatable file options. Other 2.1
changes, such as quoted bridge topics and the extra `restart_timeout` and TLS file checks, are
not modelled, and names that 2.0 resolves through DNS (`bind_address`) are never resolved here.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mosquitto_guard.config.files import (
    list_include_dir,
    load_lines,
    parse_line,
)
from mosquitto_guard.config.messages import (
    bad_keyword,
    empty_value,
    needs_listener,
    option_error,
    out_of_range,
    quoted,
    scope_name,
    shortened,
    unknown_option,
)
from mosquitto_guard.config.model import BrokerConfig, Listener, Location, Option, PluginEntry
from mosquitto_guard.config.options import (
    C_WHITESPACE,
    NEED_LISTENER_IN_2_1,
    REPLACED_IN_2_1,
    Kind,
    OptionSpec,
    Repeat,
    Scope,
    c_atoi,
    c_atol,
    c_strtol_strict,
    canonical_name,
    find_option,
    is_publish_topic,
    is_subscribe_topic,
)

V2_0 = (2, 0)
V2_1 = (2, 1)

_BRIDGE_X509 = frozenset({"bridge_cafile", "bridge_capath", "bridge_certfile", "bridge_keyfile"})
_BRIDGE_PSK = frozenset({"bridge_identity", "bridge_psk"})
_EXPIRATION_SECONDS = {"h": 3600, "d": 86400, "w": 86400 * 7, "m": 86400 * 30, "y": 86400 * 365}

# 2.0 turns the default listener into a real one (on all interfaces) when any of these is set
# on it: the condition list in `config__parse_args()`. The first set counts whatever the value;
# the dict gives the value the others must differ from.
_OPENS_DEFAULT_LISTENER = frozenset(
    {
        "bind_interface",
        "cafile",
        "capath",
        "certfile",
        "keyfile",
        "tls_engine",
        "tls_engine_kpass_sha1",
        "ciphers",
        "ciphers_tls1.3",
        "dhparamfile",
        "psk_hint",
        "crlfile",
        "mount_point",
        "bind_address",
        "port",
        "socket_domain",
        "password_file",
        "psk_file",
        "plugin",
    }
)
_DEFAULT_LISTENER_DEFAULTS: dict[str, object] = {
    "require_certificate": False,
    "use_identity_as_username": False,
    "use_subject_as_username": False,
    "use_username_as_clientid": False,
    "allow_zero_length_clientid": True,
    "max_qos": 2,
    "max_connections": -1,
    "protocol": "mqtt",
    "tls_keyform": "pem",
}


@dataclass(eq=False)
class _Store:
    """One place the broker stores option values: the global config, a listener, a bridge,
    a set of security options or a plugin. Maps each option name to its latest value."""

    values: dict[str, object] = field(default_factory=dict)
    plugin_count: int = 0  # plugins added to this set of security options


@dataclass(eq=False)
class _ListenerState:
    """A listener while the config is read; `model` is None for the default listener."""

    model: Listener | None
    store: _Store = field(default_factory=_Store)
    security: _Store = field(default_factory=_Store)


@dataclass(eq=False)
class _BridgeState:
    option: Option
    name: str
    store: _Store = field(default_factory=_Store)
    address_count: int = 0
    topic_count: int = 0


@dataclass(eq=False)
class _PluginState:
    kind: str
    path: str
    option: Option
    listener: _ListenerState | None
    name: str | None = None
    loaded: bool = True
    options: dict[str, list[Option]] = field(default_factory=dict)
    store: _Store = field(default_factory=_Store)


@dataclass(eq=False)
class _FileState:
    """State the broker keeps per file and resets at the start of each one."""

    level: int
    listener: _ListenerState | None
    bridge: _BridgeState | None = None
    plugin: _PluginState | None = None
    kpass_seen: bool = False
    # The broker points into arrays that grow when any file adds a listener, bridge or plugin.
    # These record the array sizes at the time each current entry was set.
    listener_count: int = 0
    bridge_count: int = 0
    plugin_store: _Store | None = None
    plugin_count: int = 0


_Handler = Callable[[_FileState, Option, OptionSpec], None]


def read_config(
    paths: Sequence[Path],
    *,
    version: tuple[int, int] = V2_0,
    skip: frozenset[tuple[Path, int]] = frozenset(),
) -> BrokerConfig:
    """Read the config files `paths` in turn, as `mosquitto -c P1 -c P2 ...` would.

    `version` is the broker's (major, minor) version. 2.0 gets the 2.0 rules and 2.1 or later
    the 2.1 rules. An empty `BrokerConfig.listeners` means the broker runs in local-only mode
    (127.0.0.1 and ::1, port 1883). Raises `ConfigError` for the first line or file the broker
    would reject, `HostError` if a file exists but cannot be read, and `ValueError` for a
    version before 2.0. Lines named in `skip` as (path, line number) are passed over, so that
    an audit can go on past a rejected line and find the next one.
    """
    version = (version[0], version[1])
    if version < V2_0:
        raise ValueError(
            f"Mosquitto {version[0]}.{version[1]} is not supported: only 2.0 and later are"
        )
    # NOTE: releases after 2.1 are read with the 2.1 rules until their changes are known.
    reader = _Reader(V2_0 if version == V2_0 else V2_1)
    reader.skip = skip
    main_files = [Path(path) for path in paths]
    for path in main_files:
        reader.read_main_file(path)
    reader.check_bridge_client_ids()
    config = reader.result(main_files)
    config.version = version
    return config


class _Reader:
    """State of one `read_config()` call: the config the broker builds while it reads."""

    def __init__(self, version: tuple[int, int]) -> None:
        self.version = version
        self.options: list[Option] = []
        self.files: list[Path] = []
        self.listeners: list[_ListenerState] = []
        self.default_listener = _ListenerState(model=None)
        self.default_listener_created = False  # 2.1 creates it when an option needs it
        self.bridges: list[_BridgeState] = []
        self.plugins: list[_PluginState] = []
        self.global_store = _Store()
        self.global_security = _Store()
        self.per_listener_settings = False
        self.security_used = False
        self.bridges_checked = 0
        self.skip: frozenset[tuple[Path, int]] = frozenset()

        # Options whose rules go beyond the generic string, number and keyword readers.
        self.handlers: dict[str, _Handler] = {
            "include_dir": self._include_dir,
            "listener": self._listener,
            "connection": self._connection,
            "address": self._address,
            "topic": self._topic,
            "restart_timeout": self._restart_timeout,
            "log_dest": self._log_dest,
            "persistent_client_expiration": self._expiration,
            "per_listener_settings": self._per_listener_settings,
            "plugin": self._plugin,
            "global_plugin": self._plugin,
            "plugin_load": self._plugin_load,
            "plugin_use": self._plugin_use,
            "plugin_opt_": self._plugin_option,
            "auth_opt_": self._plugin_option,
            "mount_point": self._mount_point,
            "tls_engine_kpass_sha1": self._kpass_sha1,
            "retry_interval": lambda state, option, spec: None,
            "bridge_tcp_keepalive": self._bridge_tcp_keepalive,
            "accept_protocol_versions": self._accept_protocol_versions,
        }

    # Files

    def read_main_file(self, path: Path) -> None:
        """Read one `-c` file, then run the bridge checks the broker runs after each one."""
        self._read_file(path, load_lines(path, None), level=0, included_from=None)
        self._check_new_bridges()

    def _read_file(
        self, path: Path, lines: list[bytes], level: int, included_from: Location | None
    ) -> None:
        self.files.append(path)
        first_listener = self.default_listener if self.version == V2_0 else None
        state = _FileState(level, first_listener)
        for number, line in enumerate(lines, start=1):
            if (path, number) in self.skip:
                continue
            option = parse_line(path, number, line, included_from)
            if option is not None:
                self.options.append(option)
                self._apply(state, option)

    def _include_dir(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        if state.level > 0:
            if self.version == V2_0:
                return  # 2.0 silently ignores include_dir outside the main file
            raise option_error(
                option,
                "include_dir is only valid in the main configuration file",
                "move this include_dir line into the main config file",
            )
        if not option.value:
            raise empty_value(option)
        for path in list_include_dir(option):
            lines = load_lines(path, option)
            self._read_file(path, lines, level=1, included_from=option.location)

    # Dispatch

    def _apply(self, state: _FileState, option: Option) -> None:
        spec = find_option(option.key, self.version)
        if spec is None:
            raise unknown_option(option)
        handler = self.handlers.get(canonical_name(spec))
        if handler is not None:
            handler(state, option, spec)
        else:
            self._apply_generic(state, option, spec)

    def _apply_generic(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        store = self._store_for(state, option, spec)
        name = canonical_name(spec)
        if name in ("cafile", "certfile") and "psk_hint" in store.values:
            raise option_error(
                option,
                "certificate and PSK encryption on the same listener",
                "use either psk_hint or cafile and certfile on one listener, not both",
            )
        if spec.kind is Kind.STRING:
            value: object = self._string(option, spec, store)
        elif spec.kind is Kind.RAW_STRING:
            value = self._raw_keyword(option, spec)
        else:
            value = self._word(option, spec)
            if value is None:
                return
        store.values[name] = value

    def _store_for(self, state: _FileState, option: Option, spec: OptionSpec) -> _Store:
        """Return where the broker stores `option`, raising if the line is out of place."""
        if spec.scope is Scope.GLOBAL:
            return self.global_store
        if spec.scope is Scope.DEFAULT_LISTENER:
            if self.version == V2_1:
                state.listener = self.default_listener
                self.default_listener_created = True
            return self.default_listener.store
        if spec.scope is Scope.LISTENER:
            return self._listener_for(state, option).store
        if spec.scope is Scope.SECURITY:
            if option.key == "check_retain_source" and self.version == V2_1:
                return self.global_store
            return self._security_for(state, option)
        if spec.scope is Scope.BRIDGE:
            return self._bridge_for(state, option, spec).store
        return self._plugin_for(state, option).store

    # The current listener, security options, bridge and plugin

    def _listener_for(self, state: _FileState, option: Option) -> _ListenerState:
        if state.listener is None:
            if option.key in NEED_LISTENER_IN_2_1:
                raise needs_listener(option)
            state.listener = self.default_listener
            self.default_listener_created = True
        if state.listener is not self.default_listener:
            self._check_not_moved(option, state.listener_count, len(self.listeners), "listener")
        return state.listener

    def _check_not_moved(self, option: Option, then: int, now: int, kind: str) -> None:
        """Reject a line whose current entry the broker reaches through a stale pointer.

        The broker keeps a pointer to the current listener, bridge or plugin in an array that
        it reallocates when an included file adds another one. Back in the main file, the
        pointer may be stale: 2.0.11 lost such settings or crashed.
        """
        if then != now:
            raise option_error(
                option,
                f"{option.key} follows an include_dir whose files add a {kind}, and the broker "
                f"then applies it through a stale pointer, so the setting can be lost or the "
                f"broker can crash",
                f"move this line above the include_dir line, next to its {kind}",
            )

    def _security_for(self, state: _FileState, option: Option) -> _Store:
        """Mark the security options as used and return the set `option` goes to."""
        if not self.per_listener_settings:
            self.security_used = True
            return self.global_security
        listener = self._listener_for_security(state, option)
        self.security_used = True
        return listener.security

    def _listener_for_security(self, state: _FileState, option: Option) -> _ListenerState:
        if state.listener is None:
            raise needs_listener(option)
        if state.listener is not self.default_listener:
            self._check_not_moved(option, state.listener_count, len(self.listeners), "listener")
        return state.listener

    def _bridge_for(self, state: _FileState, option: Option, spec: OptionSpec) -> _BridgeState:
        bridge = state.bridge
        if bridge is None:
            raise option_error(
                option,
                "bridge option before any connection line in this file",
                "put a `connection <name>` line before the bridge options, in the same file",
            )
        if self.version == V2_0:  # 2.1 keeps each bridge in its own allocation
            self._check_not_moved(option, state.bridge_count, len(self.bridges), "bridge")
        name = canonical_name(spec)
        used = bridge.store.values.keys()
        if (name in _BRIDGE_X509 and _BRIDGE_PSK & used) or (
            name in _BRIDGE_PSK and _BRIDGE_X509 & used
        ):
            raise option_error(
                option,
                "certificate and PSK encryption in the same bridge",
                "use either bridge_identity/bridge_psk or the bridge certificate options",
            )
        return bridge

    def _plugin_for(self, state: _FileState, option: Option) -> _PluginState:
        if state.plugin is None:
            raise option_error(
                option,
                f"{shortened(option.key)} without an earlier plugin line in the same file",
                "put the plugin line above its options, in the same file",
            )
        if self.version == V2_0 and state.plugin_store is not None:  # 2.1: own allocations
            self._check_not_moved(
                option, state.plugin_count, state.plugin_store.plugin_count, "plugin"
            )
        return state.plugin

    # Values

    def _string(self, option: Option, spec: OptionSpec, store: _Store) -> str:
        """Read a string value as `conf__parse_string()` does: trimmed, once per place."""
        if not option.value:
            raise empty_value(option)
        name = canonical_name(spec)
        replaced = self.version == V2_1 and name in REPLACED_IN_2_1
        if spec.repeat is Repeat.ONCE and not replaced and name in store.values:
            raise option_error(
                option,
                f"duplicate {option.key} value",
                f"keep only one {option.key} line per {scope_name(spec.scope)}",
            )
        return _trimmed_value(option)

    def _word(self, option: Option, spec: OptionSpec) -> object:
        """Read the first word as an integer, boolean or keyword; None where 2.0 allows none."""
        if not option.args:
            if spec.empty_ok and self.version == V2_0:
                return None
            raise empty_value(option)
        word = option.args[0]
        if spec.kind is Kind.BOOLEAN:
            return _boolean(option, word)
        if spec.kind is Kind.INTEGER:
            return self._integer(option, spec, word)
        return _keyword(option, spec, word)

    def _integer(self, option: Option, spec: OptionSpec, word: str) -> int:
        if self.version == V2_1:
            number = c_strtol_strict(word)
            if number is None or not -(2**31) <= number < 2**31:
                raise option_error(
                    option,
                    f"{option.key} value {quoted(word)} is not a number",
                    "write a whole number",
                )
        elif option.key == "memory_limit":
            number = c_atol(word)
        else:
            number = c_atoi(word)
        low = 0 if option.key == "max_keepalive" and self.version == V2_1 else spec.minimum
        if (low is not None and number < low) or (
            spec.maximum is not None and number > spec.maximum
        ):
            raise out_of_range(option, word, number, low, spec.maximum)
        if option.key == "max_connections" and number < 0:
            return -1
        return number

    def _raw_keyword(self, option: Option, spec: OptionSpec) -> str:
        """Read a value that must be one keyword exactly, spaces included."""
        if not option.value:
            raise empty_value(option)
        if option.value not in spec.keywords:
            raise bad_keyword(option, spec, option.value)
        return option.value

    # Listeners and bridges

    def _listener(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        if not option.args:
            raise empty_value(option)
        port = self._port_number(option, option.args[0])
        address = option.args[1] if len(option.args) > 1 else None
        if address is not None and address.startswith("#"):
            address = None
        if not 0 <= port <= 65535:
            raise option_error(
                option,
                f"invalid port {port}",
                "use a port from 1 to 65535, or 0 with a Unix socket path",
            )
        if port == 0 and address is None:
            raise option_error(
                option,
                "a listener with port 0 needs a Unix socket path",
                "write `listener 0 /path/to/socket`, or use a port from 1 to 65535",
            )
        listener = _ListenerState(model=Listener(port, address, option))
        self.listeners.append(listener)
        state.listener = listener
        state.listener_count = len(self.listeners)

    def _port_number(self, option: Option, word: str) -> int:
        if self.version == V2_0:
            return c_atoi(word)
        number = c_strtol_strict(word)
        if number is None:
            raise option_error(
                option, f"listener port {quoted(word)} is not a number", "write a port number"
            )
        return number

    def _connection(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        if not option.args:
            raise empty_value(option)
        name = option.args[0]
        for bridge in self.bridges:
            if bridge.name == name:
                raise option_error(
                    option,
                    f"duplicate bridge name {quoted(name)}",
                    f"rename one bridge; the first is at {bridge.option.location}",
                )
        state.bridge = _BridgeState(option, name)
        self.bridges.append(state.bridge)
        state.bridge_count = len(self.bridges)

    def _address(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        bridge = self._bridge_for(state, option, spec)
        if bridge.address_count:
            raise option_error(
                option,
                "second address line in the same bridge",
                "list every address of the bridge on one address line",
            )
        addresses = []
        for word in option.args:
            if word.startswith("#"):
                break
            addresses.append(word)
        for address in addresses:
            _, colon, port_text = address.rpartition(":")
            port = c_atoi(port_text) if colon else 1883
            if not 1 <= port <= 65535:
                raise option_error(
                    option, f"invalid bridge port {port}", "use a port from 1 to 65535"
                )
        if not addresses:
            raise empty_value(option)
        bridge.address_count = len(addresses)

    def _topic(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        bridge = self._bridge_for(state, option, spec)
        words = list(option.args)
        if not words:
            raise empty_value(option)
        topic = words[0]
        local_prefix = remote_prefix = None
        if len(words) > 1 and words[1].lower() not in ("out", "in", "both"):
            raise option_error(
                option, f"invalid bridge topic direction {quoted(words[1])}", "use out, in or both"
            )
        if len(words) > 2:
            qos_word = words[2]
            if (c_atoi(qos_word) & 0xFF) > 2:
                raise option_error(
                    option, f"invalid bridge QoS {quoted(qos_word)}", "use QoS 0, 1 or 2"
                )
            if not qos_word.startswith("#") and len(words) > 3:
                local_prefix = _prefix_word(words[3])
                if not words[3].startswith("#") and len(words) > 4:
                    remote_prefix = _prefix_word(words[4])
        _check_topic_remap(option, topic, local_prefix, remote_prefix)
        bridge.topic_count += 1

    def _restart_timeout(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        self._bridge_for(state, option, spec)
        if not option.args:
            raise empty_value(option)
        base = max(1, c_atoi(option.args[0]))
        if len(option.args) > 1 and c_atoi(option.args[1]) < base:
            raise option_error(
                option,
                "restart_timeout cap is lower than its base",
                "write `restart_timeout <base> <cap>` with cap >= base",
            )

    def _check_new_bridges(self) -> None:
        """Check bridges as `config__read()` does after each main file."""
        for bridge in self.bridges[self.bridges_checked :]:
            values = bridge.store.values
            problems = [
                (bridge.address_count == 0, "has no address line", "add `address <host>[:port]`"),
                (bridge.topic_count == 0, "has no topic line", "add a `topic` line"),
                (
                    "bridge_psk" in values and "bridge_identity" not in values,
                    "has bridge_psk without bridge_identity",
                    "add bridge_identity",
                ),
                (
                    "bridge_identity" in values and "bridge_psk" not in values,
                    "has bridge_identity without bridge_psk",
                    "add bridge_psk",
                ),
            ]
            for failed, reason, fix in problems:
                if failed:
                    raise option_error(bridge.option, f"bridge {quoted(bridge.name)} {reason}", fix)
        self.bridges_checked = len(self.bridges)

    def check_bridge_client_ids(self) -> None:
        """Check that local client ids are unique, as `config__check()` does at start-up."""
        seen: dict[str, _BridgeState] = {}
        hostname = socket.gethostname()
        for bridge in self.bridges:
            remote = bridge.store.values.get("remote_clientid", f"{hostname}.{bridge.name}")
            local = str(bridge.store.values.get("local_clientid", f"local.{remote}"))
            if local in seen:
                raise option_error(
                    bridge.option,
                    f"bridge local_clientid {quoted(local)} is not unique",
                    f"set a different local_clientid here or at {seen[local].option.location}",
                )
            seen[local] = bridge

    # Options with their own value rules

    def _log_dest(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        destination = self._word(option, spec)
        if destination != "file":
            return
        if "log_dest file" in self.global_store.values:
            raise option_error(
                option, "second `log_dest file` line", "keep one `log_dest file` line"
            )
        first = option.value.lstrip(" ")
        path = first[len("file") + 1 :].lstrip(" \t")
        if not path:
            raise empty_value(option)
        self.global_store.values["log_dest file"] = path

    def _expiration(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        if not option.args:
            if self.version == V2_0:
                return
            raise empty_value(option)
        word = option.args[0]
        units = dict(_EXPIRATION_SECONDS)
        if self.version == V2_1:
            units["s"] = 1
        if word[-1] not in units or c_atoi(word[:-1]) * units[word[-1]] <= 0:
            raise option_error(
                option,
                f"invalid persistent_client_expiration {quoted(word)}",
                "write a positive number followed by h, d, w, m or y, such as 14d",
            )

    def _per_listener_settings(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        if self.version == V2_1 and self.per_listener_settings:
            return  # 2.1 ignores the option once it is true
        value = self._word(option, spec)
        if value is True and self.security_used:
            raise option_error(
                option,
                "per_listener_settings must be set before any other security option",
                "move `per_listener_settings true` to the top of the main config file",
            )
        self.per_listener_settings = bool(value)

    def _mount_point(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        if self.version == V2_0 and not self.listeners:
            raise option_error(
                option,
                "mount_point before any listener line",
                "put mount_point after the listener line it belongs to",
            )
        store = self._listener_for(state, option).store
        value = self._string(option, spec, store)
        if not is_publish_topic(value):
            raise option_error(
                option,
                f"invalid mount_point {quoted(value)}",
                "remove the + and # wildcards from the mount point",
            )
        store.values["mount_point"] = value

    def _kpass_sha1(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        store = self._listener_for(state, option).store
        if not option.value:
            raise empty_value(option)
        if self.version == V2_0 and state.kpass_seen:
            # 2.0 keeps a stale pointer after the first use, so a second line in the same file
            # is reported as a duplicate whatever listener it belongs to.
            raise option_error(
                option,
                "second tls_engine_kpass_sha1 line in the same file",
                "put each listener's tls_engine_kpass_sha1 in a separate file",
            )
        value = option.value.strip(C_WHITESPACE)
        if not value:
            raise empty_value(option)
        if len(value) != 40 or any(char not in "0123456789abcdefABCDEF" for char in value):
            raise option_error(
                option,
                "tls_engine_kpass_sha1 is not a SHA-1 digest",
                "write the 40 hexadecimal digits of the SHA-1 digest",
            )
        state.kpass_seen = True
        store.values["tls_engine_kpass_sha1"] = value

    def _bridge_tcp_keepalive(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        self._bridge_for(state, option, spec)
        if len(option.args) < 3:
            raise empty_value(option)
        for word in option.args[:3]:
            number = c_strtol_strict(word)
            if number is None or number <= 0:
                raise option_error(
                    option,
                    f"invalid TCP keepalive value {quoted(word)}",
                    "write `bridge_tcp_keepalive <idle> <interval> <count>`, all above 0",
                )

    def _accept_protocol_versions(
        self, state: _FileState, option: Option, spec: OptionSpec
    ) -> None:
        listener = self._listener_for(state, option)
        if listener is self.default_listener:
            raise needs_listener(option)
        if not option.value.replace(",", " ").replace("\t", " ").split():
            raise empty_value(option)

    # Plugins

    def _plugin(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        listener: _ListenerState | None = None
        if option.key == "global_plugin":
            self.security_used = True
            security = self.global_security
        else:
            security = self._security_for(state, option)
            if security is not self.global_security:
                listener = state.listener
        if not option.value:
            raise empty_value(option)
        path = option.value if self.version == V2_1 else _trimmed_value(option)
        plugin = _PluginState(option.key, path, option, listener)
        self.plugins.append(plugin)
        security.plugin_count += 1
        state.plugin = plugin
        state.plugin_store = security
        state.plugin_count = security.plugin_count
        if listener is not None:
            listener.security.values["plugin"] = path

    def _plugin_load(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        if not option.args:
            raise empty_value(option)
        name = option.args[0]
        start = option.value.index(name) + len(name)
        path = option.value[start + 1 :] if start < len(option.value) else ""
        if any(plugin.name == name for plugin in self.plugins):
            raise option_error(
                option,
                f"duplicate plugin name {quoted(name)}",
                "give each plugin_load a unique name",
            )
        if not path:
            raise option_error(
                option, f"plugin {quoted(name)} has no path", "write `plugin_load <name> <path>`"
            )
        plugin = _PluginState(option.key, path, option, None, name=name, loaded=False)
        self.plugins.append(plugin)
        state.plugin = plugin
        state.plugin_store = None

    def _plugin_use(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        listener = self._listener_for(state, option)
        if listener is self.default_listener:
            raise needs_listener(option)
        name = self._string(option, spec, _Store())
        for plugin in self.plugins:
            if plugin.name == name:
                # NOTE: PluginEntry has room for one listener, so a plugin used by several
                # listeners records the first.
                if not plugin.loaded:
                    plugin.listener = listener
                plugin.loaded = True
                state.plugin = plugin
                state.plugin_store = None
                return
        raise option_error(
            option,
            f"plugin {quoted(name)} is not loaded before this line",
            f"add `plugin_load {name} <path>` above this line",
        )

    def _plugin_option(self, state: _FileState, option: Option, spec: OptionSpec) -> None:
        plugin = self._plugin_for(state, option)
        key = option.key[len(spec.name) :]
        if len(key) < 3:
            raise option_error(
                option,
                f"plugin option name {quoted(key)} is shorter than 3 characters",
                "use a key of 3 or more characters; the broker rejects shorter ones",
            )
        if not option.value.lstrip(" \t"):
            raise empty_value(option)
        plugin.options.setdefault(key, []).append(option)

    # Result

    def result(self, main_files: list[Path]) -> BrokerConfig:
        listener_models = {id(state): state.model for state in self.listeners}
        default = self._default_listener_model()
        if default is not None:
            listener_models[id(self.default_listener)] = default
        plugins = [
            PluginEntry(
                kind=plugin.kind,
                path=plugin.path,
                option=plugin.option,
                listener=listener_models.get(id(plugin.listener)) if plugin.listener else None,
                options=plugin.options,
                name=plugin.name,
                loaded=plugin.loaded,
            )
            for plugin in self.plugins
        ]
        listeners = [state.model for state in self.listeners if state.model is not None]
        if default is not None:
            listeners.append(default)
        return BrokerConfig(
            main_files=main_files,
            files=self.files,
            options=self.options,
            listeners=listeners,
            plugins=plugins,
            per_listener_settings=self.per_listener_settings,
            version=self.version,
        )

    def _default_listener_model(self) -> Listener | None:
        """Return the default listener if the broker opens it, else None."""
        # The default listener's security options are only set while per_listener_settings
        # is true, and the broker checks them whatever its final value.
        values = {**self.default_listener.store.values, **self.default_listener.security.values}
        if "tls_keyform" in values:
            values["tls_keyform"] = "engine" if values["tls_keyform"] == "engine" else "pem"
        opened = any(name in values for name in _OPENS_DEFAULT_LISTENER) or any(
            name in values and values[name] != default
            for name, default in _DEFAULT_LISTENER_DEFAULTS.items()
        )
        if self.version == V2_1:
            opened = self.default_listener_created
        if not opened:
            return None
        port = values.get("port", 1883)
        address = values.get("bind_address")
        return Listener(
            int(port) if isinstance(port, int) else 1883,
            address if isinstance(address, str) else None,
            None,
        )


# Value helpers


def _boolean(option: Option, word: str) -> bool:
    if word in ("true", "1"):
        return True
    if word in ("false", "0"):
        return False
    raise option_error(
        option,
        f"invalid {option.key} value {quoted(word)}",
        "write true or false (lowercase), or 1 or 0",
    )


def _keyword(option: Option, spec: OptionSpec, word: str) -> str:
    if option.key == "start_type" and word == "manual":
        raise option_error(
            option, "start_type manual is not supported", "use automatic, lazy or once"
        )
    if word not in spec.keywords:
        raise bad_keyword(option, spec, word)
    return word


def _trimmed_value(option: Option) -> str:
    """Return the value with surrounding whitespace removed, as `conf__parse_string()` does."""
    value = option.value.strip(C_WHITESPACE)
    if not value:
        raise empty_value(option)
    if len(value.encode("utf-8")) > 65535:
        raise option_error(
            option,
            f"{shortened(option.key)} value is longer than 65535 bytes",
            "shorten the value",
        )
    return value


def _prefix_word(word: str) -> str | None:
    return None if word == '""' or word.startswith("#") else word


def _check_topic_remap(
    option: Option, topic: str, local_prefix: str | None, remote_prefix: str | None
) -> None:
    """Check a bridge topic's prefixes as `bridge__add_topic()` does."""
    for side, prefix in (("local", local_prefix), ("remote", remote_prefix)):
        if prefix is not None and not is_publish_topic(prefix):
            raise option_error(
                option,
                f"invalid bridge topic {side} prefix {quoted(prefix)}",
                "remove the + and # wildcards from the prefix",
            )
    pattern = None if topic == '""' else topic
    if pattern is None and (local_prefix is None or remote_prefix is None):
        raise option_error(
            option,
            'a bridge topic of "" needs both a local and a remote prefix',
            'write `topic "" <direction> <qos> <local-prefix> <remote-prefix>`',
        )
    for prefix in (local_prefix, remote_prefix):
        combined = None if prefix is None else prefix + (pattern or "")
        if combined is not None and not is_subscribe_topic(combined):
            raise option_error(
                option,
                f"invalid bridge topic {quoted(combined)} after adding the prefix",
                "make the prefix end in / and keep wildcards as whole topic levels",
            )
