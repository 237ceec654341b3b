"""What an audit reads: the config, the host's package, unit and processes, and the policy.

Each fact is read when a rule first needs it, and kept for the rest of the audit. A fact
that cannot be read raises `Skip` with the reason, so every rule that needs it is reported as
skipped, and a rule never gets half a fact.
"""

from __future__ import annotations

import gzip
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from mosquitto_guard.audit.model import Skip
from mosquitto_guard.config.model import BrokerConfig
from mosquitto_guard.errors import ConfigError, GuardError
from mosquitto_guard.inventory.model import Inventory
from mosquitto_guard.launch.broker import DEFAULT_BROKER
from mosquitto_guard.policy.model import Policy
from mosquitto_guard.units import UNIT_DIRECTORIES

CHANGELOG = Path("/usr/share/doc/mosquitto/changelog.Debian.gz")
CVE_PATTERN = re.compile(r"CVE-\d{4}-\d{4,}")


@dataclass(frozen=True)
class UnitLine:
    """One `Key=value` line of a unit file or drop-in."""

    key: str
    value: str
    path: Path
    line: int


@dataclass
class ServiceUnit:
    """A service unit with its drop-ins, in the order systemd reads them."""

    path: Path
    lines: list[UnitLine] = field(default_factory=list)

    def values(self, key: str) -> list[UnitLine]:
        """Return every line setting `key`, in reading order; an empty value resets the list."""
        kept: list[UnitLine] = []
        for line in self.lines:
            if line.key == key:
                kept = [] if not line.value else [*kept, line]
        return kept

    def last(self, key: str) -> UnitLine | None:
        found = self.values(key)
        return found[-1] if found else None


@dataclass(frozen=True)
class BrokerProcess:
    """A running broker: its pid, user id and capability sets (hex masks)."""

    pid: int
    uid: int
    effective_caps: int
    bounding_caps: int


@dataclass
class AuditOptions:
    """The targets of an audit. `host` adds the package, the unit and the running broker."""

    config_paths: list[Path]
    host: bool
    broker: Path = DEFAULT_BROKER
    policy_path: Path | None = None
    unit_path: Path | None = None
    package_version: str | None = None
    # Where host files such as /etc/ld.so.preload and /etc/hosts.allow are read; tests move it.
    root: Path = Path("/")

    def host_file(self, path: str) -> Path:
        """Return the absolute host path `path` below `root`."""
        return self.root / path.lstrip("/")


class AuditContext:
    """The facts rules read, each read once."""

    def __init__(self, options: AuditOptions) -> None:
        self.options = options
        self.config_error: ConfigError | None = None
        # Set when a config file exists but cannot be read: the audit cannot run.
        self.read_error: GuardError | None = None

    # The config.

    @cached_property
    def config(self) -> BrokerConfig:
        from mosquitto_guard.config.reader import read_config

        try:
            return read_config(self.options.config_paths, version=self.version[:2])
        except ConfigError as error:
            self.config_error = error
            where = f"{error.path}:{error.line}" if error.line else error.path
            raise Skip(f"the broker rejects the config at {where} (see SYNTAX-001)") from None
        except GuardError as error:
            self.read_error = error
            raise Skip(f"the config cannot be read: {error}") from None

    @cached_property
    def version(self) -> tuple[int, int, int]:
        """The broker's upstream version, from `mosquitto -h`; 2.0.0 when it cannot run."""
        from mosquitto_guard.launch.broker import broker_version

        try:
            return broker_version(self.options.broker)
        except GuardError:
            return (2, 0, 0)

    @cached_property
    def inventory(self) -> Inventory:
        from mosquitto_guard.inventory.collect import collect_inventory

        try:
            return collect_inventory(
                self.config, dict(os.environ), broker=self.options.broker, build_ids=False
            )
        except GuardError as error:
            raise Skip(f"the code the broker loads cannot be listed: {error}") from None

    @cached_property
    def policy(self) -> Policy:
        from mosquitto_guard.policy.model import load_policy

        if self.options.policy_path is None:
            raise Skip("no trust policy given (--policy)")
        try:
            return load_policy(self.options.policy_path)
        except GuardError as error:
            raise Skip(f"the policy cannot be read: {error}") from None

    @cached_property
    def broker_user(self) -> pwd.struct_passwd | None:
        """The account the broker drops to, or None when it does not exist."""
        user = self.config.last("user")
        name = user.value if user is not None else "mosquitto"
        try:
            return pwd.getpwnam(name)
        except KeyError:
            return None

    # The host.

    def require_host(self) -> None:
        if not self.options.host:
            raise Skip("the host is not audited: run without -c, or add --host")

    @cached_property
    def package_version(self) -> str:
        """The installed Debian package version of mosquitto, such as `2.0.11-1.2+deb12u2`."""
        if self.options.package_version is not None:
            return self.options.package_version
        self.require_host()
        dpkg = shutil.which("dpkg-query")
        if dpkg is None:
            raise Skip("dpkg-query not found: the package version cannot be read")
        result = subprocess.run(
            [dpkg, "-W", "-f", "${Version}", "mosquitto"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not result.stdout.strip():
            raise Skip("the mosquitto package is not installed")
        return result.stdout.strip()

    @cached_property
    def backported_cves(self) -> frozenset[str]:
        """The CVE ids that the installed package's Debian changelog names as fixed."""
        try:
            with gzip.open(CHANGELOG, "rt", encoding="utf-8", errors="replace") as handle:
                return frozenset(CVE_PATTERN.findall(handle.read()))
        except OSError:
            return frozenset()

    @cached_property
    def unit(self) -> ServiceUnit:
        path = self.options.unit_path
        if path is None:
            self.require_host()
            found = [d / "mosquitto.service" for d in UNIT_DIRECTORIES]
            path = next((p for p in found if p.exists()), None)
            if path is None:
                raise Skip("no mosquitto.service unit found")
        return read_unit(path)

    @cached_property
    def processes(self) -> list[BrokerProcess]:
        self.require_host()
        return running_brokers(self.options.broker)


def read_unit(path: Path) -> ServiceUnit:
    """Read a unit file and its drop-ins (`NAME.d/*.conf`, sorted by name)."""
    unit = ServiceUnit(path)
    drop_ins = sorted(Path(f"{path}.d").glob("*.conf")) if Path(f"{path}.d").is_dir() else []
    for file in [path, *drop_ins]:
        try:
            text = file.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            raise Skip(f"{file} cannot be read: {error.strerror}") from None
        for number, raw in enumerate(text.splitlines(), start=1):
            stripped = raw.strip()
            if not stripped or stripped.startswith(("#", ";", "[")) or "=" not in stripped:
                continue
            key, _, value = stripped.partition("=")
            unit.lines.append(UnitLine(key.strip(), value.strip(), file, number))
    return unit


def running_brokers(broker: Path) -> list[BrokerProcess]:
    """Return every process whose executable is `broker`."""
    target = os.path.realpath(broker)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.path.realpath(entry / "exe") != target:
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue  # gone, or not ours to read
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        found.append(
            BrokerProcess(
                pid=int(entry.name),
                uid=int(fields["Uid"].split()[1]),
                effective_caps=int(fields["CapEff"].strip(), 16),
                bounding_caps=int(fields["CapBnd"].strip(), 16),
            )
        )
    return found
