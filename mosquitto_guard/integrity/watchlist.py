"""List the files an integrity baseline watches, each with the reasons it is watched.

The list covers the broker executable and every library and plugin it loads, from the
inventory. It adds every config file read and the files the config names: password, ACL, PSK,
dynamic-security and TLS files. It also adds the host files that decide what the loader and
OpenSSL load, `/etc/hosts.allow` and `/etc/hosts.deny`, and the systemd unit with its
drop-ins. Last come the guard's own policy and trusted key files and the policy's
`[integrity] paths`.

Directories are walked: every file in a certificate directory (`capath`) and in each
include_dir, and the whole tree below a directory in `[integrity] paths`. Symlinks are
recorded, never followed into another tree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mosquitto_guard import units
from mosquitto_guard.config.model import BrokerConfig
from mosquitto_guard.config.options import (
    CERTIFICATE_DIRECTORY_OPTIONS,
    DYNAMIC_SECURITY_OPTION,
    DYNAMIC_SECURITY_PLUGIN,
    READ_FILE_OPTIONS,
)
from mosquitto_guard.config.reader import read_config
from mosquitto_guard.inventory.collect import collect_inventory
from mosquitto_guard.policy.model import Policy
from mosquitto_guard.units import SERVICE_UNIT_NAME

# Config options whose value is a file or directory the broker reads.
FILE_OPTIONS = (*READ_FILE_OPTIONS, *CERTIFICATE_DIRECTORY_OPTIONS)
TCP_WRAPPER_FILES = (Path("/etc/hosts.allow"), Path("/etc/hosts.deny"))
LD_SO_PRELOAD = Path("/etc/ld.so.preload")
DEFAULT_CONFIG_PATH = Path("/etc/mosquitto/mosquitto.conf")
# Inventory kinds that name a directory the loader searches, not a file it loads.
_DIRECTORY_KINDS = frozenset({"ld_library_path"})
_PLUGIN_KINDS = frozenset({"plugin", "auth_plugin", "global_plugin", "plugin_load"})


@dataclass(frozen=True)
class Targets:
    """The targets of a baseline: the broker's config files, its executable and its unit.

    A field left empty means "as the baseline recorded it"; `resolve` fills it from the
    baseline's targets, or from the defaults when the baseline has none.
    """

    configs: tuple[Path, ...] = ()
    broker: Path | None = None
    unit: Path | None = None
    # The directory relative paths in the config resolve against, as the broker resolves them
    # against its own working directory.
    cwd: Path | None = None

    def resolve(self, recorded: Targets | None) -> Targets:
        """Fill each empty field from `recorded`, then from the defaults."""
        from mosquitto_guard.launch.broker import DEFAULT_BROKER

        recorded = recorded or Targets()
        return Targets(
            configs=self.configs or recorded.configs or (DEFAULT_CONFIG_PATH,),
            broker=self.broker or recorded.broker or DEFAULT_BROKER,
            unit=self.unit or recorded.unit or default_unit(),
            cwd=self.cwd or recorded.cwd or Path.cwd(),
        )

    def watched(self, policy: Policy, *, exclude: Path | None = None) -> list[WatchedFile]:
        """Return the files to watch now (empty fields take the defaults); raises like
        `watched_files`. `exclude` is the baseline, whose own files are never watched."""
        targets = self.resolve(None)
        return watched_files(
            list(targets.configs),
            policy,
            targets.broker,
            targets.unit,
            exclude=exclude,
            cwd=targets.cwd,
        )

    def to_dict(self) -> dict[str, object]:
        """Return the targets as JSON-ready values."""
        return {
            "configs": [str(path) for path in self.configs],
            "broker": None if self.broker is None else str(self.broker),
            "unit": None if self.unit is None else str(self.unit),
            "cwd": None if self.cwd is None else str(self.cwd),
        }


def default_unit() -> Path | None:
    """Return the first installed mosquitto.service, or None."""
    for directory in units.UNIT_DIRECTORIES:
        candidate = directory / SERVICE_UNIT_NAME
        if candidate.exists():
            return candidate
    return None


class WatchedFile(NamedTuple):
    """A file the baseline covers, and why: one reason per source that named it.

    `keep_copy` is set for plugins, config files and the files the config names: `baseline`
    keeps a known-good copy of them for `restore`. Package files (the broker, its libraries)
    are restored by reinstalling the package instead. A named tuple, like `baseline.Entry`,
    because a watched tree creates one per file.
    """

    name: str
    reasons: tuple[str, ...]
    keep_copy: bool = False

    @property
    def path(self) -> Path:
        """The watched path as a `Path`; `name` is the same path as a string."""
        return Path(self.name)


class _WatchList:
    # Paths are kept as strings until the end: a tree of 20,000 files would otherwise build
    # and compare some 80,000 Path objects, several times the cost of the walk itself.
    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.reasons: dict[str, list[str]] = {}
        self.copies: set[str] = set()

    def add(self, path: Path | str, reason: str, *, copy: bool = False) -> None:
        # The broker resolves relative paths against its working directory.
        self.add_normalized(os.path.normpath(os.path.join(self.cwd, path)), reason, copy=copy)

    def add_normalized(self, path: str, reason: str, *, copy: bool = False) -> None:
        found = self.reasons.setdefault(path, [])
        if reason not in found:
            found.append(reason)
        if copy:
            self.copies.add(path)

    def result(self, skip: Callable[[str], bool] | None = None) -> list[WatchedFile]:
        return [
            WatchedFile(path, tuple(self.reasons[path]), path in self.copies)
            for path in sorted(self.reasons)
            if skip is None or not skip(path)
        ]


def watched_files(
    config_paths: Sequence[Path],
    policy: Policy,
    broker: Path | None,
    unit_path: Path | None,
    *,
    version: tuple[int, int] = (2, 0),
    cwd: Path | None = None,
    exclude: Path | None = None,
) -> list[WatchedFile]:
    """Return the files to watch, sorted by path, each once with every reason it is watched.

    `config_paths` are the broker's `-c` files; none means the built-in default config.
    `broker` is the executable, whose own libraries are then listed too. `unit_path` is the
    systemd unit; its drop-ins (`UNIT.d/*.conf`) are added when they exist. Raises
    `ConfigError` when the broker would reject the config and `HostError` when a config file
    or the broker cannot be read.
    """
    watch = _WatchList(cwd if cwd is not None else Path.cwd())
    config = read_config(config_paths, version=version) if config_paths else None
    _add_code(watch, config, broker)
    if config is not None:
        _add_config(watch, config)
    # Recorded even when absent: a preload list that appears loads code into every program.
    watch.add(LD_SO_PRELOAD, "host file that decides what the broker loads")
    for path in TCP_WRAPPER_FILES:
        watch.add(path, "TCP wrappers access rules")
    if unit_path is not None:
        _add_unit(watch, unit_path)
    _add_policy(watch, policy)
    return watch.result(_baseline_files(exclude) if exclude is not None else None)


def _baseline_files(baseline_path: Path) -> Callable[[str], bool]:
    """Return a test for the files a baseline keeps beside itself: its signatures, pending
    signatures, lock and temporary files, the known-good copies, evidence and restore log.

    They change with every baseline and restore, so watching them, when a watched tree
    contains the baseline, would report the baseline's own writes.
    """
    from mosquitto_guard.integrity.store import EVIDENCE_DIR, KNOWN_GOOD_DIR, RESTORE_LOG

    path = os.path.normpath(os.path.abspath(baseline_path))
    directory, name = os.path.split(path)
    exact = {path, os.path.join(directory, RESTORE_LOG)}
    prefixes = (path + ".", os.path.join(directory, "." + name + "."))
    trees = tuple(os.path.join(directory, sub) + "/" for sub in (KNOWN_GOOD_DIR, EVIDENCE_DIR))
    trees_exact = {tree[:-1] for tree in trees}

    def owned(candidate: str) -> bool:
        return (
            candidate in exact
            or candidate in trees_exact
            or candidate.startswith(prefixes)
            or candidate.startswith(trees)
        )

    return owned


def _add_code(watch: _WatchList, config: BrokerConfig | None, broker: Path | None) -> None:
    # Build ids are read when each file is recorded, so the inventory skips them.
    inventory = collect_inventory(
        config, dict(os.environ), cwd=watch.cwd, broker=broker, build_ids=False
    )
    if broker is not None:
        watch.add(broker, "broker executable")
    for item in inventory.items:
        if item.path is None or item.kind in _DIRECTORY_KINDS:
            continue
        copy = item.kind in _PLUGIN_KINDS
        watch.add(item.path, f"{item.kind} ({item.source})", copy=copy)
    for path in inventory.host_files:
        watch.add(path, "host file that decides what the broker loads")


def _add_config(watch: _WatchList, config: BrokerConfig) -> None:
    main_files = set(config.main_files)
    for path in config.files:
        reason = "main config file" if path in main_files else "included config file"
        watch.add(path, reason, copy=True)
    for option in config.find("include_dir"):
        reason = f"include_dir ({option.location})"
        watch.add(option.value.strip(), reason)
        _add_tree(watch, option.value.strip(), reason, recursive=False)
    for name in FILE_OPTIONS:
        for option in config.find(name):
            value = option.value.strip()
            if value:
                watch.add(value, f"{name} ({option.location})", copy=True)
    for name in CERTIFICATE_DIRECTORY_OPTIONS:
        for option in config.find(name):
            if option.value.strip():
                reason = f"{name} ({option.location})"
                _add_tree(watch, option.value.strip(), reason, recursive=False, copy=True)
    for plugin in config.plugins:
        stock = Path(plugin.path.strip()).name == DYNAMIC_SECURITY_PLUGIN
        for name, options in plugin.options.items():
            for option in options:
                value = option.value.strip()
                if stock and name == DYNAMIC_SECURITY_OPTION and value:
                    watch.add(value, f"dynamic security config ({option.location})", copy=True)
                elif value and os.path.isfile(os.path.join(watch.cwd, value)):
                    # Any plugin option that names a file: a renamed dynamic-security plugin,
                    # or another plugin's password or key file.
                    reason = f"plugin_opt_{name} ({option.location})"
                    watch.add(value, reason, copy=True)


def _add_unit(watch: _WatchList, unit_path: Path) -> None:
    """Add the unit, the same unit name in every systemd unit directory (a unit in /etc
    overrides the package's), and every drop-in directory and drop-in of that name.

    Paths that do not exist are recorded as missing, so a unit or drop-in created later is
    reported as added.
    """
    watch.add(unit_path, "systemd unit", copy=True)
    directories = dict.fromkeys([unit_path.parent, *units.UNIT_DIRECTORIES])
    for directory in directories:
        candidate = directory / unit_path.name
        if candidate != unit_path:
            watch.add(candidate, "systemd unit search path", copy=True)
        drop_in_dir = directory / f"{unit_path.name}.d"
        watch.add(drop_in_dir, "systemd drop-in directory")
        if drop_in_dir.is_dir():
            for drop_in in sorted(drop_in_dir.glob("*.conf")):
                watch.add(drop_in, "systemd drop-in", copy=True)


def _add_policy(watch: _WatchList, policy: Policy) -> None:
    watch.add(policy.path, "mosquitto-guard policy", copy=True)
    for trusted in policy.keys:
        # `source` is the key file's path, or `keys[N].key` for a key written in the policy.
        if trusted.source.startswith("/"):
            watch.add(trusted.source, f"trusted key {trusted.name!r}", copy=True)
    for path in policy.integrity.paths:
        watch.add(path, "policy [integrity] paths")
        _add_tree(watch, path, "policy [integrity] paths", recursive=True)


def _add_tree(
    watch: _WatchList, top: Path | str, reason: str, *, recursive: bool, copy: bool = False
) -> None:
    """Add every entry below the directory `top`; nothing when `top` is not a directory."""
    root = os.path.normpath(os.path.join(watch.cwd, top))
    if os.path.islink(root) or not os.path.isdir(root):
        return
    # os.walk joins names to a normalized root, so its paths need no normpath.
    for directory, subdirectories, names in os.walk(root):
        prefix = directory.rstrip("/") + "/"
        for name in names:
            watch.add_normalized(prefix + name, reason, copy=copy)
        for name in subdirectories:
            watch.add_normalized(prefix + name, reason)
        if not recursive:
            return
