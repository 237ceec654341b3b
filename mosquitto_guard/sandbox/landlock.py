"""Landlock confinement through the kernel's system calls, called with `ctypes`.

Why not the `landlock` package on PyPI: its release (1.0.0.dev5, an alpha) handles filesystem
rights only. It has no TCP port rules (ABI 4) and no scoping of signals and abstract UNIX sockets
(ABI 6), both of which the broker's confinement needs, so the three system calls are made here.

Use:

    rules = LandlockRules(read_only=(...), read_write=(...), executable=(...),
                          bind_tcp=(1883,), connect_tcp=())
    report = apply_landlock(rules)

`apply_landlock` reads the kernel's Landlock ABI version and handles every access right of that
version, so anything not granted by a rule is denied. Rights absent from the running kernel's
ABI cannot be enforced. They are listed in `LandlockReport.missing`, so the caller can log them or
reject the launch. Every path is opened before anything is applied, so a missing path raises
`HostError` and leaves the process as it was.

What each kind of path is granted:

- read-only: read files, list directories;
- read-write: the same, plus write, truncate, create, remove and rename (regular files,
  directories, sockets, FIFOs and symlinks; never device nodes);
- executable: read and execute files, list directories (binaries and the libraries they map).

A rule on a file grants only the rights that apply to files, because the kernel rejects directory
rights on a file. The execute right governs `execve`. On the test kernel (ABI 7), `dlopen` loads a
shared library from a read-only path, so a library needs only read access. The executable list
grants the execute right as well.

Once applied, the confinement holds for the calling thread, the threads it creates afterwards,
its children and whatever it `exec`s. `no_new_privs` is set first, as the kernel requires of a
process without CAP_SYS_ADMIN, and it also stops set-user-ID programs from gaining privileges.

NOTE: threads that already exist are not confined, so call `apply_landlock` while the process
has one thread, as it does just before `exec`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mosquitto_guard.errors import HostError
from mosquitto_guard.sandbox.libc import libc

# System call numbers (create_ruleset, add_rule, restrict_self). Only the architectures that the
# product runs on are listed, so that another one is added on purpose.
_SYSCALLS: dict[str, tuple[int, int, int]] = {
    "x86_64": (444, 445, 446),
    "aarch64": (444, 445, 446),
}

_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem access rights, with the ABI version that introduced each.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13
FS_TRUNCATE = 1 << 14
FS_IOCTL_DEV = 1 << 15

NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

# (kind, name, bit, first ABI). The order is the order of the report.
_RIGHTS: tuple[tuple[str, str, int, int], ...] = (
    ("fs", "execute", FS_EXECUTE, 1),
    ("fs", "write_file", FS_WRITE_FILE, 1),
    ("fs", "read_file", FS_READ_FILE, 1),
    ("fs", "read_dir", FS_READ_DIR, 1),
    ("fs", "remove_dir", FS_REMOVE_DIR, 1),
    ("fs", "remove_file", FS_REMOVE_FILE, 1),
    ("fs", "make_char", FS_MAKE_CHAR, 1),
    ("fs", "make_dir", FS_MAKE_DIR, 1),
    ("fs", "make_reg", FS_MAKE_REG, 1),
    ("fs", "make_sock", FS_MAKE_SOCK, 1),
    ("fs", "make_fifo", FS_MAKE_FIFO, 1),
    ("fs", "make_block", FS_MAKE_BLOCK, 1),
    ("fs", "make_sym", FS_MAKE_SYM, 1),
    ("fs", "refer", FS_REFER, 2),
    ("fs", "truncate", FS_TRUNCATE, 3),
    ("fs", "ioctl_dev", FS_IOCTL_DEV, 5),
    ("net", "bind_tcp", NET_BIND_TCP, 4),
    ("net", "connect_tcp", NET_CONNECT_TCP, 4),
    ("scope", "abstract_unix_socket", SCOPE_ABSTRACT_UNIX_SOCKET, 6),
    ("scope", "signal", SCOPE_SIGNAL, 6),
)

# Rights that the kernel accepts in a rule on a file rather than a directory.
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

_READ_ONLY = FS_READ_FILE | FS_READ_DIR
_READ_WRITE = (
    _READ_ONLY
    | FS_WRITE_FILE
    | FS_TRUNCATE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SOCK
    | FS_MAKE_FIFO
    | FS_MAKE_SYM
    | FS_REFER
)
_EXECUTABLE = _READ_ONLY | FS_EXECUTE


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (
        ("allowed_access", ctypes.c_uint64),
        ("parent_fd", ctypes.c_int32),
    )


class _NetPortAttr(ctypes.Structure):
    _fields_ = (
        ("allowed_access", ctypes.c_uint64),
        ("port", ctypes.c_uint64),
    )


def _ruleset_attr_size(abi: int) -> int:
    """Return the size of the ruleset attribute for this ABI: older kernels reject larger ones."""
    if abi >= 6:
        return ctypes.sizeof(_RulesetAttr)
    if abi >= 4:
        return 16
    return 8


def _numbers() -> tuple[int, int, int]:
    machine = platform.machine()
    numbers = _SYSCALLS.get(machine)
    if numbers is None:
        raise HostError(
            f"Landlock system call numbers are not known for the {machine!r} architecture",
            fix="run on x86_64 or aarch64",
        )
    return numbers


def _syscall(number: int, *args: ctypes.c_long | ctypes.c_void_p) -> tuple[int, int]:
    """Make a raw system call and return its result and errno (0 when it succeeded)."""
    ctypes.set_errno(0)
    result = int(libc().syscall(ctypes.c_long(number), *args))
    return result, (ctypes.get_errno() if result < 0 else 0)


def landlock_abi() -> int:
    """Return the kernel's Landlock ABI version, or 0 when Landlock is absent or disabled."""
    create, _, _ = _numbers()
    result, err = _syscall(
        create, ctypes.c_void_p(None), ctypes.c_long(0), ctypes.c_long(_CREATE_RULESET_VERSION)
    )
    if result >= 0:
        return result
    if err in (errno.ENOSYS, errno.EOPNOTSUPP):
        return 0
    raise HostError(f"reading the Landlock ABI version failed: {os.strerror(err)}")


def rights_for_abi(abi: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return the rights (`active`, `missing`) that `apply_landlock` reports for an ABI version."""
    active = tuple(f"{kind}.{name}" for kind, name, _, first in _RIGHTS if first <= abi)
    missing = tuple(f"{kind}.{name}" for kind, name, _, first in _RIGHTS if first > abi)
    return active, missing


def _handled(abi: int, kind: str) -> int:
    mask = 0
    for right_kind, _, bit, first in _RIGHTS:
        if right_kind == kind and first <= abi:
            mask |= bit
    return mask


def _paths(name: str, value: Iterable[str | os.PathLike[str]]) -> tuple[Path, ...]:
    if isinstance(value, str | bytes | os.PathLike):
        raise TypeError(f"LandlockRules.{name} must be a list of paths, not one path")
    return tuple(Path(item) for item in value)


def _ports(name: str, value: Iterable[int]) -> tuple[int, ...]:
    ports = tuple(value)
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"LandlockRules.{name}: invalid TCP port {port!r}; use 0 to 65535")
    return ports


@dataclass(frozen=True)
class LandlockRules:
    """The paths and ports a confined process may still use; Landlock denies the rest it handles.

    Lists are copied into tuples, so a rules object cannot change after it is made.
    """

    read_only: tuple[Path, ...] = field(default=())
    read_write: tuple[Path, ...] = field(default=())
    executable: tuple[Path, ...] = field(default=())
    bind_tcp: tuple[int, ...] = field(default=())
    connect_tcp: tuple[int, ...] = field(default=())
    # False leaves abstract UNIX sockets outside the process reachable, for a service manager
    # whose notification socket is abstract.
    scope_abstract_unix: bool = True

    def __post_init__(self) -> None:
        for name in ("read_only", "read_write", "executable"):
            object.__setattr__(self, name, _paths(name, getattr(self, name)))
        for name in ("bind_tcp", "connect_tcp"):
            object.__setattr__(self, name, _ports(name, getattr(self, name)))


@dataclass(frozen=True)
class LandlockReport:
    """The ABI version and rights that `apply_landlock` enforced.

    `active` and `missing` name rights as `kind.name`, e.g. `fs.truncate`, `net.bind_tcp`,
    `scope.signal`. `missing` lists the rights absent from this kernel's ABI. They are not
    restricted at all, so for example with `net.bind_tcp` missing every TCP port can be bound.
    """

    abi: int
    active: tuple[str, ...]
    missing: tuple[str, ...]


def _open_rule_paths(rules: LandlockRules, fs_handled: int) -> list[tuple[int, int, Path]]:
    """Open every path of the rules with O_PATH and return (fd, allowed rights, path) triples."""
    opened: list[tuple[int, int, Path]] = []
    try:
        for paths, access in (
            (rules.read_only, _READ_ONLY),
            (rules.read_write, _READ_WRITE),
            (rules.executable, _EXECUTABLE),
        ):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except FileNotFoundError:
                    raise HostError(
                        f"Landlock rule path not found: {path}",
                        fix="create it or remove it from the rules",
                    ) from None
                except OSError as exc:
                    raise HostError(
                        f"opening Landlock rule path {path} failed: {exc.strerror}"
                    ) from None
                allowed = access & fs_handled
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    allowed &= _FILE_RIGHTS
                opened.append((fd, allowed, path))
    except BaseException:
        for fd, _, _ in opened:
            os.close(fd)
        raise
    return opened


def apply_landlock(rules: LandlockRules) -> LandlockReport:
    """Confine this process to `rules` for good, or raise `HostError` when that fails.

    Each path is opened and the ruleset built before the process is changed, so an error there
    leaves it as it was. `no_new_privs` is set just before the ruleset is applied, and stays set
    if the kernel then refuses the ruleset.
    """
    abi = landlock_abi()
    if abi == 0:
        raise HostError(
            "the kernel does not support Landlock, or it is disabled",
            fix="use Linux 5.13 or later with 'landlock' in the lsm= boot parameter",
        )
    create, add_rule, restrict_self = _numbers()
    fs_handled = _handled(abi, "fs")
    net_handled = _handled(abi, "net")
    scoped = _handled(abi, "scope")
    if not rules.scope_abstract_unix:
        scoped &= ~SCOPE_ABSTRACT_UNIX_SOCKET

    opened = _open_rule_paths(rules, fs_handled)
    ruleset_fd = -1
    try:
        attr = _RulesetAttr(fs_handled, net_handled, scoped)
        ruleset_fd, err = _syscall(
            create,
            ctypes.c_void_p(ctypes.addressof(attr)),
            ctypes.c_long(_ruleset_attr_size(abi)),
            ctypes.c_long(0),
        )
        if ruleset_fd < 0:
            raise HostError(f"creating the Landlock ruleset failed: {os.strerror(err)}")

        for fd, allowed, path in opened:
            if not allowed:
                continue
            beneath = _PathBeneathAttr(allowed, fd)
            result, err = _syscall(
                add_rule,
                ctypes.c_long(ruleset_fd),
                ctypes.c_long(_RULE_PATH_BENEATH),
                ctypes.c_void_p(ctypes.addressof(beneath)),
                ctypes.c_long(0),
            )
            if result < 0:
                raise HostError(f"adding the Landlock rule for {path} failed: {os.strerror(err)}")

        if net_handled:
            for ports, access in (
                (rules.bind_tcp, NET_BIND_TCP),
                (rules.connect_tcp, NET_CONNECT_TCP),
            ):
                for port in ports:
                    net = _NetPortAttr(access, port)
                    result, err = _syscall(
                        add_rule,
                        ctypes.c_long(ruleset_fd),
                        ctypes.c_long(_RULE_NET_PORT),
                        ctypes.c_void_p(ctypes.addressof(net)),
                        ctypes.c_long(0),
                    )
                    if result < 0:
                        reason = os.strerror(err)
                        raise HostError(
                            f"adding the Landlock rule for TCP port {port} failed: {reason}"
                        )

        ctypes.set_errno(0)
        if libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise HostError(f"setting no_new_privs failed: {os.strerror(ctypes.get_errno())}")

        result, err = _syscall(restrict_self, ctypes.c_long(ruleset_fd), ctypes.c_long(0))
        if result < 0:
            raise HostError(f"applying the Landlock ruleset failed: {os.strerror(err)}")
    finally:
        for fd, _, _ in opened:
            os.close(fd)
        if ruleset_fd >= 0:
            os.close(ruleset_fd)

    active, missing = rights_for_abi(abi)
    return LandlockReport(abi=abi, active=active, missing=missing)
