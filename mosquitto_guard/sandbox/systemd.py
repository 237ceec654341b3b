"""systemd directives that match a sandbox plan, for the drop-in `systemd-unit` prints.

systemd applies these before the launcher starts, so they apply to the launcher as well as the
broker. They repeat the launcher's own layers, as a second line of defence if one is bypassed.
They also add what only a service manager can do: a read-only file system with a few writable
paths, private /tmp and devices, and IP address filtering in the cgroup.

The launcher needs a few things the broker does not: executing Python and its extension
modules, writing the rollback state, and the Landlock and seccomp system calls, which systemd's
@system-service set leaves out.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence
from pathlib import Path

from mosquitto_guard.sandbox.plan import SandboxPlan, is_address

# Always set: none of them takes anything the broker or the launcher needs.
FIXED_DIRECTIVES = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "DevicePolicy=closed",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "PrivateMounts=yes",
    "PrivateIPC=yes",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "RestrictNamespaces=yes",
    "KeyringMode=private",
    "SystemCallArchitectures=native",
    "UMask=0077",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
)

# System calls the launcher makes to confine the broker, missing from @system-service.
LAUNCHER_CALLS = "seccomp landlock_create_ruleset landlock_add_rule landlock_restrict_self"
DENIED_GROUPS = "@mount @module @reboot @swap @raw-io @clock @cpu-emulation @debug @obsolete"


def hardening_directives(
    plan: SandboxPlan, broker: Path, state_dir: Path, user: str | None
) -> list[str]:
    """Return the `[Service]` lines for `plan`, comments included."""
    writable = [quote(path) for path in plan.noexec_paths()]
    lines = [
        "# Hardening derived from the broker config and the plugins' manifests.",
        *FIXED_DIRECTIVES,
    ]
    lines += _exec_lines(broker, writable)
    lines.append(_protect_home())
    lines.append("ReadWritePaths=" + " ".join([*writable, quote(state_dir)]))
    lines += _prepare_lines(plan, user)
    capabilities = " ".join(name for name, _ in plan.capabilities)
    lines.append(f"CapabilityBoundingSet={capabilities}")
    lines.append("AmbientCapabilities=")
    lines.append(f"SystemCallFilter=@system-service {LAUNCHER_CALLS}")
    lines.append(f"SystemCallFilter=~{DENIED_GROUPS}")
    lines.append("SystemCallErrorNumber=EPERM")
    lines += _address_lines(plan)
    return lines


def _exec_lines(broker: Path, writable: Sequence[str]) -> list[str]:
    """Everything is noexec but the broker, the libraries and the Python running the launcher."""
    allowed = [str(broker), "/usr/lib", "/lib", "/lib64", "/usr/lib64"]
    for prefix in (sys.base_prefix, sys.prefix):
        if not any(prefix == path or prefix.startswith(path + "/") for path in allowed):
            allowed.append(prefix)
    existing = [quote(path) for path in allowed if Path(path).exists()]
    # The writable paths are named again so that they stay noexec whatever mount they are on.
    return ["NoExecPaths=/ " + " ".join(writable), "ExecPaths=" + " ".join(existing)]


def _protect_home() -> str:
    """Hide home directories, unless the Python running the launcher is installed in one."""
    homes = ("/home/", "/root/", "/run/user/")
    if any(prefix.startswith(homes) for prefix in (sys.base_prefix + "/", sys.prefix + "/")):
        return "ProtectHome=read-only"
    return "ProtectHome=yes"


def _prepare_lines(plan: SandboxPlan, user: str | None) -> list[str]:
    """Create the broker's own directories before start, outside the sandbox ('+').

    Only directories that the broker config names get these lines: the persistence, log and
    pid directories. Paths a manifest or the policy grants are the admin's to create. A
    directory below one that someone other than root can write is left out too: the broker's
    user could put a symlink on the way, and chown, run as root, would follow it.
    """
    lines = [
        "# Replaces the package's ExecStartPre= lines, which the read-only system would break.",
        "ExecStartPre=",
    ]
    owner = user or "mosquitto"
    for grant in plan.grants:
        if grant.access != "write" or not grant.create:
            continue
        target = Path(grant.target)
        unsafe = _writable_ancestor(target)
        if unsafe is not None:
            lines.append(f"# {target} is not created here: {unsafe} above it is not root's alone.")
            continue
        lines.append(f"ExecStartPre=+/bin/mkdir -m 740 -p {quote(target)}")
        lines.append(f"ExecStartPre=+/bin/chown {quote(owner)} {quote(target)}")
    return lines


def _writable_ancestor(path: Path) -> Path | None:
    """Return the first directory above `path` that someone other than root can change.

    A symlink planted on the way needs such a directory, so checking each one (symlinks
    followed) from `/` down is enough.
    """
    for parent in reversed(path.parents):
        try:
            info = parent.stat()
        except OSError:
            return None  # created by mkdir -p below a checked parent
        if info.st_uid != 0 or info.st_mode & 0o022:
            return parent
    return None


def quote(value: str | Path) -> str:
    """Return `value` as one word of a systemd unit line: '%' doubled, quoted if it has spaces."""
    text = str(value).replace("%", "%%")
    if any(char.isspace() or char in "\\\"'" for char in text):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return text


def _address_lines(plan: SandboxPlan) -> list[str]:
    """Allow loopback and the configured peers, when every listener and peer is an address."""
    local = all(address is not None and _loopback(address) for address in plan.listen_addresses)
    peers = plan.remote_hosts
    if not local:
        return ["# No IPAddressAllow=: a listener accepts clients from any address."]
    if not all(is_address(host) for host in peers):
        return ["# No IPAddressAllow=: a bridge or a plugin connects to a host by name."]
    allowed = ["localhost", *[host for host in peers if not _loopback(host)]]
    return ["IPAddressDeny=any", "IPAddressAllow=" + " ".join(allowed)]


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"
