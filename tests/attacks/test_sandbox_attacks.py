"""Attacks by a plugin that passed signature verification, against the sandbox of `run`.

Each test compiles the red-team plugin (`tests/plugins/redteam*.c`) for one attack, signs it
with the trusted key and starts it through `mosquitto-guard run`. The plugin attacks from
`mosquitto_plugin_init` and again when a client publishes to `redteam/go`, and reports each
step over MQTT. Most attacks run in three modes:

- sandbox: the broker drops to the mosquitto user; every step must be blocked;
- sandbox-user-root: `user root` (launched with --permissive) keeps the broker at uid 0, so
  file permissions and a uid change stop nothing. Every step must still be blocked;
- control-no-sandbox: `user root` with --no-sandbox; every step must succeed, which proves
  that the plugin makes a real attempt and that the blocked outcomes come from the sandbox.

Each test also checks the side effect of the attack (a mark file, a connection, a changed
file) and that the broker still serves clients afterwards. Every network address is loopback.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import termios
import tty
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redteam import (
    BROKER_USER,
    MODES,
    SANDBOX,
    SANDBOX_LINE,
    SANDBOX_ROOT,
    WAIT_SECONDS,
    Listener,
    Mode,
    Observer,
    UnixListener,
    attack,
    broker_files,
    build_redteam,
    check_attack,
    collect,
    connects,
    count_datagrams,
    log_reports,
    make_host_key,
    prepare,
    process_state,
    start_broker,
    start_target,
    with_bind_mount,
    write_config,
)
from support import (
    DYNSEC_PLUGIN,
    Guard,
    broker_user_can_write,
    c_string,
    compile_plugin,
    make_mark,
    stop_process,
    wait_for_port,
)

MODE_PARAMS = [pytest.param(mode, id=mode.name) for mode in MODES]
SANDBOX_PARAMS = [pytest.param(mode, id=mode.name) for mode in (SANDBOX, SANDBOX_ROOT)]


# Landlock rules name TCP ports, not addresses, and seccomp cannot read the address a socket
# call points to, so outside systemd's IPAddressAllow= a port allowed on one address is
# allowed on all of them.
PORT_ONLY = "known limit: Landlock allows a TCP port on every address"


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A directory under /tmp that anyone may write, outside everything the config names."""
    directory = Path(tempfile.mkdtemp(prefix="redteam-scratch-"))
    directory.chmod(0o777)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def build_payload(guard: Guard, mark: Path) -> Path:
    """Compile `marker.c` into a payload that appends "payload" to `mark` when loaded."""
    return compile_plugin(
        "marker.c",
        guard.root / "payload.so",
        {"MARKER_FILE": c_string(str(mark)), "MARKER_TEXT": c_string("payload\n")},
    )


# Programs and processes.


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_exec_shell(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot start a program: fork + execve and posix_spawn of /bin/sh."""
    mark = make_mark(guard.root / "marks", "exec")
    plugin = build_redteam(guard, "exec", {"EXEC_MARK": c_string(str(mark))})
    steps = ("execve", "posix_spawn")
    run = attack(guard, processes, mode, plugin, steps)
    check_attack(run, mode, steps)
    if mode.sandboxed:
        assert mark.read_text() == ""
    else:
        assert mark.read_text() == "execve\nposix_spawn\n" * 2


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_trace_other_process(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot ptrace, read the memory of, or signal a process of the broker's user."""
    target = start_target(mode.broker_user, processes)
    plugin = build_redteam(guard, "ptrace", {"TARGET_PID": str(target.pid)})
    steps = ("ptrace_attach", "proc_mem", "signal")
    run = attack(guard, processes, mode, plugin, steps)
    check_attack(run, mode, steps)
    state, tracer = process_state(target.pid)
    assert target.poll() is None
    assert state == "S"
    assert tracer == 0


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_change_ids(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot change uid or gid: to root from the mosquitto user, or away from root."""
    plugin = build_redteam(guard, "setuid", {})
    steps = ("setuid", "setgid")
    run = attack(guard, processes, mode, plugin, steps)
    check_attack(run, mode, steps)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_new_namespaces(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot make a user or mount namespace, with unshare or with clone3."""
    plugin = build_redteam(guard, "namespace", {})
    steps = ("unshare_user", "unshare_mount", "clone3_user")
    run = attack(guard, processes, mode, plugin, steps)
    check_attack(run, mode, steps)


# Files.


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_read_secrets(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot read /etc/shadow, nor a host key that file permissions let it read."""
    key = make_host_key(guard.root / "secrets")
    plugin = build_redteam(guard, "read_secret", {"SECRET_FILE": c_string(str(key))})
    steps = ("read_shadow", "read_host_key")
    run = attack(guard, processes, mode, plugin, steps)
    check_attack(run, mode, steps)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_write_config(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot add a file to the include_dir nor append to the main config."""
    files = broker_files(guard, mode.broker_user)
    defines = {
        "CONF_D_DIR": c_string(str(files.conf_d)),
        "CONFIG_FILE": c_string(str(files.config)),
    }
    plugin = build_redteam(guard, "write_config", defines)
    steps = ("create_conf_d", "append_config")
    run = attack(guard, processes, mode, plugin, steps, files=files)
    check_attack(run, mode, steps)
    evil = files.conf_d / "evil.conf"
    appended = "# written by the redteam plugin\n"
    config_text = files.config.read_text()
    if mode.sandboxed:
        assert not evil.exists()
        assert appended not in config_text
    else:
        assert evil.read_text() == appended * 2
        assert config_text.endswith(appended * 2)


# Running code that the plugin wrote.


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_load_written_code(guard: Guard, processes: list, scratch_dir: Path, mode: Mode) -> None:
    """A plugin cannot run code it wrote: from a file, from a memfd, or in anonymous memory.

    The payload is a shared object compiled from `marker.c`, embedded in the signed plugin.
    It also cannot switch off memory-deny-write-execute or make readable memory executable.
    """
    mark = make_mark(guard.root / "marks", "payload")
    files = broker_files(guard, mode.broker_user)
    defines = {
        "PAYLOAD_FILE": c_string(str(build_payload(guard, mark))),
        "PERSISTENCE_DIR": c_string(str(files.persistence)),
        "SCRATCH_DIR": c_string(str(scratch_dir)),
    }
    plugin = build_redteam(guard, "dlopen", defines)
    steps = (
        "dlopen_persistence",
        "dlopen_scratch",
        "mmap_exec",
        "mprotect_exec",
        "memfd_dlopen",
        "mdwe_clear",
        "read_implies_exec",
    )
    run = attack(guard, processes, mode, plugin, steps, files=files)
    check_attack(run, mode, steps)
    if mode.sandboxed:
        assert mark.read_text() == ""
        assert list(scratch_dir.iterdir()) == []
    else:
        # Three loaded copies in each phase: persistence, scratch and memfd.
        assert mark.read_text() == "payload\n" * 6


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_load_through_second_mount(guard: Guard, processes: list, mode: Mode) -> None:
    """Code written into the noexec persistence directory cannot run through another mount.

    A bind mount of the persistence directory elsewhere, as hosts use to place data on another
    disk, reaches the same files. The broker runs in a mount namespace that has such a mount.
    """
    mark = make_mark(guard.root / "marks", "payload")
    files = broker_files(guard, mode.broker_user)
    alias = guard.root / "alias"
    alias.mkdir(mode=0o755)
    defines = {
        "PAYLOAD_FILE": c_string(str(build_payload(guard, mark))),
        "PERSISTENCE_DIR": c_string(str(files.persistence)),
        "ALIAS_DIR": c_string(str(alias)),
    }
    plugin = build_redteam(guard, "dlopen_alias", defines)
    steps = ("dlopen_alias",)
    wrap = with_bind_mount(files.persistence, alias)
    run = attack(guard, processes, mode, plugin, steps, files=files, wrap=wrap)
    check_attack(run, mode, steps)
    assert mark.read_text() == ("" if mode.sandboxed else "payload\n" * 2)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_run_code_from_aliased_memory(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot write code through one mapping and run it through a second one.

    Neither mapping is writable and executable at once, so memory-deny-write-execute alone
    does not see the pair: a shared anonymous mapping duplicated with mremap, and a System V
    shared memory segment attached twice. Nor can it write into its own code through
    /proc/self/mem, which ignores page protections.
    """
    plugin = build_redteam(guard, "code_memory", {})
    steps = ("mremap_alias", "shm_exec", "proc_self_mem")
    run = attack(guard, processes, mode, plugin, steps)
    check_attack(run, mode, steps)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_symlink_planted_for_next_launch(
    guard: Guard, processes: list, scratch_dir: Path, mode: Mode
) -> None:
    """A plugin cannot widen the next launch's sandbox by turning a granted path into a symlink.

    The manifest may write `persistence/plugin/data`. The first launch's plugin replaces
    `persistence/plugin`, a plain directory in the writable persistence directory, with a
    symlink to a directory under /tmp that has a `data` directory too. An attacker would pick
    any existing directory with a child of the granted name. Unless the second launch rejects
    symlinks, it grants what the symlink leads to, and its plugin then writes there.
    """
    files = broker_files(guard, mode.broker_user)
    owner = pwd.getpwnam(mode.broker_user)
    replaced = files.persistence / "plugin"
    granted = replaced / "data"
    granted.mkdir(mode=0o755, parents=True)
    for directory in (replaced, granted):
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    victim_dir = scratch_dir / "data"
    victim_dir.mkdir()
    victim_dir.chmod(0o777)
    victim = victim_dir / "service.conf"
    victim.write_text("original\n")
    victim.chmod(0o666)
    grant = ("--write", str(granted))

    defines = {
        "REPLACED_DIR": c_string(str(replaced)),
        "SYMLINK_TARGET": c_string(str(scratch_dir)),
    }
    planter = build_redteam(guard, "plant_symlink", defines)
    planted = attack(
        guard, processes, mode, planter, ("plant_symlink",), files=files, sign_options=grant
    )
    # Planting is allowed: the sandbox lets the broker write its persistence directory.
    assert planted.verdicts("init")["plant_symlink"] == "SUCCEEDED", planted.log
    assert replaced.is_symlink()

    defines = {"CONF_D_DIR": c_string(str(victim_dir)), "CONFIG_FILE": c_string(str(victim))}
    writer = build_redteam(guard, "write_config", defines)
    steps = ("create_conf_d", "append_config")
    _, argv = prepare(guard, mode, writer, files=files, sign_options=grant)
    with open(files.log, "wb") as log:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    processes.append(process)
    if wait_for_port(guard.port, process):
        try:
            run = collect(guard.port, steps)
        finally:
            stop_process(process)
        run.log = files.log.read_text(errors="replace")
        check_attack(run, mode, steps)
    else:
        # Refusing to launch with a symlinked grant is safe too, but only under the sandbox.
        stop_process(process)
        assert mode.sandboxed, files.log.read_text(errors="replace")
    appended = "# written by the redteam plugin\n"
    if mode.sandboxed:
        assert victim.read_text() == "original\n"
        assert not (victim_dir / "evil.conf").exists()
    else:
        assert victim.read_text() == "original\n" + appended * 2


# Network.


# The Multipath TCP listener is plain TCP, to which a Multipath TCP connection falls back.
@pytest.mark.parametrize(
    ("attempt", "step"), [("connect", "connect_undeclared"), ("mptcp", "connect_mptcp")]
)
@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_connect_undeclared_port(
    guard: Guard, processes: list, mode: Mode, attempt: str, step: str
) -> None:
    """A plugin whose manifest declares no endpoint opens no TCP or Multipath TCP connection."""
    listener = Listener()
    try:
        plugin = build_redteam(guard, attempt, {"UNDECLARED_PORT": str(listener.port)})
        run = attack(guard, processes, mode, plugin, (step,))
        accepted = listener.count_connections()
    finally:
        listener.close()
    check_attack(run, mode, (step,))
    assert accepted == (0 if mode.sandboxed else 2)


@pytest.mark.parametrize("mode", SANDBOX_PARAMS)
def test_connect_declared_port_only(guard: Guard, processes: list, mode: Mode) -> None:
    """The sandbox allows the endpoint the manifest declares, and no other port."""
    declared, undeclared = Listener(), Listener()
    try:
        plugin = build_redteam(
            guard,
            "declared_connect",
            {"DECLARED_PORT": str(declared.port), "UNDECLARED_PORT": str(undeclared.port)},
        )
        run = attack(
            guard,
            processes,
            mode,
            plugin,
            ("connect_declared", "connect_undeclared"),
            sign_options=("--connect", f"127.0.0.1:{declared.port}"),
        )
        accepted_declared = declared.count_connections()
        accepted_undeclared = undeclared.count_connections()
    finally:
        declared.close()
        undeclared.close()
    assert run.missing == [], run.log
    for phase in ("init", "go"):
        verdicts = run.verdicts(phase)
        assert verdicts["connect_declared"] == "SUCCEEDED", run.log
        assert verdicts["connect_undeclared"] == "blocked", run.log
    assert accepted_declared == 2
    assert accepted_undeclared == 0
    assert run.served_after, run.log


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_connect_declared_port_other_host(guard: Guard, processes: list, mode: Mode) -> None:
    """A manifest that declares 127.0.0.1:PORT does not open PORT on every other host.

    The other host is ::1, where the test listens on the declared port number.
    """
    declared = Listener()
    other_host = Listener("::1", declared.port)
    try:
        plugin = build_redteam(guard, "other_host", {"DECLARED_PORT": str(declared.port)})
        steps = ("connect_other_host",)
        run = attack(
            guard,
            processes,
            mode,
            plugin,
            steps,
            sign_options=("--connect", f"127.0.0.1:{declared.port}"),
        )
        accepted = other_host.count_connections()
    finally:
        declared.close()
        other_host.close()
    if mode.sandboxed and accepted:
        pytest.xfail(PORT_ONLY)
    check_attack(run, mode, steps)
    assert accepted == (0 if mode.sandboxed else 2)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_listen_for_clients(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot open a listener of its own: on another port, or on the broker's port
    at another address than the broker's listener."""
    undeclared = Listener()
    undeclared_port = undeclared.port
    undeclared.close()
    defines = {"UNDECLARED_PORT": str(undeclared_port), "BROKER_PORT": str(guard.port)}
    plugin = build_redteam(guard, "bind", defines)
    steps = ("listen_undeclared", "listen_broker_port_v6")

    def probe() -> tuple[bool, bool]:
        return connects("127.0.0.1", undeclared_port), connects("::1", guard.port)

    run = attack(guard, processes, mode, plugin, steps, probe=probe)
    reachable = not mode.sandboxed
    check_attack(run, mode, steps[:1])
    assert run.probe[0] == reachable
    if mode.sandboxed and run.probe[1]:
        pytest.xfail(PORT_ONLY)
    check_attack(run, mode, steps)
    assert run.probe == (reachable, reachable)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_send_udp(guard: Guard, processes: list, mode: Mode) -> None:
    """A broker that resolves no host names sends no UDP at all."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        plugin = build_redteam(guard, "udp", {"UDP_PORT": str(receiver.getsockname()[1])})
        steps = ("udp_send",)
        run = attack(guard, processes, mode, plugin, steps)
        received = count_datagrams(receiver)
    finally:
        receiver.close()
    check_attack(run, mode, steps)
    assert received == (0 if mode.sandboxed else 2)


@pytest.mark.parametrize("mode", SANDBOX_PARAMS)
def test_send_udp_with_declared_host_name(guard: Guard, processes: list, mode: Mode) -> None:
    """A declared host name allows name lookups, not UDP to any address and port.

    The manifest names `localhost`, so the broker may resolve names. The plugin sends to a
    UDP port on 127.0.0.1 where no resolver listens.
    """
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    declared = Listener()
    try:
        receiver.bind(("127.0.0.1", 0))
        plugin = build_redteam(guard, "udp", {"UDP_PORT": str(receiver.getsockname()[1])})
        steps = ("udp_send",)
        run = attack(
            guard,
            processes,
            mode,
            plugin,
            steps,
            sign_options=("--connect", f"localhost:{declared.port}"),
        )
        received = count_datagrams(receiver)
    finally:
        receiver.close()
        declared.close()
    if received:
        pytest.xfail(
            "known limit: a broker that resolves host names may send UDP anywhere; Landlock "
            "has no UDP rules and seccomp cannot read a destination address"
        )
    check_attack(run, mode, steps)
    assert received == 0


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_connect_unix_sockets(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot reach a local service through a UNIX socket, by path or abstract name.

    Services such as the container runtime and the init system listen on UNIX sockets. The
    test replaces them with sockets of its own.
    """
    directory = guard.root / "sockets"
    directory.mkdir(mode=0o755)
    path = UnixListener(str(directory / "service.sock"))
    abstract_name = f"redteam-{uuid.uuid4().hex}"
    abstract = UnixListener("\0" + abstract_name)
    try:
        defines = {
            "UNIX_PATH": c_string(str(directory / "service.sock")),
            "UNIX_ABSTRACT": c_string(abstract_name),
        }
        plugin = build_redteam(guard, "unix_socket", defines)
        steps = ("connect_unix_path", "connect_unix_abstract")
        run = attack(guard, processes, mode, plugin, steps)
        accepted = (path.count_connections(), abstract.count_connections())
    finally:
        path.close()
        abstract.close()
    check_attack(run, mode, steps)
    expected = 0 if mode.sandboxed else 2
    assert accepted == (expected, expected)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_raw_sockets(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot open a raw IP socket or a packet socket."""
    plugin = build_redteam(guard, "raw_socket", {})
    steps = ("raw_icmp", "packet_socket")
    run = attack(guard, processes, mode, plugin, steps)
    check_attack(run, mode, steps)


# The terminal that started the broker.

TYPED = "echo typed by a plugin\n"


def take_terminal() -> None:
    """Make standard input the controlling terminal of the new session (runs in the child)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_type_into_terminal(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot type a command into the terminal of the admin who started the broker.

    TIOCSTI pushes characters into a terminal's input, where the admin's shell reads them
    after the broker exits. The test reads that input itself, from its end of a pseudo-terminal.
    """
    setting = Path("/proc/sys/dev/tty/legacy_tiocsti")
    if setting.exists() and setting.read_text().strip() == "0":
        pytest.skip("this kernel disables TIOCSTI (dev.tty.legacy_tiocsti = 0)")
    controller, terminal = os.openpty()
    try:
        tty.setraw(terminal)  # typed characters can be read at once, without a line end
        plugin = build_redteam(guard, "terminal", {"TERMINAL_TEXT": c_string(TYPED)})
        files, argv = prepare(guard, mode, plugin)
        process = start_broker(
            argv,
            guard.port,
            files.log,
            processes,
            stdin=terminal,
            start_new_session=True,
            preexec_fn=take_terminal,
        )
        try:
            run = collect(guard.port, ("tiocsti",))
        finally:
            stop_process(process)
        run.log = files.log.read_text(errors="replace")
        typed = read_available(terminal)
    finally:
        os.close(controller)
        os.close(terminal)
    check_attack(run, mode, ("tiocsti",))
    assert typed == ("" if mode.sandboxed else TYPED * 2)


def read_available(fd: int) -> str:
    """Read what `fd` has queued, without waiting for more."""
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return data.decode(errors="replace")
        if not chunk:
            return data.decode(errors="replace")
        data += chunk


# What the sandbox must leave working.


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_persistence_saved_on_stop(guard: Guard, processes: list, mode: Mode) -> None:
    """The broker saves its database on stop into a persistence directory owned by mosquitto.

    That is the owner the Debian package gives /var/lib/mosquitto. A broker that a `user root`
    line keeps at uid 0 has no capability under the sandbox, so it cannot write there: the
    launch reports it and names the fix.
    """
    files = broker_files(guard, BROKER_USER)
    config = write_config(guard, files, mode)
    process = start_broker(guard.run_argv(config, *mode.options), guard.port, files.log, processes)
    try:
        observer = Observer(guard.port)
        try:
            observer.publish("redteam/retained", "kept")
        finally:
            observer.close()
    finally:
        stop_process(process)
    log = files.log.read_text(errors="replace")
    if mode.sandboxed and mode.user_root:
        assert f"cannot write {files.persistence}" in log, log
        assert f"fix: chown root {files.persistence}" in log, log
        return
    assert "Error saving in-memory database" not in log, log
    assert (files.persistence / "mosquitto.db").is_file(), log


def dynsec_control(port: int, *command: str) -> None:
    """Run one `mosquitto_ctrl dynsec` command as the admin client; fail on an error."""
    result = subprocess.run(
        [
            "mosquitto_ctrl",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-u",
            "admin",
            "-P",
            "admin-pass",
            "dynsec",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"


def dynsec_store(guard: Guard) -> Path:
    """Create a dynamic-security file with the client `admin`, in a directory mosquitto owns."""
    store = guard.root / "dynsec"
    store.mkdir(mode=0o755)
    broker_user_can_write(store)
    path = store / "dynamic-security.json"
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(path), "admin", "admin-pass"],
        check=True,
        capture_output=True,
    )
    broker_user_can_write(path)
    return path


def sign_dynsec(guard: Guard) -> None:
    guard.sign(
        DYNSEC_PLUGIN,
        "dynsec",
        1,
        "alice",
        "--option",
        "config_file",
        "--write-option",
        "config_file",
    )


def test_dynamic_security_under_sandbox(guard: Guard, processes: list) -> None:
    """The real dynamic-security plugin serves and saves its JSON file under the sandbox."""
    dynsec_file = dynsec_store(guard)
    sign_dynsec(guard)
    files = broker_files(guard)
    config = write_config(
        guard,
        files,
        SANDBOX,
        f"plugin {DYNSEC_PLUGIN}",
        f"plugin_opt_config_file {dynsec_file}",
    )
    start_broker(guard.run_argv(config), guard.port, files.log, processes)

    dynsec_control(guard.port, "createClient", "sensor", "-p", "sensor-pass")
    dynsec_control(guard.port, "createRole", "sensors")
    dynsec_control(guard.port, "addRoleACL", "sensors", "publishClientSend", "sensors/#", "allow")
    dynsec_control(guard.port, "addRoleACL", "sensors", "subscribePattern", "sensors/#", "allow")
    dynsec_control(guard.port, "addClientRole", "sensor", "sensors")

    client = Observer(guard.port, "sensor", "sensor-pass")
    try:
        client.subscribe("sensors/temperature")
        served = client.round_trip("sensors/temperature")
    finally:
        client.close()
    log = files.log.read_text(errors="replace")
    assert served, log
    saved = json.loads(dynsec_file.read_text())
    assert "sensor" in [entry["username"] for entry in saved["clients"]]
    assert "sensors" in [entry["rolename"] for entry in saved["roles"]]
    assert SANDBOX_LINE in log


# NOTE: Landlock confines a whole process, and every plugin runs in the broker's one process, so
# a plugin holds the permissions that any other plugin's manifest declares.
@pytest.mark.xfail(
    strict=True, reason="the sandbox grants every plugin the union of all manifests' permissions"
)
def test_other_plugins_grant_not_shared(guard: Guard, processes: list) -> None:
    """A plugin that declares no write cannot write the file another plugin may write.

    The dynamic-security plugin may write its JSON file, which contains every client's password
    hash and roles. The red-team plugin, loaded beside it, declares nothing.
    """
    dynsec_file = dynsec_store(guard)
    before = dynsec_file.read_bytes()
    sign_dynsec(guard)
    files = broker_files(guard)
    defines = {
        "CONF_D_DIR": c_string(str(dynsec_file.parent)),
        "CONFIG_FILE": c_string(str(dynsec_file)),
    }
    plugin = build_redteam(guard, "write_config", defines)
    guard.sign(plugin, plugin.stem, 1, "alice")
    config = write_config(
        guard,
        files,
        SANDBOX,
        f"plugin {DYNSEC_PLUGIN}",
        f"plugin_opt_config_file {dynsec_file}",
        f"plugin {plugin}",
    )
    process = start_broker(guard.run_argv(config), guard.port, files.log, processes)
    stop_process(process)
    log = files.log.read_text(errors="replace")
    # No anonymous client may subscribe under dynamic security, so the reports come from the log.
    reports = log_reports(log)["init"]
    assert SANDBOX_LINE in log
    assert reports["append_config"].startswith("blocked"), log
    assert reports["create_conf_d"].startswith("blocked"), log
    assert dynsec_file.read_bytes() == before
    assert not (dynsec_file.parent / "evil.conf").exists()
