"""Audit rules: plugins and other code the broker loads.

These rules rely on three facts checked against Debian 12's Mosquitto 2.0.11 package. The
broker makes no ownership, permission or signature check on plugin files. A `tls_engine` value
with a slash makes OpenSSL `dlopen` that file when the listener starts. OpenSSL config modules
load as root, before the broker reads its own config.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from mosquitto_guard.audit.context import AuditContext
from mosquitto_guard.audit.model import Finding, Rule, Severity, Skip
from mosquitto_guard.config.model import PluginEntry
from mosquitto_guard.errors import VerificationError
from mosquitto_guard.inventory.elf import ElfError
from mosquitto_guard.inventory.fastelf import read_elf_fast
from mosquitto_guard.inventory.model import CodeItem
from mosquitto_guard.launch.paths import check_path, is_inside
from mosquitto_guard.manifest.verify import check_against_manifest, find_manifest, index_manifests

PLUGIN_KINDS = ("plugin", "auth_plugin", "global_plugin", "plugin_load")
# The daemon name the Debian build passes to libwrap's hosts_access().
LIBWRAP_DAEMON = "mosquitto"
# The hosts_options(5) options that run a shell command. Each takes the rest of its field.
LIBWRAP_COMMANDS = ("spawn", "twist")


# Helpers shared by the rules.


def _loaded_files(context: AuditContext, kinds: tuple[str, ...]) -> list[tuple[CodeItem, Path]]:
    """Return the inventory items of `kinds` that the broker opens from a file, with the file."""
    return [
        (item, item.path)
        for item in context.inventory.items
        if item.kind in kinds and item.loaded and item.path is not None
    ]


def _admin_files(context: AuditContext) -> list[tuple[CodeItem, Path]]:
    """Return the plugin and `tls_engine` files the broker loads, as the config names them."""
    return _loaded_files(context, (*PLUGIN_KINDS, "tls_engine"))


def _finding_at(
    rule: Rule, item: CodeItem, evidence: str, fix: str, severity: Severity | None = None
) -> Finding:
    """Return a finding of `rule` at the config line of `item`, or at its source."""
    if item.option is not None:
        return rule.finding(evidence, fix, at=item.option.location, severity=severity)
    path, line = _split_source(item.source)
    return rule.finding(evidence, fix, at=path, line=line, severity=severity)


def _split_source(source: str) -> tuple[str, int | None]:
    """Split an inventory source such as `/etc/ssl/openssl.cnf:12` into file and line."""
    path, separator, line = source.rpartition(":")
    if separator and line.isdigit():
        return path, int(line)
    return source, None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plugin_entry(context: AuditContext, item: CodeItem) -> PluginEntry | None:
    for entry in context.config.plugins:
        if entry.option == item.option:
            return entry
    return None


# PLUGIN-001


def _outside_plugin_dirs(context: AuditContext) -> Iterator[Finding]:
    policy = context.policy
    allowed = list(policy.plugin_dirs)
    shown_dirs = ", ".join(str(directory) for directory in allowed) or "none"
    for item, path in _admin_files(context):
        real = Path(os.path.realpath(path))
        if is_inside(path, allowed) and is_inside(real, allowed):
            continue
        described = str(path) if real == path else f"{path} (really {real})"
        yield _finding_at(
            OUTSIDE_DIRS,
            item,
            f"{item.kind} {described} is outside the policy's plugin_dirs ({shown_dirs})",
            f"install the file into one of them, or add its directory to plugin_dirs in "
            f"{policy.path}",
        )


# PLUGIN-003


def _unsafe_plugin_path(context: AuditContext) -> Iterator[Finding]:
    for item, path in _admin_files(context):
        if not path.exists():
            continue  # the broker stops at a missing plugin, so nothing can be swapped in
        # Symlinks are followed, and each symlink and each directory of its target is checked.
        # NOTE: only owners and mode bits are read, so a POSIX ACL granting write is missed.
        for problem in check_path(Path(os.path.abspath(path)), allow_symlinks=True):
            evidence = f"{item.kind} {path}: {problem.component} {problem.reason}"
            evidence += _broker_user_note(context, problem.component)
            yield _finding_at(UNSAFE_PATH, item, evidence, problem.fix)


def _broker_user_note(context: AuditContext, component: Path) -> str:
    """Return a note when the broker's own user can write `component`, or an empty string."""
    user = context.broker_user
    if user is None or user.pw_uid == 0:
        return ""
    try:
        info = os.lstat(component)
    except OSError:
        return ""
    if info.st_uid == user.pw_uid:
        return f"; its owner is the broker's user {user.pw_name}, so a plugin can replace it"
    groups = os.getgrouplist(user.pw_name, user.pw_gid)
    if info.st_mode & stat.S_IWGRP and info.st_gid in groups:
        return f"; the broker's user {user.pw_name} is in its group, so a plugin can replace it"
    return ""


# PLUGIN-004


def _unsigned_plugin(context: AuditContext) -> Iterator[Finding]:
    policy = context.policy
    files = _admin_files(context)
    if not files:
        return
    index = index_manifests(policy.manifest_dir)
    now = datetime.now(UTC)
    for item, path in files:
        if not path.is_file():
            continue  # the broker stops at a missing plugin, so nothing unsigned runs
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        entry = _plugin_entry(context, item)
        option_keys = list(entry.options) if entry is not None else []
        try:
            verified = find_manifest(path, digest, policy, now, index=index)
            check_against_manifest(verified, path, digest, len(data), context.version, option_keys)
        except VerificationError as error:
            yield _finding_at(
                UNSIGNED,
                item,
                f"{item.kind} {path}: {error.message}",
                error.fix or f"sign the file: mosquitto-guard sign {path} --key KEY",
            )


# PLUGIN-005


def _duplicate_plugin(context: AuditContext) -> Iterator[Finding]:
    by_file: dict[Path, CodeItem] = {}
    by_digest: dict[str, CodeItem] = {}
    for item, path in _loaded_files(context, PLUGIN_KINDS):
        real = Path(os.path.realpath(path))
        digest = _sha256(path) if path.is_file() else None
        earlier = by_file.get(real)
        relation = "the same file as"
        if earlier is None and digest is not None:
            earlier = by_digest.get(digest)
            relation = f"a copy (sha256 {digest}) of"
        if earlier is None:
            by_file[real] = item
            if digest is not None:
                by_digest[digest] = item
            continue
        yield _duplicate_finding(context, item, earlier, relation)


def _duplicate_finding(
    context: AuditContext, item: CodeItem, earlier: CodeItem, relation: str
) -> Finding:
    entry, first = _plugin_entry(context, item), _plugin_entry(context, earlier)
    evidence = (
        f"{item.kind} {item.path} loads {relation} {earlier.kind} {earlier.path} at "
        f"{earlier.source}: the broker calls its init function once per line, so its "
        "callbacks run twice"
    )
    severity = None
    separate_listeners = (
        context.config.per_listener_settings
        and entry is not None
        and first is not None
        and entry.listener != first.listener
    )
    if separate_listeners:
        # Loading one plugin on two listeners is how 2.0 applies it to both.
        evidence += " (once for each of two listeners, under per_listener_settings true)"
        severity = Severity.LOW
    return _finding_at(DUPLICATE, item, evidence, "remove one of the two lines", severity=severity)


# PLUGIN-007


def _engine_path(context: AuditContext) -> Iterator[Finding]:
    for option in context.config.find("tls_engine"):
        engine = option.value.strip()
        if "/" not in engine:
            continue
        yield ENGINE_PATH.finding(
            f"tls_engine {engine!r}: OpenSSL loads this file as an engine when the listener "
            "starts, and its constructors run even when it is not an engine",
            "remove the line, or name an engine id that OpenSSL provides",
            at=option.location,
        )


# PLUGIN-008


def _openssl_modules(context: AuditContext) -> Iterator[Finding]:
    inventory = context.inventory
    for item in inventory.items:
        if item.kind != "openssl_module":
            continue
        what = item.note or f"OpenSSL module {item.written}"
        found = str(item.path) if item.path is not None else "not found"
        yield _finding_at(
            OPENSSL_MODULES,
            item,
            f"{what}, file {found}: Mosquitto 2.0 loads it as root, before reading its config",
            "remove the engine or provider from the OpenSSL config, or start the broker with "
            "OPENSSL_CONF naming a config that loads no module",
        )
    for undecided in inventory.undecided:
        yield OPENSSL_MODULES.finding(
            undecided,
            "fix the OpenSSL config so that the modules it loads can be listed",
            severity=Severity.MEDIUM,
        )


# PLUGIN-009


def _ld_so_preload(context: AuditContext) -> Iterator[Finding]:
    context.require_host()
    path = context.options.host_file("/etc/ld.so.preload")
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return
    for number, line in enumerate(text.split("\n"), start=1):
        # The loader drops `#` comments, then splits names on spaces, tabs and colons.
        names = [name for name in re.split("[ \t:]", line.split("#", 1)[0]) if name]
        if names:
            yield LD_SO_PRELOAD.finding(
                f"{path} preloads {' '.join(names)} into every program, the broker included, "
                "while it still runs as root",
                f"remove the line from {path}, or find out who added it",
                at=path,
                line=number,
            )


# PLUGIN-010


def _libwrap_commands(context: AuditContext) -> Iterator[Finding]:
    context.require_host()
    if not _links_libwrap(context.options.broker):
        return
    for name in ("/etc/hosts.allow", "/etc/hosts.deny"):
        path = context.options.host_file(name)
        if not path.is_file():
            continue
        # NOTE: that spawn and twist run commands is taken from hosts_options(5); no test here
        # connects through libwrap to prove it for the broker.
        for number, text in _hosts_access_rules(path):
            for keyword, command in _command_options(text):
                yield LIBWRAP.finding(
                    f"{keyword} {command!r} applies to the broker: libwrap runs it through "
                    "/bin/sh from inside the broker on each matching connection",
                    f"remove the {keyword} option, or name daemons other than mosquitto",
                    at=path,
                    line=number,
                )


def _links_libwrap(broker: Path) -> bool:
    try:
        needed = read_elf_fast(broker).needed
    except ElfError as error:
        raise Skip(f"the broker {broker} cannot be read: {error}") from None
    return any(name.startswith("libwrap.") for name in needed)


def _hosts_access_rules(path: Path) -> Iterator[tuple[int, str]]:
    """Yield each rule of a hosts_access(5) file with the number of its first line."""
    pending: list[str] = []
    first = 0
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not pending:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            first = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        yield first, " ".join([*pending, line])
        pending = []
    if pending:
        yield first, " ".join(pending)


def _command_options(rule: str) -> Iterator[tuple[str, str]]:
    """Yield `(keyword, command)` for each spawn or twist option of a rule naming the broker."""
    # Fields and options are separated by colons that no backslash escapes.
    fields = re.split(r"(?<!\\):", rule)
    if len(fields) < 3 or not _names_broker(fields[0]):
        return
    for option in fields[2:]:
        keyword, _, command = option.strip().partition(" ")
        if keyword.lower() in LIBWRAP_COMMANDS:
            yield keyword.lower(), command.strip()


def _names_broker(daemons: str) -> bool:
    """Return True when a daemon list such as `ALL EXCEPT sshd` matches the broker."""
    words = daemons.replace(",", " ").split()
    included, excluded = words, []
    if "EXCEPT" in words:
        cut = words.index("EXCEPT")
        included, excluded = words[:cut], words[cut + 1 :]

    def matches(word: str) -> bool:
        name = word.split("@", 1)[0]
        return name in ("ALL", LIBWRAP_DAEMON)

    return any(map(matches, included)) and not any(map(matches, excluded))


# PLUGIN-002 and PLUGIN-006: the written value.


def _relative_plugin(context: AuditContext) -> Iterator[Finding]:
    for entry in context.config.plugins:
        path = entry.path.strip()
        if not path.startswith("/"):
            yield RELATIVE.finding(
                f"{entry.kind} {entry.path!r}: the loader searches for it through "
                "LD_LIBRARY_PATH, the RUNPATH and the system directories",
                "give the absolute path of the plugin file",
                at=entry.option.location,
            )


def _hash_in_plugin(context: AuditContext) -> Iterator[Finding]:
    for entry in context.config.plugins:
        if "#" in entry.path:
            yield HASH.finding(
                f"{entry.kind} {entry.path!r}: the broker reads the trailing comment as part "
                "of the path",
                "put the comment on its own line, with # in column 0",
                at=entry.option.location,
            )


OUTSIDE_DIRS = Rule(
    "PLUGIN-001",
    Severity.HIGH,
    "a plugin loaded from outside the policy's plugin directories",
    _outside_plugin_dirs,
)
RELATIVE = Rule(
    "PLUGIN-002",
    Severity.HIGH,
    "a plugin named by a relative path or a bare name",
    _relative_plugin,
)
UNSAFE_PATH = Rule(
    "PLUGIN-003",
    Severity.HIGH,
    "a plugin or engine file that a user other than root can replace",
    _unsafe_plugin_path,
)
UNSIGNED = Rule(
    "PLUGIN-004",
    Severity.HIGH,
    "a plugin or engine file without a valid signed manifest",
    _unsigned_plugin,
)
DUPLICATE = Rule(
    "PLUGIN-005",
    Severity.MEDIUM,
    "the same plugin loaded by two lines",
    _duplicate_plugin,
)
HASH = Rule(
    "PLUGIN-006",
    Severity.MEDIUM,
    "a plugin value containing '#', where a trailing comment becomes part of the path",
    _hash_in_plugin,
)
ENGINE_PATH = Rule(
    "PLUGIN-007",
    Severity.HIGH,
    "a tls_engine given as a path, which loads any shared object",
    _engine_path,
)
OPENSSL_MODULES = Rule(
    "PLUGIN-008",
    Severity.HIGH,
    "an OpenSSL config that loads engines or providers into the broker as root",
    _openssl_modules,
)
LD_SO_PRELOAD = Rule(
    "PLUGIN-009",
    Severity.HIGH,
    "a non-empty /etc/ld.so.preload, which loads code into the broker as root",
    _ld_so_preload,
)
LIBWRAP = Rule(
    "PLUGIN-010",
    Severity.MEDIUM,
    "a libwrap rule for the broker that runs a shell command (spawn or twist)",
    _libwrap_commands,
)

RULES = [
    OUTSIDE_DIRS,
    RELATIVE,
    UNSAFE_PATH,
    UNSIGNED,
    DUPLICATE,
    HASH,
    ENGINE_PATH,
    OPENSSL_MODULES,
    LD_SO_PRELOAD,
    LIBWRAP,
]
