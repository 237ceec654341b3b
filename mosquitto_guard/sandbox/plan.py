"""The sandbox a broker gets, derived from its verified config and its plugins' manifests.

Nothing here is listed by hand: each rule comes from a config line, a manifest permission, the
inventory of loaded code, or the policy's `[sandbox]` table, and carries that source so that
`sandbox-plan` can show why it exists. The plan is data only; `sandbox.confine` applies it.

What the broker may do, and why (Mosquitto 2.0 as the Debian package builds it):

- execute: its own binary and the program interpreter, nothing else. Libraries and plugins
  are mapped, which Landlock governs as reading.
- read:
  - the libraries and name-service modules in the inventory;
  - the host files that decide what loads (the OpenSSL config, `/etc/ld.so.cache`,
    `/etc/nsswitch.conf`);
  - the account databases, when the broker drops to its `user`;
  - the libwrap tables, when it links libwrap;
  - the resolver files, when a bridge or a plugin names a host;
  - the files its options name (TLS material, password, ACL and PSK files, `http_dir`).
- write: the persistence directory, the directories of `log_dest file` and `pid_file`, the
  directory of a UNIX socket listener, and what manifests and the policy declare. The broker
  replaces its persistence file through a rename and re-creates its log after rotation, so a
  write grant covers the whole directory. A directory shared with the rest of the system
  (`/run`, `/var/log`, `/tmp`, ...), or one that contains a config file, a plugin or a trust
  anchor, is never granted: only a file the config names inside it is.
- bind: each listener's TCP port. connect: each bridge's port and each declared endpoint's port.

The sealed config and plugins are memfds, which Landlock does not restrict, so the config
directory needs no grant at all: a plugin cannot read or rewrite the config it came from.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mosquitto_guard.config.model import BrokerConfig, Option, PluginEntry
from mosquitto_guard.config.options import CERTIFICATE_DIRECTORY_OPTIONS, READ_FILE_OPTIONS
from mosquitto_guard.inventory.model import Inventory
from mosquitto_guard.manifest.model import Manifest
from mosquitto_guard.policy.model import SandboxSettings

# Directories the broker reads: CA certificate directories, and the files it serves over HTTP.
READ_DIRECTORY_OPTIONS = (*CERTIFICATE_DIRECTORY_OPTIONS, "http_dir")

# Directories that other services share. A write grant on one of them would let a plugin drop
# files next to theirs, so only the broker's own file inside them is granted.
SHARED_DIRECTORIES = frozenset(
    Path(path)
    for path in (
        "/",
        "/etc",
        "/run",
        "/var/run",
        "/tmp",  # noqa: S108 (named to be refused, not used)
        "/var/tmp",  # noqa: S108
        "/dev/shm",  # noqa: S108
        "/var/log",
        "/var/lib",
        "/var",
        "/home",
        "/root",
        "/usr",
        "/opt",
    )
)

# Code the launcher seals into memfds; OpenSSL modules are verified but read from disk.
SEALED_KINDS = frozenset({"plugin", "auth_plugin", "global_plugin", "plugin_load", "tls_engine"})

ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/proc/sys/kernel/ngroups_max")
LIBWRAP_FILES = ("/etc/hosts.allow", "/etc/hosts.deny")
RESOLVER_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/host.conf", "/etc/gai.conf")
DEFAULT_BRIDGE_PORT = 1883
DNS_PORT = 53


@dataclass(frozen=True)
class Grant:
    """One rule: `access` on `target`, because of `source`.

    `access` is "execute", "read", "write", "bind" or "connect". `target` is a path, or a TCP
    port for bind and connect.
    """

    access: str
    target: str
    source: str
    # True for a directory the broker's own config names, which a service unit may create.
    create: bool = False


@dataclass
class SandboxPlan:
    """The rules for one launch, with their sources, and what the plan could not grant.

    `capabilities` lists the capability names the broker keeps in its bounding set, each with
    its reason. `udp` is True when the broker must resolve host names, which needs UDP to the
    resolver. `warnings` are grants that weaken the sandbox. `problems` are missing paths the
    broker needs: the broker would fail on them too.
    """

    grants: list[Grant] = field(default_factory=list)
    capabilities: list[tuple[str, str]] = field(default_factory=list)
    udp: bool = False
    udp_source: str = ""
    # The hosts the broker connects to, and the addresses it listens on (None: every address).
    remote_hosts: list[str] = field(default_factory=list)
    listen_addresses: list[str | None] = field(default_factory=list)
    # The account the broker drops to, or None when it keeps the launcher's.
    broker_user: str | None = None
    # False when the broker must reach an abstract UNIX socket outside its sandbox.
    scope_abstract_unix: bool = True
    # True when a listener is a UNIX socket, which needs UNIX stream sockets.
    unix_stream: bool = False
    # True when the broker logs to syslog or reports to a service manager, over datagrams.
    unix_dgram: bool = False
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Files that decide what the next start trusts or loads: never inside a write grant.
    inputs: list[Path] = field(default_factory=list)

    def targets(self, access: str) -> list[str]:
        """Return the targets of every grant of `access`, without repeats, in order."""
        return list(dict.fromkeys(g.target for g in self.grants if g.access == access))

    def noexec_paths(self) -> list[Path]:
        """Return the writable paths, which the launcher mounts noexec."""
        return [Path(target) for target in self.targets("write")]

    def add(
        self, access: str, target: str | Path | int, source: str, *, create: bool = False
    ) -> None:
        grant = Grant(access, str(target), source, create)
        if grant not in self.grants:
            self.grants.append(grant)


@dataclass(frozen=True)
class LoadedPlugin:
    """A plugin line of the config and the verified manifest of the file it loads."""

    entry: PluginEntry
    manifest: Manifest


def derive_plan(
    config: BrokerConfig | None,
    inventory: Inventory,
    plugins: Sequence[LoadedPlugin],
    settings: SandboxSettings,
    *,
    broker: Path,
    interpreter: Path | None,
    cwd: Path,
    launcher_uid: int,
    notify_socket: str | None = None,
    protected: Sequence[Path] = (),
) -> SandboxPlan:
    """Return the sandbox for a broker started from `broker` with `config` and `plugins`.

    `notify_socket` is the service manager's NOTIFY_SOCKET, to which the broker reports
    readiness. `protected` lists further paths no write grant may cover, such as the policy,
    the manifests and the rollback state.
    """
    plan = SandboxPlan()
    plan.unix_dgram = notify_socket is not None
    plan.inputs = [*(config.files if config is not None else []), *protected]
    plan.inputs += [item.path for item in inventory.items if item.needs_manifest and item.path]
    if notify_socket is not None and notify_socket.startswith("@"):
        plan.scope_abstract_unix = False
        plan.warnings.append(
            f"NOTIFY_SOCKET {notify_socket} is an abstract UNIX socket, so the broker may reach "
            "every abstract socket; fix: give the service manager a socket path"
        )
    plan.add("execute", broker, "the broker binary")
    if interpreter is not None:
        plan.add("execute", interpreter, "the program interpreter of the broker")
    _code_grants(plan, inventory)
    _privilege_grants(plan, config, launcher_uid)
    if config is not None:
        _option_grants(plan, config, cwd)
        _listener_grants(plan, config, cwd)
        _bridge_grants(plan, config)
    for plugin in plugins:
        _manifest_grants(plan, plugin, cwd)
    _policy_grants(plan, settings)
    if plan.udp:
        for name in RESOLVER_FILES:
            _add_if_exists(plan, "read", Path(name), f"host name lookups ({plan.udp_source})")
    _reject_planted_symlinks(plan)
    _drop_nested_writes(plan)
    _warn_on_unwritable_outputs(plan)
    return plan


def _drop_nested_writes(plan: SandboxPlan) -> None:
    """Drop each write grant inside another one: the outer grant covers it already."""
    writable = [Path(g.target) for g in plan.grants if g.access == "write"]
    for grant in [g for g in plan.grants if g.access == "write"]:
        if any(outer in Path(grant.target).parents for outer in writable):
            plan.grants.remove(grant)


def _code_grants(plan: SandboxPlan, inventory: Inventory) -> None:
    for item in inventory.items:
        if not item.loaded or item.path is None or item.kind in SEALED_KINDS:
            continue  # sealed into a memfd, which needs no grant
        plan.add("read", item.path, f"{item.kind.replace('_', ' ')} ({item.source})")
    for path in inventory.host_files:
        _add_if_exists(plan, "read", path, "a host file that decides which code the broker loads")
    libwrap = any(
        item.path is not None and item.path.name.startswith("libwrap.so")
        for item in inventory.items
    )
    if libwrap:
        for name in LIBWRAP_FILES:
            # Unreadable tables make libwrap log an error and allow every client.
            _add_if_exists(plan, "read", Path(name), "libwrap checks each client against it")


def _privilege_grants(plan: SandboxPlan, config: BrokerConfig | None, launcher_uid: int) -> None:
    """Add the account files and the capabilities of the broker's drop to its `user`."""
    if launcher_uid != 0:
        return  # the broker keeps the launcher's user and needs no capability
    user = config.last("user") if config is not None else None
    name = user.value if user is not None else "mosquitto"
    source = f"{user.location}: user {name}" if user is not None else "the default user mosquitto"
    plan.broker_user = name
    if name == "root":
        listeners = config.listeners if config is not None else []
        ports = sorted({listener.port for listener in listeners if 0 < listener.port < 1024})
        if ports:
            plan.capabilities.append(
                ("CAP_NET_BIND_SERVICE", f"{source} binds port {ports[0]}, below 1024")
            )
        return
    for path in ACCOUNT_FILES:
        _add_if_exists(plan, "read", Path(path), f"the drop to the broker's user ({source})")
    plan.capabilities += [
        ("CAP_SETUID", f"the drop to the broker's user ({source})"),
        ("CAP_SETGID", f"the drop to the broker's user and its groups ({source})"),
    ]


def _option_grants(plan: SandboxPlan, config: BrokerConfig, cwd: Path) -> None:
    for option in config.options:
        if option.key in READ_FILE_OPTIONS or option.key in READ_DIRECTORY_OPTIONS:
            _add_needed(plan, "read", _path(option.value, cwd), _source(option))
        elif option.key == "log_dest" and option.args[:1] == ("file",):
            log_file = option.value.partition(" ")[2]
            _add_write(plan, _path(log_file, cwd), _source(option), create=True)
        elif option.key == "log_dest" and option.args[:1] == ("syslog",):
            plan.unix_dgram = True
        elif option.key == "log_timestamp_format":
            _add_if_exists(plan, "read", Path("/etc/localtime"), _source(option))
    pid_file = config.last("pid_file")
    if pid_file is not None:
        _add_write(plan, _path(pid_file.value, cwd), _source(pid_file), create=True)
    _persistence_grants(plan, config, cwd)


def _persistence_grants(plan: SandboxPlan, config: BrokerConfig, cwd: Path) -> None:
    enabled = config.last("persistence")
    if enabled is None or enabled.value.strip() not in ("true", "1", "yes"):
        return
    location = config.last("persistence_location")
    name = config.last("persistence_file")
    file_name = name.value if name is not None else "mosquitto.db"
    source = _source(location or enabled)
    if location is None or not location.value:
        directory = _path(file_name, cwd).parent
        if directory in SHARED_DIRECTORIES:
            plan.problems.append(
                f"{enabled.location}: persistence writes {file_name} into {directory}, the "
                "working directory; fix: set persistence_location to a directory of its own, "
                "such as /var/lib/mosquitto/"
            )
            return
        _add_write(plan, directory / file_name, source, create=True)
        return
    # The broker joins the two with a '/', as "%s/%s".
    _add_write(plan, _path(f"{location.value}/{file_name}", cwd), source, create=True)


def _listener_grants(plan: SandboxPlan, config: BrokerConfig, cwd: Path) -> None:
    if not config.listeners:
        # Local-only mode: the broker listens on 127.0.0.1 and ::1, port 1883.
        plan.add("bind", 1883, "local-only mode: no listener, so 127.0.0.1:1883 and [::1]:1883")
        plan.listen_addresses += ["127.0.0.1", "::1"]
    for listener in config.listeners:
        source = _source(listener.option) if listener.option else "the default listener"
        if listener.port > 0:
            plan.add("bind", listener.port, source)
            plan.listen_addresses.append(listener.address)
        elif listener.address and listener.address.startswith("/"):
            _add_write(plan, _path(listener.address, cwd), f"{source} (UNIX socket)", create=True)
            plan.unix_stream = True


def _bridge_grants(plan: SandboxPlan, config: BrokerConfig) -> None:
    for option in config.options:
        if option.key not in ("address", "addresses"):
            continue
        for token in option.value.split():
            host, port = _split_endpoint(token, DEFAULT_BRIDGE_PORT)
            _add_connect(plan, host, port, f"{_source(option)} (bridge)")


def _manifest_grants(plan: SandboxPlan, plugin: LoadedPlugin, cwd: Path) -> None:
    manifest, entry = plugin.manifest, plugin.entry
    source = f"manifest {manifest.name} version {manifest.version}"
    for endpoint in manifest.permissions.connect:
        host, port = _split_endpoint(endpoint, 0)
        _add_connect(plan, host, port, f"{source}: connect {endpoint}")
    for path in manifest.permissions.read:
        _add_needed(plan, "read", Path(path), f"{source}: read {path}")
    for path in manifest.permissions.write:
        _add_write(plan, Path(path), f"{source}: write {path}", exact=True)
    for access, keys in (
        ("read", manifest.permissions.read_options),
        ("write", manifest.permissions.write_options),
    ):
        for key in keys:
            for option in entry.options.get(key, []):
                target = _path(option.value, cwd)
                grant_source = f"{source}: {access}_options {key} ({option.location})"
                if access == "read":
                    _add_needed(plan, "read", target, grant_source)
                else:
                    _add_write(plan, target, grant_source)


def _policy_grants(plan: SandboxPlan, settings: SandboxSettings) -> None:
    for path in settings.read:
        _add_needed(plan, "read", path, "policy [sandbox] read")
    for path in settings.write:
        _add_write(plan, path, "policy [sandbox] write", exact=True)
    for endpoint in settings.connect:
        host, port = _split_endpoint(endpoint, 0)
        _add_connect(plan, host, port, f"policy [sandbox] connect {endpoint}")


def _reject_planted_symlinks(plan: SandboxPlan) -> None:
    """Drop each path grant that passes through a symlink someone other than root could plant.

    Rules follow symlinks when they are opened. A plugin that replaced a directory it may write
    with a symlink would otherwise widen its own sandbox at the next start. A symlink is
    trusted only in a root-owned directory that neither group nor others may write, and that
    lies outside every directory the broker may write (a broker kept at uid 0 writes there).
    """
    writable = [Path(g.target) for g in plan.grants if g.access == "write"]
    for grant in [g for g in plan.grants if g.access in ("read", "write", "execute")]:
        link = _unsafe_symlink(Path(grant.target), writable)
        if link is not None:
            plan.grants.remove(grant)
            plan.problems.append(
                f"{grant.source}: {grant.target} passes through the symlink {link}, in a "
                "directory that the broker or a user other than root can write; fix: name "
                "the real path, and check who replaced the directory"
            )


def _unsafe_symlink(path: Path, writable: Sequence[Path]) -> Path | None:
    current = Path("/")
    for part in path.parts[1:]:
        current = current / part
        try:
            info = current.lstat()
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            parent = current.parent.stat()
            inside = any(current.parent == w or w in current.parent.parents for w in writable)
            if parent.st_uid != 0 or parent.st_mode & 0o022 or inside:
                return current
            current = Path(os.path.realpath(current))
    return None


def _warn_on_unwritable_outputs(plan: SandboxPlan) -> None:
    """Warn when the broker's user cannot write a directory the broker must write."""
    user = plan.broker_user
    try:
        account = pwd.getpwnam(user) if user is not None else pwd.getpwuid(os.geteuid())
    except KeyError:
        return  # the broker falls back to nobody, or rejects the unknown user itself
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for grant in [g for g in plan.grants if g.access == "write"]:
        info = Path(grant.target).stat()
        bits = 0o3 if stat.S_ISDIR(info.st_mode) else 0o2
        if info.st_uid == account.pw_uid:
            allowed = (info.st_mode >> 6) & bits == bits
        elif info.st_gid in groups:
            allowed = (info.st_mode >> 3) & bits == bits
        else:
            allowed = info.st_mode & bits == bits
        if not allowed:
            plan.warnings.append(
                f"{grant.source}: the broker runs as {account.pw_name} without capabilities "
                f"and cannot write {grant.target} (owner uid {info.st_uid}, mode "
                f"{stat.S_IMODE(info.st_mode):04o}); fix: chown {account.pw_name} {grant.target}"
            )


def _add_connect(plan: SandboxPlan, host: str, port: int, source: str) -> None:
    plan.add("connect", port, source)
    if host not in plan.remote_hosts:
        plan.remote_hosts.append(host)
    if not is_address(host):
        if not plan.udp:
            plan.udp, plan.udp_source = True, source
        # The resolver falls back to TCP for responses too long for UDP.
        plan.add("connect", DNS_PORT, f"resolving {host} ({source})")


def _add_write(
    plan: SandboxPlan, path: Path, source: str, *, exact: bool = False, create: bool = False
) -> None:
    """Grant writing `path`'s directory, or `path` itself when `exact`.

    `create` marks a directory of the broker's own, named by its config, which a service unit
    may create for the broker's user.

    A directory that other services share, or that contains a config file, a plugin or a trust
    anchor, is never granted: a plugin could change what the next start loads. For a file the
    config names there, only the file itself is granted.
    """
    directory = path if exact else path.parent
    guarded = _guarded_input(plan, directory)
    if path in plan.inputs or (path.exists() and any(path.samefile(i) for i in _existing(plan))):
        plan.problems.append(
            f"{source}: {path} is a file the broker loads or trusts, so the broker may never "
            "write it; fix: name another path"
        )
    elif directory not in SHARED_DIRECTORIES and guarded is None:
        _add_needed(plan, "write", directory, source, create=create)
    elif exact:
        shared = directory in SHARED_DIRECTORIES
        why = "other services share it" if shared else f"it contains {guarded}"
        plan.problems.append(
            f"{source}: {directory} may not be writable, because {why}; fix: give the plugin "
            "a directory of its own"
        )
    elif path.exists():
        plan.add("write", path, source)
        shared = directory in SHARED_DIRECTORIES
        why = "other services share" if shared else f"contains {guarded}"
        plan.warnings.append(
            f"{source}: {path} sits in {directory}, which {why}, so only the file itself is "
            "writable and the broker cannot create it again or replace it; fix: move it into "
            "a directory of its own"
        )
    else:
        plan.problems.append(
            f"{source}: {path} does not exist and sits in {directory}, where the broker may not "
            "create files; fix: move it into a directory of its own, owned by the broker's user"
        )


def _guarded_input(plan: SandboxPlan, directory: Path) -> Path | None:
    """Return an input that `directory` contains, or None."""
    for path in plan.inputs:
        if path == directory or directory in path.parents:
            return path
    return None


def _existing(plan: SandboxPlan) -> list[Path]:
    return [path for path in plan.inputs if path.exists()]


def _add_needed(
    plan: SandboxPlan, access: str, path: Path, source: str, *, create: bool = False
) -> None:
    if os.path.lexists(path):
        plan.add(access, path, source, create=create)
    else:
        plan.problems.append(f"{source}: {path} does not exist; fix: create it or correct the path")


def _add_if_exists(plan: SandboxPlan, access: str, path: Path, source: str) -> None:
    if path.exists():
        plan.add(access, path, source)


def _path(value: str, cwd: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else cwd / path


def _source(option: Option) -> str:
    return f"{option.location}: {option.raw.strip()}"


def _split_endpoint(endpoint: str, default_port: int) -> tuple[str, int]:
    """Split `host[:port]` and `[v6]:port`; a missing port gives `default_port`."""
    if endpoint.startswith("["):
        host, _, rest = endpoint[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif endpoint.count(":") == 1:
        host, _, port_text = endpoint.partition(":")
    else:
        host, port_text = endpoint, ""
    port = int(port_text) if port_text.isdigit() else default_port
    return host, port


def is_address(host: str) -> bool:
    """Return True when `host` is an IPv4 or IPv6 address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def landlock_paths(plan: SandboxPlan) -> dict[str, list[Path]]:
    """Return the plan's paths by Landlock access: read_only, read_write and executable."""
    return {
        "read_only": [Path(target) for target in plan.targets("read")],
        "read_write": plan.noexec_paths(),
        "executable": [Path(target) for target in plan.targets("execute")],
    }


def ports(plan: SandboxPlan, access: str) -> list[int]:
    """Return the TCP ports of `access` ("bind" or "connect"), in order."""
    return [int(target) for target in plan.targets(access)]
