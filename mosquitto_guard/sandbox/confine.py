"""Applying a `SandboxPlan` to the launcher, layer by layer, just before it becomes the broker.

The order is fixed by the kernel:

1. no_new_privs: nothing exec'd afterwards gains privileges from set-user-ID bits or file
   capabilities. Landlock and seccomp need it, and it is set even when both are missing.
2. noexec mounts: in a private mount namespace; this needs CAP_SYS_ADMIN, which the
   bounding set loses next, and mounting is forbidden once Landlock applies.
3. capabilities: the bounding set keeps only what the plan names.
4. Landlock: paths, TCP ports, and scoping of signals and abstract UNIX sockets.
5. seccomp: the denied system calls, socket families and types, and the one allowed exec.
6. MDWE (memory-deny-write-execute): no memory may be writable and executable at once, and
   no mapping may become executable later, so a plugin cannot build code in memory either.

A layer the kernel lacks is reported, not fatal: the caller decides (the policy's sandbox
mode) whether to start the broker without it. Every layer holds for the calling thread and
what it execs, so `confine` refuses to run while other threads exist.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mosquitto_guard.errors import HostError

# Imported here, not where used: once Landlock applies, Python's own files may be unreadable.
from mosquitto_guard.sandbox.capabilities import bounding_set, limit_capabilities
from mosquitto_guard.sandbox.landlock import LandlockRules, apply_landlock
from mosquitto_guard.sandbox.libc import libc
from mosquitto_guard.sandbox.mounts import mount_noexec
from mosquitto_guard.sandbox.plan import SandboxPlan, landlock_paths, ports
from mosquitto_guard.sandbox.seccomp import install_seccomp

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_MDWE = 65
_PR_MDWE_REFUSE_EXEC_GAIN = 1


@dataclass(frozen=True)
class Layer:
    """One protection: whether it is in force, and what it does or why it is not."""

    name: str
    active: bool
    detail: str


@dataclass
class ConfinementReport:
    """The layers applied to the broker, in the order they were applied."""

    layers: list[Layer] = field(default_factory=list)

    @property
    def missing(self) -> list[Layer]:
        return [layer for layer in self.layers if not layer.active]

    def lines(self) -> list[str]:
        """Return one line per layer, as `run` prints them."""
        return [
            f"{layer.name}: {'active' if layer.active else 'NOT active'}: {layer.detail}"
            for layer in self.layers
        ]


def confine(plan: SandboxPlan) -> ConfinementReport:
    """Apply every layer of `plan` to this process for good and report each one."""
    if threading.active_count() > 1:
        raise HostError("the sandbox must be applied while the launcher has a single thread")
    report = ConfinementReport()
    report.layers.append(_layer("no_new_privs", _no_new_privs))
    report.layers.append(_layer("noexec", lambda: _noexec(plan)))
    report.layers.append(_layer("capabilities", lambda: _capabilities(plan)))
    report.layers += _landlock(plan)
    report.layers.append(_layer("seccomp", lambda: _seccomp(plan)))
    report.layers.append(_layer("mdwe", _mdwe))
    return report


def _layer(name: str, apply: Callable[[], str]) -> Layer:
    try:
        return Layer(name, True, apply())
    except HostError as error:
        return Layer(name, False, str(error))


def _prctl(option: int, value: int, action: str) -> None:
    ctypes.set_errno(0)
    if libc().prctl(option, value, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise HostError(f"{action} failed: {os.strerror(error)}")


def _no_new_privs() -> str:
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, "setting no_new_privs")
    return "set-user-ID programs and file capabilities grant nothing"


def _noexec(plan: SandboxPlan) -> str:
    paths = plan.noexec_paths()
    if not paths:
        return "the broker may write nowhere"
    result = mount_noexec(paths)
    parts = []
    if result.mounted:
        parts.append("mounted noexec: " + ", ".join(map(str, result.mounted)))
    if result.already:
        parts.append("already noexec: " + ", ".join(map(str, result.already)))
    return "; ".join(parts)


def _capabilities(plan: SandboxPlan) -> str:
    keep = [name for name, _ in plan.capabilities]
    if os.geteuid() != 0 and not bounding_set():
        return "the bounding set is already empty"
    result = limit_capabilities(keep)
    return "bounding set: " + (", ".join(result.kept) or "empty")


def _landlock(plan: SandboxPlan) -> list[Layer]:
    paths = landlock_paths(plan)
    rules = LandlockRules(
        read_only=tuple(paths["read_only"]),
        read_write=tuple(paths["read_write"]),
        executable=tuple(paths["executable"]),
        bind_tcp=tuple(ports(plan, "bind")),
        connect_tcp=tuple(ports(plan, "connect")),
        scope_abstract_unix=plan.scope_abstract_unix,
    )
    try:
        result = apply_landlock(rules)
    except HostError as error:
        return [Layer("landlock", False, str(error))]
    detail = (
        f"ABI {result.abi}; {len(rules.read_only)} read, {len(rules.read_write)} write, "
        f"{len(rules.executable)} execute rule(s)"
    )
    unrestricted = [right for right in result.missing if right.startswith("fs.")]
    if unrestricted:
        detail += "; this ABI cannot restrict " + ", ".join(unrestricted)
    layers = [Layer("landlock", True, detail)]
    for kind, layer_name in (("net.", "landlock-network"), ("scope.", "landlock-scoping")):
        missing = [right for right in result.missing if right.startswith(kind)]
        if missing:
            detail = f"the kernel's Landlock ABI {result.abi} lacks " + ", ".join(missing)
            needed = "6.7" if kind == "net." else "6.12"
            layers.append(Layer(layer_name, False, f"{detail}; fix: use Linux {needed} or later"))
        elif kind == "net.":
            bind = ", ".join(map(str, rules.bind_tcp)) or "none"
            connect = ", ".join(map(str, rules.connect_tcp)) or "none"
            layers.append(Layer(layer_name, True, f"TCP bind: {bind}; TCP connect: {connect}"))
        elif rules.scope_abstract_unix:
            layers.append(Layer(layer_name, True, "signals and abstract UNIX sockets stay inside"))
        else:
            layers.append(Layer(layer_name, True, "signals stay inside; abstract sockets are open"))
    return layers


def _seccomp(plan: SandboxPlan) -> str:
    result = install_seccomp(udp=plan.udp, unix_stream=plan.unix_stream, unix_dgram=plan.unix_dgram)
    parts = [
        f"{len(result.denied)} system calls denied, execve after start included",
        "UDP allowed for host name lookups" if result.udp else "no UDP",
        "UNIX streams allowed for a listener" if result.unix_stream else "no UNIX streams",
        "UNIX datagrams allowed for syslog or sd_notify"
        if result.unix_dgram
        else "no UNIX datagrams",
    ]
    return "; ".join(parts)


def _mdwe() -> str:
    _prctl(_PR_SET_MDWE, _PR_MDWE_REFUSE_EXEC_GAIN, "setting memory-deny-write-execute")
    return "no writable and executable memory"
