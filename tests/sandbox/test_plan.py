"""Deriving the sandbox from a real config file, the inventory and the manifests.

Each test writes a config into a temporary directory, reads it with the same reader `run` uses,
and checks the grants, their sources, and what the plan refuses.
"""

from __future__ import annotations

import os
import pwd
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support import compile_plugin

from mosquitto_guard.config.model import BrokerConfig
from mosquitto_guard.config.reader import read_config
from mosquitto_guard.inventory.collect import collect_inventory
from mosquitto_guard.inventory.model import Inventory
from mosquitto_guard.manifest.model import Manifest, Permissions, PluginFile, PluginRequirements
from mosquitto_guard.policy.model import SandboxSettings
from mosquitto_guard.sandbox.plan import Grant, LoadedPlugin, SandboxPlan, derive_plan

BROKER = Path("/usr/sbin/mosquitto")


def derive(
    config: BrokerConfig,
    cwd: Path,
    *,
    plugins: tuple[LoadedPlugin, ...] = (),
    settings: SandboxSettings | None = None,
    inventory: Inventory | None = None,
    uid: int = 0,
    notify_socket: str | None = None,
    protected: tuple[Path, ...] = (),
) -> SandboxPlan:
    """Derive the plan of a broker run as root from `/usr/sbin/mosquitto` in `cwd`."""
    return derive_plan(
        config,
        inventory or Inventory(),
        plugins,
        settings or SandboxSettings(),
        broker=BROKER,
        interpreter=None,
        cwd=cwd,
        launcher_uid=uid,
        notify_socket=notify_socket,
        protected=protected,
    )


def read_lines(directory: Path, *lines: str) -> BrokerConfig:
    config_path = directory / "mosquitto.conf"
    config_path.write_text("\n".join(lines) + "\n")
    return read_config([config_path])


def plan_for(directory: Path, *lines: str, **options: Any) -> SandboxPlan:
    """Write `lines` as the config in `directory` and derive its plan."""
    return derive(read_lines(directory, *lines), directory, **options)


def grant(plan: SandboxPlan, access: str, target: str | Path | int) -> Grant:
    matches = [g for g in plan.grants if g.access == access and g.target == str(target)]
    assert matches, f"no {access} grant for {target}: {plan.grants}"
    return matches[0]


def manifest(permissions: Permissions, options: tuple[str, ...] = ()) -> Manifest:
    return Manifest(
        name="auth",
        version=3,
        file=PluginFile(name="auth.so", sha256="0" * 64, size=1),
        plugin=PluginRequirements(api_version=5, mosquitto=">=2.0", options=options),
        permissions=permissions,
        signed_at=datetime(2026, 1, 1, tzinfo=UTC),
        expires=datetime(2027, 1, 1, tzinfo=UTC),
    )


def loaded(directory: Path, *lines: str, permissions: Permissions) -> LoadedPlugin:
    """Read a config with a plugin line and pair its entry with a manifest."""
    config_path = directory / "plugin.conf"
    config_path.write_text("\n".join(["plugin /usr/lib/auth.so", *lines]) + "\n")
    entry = read_config([config_path]).plugins[0]
    return LoadedPlugin(entry, manifest(permissions, tuple(sorted(entry.options))))


def test_debian_layout_writes_three_directories(tmp_path: Path) -> None:
    for name in ("run", "log", "data"):
        (tmp_path / name).mkdir()
    plan = plan_for(
        tmp_path,
        f"pid_file {tmp_path}/run/mosquitto.pid",
        "persistence true",
        f"persistence_location {tmp_path}/data/",
        f"log_dest file {tmp_path}/log/mosquitto.log",
    )
    assert plan.targets("write") == [str(tmp_path / n) for n in ("log", "run", "data")]
    assert grant(plan, "write", tmp_path / "run").source.endswith(
        f"mosquitto.conf:1: pid_file {tmp_path}/run/mosquitto.pid"
    )
    assert "persistence_location" in grant(plan, "write", tmp_path / "data").source
    assert plan.problems == []


def test_local_only_mode_binds_1883(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "allow_anonymous true")
    assert "local-only" in grant(plan, "bind", 1883).source
    assert plan.listen_addresses == ["127.0.0.1", "::1"]


def test_each_listener_port_is_bound(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "listener 1884 127.0.0.1", "listener 8883")
    assert plan.targets("bind") == ["1884", "8883"]
    assert grant(plan, "bind", 8883).source.endswith(":2: listener 8883")
    assert plan.listen_addresses == ["127.0.0.1", None]


def test_files_named_by_options_are_readable(tmp_path: Path) -> None:
    for name in ("passwd", "acl", "ca.pem"):
        (tmp_path / name).write_text("x")
    (tmp_path / "capath").mkdir()
    plan = plan_for(
        tmp_path,
        "listener 1884",
        "password_file passwd",
        f"acl_file {tmp_path}/acl",
        f"cafile {tmp_path}/ca.pem",
        f"capath {tmp_path}/capath",
    )
    for name in ("passwd", "acl", "ca.pem", "capath"):
        grant(plan, "read", tmp_path / name)
    assert grant(plan, "read", tmp_path / "passwd").source.endswith(":2: password_file passwd")


def test_missing_option_file_is_a_problem(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "listener 1884", f"password_file {tmp_path}/absent")
    assert plan.problems == [
        f"{tmp_path}/mosquitto.conf:2: password_file {tmp_path}/absent: {tmp_path}/absent "
        "does not exist; fix: create it or correct the path"
    ]


def test_persistence_in_root_working_directory_is_refused(tmp_path: Path) -> None:
    config_path = tmp_path / "mosquitto.conf"
    config_path.write_text("persistence true\n")
    plan = derive(read_config([config_path]), Path("/"))
    assert plan.targets("write") == []
    assert "set persistence_location" in plan.problems[0]


def test_file_in_shared_directory_grants_only_the_file(tmp_path: Path) -> None:
    shared = Path("/var/log")
    log = shared / f"mosquitto-guard-plan-test-{os.getpid()}.log"
    log.write_text("")
    try:
        plan = plan_for(tmp_path, f"log_dest file {log}")
    finally:
        log.unlink()
    assert plan.targets("write") == [str(log)]
    assert "other services share" in plan.warnings[0]


def test_missing_file_in_shared_directory_is_a_problem(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "pid_file /run/mosquitto-guard-no-such.pid")
    assert plan.targets("write") == []
    assert "move it into a directory of its own" in plan.problems[0]


def test_bridge_by_name_allows_dns(tmp_path: Path) -> None:
    plan = plan_for(
        tmp_path,
        "connection up",
        "address broker.example.org:8884 192.0.2.10",
        "topic # out",
    )
    assert plan.targets("connect") == ["8884", "53", "1883"]
    assert plan.udp
    assert "broker.example.org" in grant(plan, "connect", 53).source
    assert plan.remote_hosts == ["broker.example.org", "192.0.2.10"]


def test_bridge_by_address_needs_no_udp(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "connection up", "address 192.0.2.10:8883", "topic # out")
    assert plan.targets("connect") == ["8883"]
    assert not plan.udp


def test_manifest_permissions_become_grants(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "keys").mkdir()
    plugin = loaded(
        tmp_path,
        f"plugin_opt_database {state}/auth.json",
        f"plugin_opt_keys {tmp_path}/keys",
        permissions=Permissions(
            connect=("127.0.0.1:5432",),
            read_options=("keys",),
            write_options=("database",),
        ),
    )
    plan = plan_for(tmp_path, "listener 1884", plugins=(plugin,))
    assert grant(plan, "connect", 5432).source == "manifest auth version 3: connect 127.0.0.1:5432"
    assert grant(plan, "write", state).source.startswith(
        "manifest auth version 3: write_options database"
    )
    grant(plan, "read", tmp_path / "keys")
    assert not plan.udp


def test_policy_adds_paths_and_endpoints(tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    settings = SandboxSettings(read=(extra,), write=(extra,), connect=("db.example.org:5432",))
    plan = plan_for(tmp_path, "listener 1884", settings=settings)
    assert grant(plan, "read", extra).source == "policy [sandbox] read"
    assert grant(plan, "write", extra).source == "policy [sandbox] write"
    assert plan.targets("connect") == ["5432", "53"]
    assert plan.udp


def test_drop_to_user_keeps_setuid_and_setgid(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "listener 1884", "user mosquitto")
    assert [name for name, _ in plan.capabilities] == ["CAP_SETUID", "CAP_SETGID"]
    grant(plan, "read", "/etc/passwd")
    assert plan.broker_user == "mosquitto"


def test_user_root_keeps_no_capability(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "listener 1884", "user root")
    assert plan.capabilities == []


def test_user_root_on_low_port_keeps_bind_service(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "listener 883", "user root")
    assert [name for name, _ in plan.capabilities] == ["CAP_NET_BIND_SERVICE"]


def test_launcher_not_root_keeps_nothing(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "listener 1884", uid=1000)
    assert plan.capabilities == []
    assert plan.broker_user is None


def test_real_inventory_reads_libraries_not_plugins(tmp_path: Path) -> None:
    config_path = tmp_path / "mosquitto.conf"
    config_path.write_text("listener 1884\n")
    config = read_config([config_path])
    inventory = collect_inventory(config, {}, cwd=tmp_path, broker=BROKER, build_ids=False)
    plan = derive(config, tmp_path, inventory=inventory)
    reads = plan.targets("read")
    assert any(Path(target).name == "libc.so.6" for target in reads)
    assert "/etc/ld.so.cache" in reads
    libc = next(g for g in plan.grants if g.target.endswith("/libc.so.6"))
    assert libc.source.startswith("linked library (DT_NEEDED of")


@pytest.mark.parametrize("value", ["127.0.0.1:70000", "db:0", "nohost"])
def test_policy_rejects_bad_connect_entry(tmp_path: Path, value: str) -> None:
    from mosquitto_guard.errors import PolicyError
    from mosquitto_guard.policy.model import load_policy

    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2bvkVwErad3oUcqJn6ahcBXZdvP1lfSz5v/ZAzSagE"
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'format_version = 1\n[[keys]]\nname = "a"\nkey = "{key}"\n'
        f'[sandbox]\nconnect = ["{value}"]\n'
    )
    os.chmod(policy, 0o600)
    with pytest.raises(PolicyError, match=r"sandbox\.connect\[0\]"):
        load_policy(policy)


def test_config_directory_is_never_writable(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, f"log_dest file {tmp_path}/mosquitto.log")
    assert plan.targets("write") == []
    assert "where the broker may not create files" in plan.problems[0]


def test_file_beside_config_grants_only_the_file(tmp_path: Path) -> None:
    (tmp_path / "mosquitto.log").write_text("")
    plan = plan_for(tmp_path, f"log_dest file {tmp_path}/mosquitto.log")
    assert plan.targets("write") == [str(tmp_path / "mosquitto.log")]
    assert f"contains {tmp_path}/mosquitto.conf" in plan.warnings[0]


def test_config_file_itself_is_never_writable(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, f"log_dest file {tmp_path}/mosquitto.conf")
    assert plan.targets("write") == []
    assert "a file the broker loads or trusts" in plan.problems[0]


@pytest.mark.parametrize("path", ["/etc", "/var/lib", "/tmp"])
def test_policy_write_of_shared_directory_is_refused(tmp_path: Path, path: str) -> None:
    plan = plan_for(tmp_path, "listener 1884", settings=SandboxSettings(write=(Path(path),)))
    assert plan.targets("write") == []
    assert plan.problems == [
        f"policy [sandbox] write: {path} may not be writable, because other services share "
        "it; fix: give the plugin a directory of its own"
    ]


def test_protected_directory_is_refused(tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    trust.mkdir()
    config_path = tmp_path / "mosquitto.conf"
    config_path.write_text("listener 1884\n")
    plan = derive(
        read_config([config_path]),
        tmp_path,
        settings=SandboxSettings(write=(trust,)),
        protected=[trust / "policy.toml"],
    )
    assert plan.targets("write") == []
    assert f"because it contains {trust}/policy.toml" in plan.problems[0]


def test_abstract_notify_socket_leaves_abstract_sockets_open(tmp_path: Path) -> None:
    config_path = tmp_path / "mosquitto.conf"
    config_path.write_text("listener 1884\n")
    config = read_config([config_path])

    def plan_with(notify_socket: str) -> SandboxPlan:
        return derive(config, tmp_path, notify_socket=notify_socket)

    by_path = plan_with("/run/notify")
    abstract = plan_with("@notify")
    assert by_path.scope_abstract_unix
    assert not abstract.scope_abstract_unix
    assert "abstract UNIX socket" in abstract.warnings[0]


def test_openssl_module_is_read_from_disk(tmp_path: Path) -> None:
    module = tmp_path / "provider.so"
    compile_plugin("marker.c", module)
    openssl_config = tmp_path / "openssl.cnf"
    openssl_config.write_text(
        "openssl_conf = init\n[init]\nproviders = p\n[p]\nx = s\n"
        f"[s]\nmodule = {module}\nactivate = 1\n"
    )
    config_path = tmp_path / "mosquitto.conf"
    config_path.write_text("listener 1884\n")
    config = read_config([config_path])
    env = {"OPENSSL_CONF": str(openssl_config)}
    inventory = collect_inventory(config, env, cwd=tmp_path, build_ids=False)
    plan = derive(config, tmp_path, inventory=inventory)
    assert grant(plan, "read", module).source.startswith("openssl module")
    assert grant(plan, "read", openssl_config).source.startswith("a host file")


def test_symlink_planted_by_broker_user_is_rejected(tmp_path: Path) -> None:
    """A plugin that swapped its directory for a symlink cannot widen the next start's rules."""
    data = tmp_path / "data"
    data.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (data / "plugin").symlink_to(target)
    broker = pwd.getpwnam("mosquitto")
    os.chown(data, broker.pw_uid, broker.pw_gid)  # owned by the broker's user, as persistence is
    plan = plan_for(tmp_path, "listener 1884", f"log_dest file {data}/plugin/broker.log")
    assert plan.targets("write") == []
    assert f"passes through the symlink {data}/plugin" in plan.problems[0]


def test_symlink_in_root_directory_is_followed(tmp_path: Path) -> None:
    target = tmp_path / "logs"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    plan = plan_for(tmp_path, "listener 1884", f"log_dest file {tmp_path}/link/broker.log")
    assert plan.targets("write") == [str(tmp_path / "link")]
    assert plan.problems == []


def test_directory_broker_cannot_write_is_warned(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    plan = plan_for(tmp_path, "listener 1884", "persistence true", f"persistence_location {data}")
    assert plan.targets("write") == [str(data)]
    assert f"cannot write {data} (owner uid 0, mode 0755); fix: chown mosquitto" in (
        " ".join(plan.warnings)
    )
    broker = pwd.getpwnam("mosquitto")
    os.chown(data, broker.pw_uid, broker.pw_gid)
    plan = plan_for(tmp_path, "listener 1884", "persistence true", f"persistence_location {data}")
    assert not any("cannot write" in warning for warning in plan.warnings)


def test_write_inside_another_write_is_dropped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    plan = plan_for(
        tmp_path,
        "persistence true",
        f"persistence_location {data}/",
        f"log_dest file {data}/logs/broker.log",
    )
    assert plan.targets("write") == [str(data)]
