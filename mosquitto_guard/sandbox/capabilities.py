"""Shrinking the capability bounding set, and clearing the inheritable and ambient sets.

A process started by root gets every capability in its bounding set when it `exec`s a
program, so the broker would start with all of them. Mosquitto needs two, CAP_SETUID and
CAP_SETGID, to drop to its `user`, and it loses every capability with that drop. The code that
runs before the drop (the OpenSSL config and its modules, the name-service modules) would
still hold the rest. Dropping them from the bounding set first means that even code running as
root can no longer read other users' files, open raw sockets, load kernel modules or trace
processes.

The inheritable and ambient sets are cleared as well: for a root exec the kernel adds the
inheritable set to the new permitted set, so a capability left there would bypass the bound.

The work is three `prctl` requests and one `capset`, so they are made here through `ctypes`
rather than through a wrapper package that needs a native library.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mosquitto_guard.errors import HostError
from mosquitto_guard.sandbox.libc import libc

# Capability numbers, from linux/capability.h.
CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


@dataclass(frozen=True)
class CapabilityReport:
    """The bounding set after `limit_capabilities`, and what it dropped."""

    kept: tuple[str, ...]
    dropped: tuple[str, ...]


def _numbered() -> list[tuple[int, str]]:
    """Return (number, name) for every capability this kernel supports, newer ones included."""
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = len(CAPABILITIES) - 1
    return [
        (number, CAPABILITIES[number] if number < len(CAPABILITIES) else f"CAP_{number}")
        for number in range(last + 1)
    ]


def bounding_set() -> tuple[str, ...]:
    """Return the names of the capabilities in this thread's bounding set."""
    lib = libc()
    return tuple(
        name for number, name in _numbered() if lib.prctl(_PR_CAPBSET_READ, number, 0, 0, 0) == 1
    )


def limit_capabilities(keep: Iterable[str]) -> CapabilityReport:
    """Drop every capability but `keep` from the bounding set; clear inheritable and ambient.

    Raises `HostError` when a capability cannot be dropped, which happens without CAP_SETPCAP
    (a launcher not started as root): such a launcher gives the broker no capability anyway.
    """
    kept_names = set(keep)
    unknown = sorted(kept_names - set(CAPABILITIES))
    if unknown:
        raise ValueError(f"unknown capability {unknown[0]}")
    lib = libc()
    dropped = []
    for number, name in _numbered():
        if name in kept_names or lib.prctl(_PR_CAPBSET_READ, number, 0, 0, 0) != 1:
            continue
        ctypes.set_errno(0)
        if lib.prctl(_PR_CAPBSET_DROP, number, 0, 0, 0) != 0:
            reason = os.strerror(ctypes.get_errno())
            raise HostError(f"dropping {name} from the capability bounding set failed: {reason}")
        dropped.append(name)
    _clear_inheritable()
    # Fails with EINVAL on kernels before 4.3, which have no ambient set to clear.
    lib.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    return CapabilityReport(kept=bounding_set(), dropped=tuple(dropped))


def _clear_inheritable() -> None:
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    lib = libc()
    ctypes.set_errno(0)
    if lib.capget(ctypes.byref(header), data) != 0:
        raise HostError(f"reading the capability sets failed: {os.strerror(ctypes.get_errno())}")
    if not (data[0].inheritable or data[1].inheritable):
        return
    data[0].inheritable = data[1].inheritable = 0
    if lib.capset(ctypes.byref(header), data) != 0:
        reason = os.strerror(ctypes.get_errno())
        raise HostError(f"clearing the inheritable capabilities failed: {reason}")
