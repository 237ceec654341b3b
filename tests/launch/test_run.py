"""`mosquitto-guard run` against the real broker: what starts, what is rejected, and why."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from support import (
    DYNSEC_PLUGIN,
    Guard,
    broker_user_can_write,
    c_string,
    start_run,
    stop_process,
)

from mosquitto_guard.demo import publish_and_receive


@pytest.fixture(autouse=True)
def verification_only(request: pytest.FixtureRequest) -> None:
    """Launch without the sandbox, so that a missing mark proves the code never ran."""
    if "guard" in request.fixturenames:
        request.getfixturevalue("guard").sandbox = False


def rejected_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        line for line in result.stderr.splitlines() if line.startswith("mosquitto-guard: rejected:")
    ]


def test_run_serves_clients_through_verified_dynsec(guard: Guard, processes: list) -> None:
    dynsec_file = guard.root / "broker" / "dynsec.json"
    dynsec_file.parent.mkdir()
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(dynsec_file), "admin", "adminpw"],
        check=True,
        capture_output=True,
    )
    broker_user_can_write(dynsec_file.parent)
    broker_user_can_write(dynsec_file)
    guard.sign(DYNSEC_PLUGIN, "dynamic-security", 1, "alice", "--option", "config_file")
    config = guard.config(f"plugin {DYNSEC_PLUGIN}", f"plugin_opt_config_file {dynsec_file}")
    process = start_run(guard, config, processes)

    assert os.readlink(f"/proc/{process.pid}/exe") == "/usr/sbin/mosquitto"
    connect = ["-h", "127.0.0.1", "-p", str(guard.port), "-u", "admin", "-P", "adminpw"]
    for action in (
        ["createClient", "carol", "-p", "carolpw"],
        ["createRole", "r"],
        ["addRoleACL", "r", "publishClientSend", "t/#", "allow"],
        ["addRoleACL", "r", "subscribePattern", "t/#", "allow"],
        ["addRoleACL", "r", "publishClientReceive", "t/#", "allow"],
        ["addClientRole", "carol", "r"],
    ):
        subprocess.run(
            ["mosquitto_ctrl", *connect, "dynsec", *action],
            check=True,
            capture_output=True,
            timeout=20,
        )
    # publish_and_receive uses topic demo/hello, so give carol that topic too.
    subprocess.run(
        [
            "mosquitto_ctrl",
            *connect,
            "dynsec",
            "addRoleACL",
            "r",
            "publishClientSend",
            "demo/#",
            "allow",
        ],
        check=True,
        capture_output=True,
        timeout=20,
    )
    for acl in ("subscribePattern", "publishClientReceive"):
        subprocess.run(
            ["mosquitto_ctrl", *connect, "dynsec", "addRoleACL", "r", acl, "demo/#", "allow"],
            check=True,
            capture_output=True,
            timeout=20,
        )
    assert publish_and_receive(guard.port, "carol", "carolpw") == "hello through a verified broker"
    stop_process(process)
    log = process.communicate()[1].decode()
    assert "Loading plugin: /proc/self/fd/" in log


def test_run_leaves_no_python_process_and_keeps_pid(guard: Guard, processes: list) -> None:
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    process = start_run(guard, guard.config(f"plugin {plugin}"), processes)
    assert os.readlink(f"/proc/{process.pid}/exe") == "/usr/sbin/mosquitto"
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert children == []


def test_run_broker_notifies_readiness_from_same_pid(
    guard: Guard, processes: list, tmp_path: Path
) -> None:
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    notify_path = guard.root / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    os.chmod(notify_path, 0o777)  # the broker notifies after dropping to the mosquitto user
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.settimeout(15)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
    process = subprocess.Popen(
        guard.run_argv(guard.config(f"plugin {plugin}")),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    processes.append(process)
    message, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    sock.close()
    assert b"READY=1" in message
    credentials = [
        data
        for level, kind, data in ancillary
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
    ]
    sender_pid = int.from_bytes(credentials[0][:4], "little")
    assert sender_pid == process.pid


def test_run_removes_code_loading_environment(guard: Guard, processes: list) -> None:
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    env = dict(
        os.environ,
        LD_BIND_NOW="1",
        GCONV_PATH="/tmp",
        OPENSSL_CONF="/tmp/evil.cnf",
        OPENSSL_ENGINES="/tmp",
        MOSQUITTO_UNSAFE_ALLOW_SYMLINKS="1",
        KEEP_ME="yes",
    )
    process = start_run(guard, guard.config(f"plugin {plugin}"), processes, env=env)
    names = {
        entry.split(b"=", 1)[0].decode()
        for entry in Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
        if entry
    }
    assert "KEEP_ME" in names
    for removed in (
        "LD_BIND_NOW",
        "GCONV_PATH",
        "OPENSSL_CONF",
        "OPENSSL_ENGINES",
        "MOSQUITTO_UNSAFE_ALLOW_SYMLINKS",
    ):
        assert removed not in names


def test_run_rejects_code_loaded_into_launcher(guard: Guard) -> None:
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    config = guard.config(f"plugin {plugin}")
    for variable, value in (
        ("LD_PRELOAD", "/nonexistent/evil.so"),
        ("LD_LIBRARY_PATH", "/tmp"),
        ("PYTHONPATH", "/tmp"),
    ):
        result = guard.run(config, "--permissive", env=dict(os.environ, **{variable: value}))
        assert result.returncode == 1
        [line] = rejected_lines(result)
        assert (
            f"environment: {variable} is set for mosquitto-guard itself, so code it names ran "
            "inside this process before any check"
        ) in line


def test_run_rejects_unsigned_plugin(guard: Guard) -> None:
    plugin = guard.build("unsigned.so")
    result = guard.run(guard.config(f"plugin {plugin}"))
    assert result.returncode == 1
    lines = rejected_lines(result)
    assert len(lines) == 1
    assert str(plugin) in lines[0]
    assert "mosquitto-guard sign" in lines[0]


def test_run_permissive_starts_and_warns(guard: Guard, processes: list) -> None:
    plugin = guard.build("unsigned.so")
    process = start_run(guard, guard.config(f"plugin {plugin}"), processes, "--permissive")
    stop_process(process)
    log = process.communicate()[1].decode()
    assert "permissive mode: problems are logged, not enforced; 1 found" in log
    assert "would reject:" in log
    assert str(plugin) in log


def test_run_rejects_plugin_outside_allowed_dirs(guard: Guard, safe_dir: Path) -> None:
    elsewhere = safe_dir / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    moved = elsewhere / "good.so"
    shutil.copy2(plugin, moved)
    result = guard.run(guard.config(f"plugin {moved}"))
    assert result.returncode == 1
    [line] = rejected_lines(result)
    assert f"{moved} is outside the allowed plugin directories" in line
    assert "add its directory to plugin_dirs" in line


def test_run_rejects_writable_directory_in_path(guard: Guard) -> None:
    sub = guard.plugins / "sub"
    sub.mkdir(mode=0o755)
    plugin = guard.build("sub/good.so")
    guard.sign(plugin, "good", 1, "alice")
    for mode, who in ((0o775, "group"), (0o757, "others")):
        os.chmod(sub, mode)
        result = guard.run(guard.config(f"plugin {plugin}"))
        assert result.returncode == 1
        [line] = rejected_lines(result)
        assert f"plugin path {sub}: directory is writable by {who} (mode {mode:04o})" in line
        assert f"fix: chmod go-w {sub}" in line


def test_run_rejects_symlink_swapped_into_path(guard: Guard, safe_dir: Path) -> None:
    real = guard.plugins / "real"
    real.mkdir(mode=0o755)
    plugin = guard.build("real/good.so")
    guard.sign(plugin, "good", 1, "alice")
    link = guard.plugins / "current"
    link.symlink_to(real)
    result = guard.run(guard.config(f"plugin {link / 'good.so'}"))
    assert result.returncode == 1
    [line] = rejected_lines(result)
    assert f"plugin path {link}: is a symlink to {real}, which can be swapped" in line
    assert f"name the real path {plugin} instead" in line


def test_run_rejects_trailing_comment_on_plugin_line(guard: Guard) -> None:
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    config = guard.config(f"plugin {plugin} # the good one")
    result = guard.run(config)
    assert result.returncode == 1
    [line] = rejected_lines(result)
    assert "contains '#'; Mosquitto reads a trailing comment as part of the path" in line
    assert f"{config}:5" in line


def test_run_rejects_user_root(guard: Guard) -> None:
    config = guard.config("user root")
    result = guard.run(config)
    assert result.returncode == 1
    [line] = rejected_lines(result)
    assert f"{config}:5: 'user root' keeps the broker and every plugin running as root" in line


def test_run_rejects_root_keeping_environment(guard: Guard) -> None:
    config = guard.config()
    for variable, expected in (
        ("SNAP_NAME", "SNAP_NAME='mosquitto' makes the broker skip"),
        ("PUID", "PUID=0 keeps the broker running as root"),
        ("PGID", "PGID=0 keeps the broker running as root"),
    ):
        value = "mosquitto" if variable == "SNAP_NAME" else "0"
        result = guard.run(config, env=dict(os.environ, **{variable: value}))
        assert result.returncode == 1
        [line] = rejected_lines(result)
        assert expected in line


def test_run_rejects_unsafe_broker_arguments(guard: Guard) -> None:
    config = guard.config()
    result = guard.run(config, broker_args=["--tls-keylog", "/tmp/keys.log"])
    assert result.returncode == 1
    assert any("--tls-keylog writes TLS session secrets" in line for line in rejected_lines(result))
    second = guard.config(name="second.conf")
    result = guard.run(config, broker_args=["-c", str(second)])
    assert result.returncode == 1
    assert any("2 config files given with -c" in line for line in rejected_lines(result))


def test_run_rejects_before_broker_starts(guard: Guard, safe_dir: Path) -> None:
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    mark = marks / "mark"
    mark.touch(mode=0o666)
    os.chmod(mark, 0o666)
    plugin = guard.build("evil.so", {"MARKER_FILE": c_string(str(mark))})
    result = guard.run(guard.config(f"plugin {plugin}"))
    assert result.returncode == 1
    assert mark.read_text() == ""
