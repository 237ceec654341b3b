"""Find the name-service (NSS) modules the broker loads while it looks up accounts and hosts.

Started as root, Mosquitto calls `getpwnam(user)` and `initgroups()` before it drops
privileges. glibc loads `libnss_<service>.so.2` for each service of `/etc/nsswitch.conf` that
it consults for the `passwd` and `group` databases (`initgroups` when that line exists).
`initgroups()` consults every group service, while `getpwnam()` stops at the first service that
finds the user. Listing every service of both databases can therefore list a module that a
lookup answered by `files` never loads. Host names of bridges and listeners are resolved through the
`hosts` database.

Since glibc 2.34 the `files` and `dns` services are built into libc. On Debian 12 (glibc 2.36)
`libnss_files.so.2` and `libnss_dns.so.2` still exist, but only as 14 KB stubs that define no
function, while `libc.so.6` itself exports `_nss_files_getpwnam_r` and
`_nss_dns_gethostbyname4_r`. Those two services therefore load no file.

The parser follows glibc's `nss/nss_database.c`. A `#` starts a comment anywhere. A line is a
database name, then spaces or colons, then services, and `[STATUS=ACTION]` groups between
them are not services. A database named again replaces the earlier line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

BUILTIN_SERVICES = frozenset({"files", "dns"})
ACCOUNT_DATABASES = ("passwd", "group", "initgroups")
_STATUS = re.compile(
    r"!?\s*(SUCCESS|NOTFOUND|UNAVAIL|TRYAGAIN)\s*=\s*(RETURN|CONTINUE|MERGE)", re.I
)


@dataclass(frozen=True)
class NssLine:
    """The services of one database, and the line of `nsswitch.conf` that set them."""

    database: str
    services: tuple[str, ...]
    line: int
    problem: str | None = None


@dataclass(frozen=True)
class NssModule:
    """A module file glibc loads for `service`, and the databases that use it."""

    service: str
    file_name: str
    databases: tuple[str, ...]
    source: str


def parse_nsswitch(text: str) -> dict[str, NssLine]:
    """Parse `nsswitch.conf` text into the line each database uses."""
    databases: dict[str, NssLine] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        match = re.match(r"([^\s:]+)[\s:]*(.*)", line)
        if not match or not match.group(2):
            continue
        services, problem = _parse_services(match.group(2))
        databases[match.group(1)] = NssLine(match.group(1), tuple(services), number, problem)
    return databases


def _parse_services(text: str) -> tuple[list[str], str | None]:
    services: list[str] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return services, None
        if text[position] == "[":
            end = text.find("]", position)
            group = text[position + 1 : end] if end >= 0 else ""
            if end < 0 or not _valid_actions(group):
                # glibc rejects the whole line here; the services read so far are kept so
                # that a module is never left out.
                return services, f"invalid action group {text[position:]!r}"
            position = end + 1
            continue
        start = position
        while position < len(text) and not text[position].isspace() and text[position] != "[":
            position += 1
        services.append(text[start:position])


def _valid_actions(group: str) -> bool:
    remaining = group.strip()
    while remaining:
        match = _STATUS.match(remaining)
        if not match:
            return False
        remaining = remaining[match.end() :].strip()
    return bool(group.strip())


def nss_modules(path: Path, databases: tuple[str, ...]) -> tuple[list[NssModule], list[str]]:
    """Return the modules glibc loads for `databases` under the nsswitch.conf at `path`.

    A missing file means glibc's defaults, which use only built-in services. Returns the
    modules in the order first named, and warnings about lines glibc would reject.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return [], []
    lines = parse_nsswitch(text)
    found: dict[str, tuple[list[str], str]] = {}
    warnings: list[str] = []
    for database in databases:
        entry = lines.get(database)
        if entry is None:
            continue
        if entry.problem is not None:
            warnings.append(f"{path}:{entry.line}: {entry.problem}")
        for service in entry.services:
            if service in BUILTIN_SERVICES:
                continue
            users, _ = found.setdefault(service, ([], f"{path}:{entry.line}"))
            if database not in users:
                users.append(database)
            if service == "compat":
                warnings.append(
                    f"{path}:{entry.line}: the compat service can load further modules "
                    f"({database}_compat, nis by default) for +/- entries; they are not listed"
                )
    modules = [
        NssModule(service, f"libnss_{service}.so.2", tuple(users), source)
        for service, (users, source) in found.items()
    ]
    return modules, warnings
