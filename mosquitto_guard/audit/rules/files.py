"""Audit rules: who can change the files the broker reads, and what `include_dir` loads.

A plugin runs as the broker's user. When this user can write a file that the broker reads at
start-up, a plugin can add a `plugin` line to a config file or an account to the password file.
It then stays loaded, or keeps its access, after it has been removed from the config. Secrets
that every local user can read (password hashes, PSK keys, TLS private keys) are open to any
process on the host.

The user can write a file when it owns the file, when the group may write and the user is in
that group, or when every user may write.

NOTE: only owner, group and mode bits are read. POSIX ACLs, capabilities such as
CAP_DAC_OVERRIDE and read-only mounts are not taken into account.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mosquitto_guard.audit.context import AuditContext
from mosquitto_guard.audit.model import Finding, Rule, Severity, Skip
from mosquitto_guard.config.files import load_lines, parse_line
from mosquitto_guard.config.model import Location, Option
from mosquitto_guard.config.options import (
    C_WHITESPACE,
    DYNAMIC_SECURITY_OPTION,
    DYNAMIC_SECURITY_PLUGIN,
)
from mosquitto_guard.errors import ConfigError

ACCESS_OPTIONS = ("password_file", "acl_file", "psk_file")
# Each option that names a secret file, with the severity of exposing it. PSK keys and TLS
# private keys can be used as they are, but password files contain salted hashes.
SECRET_OPTIONS = {
    "psk_file": Severity.HIGH,
    "keyfile": Severity.HIGH,
    "bridge_keyfile": Severity.HIGH,
    "password_file": Severity.MEDIUM,
}


@dataclass(frozen=True)
class _NamedFile:
    """A file the audit checks, and where the config names it."""

    path: Path
    at: Location | Path


# The broker's user and the modes of files.


def _broker_user(context: AuditContext) -> pwd.struct_passwd:
    user = context.broker_user
    if user is None:
        last = context.config.last("user")
        name = last.value.strip() if last is not None else "mosquitto"
        raise Skip(f"the broker's user {name!r} does not exist on this host")
    if user.pw_uid == 0:
        raise Skip("the broker runs as root, which can write every file (see PRIV-001)")
    return user


def _in_group(user: pwd.struct_passwd, gid: int) -> bool:
    if user.pw_gid == gid:
        return True
    try:
        return user.pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _describe(info: os.stat_result) -> str:
    """Return the owner, group and mode of a file, as `ls -l` readers expect them."""
    owner = _owner_name(info.st_uid)
    group = _group_name(info.st_gid)
    return f"owner {owner}:{group}, mode {stat.S_IMODE(info.st_mode):04o}"


def _write_access(info: os.stat_result, user: pwd.struct_passwd) -> str | None:
    """Return how `user` can write the file `info` describes, or None if it cannot."""
    if info.st_uid == user.pw_uid:
        return f"{user.pw_name} owns it"
    if info.st_mode & stat.S_IWOTH:
        return "every user can write it"
    if info.st_mode & stat.S_IWGRP and _in_group(user, info.st_gid):
        return f"{user.pw_name} is in its group {_group_name(info.st_gid)}, which can write it"
    return None


def _stat(path: Path) -> os.stat_result | None:
    """Return the status of `path`, following symlinks, or None when it does not exist."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _option_path(option: Option) -> Path:
    """Return the path a string option names, trimmed as the broker trims string values."""
    return Path(option.value.strip(C_WHITESPACE))


# The files each rule checks.


def _config_files(context: AuditContext) -> list[_NamedFile]:
    """List the config files, the directories holding the main files, and each include_dir."""
    config = context.config
    found = [_NamedFile(path, path) for path in config.files]
    for path in config.main_files:
        parent = path.absolute().parent
        found.append(_NamedFile(parent, parent))
    found += [
        _NamedFile(Path(option.value), option.location) for option in _include_dir_lines(context)
    ]
    unique: dict[Path, _NamedFile] = {}
    for named in found:
        unique.setdefault(named.path, named)
    return list(unique.values())


def _dynsec_files(context: AuditContext) -> list[_NamedFile]:
    """List the `plugin_opt_config_file` of each dynamic security plugin."""
    found = []
    for plugin in context.config.plugins:
        if not plugin.path.strip(C_WHITESPACE).endswith(DYNAMIC_SECURITY_PLUGIN):
            continue
        for option in plugin.options.get(DYNAMIC_SECURITY_OPTION, []):
            found.append(_NamedFile(_option_path(option), option.location))
    return found


def _option_files(context: AuditContext, keys: tuple[str, ...]) -> list[_NamedFile]:
    found = []
    for key in keys:
        for option in context.config.find(key):
            found.append(_NamedFile(_option_path(option), option.location))
    return found


# Writable and readable files.


def _writable_config(context: AuditContext) -> Iterator[Finding]:
    user = _broker_user(context)
    for named in _config_files(context):
        info = _stat(named.path)
        if info is None:
            continue
        access = _write_access(info, user)
        if access is not None:
            kind = "directory" if stat.S_ISDIR(info.st_mode) else "file"
            yield WRITABLE_CONFIG.finding(
                f"config {kind} {named.path} ({_describe(info)}): {access}, so a plugin can "
                "add a plugin line that loads it again at every start",
                f"chown root:root {named.path} && chmod go-w {named.path}",
                at=named.at,
            )


def _writable_access_files(context: AuditContext) -> Iterator[Finding]:
    user = _broker_user(context)
    for named in _option_files(context, ACCESS_OPTIONS):
        info = _stat(named.path)
        if info is None:
            continue
        access = _write_access(info, user)
        if access is not None:
            yield WRITABLE_ACCESS.finding(
                f"{named.path} ({_describe(info)}): {access}, so a plugin can add an account or "
                "a grant that outlives it",
                f"chown root:{user.pw_name} {named.path} && chmod 0640 {named.path}",
                at=named.at,
            )


def _world_readable_secrets(context: AuditContext) -> Iterator[Finding]:
    secrets = [
        (named, SECRET_OPTIONS[key])
        for key in SECRET_OPTIONS
        for named in _option_files(context, (key,))
    ]
    secrets += [(named, Severity.MEDIUM) for named in _dynsec_files(context)]
    for named, severity in secrets:
        info = _stat(named.path)
        if info is None or not info.st_mode & stat.S_IROTH:
            continue
        yield READABLE_SECRET.finding(
            f"{named.path} ({_describe(info)}) can be read by every local user",
            f"chmod o-rwx {named.path}, and give the broker's group read access instead",
            at=named.at,
            severity=severity,
        )


# include_dir pitfalls. These rules read the main files line by line instead of the whole
# config, because one of the cases they report (a directory named `*.conf`) makes it unreadable.


def _include_dir_lines(context: AuditContext) -> list[Option]:
    """Return the `include_dir` lines of the main files, the only ones the broker reads."""
    found = []
    for path in context.options.config_paths:
        try:
            lines = load_lines(Path(path), None)
        except ConfigError as error:
            raise Skip(f"the config cannot be read: {error}") from None
        for number, line in enumerate(lines, start=1):
            try:
                option = parse_line(Path(path), number, line, None)
            except ConfigError:
                continue  # a NUL byte or invalid UTF-8: the syntax rules report the line
            if option is not None and option.key == "include_dir" and option.value:
                found.append(option)
    return found


def _is_loaded_name(name: str) -> bool:
    """Return whether `include_dir` reads a directory entry called `name`."""
    return len(name) > len(".conf") and name.endswith(".conf")


def _entries(option: Option) -> list[os.DirEntry[str]]:
    """Return the entries of an include_dir directory sorted by name, or none if it is missing."""
    try:
        with os.scandir(option.value) as found:
            return sorted(found, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []  # the syntax rules report a missing directory


def _hidden_files(context: AuditContext) -> Iterator[Finding]:
    for option in _include_dir_lines(context):
        for entry in _entries(option):
            if entry.name.startswith(".") and _is_loaded_name(entry.name):
                yield HIDDEN.finding(
                    f"{entry.path} is read by the broker, but `ls` does not show it",
                    f"rename it without the leading dot, or delete it if it is not yours: "
                    f"rm {entry.path}",
                    at=option.location,
                )


def _symlinks(context: AuditContext) -> Iterator[Finding]:
    for option in _include_dir_lines(context):
        for entry in _entries(option):
            if entry.is_symlink() and _is_loaded_name(entry.name):
                target = os.readlink(entry.path)
                # A relative target is relative to the link's directory, not to the shell's.
                source = os.path.join(os.path.dirname(entry.path), target)
                yield SYMLINK.finding(
                    f"{entry.path} -> {target}: the broker reads the target, which the "
                    "directory's permissions do not protect",
                    f"replace the link with a copy of the file: cp --remove-destination "
                    f"{source} {entry.path}",
                    at=option.location,
                )


def _conf_directories(context: AuditContext) -> Iterator[Finding]:
    for option in _include_dir_lines(context):
        for entry in _entries(option):
            if _is_loaded_name(entry.name) and entry.is_dir():
                yield CONF_DIRECTORY.finding(
                    f"{entry.path} is a directory: the broker stops with "
                    "'Config file ... is a directory'",
                    f"rename the directory so that its name does not end in .conf: "
                    f"mv {entry.path} {entry.path.removesuffix('.conf')}",
                    at=option.location,
                )


def _subdirectory_files(context: AuditContext) -> Iterator[Finding]:
    for option in _include_dir_lines(context):
        for entry in _entries(option):
            if _is_loaded_name(entry.name) or not entry.is_dir():
                continue
            ignored = sorted(str(path) for path in Path(entry.path).rglob("*.conf"))
            if ignored:
                yield SUBDIRECTORY.finding(
                    f"not read, because include_dir does not search subdirectories: "
                    f"{', '.join(ignored)}",
                    f"move the files that should apply into {option.value}, and delete the rest",
                    at=option.location,
                )


def _ignored_names(context: AuditContext) -> Iterator[Finding]:
    for option in _include_dir_lines(context):
        for entry in _entries(option):
            name = entry.name
            looks_loaded = name.lower().endswith(".conf")
            if looks_loaded and not _is_loaded_name(name) and entry.is_file():
                yield IGNORED_NAME.finding(
                    f"{entry.path} is not read: the name must end in .conf, lowercase, and be "
                    "longer than 5 characters",
                    f"rename it to end in .conf, such as {option.value.rstrip('/')}/"
                    f"{_loaded_name(name)}, or delete it",
                    at=option.location,
                )


def _loaded_name(name: str) -> str:
    stem = name[: -len(".conf")]
    return f"{stem or 'local'}.conf"


WRITABLE_CONFIG = Rule(
    "FILE-001",
    Severity.HIGH,
    "a config file or directory that the broker's user can write",
    _writable_config,
)
WRITABLE_ACCESS = Rule(
    "FILE-002",
    Severity.MEDIUM,
    "a password, ACL or PSK file that the broker's user can write",
    _writable_access_files,
)
READABLE_SECRET = Rule(
    "FILE-003",
    Severity.MEDIUM,
    "a password, PSK, dynamic security or TLS key file that every user can read",
    _world_readable_secrets,
)
HIDDEN = Rule(
    "FILE-010",
    Severity.MEDIUM,
    "a hidden file in an include_dir directory, which the broker reads",
    _hidden_files,
)
SYMLINK = Rule(
    "FILE-011",
    Severity.MEDIUM,
    "a symlink in an include_dir directory, which the broker follows",
    _symlinks,
)
CONF_DIRECTORY = Rule(
    "FILE-012",
    Severity.MEDIUM,
    "a directory named *.conf in an include_dir directory, which stops the broker",
    _conf_directories,
)
SUBDIRECTORY = Rule(
    "FILE-013",
    Severity.LOW,
    "config files in a subdirectory of an include_dir directory, which the broker ignores",
    _subdirectory_files,
)
IGNORED_NAME = Rule(
    "FILE-014",
    Severity.LOW,
    "a file in an include_dir directory that the broker ignores because of its name",
    _ignored_names,
)

RULES = [
    WRITABLE_CONFIG,
    WRITABLE_ACCESS,
    READABLE_SECRET,
    HIDDEN,
    SYMLINK,
    CONF_DIRECTORY,
    SUBDIRECTORY,
    IGNORED_NAME,
]
