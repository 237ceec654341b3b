"""The parsed form of a Mosquitto configuration, as the broker itself would see it.

Every option keeps the file and line it came from, so that audits and rejections can point at
the exact place. `BrokerConfig.options` lists the lines in the order the broker reads them:
the main file, with each `include_dir` expanded where it appears.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Location:
    """A line in a config file. `line` counts from 1."""

    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Option:
    """One config line that sets an option.

    `value` is everything after the option name and the single space that follows it, exactly
    as the broker takes string values: a trailing `# comment` and trailing spaces are kept.
    `args` is the value split on spaces, as the broker splits numeric and keyword arguments.
    `raw` is the line as written, without its line break.
    `included_from` is the `include_dir` line that brought the file in, or None for a line of a
    main (`-c`) file.
    """

    key: str
    value: str
    args: tuple[str, ...]
    location: Location
    raw: str
    included_from: Location | None = None


@dataclass(frozen=True)
class Listener:
    """A `listener` line, or the broker's default listener (`option is None`)."""

    port: int
    address: str | None
    option: Option | None


@dataclass(frozen=True)
class PluginEntry:
    """A line that makes the broker `dlopen` a file.

    `kind` is the option that named it: `plugin`, `auth_plugin`, `global_plugin` or
    `plugin_load`. `path` is the value exactly as the broker passes it to `dlopen`.
    `listener` is the listener the plugin attaches to when `per_listener_settings` is true
    (None for a global plugin). `options` maps each `plugin_opt_`/`auth_opt_` key, without its
    prefix, to the options that carry it, in file order. `loaded` is False for a
    `plugin_load` that no `plugin_use` selects.
    """

    kind: str
    path: str
    option: Option
    listener: Listener | None
    options: dict[str, list[Option]] = field(default_factory=dict)
    name: str | None = None
    loaded: bool = True


@dataclass
class BrokerConfig:
    """A whole configuration: every file read, and every option in reading order."""

    main_files: list[Path]
    files: list[Path]
    options: list[Option]
    listeners: list[Listener]
    plugins: list[PluginEntry]
    per_listener_settings: bool
    version: tuple[int, int]

    def find(self, key: str) -> list[Option]:
        """Return every option named `key`, in reading order."""
        return [option for option in self.options if option.key == key]

    def last(self, key: str) -> Option | None:
        """Return the option named `key` that the broker keeps (the last one), or None."""
        found = self.find(key)
        return found[-1] if found else None
