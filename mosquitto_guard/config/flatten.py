"""Write a whole broker config as one file that the broker reads the same way.

`flatten()` copies every option line of a `BrokerConfig` in reading order, byte for byte, and
drops comments and blank lines. Each `include_dir` line is replaced by the lines of the files it
includes, each file preceded by a `# <path>` comment, and plugin paths can be swapped for the
paths the launcher opens (for example `/proc/self/fd/7`).

The broker resets its current listener, bridge and plugin at the start of every file, and
restores those of the including file when an included file ends. A single flattened file
carries them on from line to line instead. `flatten()` follows both readings side by side and
raises `ConfigError` for the first line whose listener, bridge or plugin would differ.
Lines whose target does not depend on position, such as global options and, with
`per_listener_settings false`, security options and `plugin`, never raise. (Main-file lines that
the broker would apply through a stale pointer after an include never get here: `read_config`
rejects them.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mosquitto_guard.config.messages import display_path
from mosquitto_guard.config.model import BrokerConfig, Location, Option
from mosquitto_guard.config.options import (
    C_WHITESPACE,
    PLUGIN_PATH_OPTIONS,
    Scope,
    canonical_name,
    find_option,
)
from mosquitto_guard.config.reader import V2_0
from mosquitto_guard.errors import ConfigError

DEFAULT_LISTENER = "the default listener"
_REWRITABLE = PLUGIN_PATH_OPTIONS | {"tls_engine"}


@dataclass
class _Current:
    """The listener, bridge and plugin that option lines attach to at one point of reading.

    A listener is its `listener` Option, or `DEFAULT_LISTENER`, or None (2.1, none yet).
    """

    listener: Option | str | None
    bridge: Option | None = None
    plugin: Option | None = None


def flatten(config: BrokerConfig, plugin_paths: Mapping[Location, str]) -> bytes:
    """Return one config file that makes the broker behave as the files of `config` do.

    `plugin_paths` maps the location of a `plugin`, `auth_plugin`, `global_plugin` or
    `plugin_load` line, or of a `tls_engine` line (which also loads a file), to the path the
    flattened line should name instead. Raises `ConfigError` for a line whose meaning would
    change in a single file, and `ValueError` for a `plugin_paths` key that is not such a line
    or a path the broker would read differently.
    """
    _check_plugin_paths(config, plugin_paths)
    writer = _Flattener(config, plugin_paths)
    for option in config.options:
        writer.add(option)
    return b"".join(writer.lines)


def _check_plugin_paths(config: BrokerConfig, plugin_paths: Mapping[Location, str]) -> None:
    plugin_lines = {option.location for option in config.options if option.key in _REWRITABLE}
    for location, path in plugin_paths.items():
        if location not in plugin_lines:
            raise ValueError(f"{location} is not a plugin line of this config")
        if not path or path != path.strip(C_WHITESPACE) or any(c in path for c in "\0\r\n"):
            raise ValueError(
                f"plugin path {path!r} for {location} would not reach the broker unchanged: "
                "it must be non-empty, without line breaks, NUL bytes or surrounding spaces"
            )


class _Flattener:
    """State of one `flatten()` call: the broker's view and the flat file's view, side by side."""

    def __init__(self, config: BrokerConfig, plugin_paths: Mapping[Location, str]) -> None:
        self.config = config
        self.rules = V2_0 if config.version == V2_0 else (2, 1)
        self.plugin_paths = plugin_paths
        self.lines: list[bytes] = []
        self.broker = self._fresh()  # what the broker has current in the file being read
        self.flat = self._fresh()  # what the single flattened file has current
        self.saved_main: _Current | None = None  # the main file's view while inside an include
        self.main_file: tuple[Path, int] | None = None
        self.included: tuple[Location, Path, int] | None = None
        self.per_listener_settings = False
        self.kpass_line: Option | None = None
        self.header: Path | None = None  # the file to name before the next line written

    def _fresh(self) -> _Current:
        return _Current(DEFAULT_LISTENER if self.rules == V2_0 else None)

    def add(self, option: Option) -> None:
        self._follow_files(option)
        if option.key == "include_dir":
            return  # the included lines follow; 2.0 ignores include_dir in included files
        self._compare_and_advance(option)
        if self.header is not None:
            self.lines.append(f"# {display_path(self.header)}\n".encode())
            self.header = None
        self.lines.append(self._line(option))

    # File boundaries

    def _follow_files(self, option: Option) -> None:
        """Reset or restore the broker's view where the broker starts or leaves a file."""
        path, number = option.location.path, option.location.line
        if option.included_from is None:
            if self.included is not None and self.saved_main is not None:
                self.broker = self.saved_main
                self.included = None
                self.header = path
            previous = self.main_file
            if previous is None or previous[0] != path or number <= previous[1]:
                self.broker = self._fresh()
                self.header = path
            self.main_file = (path, number)
            return
        current = self.included
        if current is None or current[:2] != (option.included_from, path) or number <= current[2]:
            if current is None:
                self.saved_main = self.broker
            self.broker = self._fresh()
            self.header = path
        self.included = (option.included_from, path, number)

    # Targets

    def _compare_and_advance(self, option: Option) -> None:
        spec = find_option(option.key, self.rules)
        if spec is None:
            raise ValueError(f"{option.location}: {option.key!r} is not an option; read it first")
        name = canonical_name(spec)
        if name == "per_listener_settings":
            self._set_per_listener_settings(option)
        elif name == "listener":
            self.broker.listener = self.flat.listener = option
        elif name == "connection":
            self.broker.bridge = self.flat.bridge = option
        elif name in ("port", "bind_address"):
            if self.rules != V2_0:
                self.broker.listener = self.flat.listener = DEFAULT_LISTENER
        elif name == "plugin_use":
            self._same_listener(option)
            self.broker.plugin = self.flat.plugin = self._loaded_plugin(option)
        elif spec.scope is Scope.LISTENER:
            self._same_listener(option)
        elif spec.scope is Scope.SECURITY:
            if self.per_listener_settings and name != "check_retain_source":
                self._same_listener(option)
        elif spec.scope is Scope.BRIDGE:
            self._same_target(option, self.broker.bridge, self.flat.bridge, "bridge")
        elif spec.scope is Scope.PLUGIN:
            self._same_target(option, self.broker.plugin, self.flat.plugin, "plugin")
        if name in PLUGIN_PATH_OPTIONS:
            self.broker.plugin = self.flat.plugin = option
        if name == "tls_engine_kpass_sha1":
            self._one_kpass_line(option)

    def _set_per_listener_settings(self, option: Option) -> None:
        if self.rules != V2_0 and self.per_listener_settings:
            return
        self.per_listener_settings = bool(option.args) and option.args[0] in ("true", "1")

    def _same_listener(self, option: Option) -> None:
        broker = self.broker.listener or DEFAULT_LISTENER
        flat = self.flat.listener or DEFAULT_LISTENER
        self.broker.listener, self.flat.listener = broker, flat
        if broker is flat:
            return
        if broker is DEFAULT_LISTENER and isinstance(flat, Option):
            raise _error(
                option,
                f"{option.key} applies to the default listener because it comes before any "
                f"listener line in its file, but in one file it would apply to the listener "
                f"at {flat.location}",
                "move it after a listener line in its file, or into the main file",
            )
        self._same_target(option, broker, flat, "listener")

    def _same_target(
        self,
        option: Option,
        broker: Option | str | None,
        flat: Option | str | None,
        target_kind: str,
    ) -> None:
        if broker is flat:
            return
        raise _error(
            option,
            f"{option.key} applies to {_describe(broker, target_kind)} when the files are read "
            f"separately, but in one file it would apply to {_describe(flat, target_kind)}",
            f"move this line above the include_dir line, or into the file of its {target_kind}",
        )

    def _loaded_plugin(self, option: Option) -> Option | None:
        name = option.value.strip(C_WHITESPACE)
        for candidate in self.config.options:
            if candidate.key == "plugin_load" and candidate.args[:1] == (name,):
                return candidate
        return None

    def _one_kpass_line(self, option: Option) -> None:
        if self.rules != V2_0:
            return
        if self.kpass_line is not None:
            raise _error(
                option,
                "Mosquitto 2.0 rejects a second tls_engine_kpass_sha1 line in one file, and "
                f"this one would follow the line at {self.kpass_line.location}",
                "remove one of the tls_engine_kpass_sha1 lines",
            )
        self.kpass_line = option

    # Output

    def _line(self, option: Option) -> bytes:
        path = self.plugin_paths.get(option.location)
        if path is None or option.key not in _REWRITABLE:
            return option.raw.encode("utf-8") + b"\n"
        if option.key == "plugin_load":
            return f"plugin_load {option.args[0]} {path}\n".encode()
        return f"{option.key} {path}\n".encode()


def _describe(target: Option | str | None, target_kind: str) -> str:
    if isinstance(target, Option):
        return f"the {target_kind} at {target.location}"
    return target or f"no {target_kind}"


def _error(option: Option, reason: str, fix: str) -> ConfigError:
    return ConfigError(
        display_path(option.location.path), option.location.line, option.raw, reason, fix=fix
    )
