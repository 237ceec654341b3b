"""A seccomp filter that denies the system calls a broker never needs, installed just before `exec`.

Use:

    report = install_seccomp()      # in the launcher, after `apply_landlock`
    os.execv(broker, argv)          # the one `execve` the filter lets through

The filter stays in force for the broker, its threads and its children. A denied call fails with
`EPERM` (the process is not killed), so the broker logs an error and keeps serving.

The exec problem, and the design chosen
----------------------------------------
The filter must be installed before the launcher's own `execve` of the broker, since nothing of
the launcher runs afterwards, yet the broker must not be able to `execve` anything. A seccomp
filter is a fixed program over one call's number and arguments: it cannot count calls. The
options looked at:

- Allow `execve` only for the path pointer the launcher passes: not a boundary, because code
  running in the broker can put any string at that same address and call `execve` with it.
- Allow `execve` and leave exec to Landlock's execute right: the broker's own binary must stay
  executable, so seccomp would deny nothing there.
- Have the broker load a preloaded library that installs the filter after `exec`: needs a
  compiled C library shipped with the product.
- A user-notification filter, chosen here. `execve` and `execveat` return
  SECCOMP_RET_USER_NOTIF, which passes the call to the process that has the filter's listener
  file descriptor. `install_seccomp` forks a small supervisor process that has the only copy of
  that descriptor. It lets exactly one call through, the launcher's `execve` (checked by thread
  id), and then exits. Once the last copy of the listener is closed, the kernel fails every later
  `execve`/`execveat` of the broker and its children with ENOSYS ("Function not implemented").
  It cannot wait for a supervisor that is gone, and no process can open that listener again.
  If the launcher exits without exec, the supervisor reads end of file on a pipe and exits too.

So `execve`/`execveat` are denied with ENOSYS, not EPERM: that errno comes from the kernel and
cannot be chosen. Like EPERM it makes the call fail without killing the caller. A failed first
`execve` (a wrong path, say) is the allowed one all the same; a retry fails with ENOSYS.

The supervisor is forked twice, so it is not a child of the broker, and the launcher reaps the
intermediate process before `install_seccomp` returns. It inherits the filter, which is harmless:
it only polls, receives and responds. A child the launcher forks before exec is under the same
filter, so its `execve` goes to the supervisor too, which denies it with EPERM.

Why not a library
-----------------
`python3-seccomp` (Debian's libseccomp bindings) is not importable from a virtual environment.
`pyseccomp` on PyPI wraps libseccomp with ctypes, but its last release (0.1.2) dates from
January 2021, and it needs the libseccomp shared library on the host. The filter here is a
short classic BPF program, so it is assembled with `struct` and loaded with the `seccomp`
system call through `ctypes`.

What the program checks
-----------------------
The architecture comes first: a call made through another ABI (the 32-bit `int 0x80` entry, or
x32 numbers on x86_64) is denied as a whole, because the numbers below mean other calls there.
Only x86_64 is supported; on another machine `install_seccomp` raises `HostError`. `clone` is
denied when it requests a new namespace, and `clone3`, whose flags are behind a pointer the filter
cannot read, fails with ENOSYS so that the C library falls back to `clone`.
`socket` is allowed for UNIX datagram sockets, plain TCP over IPv4 and IPv6, netlink route
sockets (the C library lists the host's addresses through one), UDP when the broker resolves
host names, and UNIX stream sockets when it listens on one. Raw sockets, packet sockets,
other protocols and every other family fail with EPERM. `ioctl` fails for TIOCSTI and
TIOCLINUX, which type into a terminal, and `mremap` for an old size of 0, which would map the
same memory twice, once writable and once executable, around memory-deny-write-execute.

NOTE: the CONTINUE response needs Linux 5.5. On Linux 5.0 to 5.4 the filter installs, but the
launcher's own `execve` then fails with ENOSYS. Only one filter with a listener is allowed in a
process's filter chain, so installing fails with EBUSY under a runtime that already set one.

NOTE: like Landlock, a filter holds for the calling thread only (threads that already exist are
not filtered), so call `install_seccomp` while the process has one thread, just before `exec`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import select
import struct
import threading
from dataclasses import dataclass

from mosquitto_guard.errors import HostError
from mosquitto_guard.sandbox.libc import libc

# The denied calls, in groups. The comment before each group gives the reason a broker never
# needs it.
_GROUPS: tuple[tuple[str, ...], ...] = (
    # Running another program: the broker serves clients and never starts programs.
    ("execve", "execveat"),
    # Reading or changing other processes' memory, or comparing and taking their resources.
    ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"),
    # Loading code into the kernel, or replacing the kernel.
    ("init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf"),
    # Changing the filesystem tree: mounts, the root directory, file handles that skip paths.
    (
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "open_tree",
        "move_mount",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
        "name_to_handle_at",
        "open_by_handle_at",
    ),
    # Namespaces: leaving or making them would step around the rest of the confinement.
    ("setns", "unshare"),
    # The kernel keyring.
    ("keyctl", "add_key", "request_key"),
    # Performance counters and page-fault handling from user space: used in kernel exploits.
    ("perf_event_open", "userfaultfd"),
    # io_uring runs file and socket operations that a seccomp filter cannot inspect.
    ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    # Machine administration: swap, reboot, clocks, host names, accounting, quotas, the kernel
    # log, hardware ports.
    (
        "swapon",
        "swapoff",
        "reboot",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "sethostname",
        "setdomainname",
        "acct",
        "quotactl",
        "syslog",
        "iopl",
        "ioperm",
        "vhangup",
    ),
    # Old or rarely used calls that widen the attack surface: changing the execution domain,
    # loading a library the old way, watching the whole filesystem.
    ("personality", "uselib", "fanotify_init", "lookup_dcookie"),
    # Anonymous files that can be written, then mapped as code: the launcher made the broker's
    # memfds before the filter, so the broker never needs a new one.
    ("memfd_create", "memfd_secret"),
    # Moving or advising another process's memory.
    ("process_madvise", "migrate_pages", "move_pages"),
    # Changing owners, times and extended attributes: Landlock has no right for file metadata,
    # so these would reach files outside the sandbox's paths. The broker changes none.
    (
        "chown",
        "fchown",
        "lchown",
        "fchownat",
        "utime",
        "utimes",
        "utimensat",
        "futimesat",
        "setxattr",
        "lsetxattr",
        "fsetxattr",
        "removexattr",
        "lremovexattr",
        "fremovexattr",
        "setxattrat",
        "removexattrat",
    ),
    # Device nodes and FIFOs, which the broker never makes.
    ("mknod", "mknodat"),
    # System V IPC, which Landlock does not mediate: another process's shared memory, message
    # queues and semaphores.
    (
        "shmget",
        "shmat",
        "shmctl",
        "shmdt",
        "semget",
        "semop",
        "semctl",
        "semtimedop",
        "msgget",
        "msgsnd",
        "msgrcv",
        "msgctl",
    ),
    # Watching directories outside the sandbox's paths for the names of new files.
    ("inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_mark"),
)

SECCOMP_DENIED: tuple[str, ...] = tuple(name for group in _GROUPS for name in group)

# Calls that go to the supervisor instead of being denied at once.
_EXEC_CALLS = ("execve", "execveat")

_X86_64_NUMBERS: dict[str, int] = {
    "execve": 59,
    "execveat": 322,
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "pidfd_getfd": 438,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "bpf": 321,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "unshare": 272,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "settimeofday": 164,
    "clock_settime": 227,
    "clock_adjtime": 305,
    "adjtimex": 159,
    "sethostname": 170,
    "setdomainname": 171,
    "acct": 163,
    "quotactl": 179,
    "syslog": 103,
    "iopl": 172,
    "ioperm": 173,
    "vhangup": 153,
    "personality": 135,
    "uselib": 134,
    "fanotify_init": 300,
    "lookup_dcookie": 212,
    "memfd_create": 319,
    "memfd_secret": 447,
    "process_madvise": 440,
    "migrate_pages": 256,
    "move_pages": 279,
    "chown": 92,
    "fchown": 93,
    "lchown": 94,
    "fchownat": 260,
    "utime": 132,
    "utimes": 235,
    "utimensat": 280,
    "futimesat": 261,
    "setxattr": 188,
    "lsetxattr": 189,
    "fsetxattr": 190,
    "removexattr": 197,
    "lremovexattr": 198,
    "fremovexattr": 199,
    "setxattrat": 463,
    "removexattrat": 466,
    "mknod": 133,
    "mknodat": 259,
    "shmget": 29,
    "shmat": 30,
    "shmctl": 31,
    "shmdt": 67,
    "semget": 64,
    "semop": 65,
    "semctl": 66,
    "semtimedop": 220,
    "msgget": 68,
    "msgsnd": 69,
    "msgrcv": 70,
    "msgctl": 71,
    "inotify_init": 253,
    "inotify_init1": 294,
    "inotify_add_watch": 254,
    "inotify_rm_watch": 255,
    "fanotify_mark": 301,
}

# (audit architecture, number table, seccomp, clone, clone3, lowest x32 number or 0).
_ARCHES: dict[str, tuple[int, dict[str, int], int, int, int, int]] = {
    "x86_64": (0xC000003E, _X86_64_NUMBERS, 317, 56, 435, 0x40000000),
}

# Calls allowed only for some argument values. socket, ioctl and mremap have checks of their
# own. The tables after this one give the index of the argument checked: a pid that must be 0
# (this process), and a mode that may not set the set-user-ID or set-group-ID bit. chmod is
# allowed only for a broker with a UNIX socket listener.
_CHECKED_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"socket": 41, "ioctl": 16, "mremap": 25},
}
_OWN_PROCESS_ONLY: dict[str, dict[int, int]] = {
    # number: index of the pid argument
    "x86_64": {
        302: 0,  # prlimit64
        141: 1,  # setpriority (which, who, prio)
        142: 0,  # sched_setparam
        144: 0,  # sched_setscheduler
        203: 0,  # sched_setaffinity
        314: 0,  # sched_setattr
        251: 1,  # ioprio_set (which, who, ioprio)
    },
}
_NO_SETID_MODE: dict[str, dict[int, int]] = {
    # number: index of the mode argument
    "x86_64": {2: 2, 257: 3, 85: 1, 83: 1, 258: 2},  # open, openat, creat, mkdir, mkdirat
}
_CHMOD: dict[str, dict[int, int]] = {
    "x86_64": {90: 1, 91: 1, 268: 2, 452: 2},  # chmod, fchmod, fchmodat, fchmodat2
}
# The calls a busy broker makes for every message, allowed before any other test, so that they
# pass the filter in a few instructions rather than after a hundred comparisons.
_FAST_ALLOW: dict[str, tuple[int, ...]] = {
    "x86_64": (
        0,  # read
        1,  # write
        19,  # readv
        20,  # writev
        44,  # sendto
        45,  # recvfrom
        46,  # sendmsg
        47,  # recvmsg
        232,  # epoll_wait
        281,  # epoll_pwait
        441,  # epoll_pwait2
        228,  # clock_gettime
        202,  # futex
        3,  # close
        7,  # poll
        271,  # ppoll
        233,  # epoll_ctl
        288,  # accept4
        318,  # getrandom
    ),
}
# openat2 hides its mode behind a pointer; it fails with ENOSYS, so callers fall back to openat.
_NOSYS: dict[str, tuple[int, ...]] = {"x86_64": (437,)}
_SETID_BITS = 0o6000

# ioctl requests that push bytes into a terminal's input, as if typed on it: a broker started
# from a shell could otherwise run commands in that shell.
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C

# Socket families and types. A broker needs local and IP stream sockets, netlink to list its
# addresses, and UDP only to resolve host names. Raw and packet sockets, which read or forge
# any traffic, and every other family are denied.
_AF_UNIX = 1
_AF_INET = 2
_AF_INET6 = 10
_AF_NETLINK = 16
_NETLINK_ROUTE = 0
_SOCK_STREAM = 1
_SOCK_DGRAM = 2
_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_SOCK_TYPE_MASK = 0xF  # the rest of the type argument carries SOCK_NONBLOCK and SOCK_CLOEXEC

# Flags of `clone` that make a new namespace. CLONE_NEWTIME is left out: in `clone` its bit is
# part of the exit signal, and only `clone3` and `unshare` accept it.
_CLONE_NAMESPACES = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)

_RET_ALLOW = 0x7FFF0000
_RET_USER_NOTIF = 0x7FC00000
_RET_ERRNO = 0x00050000

# Classic BPF opcodes.
_LD_W_ABS = 0x20
_AND_K = 0x54
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

# Offsets in struct seccomp_data.
_OFFSET_NR = 0
_OFFSET_ARCH = 4
_OFFSET_ARG0_LOW = 16  # little-endian: the low 32 bits of the first argument
_OFFSET_ARG1_LOW = 24
_OFFSET_ARG1_HIGH = 28
_OFFSET_ARG2_LOW = 32


def _arg_low(index: int) -> int:
    """Return the offset of the low 32 bits of argument `index` in struct seccomp_data."""
    return _OFFSET_ARG0_LOW + 8 * index


_PR_SET_NO_NEW_PRIVS = 38
_SET_MODE_FILTER = 1
_FILTER_FLAG_NEW_LISTENER = 1 << 3
_USER_NOTIF_FLAG_CONTINUE = 1 << 0

# ioctl requests on the listener: _IOWR('!', 0, struct seccomp_notif) (80 bytes) and
# _IOWR('!', 1, struct seccomp_notif_resp) (24 bytes).
_IOCTL_NOTIF_RECV = 0xC0502100
_IOCTL_NOTIF_SEND = 0xC0182101


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (
        ("len", ctypes.c_ushort),
        ("filter", ctypes.POINTER(_SockFilter)),
    )


class _SeccompData(ctypes.Structure):
    _fields_ = (
        ("nr", ctypes.c_int32),
        ("arch", ctypes.c_uint32),
        ("instruction_pointer", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    )


class _Notif(ctypes.Structure):
    _fields_ = (
        ("id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("data", _SeccompData),
    )


class _NotifResp(ctypes.Structure):
    _fields_ = (
        ("id", ctypes.c_uint64),
        ("val", ctypes.c_int64),
        ("error", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    )


@dataclass(frozen=True)
class SeccompReport:
    """The outcome of `install_seccomp`.

    `denied` names the calls the filter denies, execve and execveat included. `unknown` names
    the calls of `SECCOMP_DENIED` that this architecture does not have, so they need no rule.
    `supervisor` is the process id of the supervisor that lets the launcher's `execve` through.
    `udp`, `unix_stream` and `unix_dgram` tell whether UDP, UNIX stream and UNIX datagram
    sockets are allowed; raw, packet and other families never are.
    """

    arch: str
    denied: tuple[str, ...]
    unknown: tuple[str, ...]
    supervisor: int
    udp: bool = True
    unix_stream: bool = True
    unix_dgram: bool = True


def _arch() -> tuple[str, tuple[int, dict[str, int], int, int, int, int]]:
    machine = platform.machine()
    spec = _ARCHES.get(machine)
    if spec is None:
        raise HostError(
            f"seccomp system call numbers are not known for the {machine!r} architecture",
            fix="run on x86_64",
        )
    return machine, spec


def build_program(
    audit_arch: int,
    denied: dict[str, int],
    notified: dict[str, int],
    clone: int,
    clone3: int,
    x32_base: int,
    checked: dict[str, int] | None = None,
    *,
    udp: bool = False,
    unix_stream: bool = False,
    unix_dgram: bool = True,
    own_process: dict[int, int] | None = None,
    no_setid: dict[int, int] | None = None,
    chmod: dict[int, int] | None = None,
    nosys: tuple[int, ...] = (),
    fast_allow: tuple[int, ...] = (),
) -> bytes:
    """Return the classic BPF program (8 bytes an instruction) for the given call numbers.

    The other arguments:

    - `checked` maps "socket", "ioctl" and "mremap" to their numbers. Sockets are allowed only
      of the families, types and protocols listed above: UDP when `udp` is True, UNIX streams
      and datagrams when `unix_stream` and `unix_dgram` are True. No ioctl may type into a
      terminal, and no mremap may make a second mapping of the same memory.
    - `own_process`, `no_setid` and `chmod` map call numbers to the index of the argument
      checked: a pid that must be 0, a mode without the set-ID bits, and for chmod the same
      mode check, only when `unix_stream` is True (chmod is denied otherwise).
    - `nosys` calls fail with ENOSYS.
    - `fast_allow` calls are allowed first, for speed. None of them may be denied or checked.
    """
    checked = checked or {}
    # Each entry is (code, jump-if-true label, jump-if-false label, k), or a label of its own
    # that marks the next entry. A jump label names a return at the end or a marked entry;
    # None means the next instruction. Every jump goes forward, as classic BPF requires.
    body: list[tuple[int, str | None, str | None, int] | str] = [
        (_LD_W_ABS, None, None, _OFFSET_ARCH),
        (_JEQ_K, None, "deny", audit_arch),
        (_LD_W_ABS, None, None, _OFFSET_NR),
    ]
    if x32_base:
        body.append((_JGE_K, "deny", None, x32_base))
    special = {*denied.values(), *notified.values(), *checked.values(), *nosys}
    special |= {*(own_process or {}), *(no_setid or {}), *(chmod or {}), clone, clone3}
    if special & set(fast_allow):
        raise ValueError("a call allowed on the fast path is also denied or checked")
    body += [(_JEQ_K, "allow", None, number) for number in fast_allow]
    body += [(_JEQ_K, "notify", None, number) for number in sorted(set(notified.values()))]
    body += [(_JEQ_K, "deny", None, number) for number in sorted(set(denied.values()))]
    body += [(_JEQ_K, "nosys", None, number) for number in nosys]
    body += [(_JEQ_K, name, None, number) for name, number in sorted(checked.items())]
    argument_checks: list[tuple[int, str, int, int]] = []  # (number, label, argument, mask)
    for number, index in sorted((own_process or {}).items()):
        argument_checks.append((number, "pid0", index, 0xFFFFFFFF))
    for number, index in sorted((no_setid or {}).items()):
        argument_checks.append((number, "setid", index, _SETID_BITS))
    for number, index in sorted((chmod or {}).items()):
        argument_checks.append((number, "setid" if unix_stream else "deny", index, _SETID_BITS))
    for number, label, _index, _mask in argument_checks:
        target = f"{label}{number}" if label != "deny" else "deny"
        body.append((_JEQ_K, target, None, number))
    body += [
        (_JEQ_K, "nosys", None, clone3),
        (_JEQ_K, None, "allow", clone),
        (_LD_W_ABS, None, None, _OFFSET_ARG0_LOW),
        (_JSET_K, "deny", "allow", _CLONE_NAMESPACES),
    ]
    for number, label, index, mask in argument_checks:
        if label == "deny":
            continue
        body += [f"{label}{number}", (_LD_W_ABS, None, None, _arg_low(index))]
        if label == "pid0":
            body.append((_JEQ_K, "allow", "deny", 0))
        else:
            body.append((_JSET_K, "deny", "allow", mask))
    if "ioctl" in checked:
        body += [
            "ioctl",
            (_LD_W_ABS, None, None, _OFFSET_ARG1_LOW),
            (_JEQ_K, "deny", None, _TIOCSTI),
            (_JEQ_K, "deny", "allow", _TIOCLINUX),
        ]
    if "mremap" in checked:
        # An old size of 0 duplicates a shared mapping: one copy writable, one executable.
        body += [
            "mremap",
            (_LD_W_ABS, None, None, _OFFSET_ARG1_LOW),
            (_JEQ_K, None, "allow", 0),
            (_LD_W_ABS, None, None, _OFFSET_ARG1_HIGH),
            (_JEQ_K, "deny", "allow", 0),
        ]
    if "socket" in checked:
        body += _socket_checks(udp, unix_stream, unix_dgram)
    return _assemble(body)


def _socket_checks(
    udp: bool, unix_stream: bool, unix_dgram: bool
) -> list[tuple[int, str | None, str | None, int] | str]:
    stream_or_dgram = "allow" if udp else "deny"
    return [
        "socket",
        (_LD_W_ABS, None, None, _OFFSET_ARG0_LOW),
        (_JEQ_K, "unix", None, _AF_UNIX),
        (_JEQ_K, "netlink", None, _AF_NETLINK),
        (_JEQ_K, "inet", None, _AF_INET),
        (_JEQ_K, "inet", "deny", _AF_INET6),
        # UNIX sockets reach every daemon listening on a socket file, which Landlock does not
        # check. Datagrams are allowed for the service manager and syslog, streams for a UNIX
        # socket listener, and each only when the broker needs it.
        "unix",
        (_LD_W_ABS, None, None, _OFFSET_ARG1_LOW),
        (_AND_K, None, None, _SOCK_TYPE_MASK),
        (_JEQ_K, "allow" if unix_dgram else "deny", None, _SOCK_DGRAM),
        (_JEQ_K, "allow" if unix_stream else "deny", "deny", _SOCK_STREAM),
        # Plain TCP and UDP only: Landlock's port rules do not cover other protocols, such as
        # Multipath TCP, that use the same socket types.
        "inet",
        (_LD_W_ABS, None, None, _OFFSET_ARG1_LOW),
        (_AND_K, None, None, _SOCK_TYPE_MASK),
        (_JEQ_K, "stream", None, _SOCK_STREAM),
        (_JEQ_K, "dgram", "deny", _SOCK_DGRAM),
        "stream",
        (_LD_W_ABS, None, None, _OFFSET_ARG2_LOW),
        (_JEQ_K, "allow", None, 0),
        (_JEQ_K, "allow", "deny", _IPPROTO_TCP),
        "dgram",
        (_LD_W_ABS, None, None, _OFFSET_ARG2_LOW),
        (_JEQ_K, stream_or_dgram, None, 0),
        (_JEQ_K, stream_or_dgram, "deny", _IPPROTO_UDP),
        "netlink",
        (_LD_W_ABS, None, None, _OFFSET_ARG2_LOW),
        (_JEQ_K, "allow", "deny", _NETLINK_ROUTE),
    ]


def _assemble(body: list[tuple[int, str | None, str | None, int] | str]) -> bytes:
    returns = {
        "allow": _RET_ALLOW,
        "deny": _RET_ERRNO | errno.EPERM,
        "notify": _RET_USER_NOTIF,
        "nosys": _RET_ERRNO | errno.ENOSYS,
    }
    instructions: list[tuple[int, str | None, str | None, int]] = []
    position: dict[str, int] = {}
    for entry in body:
        if isinstance(entry, str):
            position[entry] = len(instructions)
        else:
            instructions.append(entry)
    for index, label in enumerate(returns):
        position[label] = len(instructions) + index

    def offset(index: int, label: str | None) -> int:
        if label is None:
            return 0
        jump = position[label] - index - 1
        if not 0 <= jump <= 255:
            raise ValueError("seccomp program too long for a classic BPF jump")
        return jump

    program = b"".join(
        struct.pack("<HBBI", code, offset(i, jt), offset(i, jf), k)
        for i, (code, jt, jf, k) in enumerate(instructions)
    )
    program += b"".join(struct.pack("<HBBI", _RET_K, 0, 0, value) for value in returns.values())
    return program


def _load(program: bytes, seccomp_nr: int) -> int:
    """Set no_new_privs, load `program` on this thread and return the listener descriptor."""
    count = len(program) // ctypes.sizeof(_SockFilter)
    instructions = (_SockFilter * count).from_buffer_copy(program)
    prog = _SockFprog(count, ctypes.cast(instructions, ctypes.POINTER(_SockFilter)))

    lib = libc()
    ctypes.set_errno(0)
    if lib.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise HostError(f"setting no_new_privs failed: {os.strerror(ctypes.get_errno())}")
    ctypes.set_errno(0)
    fd = int(
        lib.syscall(
            ctypes.c_long(seccomp_nr),
            ctypes.c_long(_SET_MODE_FILTER),
            ctypes.c_long(_FILTER_FLAG_NEW_LISTENER),
            ctypes.c_void_p(ctypes.addressof(prog)),
        )
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise HostError(
            f"installing the seccomp filter failed: {os.strerror(err)}",
            fix="use Linux 5.5 or later with seccomp filters enabled",
        )
    return fd


def _respond(listener: int, request: _Notif, allow: bool) -> None:
    response = _NotifResp(request.id, 0, 0 if allow else -errno.EPERM, 0)
    if allow:
        response.flags = _USER_NOTIF_FLAG_CONTINUE
    # A failure (ENOENT) means the caller is gone, so no response is needed.
    libc().ioctl(listener, ctypes.c_ulong(_IOCTL_NOTIF_SEND), ctypes.byref(response))


def _supervise(listener: int, launcher_gone: int, launcher: int) -> None:
    """Let the launcher's first exec call through, deny any other, and return after the first.

    Returns early when `launcher_gone` reaches end of file: the launcher exited without exec.
    """
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    poller.register(launcher_gone, select.POLLIN)
    while True:
        events = dict(poller.poll())
        if listener not in events:
            return
        request = _Notif()
        if libc().ioctl(listener, ctypes.c_ulong(_IOCTL_NOTIF_RECV), ctypes.byref(request)) != 0:
            if ctypes.get_errno() in (errno.EINTR, errno.ENOENT):
                continue
            return
        if request.pid == launcher:
            _respond(listener, request, allow=True)
            return
        _respond(listener, request, allow=False)


def _start_supervisor(listener: int, launcher_gone: int, keep_open: int) -> int:
    """Fork the supervisor (not as a child of this process) and return its process id."""
    launcher = threading.get_native_id()
    ids_read, ids_write = os.pipe()
    middle = os.fork()
    if middle == 0:  # The intermediate process only forks and exits.
        status = 1
        try:
            os.close(ids_read)
            os.close(keep_open)
            supervisor = os.fork()
            if supervisor == 0:
                code = 0
                try:
                    os.close(ids_write)
                    _supervise(listener, launcher_gone, launcher)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            os.write(ids_write, struct.pack("<i", supervisor))
            status = 0
        finally:
            os._exit(status)
    os.close(ids_write)
    data = os.read(ids_read, 4)
    os.close(ids_read)
    _, status = os.waitpid(middle, 0)
    if os.waitstatus_to_exitcode(status) != 0 or len(data) != 4:
        raise HostError("starting the seccomp exec supervisor failed")
    return int(struct.unpack("<i", data)[0])


def install_seccomp(
    *, udp: bool = True, unix_stream: bool = True, unix_dgram: bool = True
) -> SeccompReport:
    """Install the filter on this thread for good, or raise `HostError` when that fails.

    The next `execve` of this process is let through once; call it right after this returns.
    `no_new_privs` is set first, as the kernel requires of a process without CAP_SYS_ADMIN.
    `udp` False denies UDP sockets, for a broker that resolves no host names. `unix_stream`
    False denies UNIX stream sockets and chmod, for a broker without a UNIX listener.
    `unix_dgram` False denies UNIX datagram sockets, for a broker that neither logs to syslog
    nor reports to a service manager.
    """
    machine, (audit_arch, numbers, seccomp_nr, clone, clone3, x32_base) = _arch()
    known = {name: numbers[name] for name in SECCOMP_DENIED if name in numbers}
    unknown = tuple(name for name in SECCOMP_DENIED if name not in numbers)
    notified = {name: number for name, number in known.items() if name in _EXEC_CALLS}
    denied = {name: number for name, number in known.items() if name not in _EXEC_CALLS}
    program = build_program(
        audit_arch,
        denied,
        notified,
        clone,
        clone3,
        x32_base,
        _CHECKED_NUMBERS[machine],
        udp=udp,
        unix_stream=unix_stream,
        unix_dgram=unix_dgram,
        own_process=_OWN_PROCESS_ONLY[machine],
        no_setid=_NO_SETID_MODE[machine],
        chmod=_CHMOD[machine],
        nosys=_NOSYS[machine],
        fast_allow=_FAST_ALLOW[machine],
    )

    # The launcher keeps the write end open until exec or exit, both of which close it.
    gone_read, gone_write = os.pipe()
    os.set_inheritable(gone_write, False)
    listener = -1
    try:
        listener = _load(program, seccomp_nr)
        supervisor = _start_supervisor(listener, gone_read, gone_write)
    except BaseException:
        os.close(gone_write)
        raise
    finally:
        os.close(gone_read)
        if listener >= 0:
            # Only the supervisor keeps the listener, so it goes away when the supervisor exits.
            os.close(listener)
    return SeccompReport(
        arch=machine,
        denied=tuple(known),
        unknown=unknown,
        supervisor=supervisor,
        udp=udp,
        unix_stream=unix_stream,
        unix_dgram=unix_dgram,
    )
