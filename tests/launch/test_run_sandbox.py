"""`run` with its sandbox: the layers reach the real broker process, and the policy's mode decides.

The broker's own /proc entries show what the kernel enforces on it: no_new_privs, the seccomp
mode, the capability bounding set and its mounts. What each layer stops is shown in
tests/attacks/test_sandbox_attacks.py, with plugins that try.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import Guard, broker_user_can_write, start_run, stop_process, wait_for_port

from mosquitto_guard.cli import main
from mosquitto_guard.demo import publish_and_receive
from mosquitto_guard.sandbox.capabilities import CAPABILITIES


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def stderr_after_stop(process: subprocess.Popen[bytes]) -> str:
    stop_process(process)
    assert process.stderr is not None
    return process.stderr.read().decode(errors="replace")


def set_mode(guard: Guard, mode: str) -> None:
    guard.policy.write_text(guard.policy.read_text() + f'\n[sandbox]\nmode = "{mode}"\n')


def with_data_dir(guard: Guard) -> tuple[Path, Path]:
    data = guard.root / "data"
    data.mkdir()
    broker_user_can_write(data)
    return data, guard.config("persistence true", f"persistence_location {data}/")


def test_broker_runs_with_every_layer(guard: Guard, processes: list) -> None:
    data, config = with_data_dir(guard)
    process = start_run(guard, config, processes)
    status = proc_status(process.pid)
    mounts = Path(f"/proc/{process.pid}/mountinfo").read_text().splitlines()
    [data_mount] = [line for line in mounts if line.split()[4] == str(data)]
    assert publish_and_receive(guard.port, None, None) == "hello through a verified broker"
    log = stderr_after_stop(process)
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    assert int(status["CapBnd"], 16) == (1 << CAPABILITIES.index("CAP_SETUID")) | (
        1 << CAPABILITIES.index("CAP_SETGID")
    )
    assert status["Uid"].split()[0] != "0"
    assert "noexec" in data_mount.split()[5].split(",")
    for layer in ("no_new_privs", "noexec", "capabilities", "landlock", "seccomp", "mdwe"):
        assert f"mosquitto-guard: sandbox: {layer}: active:" in log
    assert "NOT active" not in log


def test_no_sandbox_flag_leaves_broker_unconfined(guard: Guard, processes: list) -> None:
    process = start_run(guard, guard.config(), processes, "--no-sandbox")
    status = proc_status(process.pid)
    log = stderr_after_stop(process)
    assert status["Seccomp"] == "0"
    assert status["NoNewPrivs"] == "0"
    assert "mosquitto-guard: sandbox: off: the broker starts unconfined" in log


def test_policy_mode_off_leaves_broker_unconfined(guard: Guard, processes: list) -> None:
    set_mode(guard, "off")
    process = start_run(guard, guard.config(), processes)
    status = proc_status(process.pid)
    stop_process(process)
    assert status["Seccomp"] == "0"


def notify_ready(guard: Guard, address: str, processes: list) -> tuple[bytes, int]:
    """Start the broker with NOTIFY_SOCKET=address and return its message and sender pid."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
    if not address.startswith("@"):
        os.chmod(address, 0o777)  # the broker notifies after dropping to the mosquitto user
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.settimeout(15)
    env = dict(os.environ, NOTIFY_SOCKET=address)
    process = subprocess.Popen(
        guard.run_argv(guard.config()), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    processes.append(process)
    try:
        message, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    finally:
        sock.close()
    [credentials] = [data for level, kind, data in ancillary if kind == socket.SCM_CREDENTIALS]
    assert process.poll() is None
    return message, int.from_bytes(credentials[:4], "little") - process.pid


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_sandboxed_broker_notifies_readiness(guard: Guard, processes: list, kind: str) -> None:
    address = str(guard.root / "notify.sock") if kind == "path" else f"@guard-{os.getpid()}"
    message, pid_offset = notify_ready(guard, address, processes)
    assert b"READY=1" in message
    assert pid_offset == 0


MISSING_MDWE = """
import sys
from mosquitto_guard.errors import HostError
from mosquitto_guard.sandbox import confine

def unavailable():
    raise HostError("setting memory-deny-write-execute failed: Invalid argument")

confine._mdwe = unavailable
from mosquitto_guard.cli import main
sys.exit(main(sys.argv[1:]))
"""


def without_mdwe(guard: Guard) -> list[str]:
    """Return a `run` command whose MDWE layer fails, as on a kernel older than 6.3.

    Such a kernel cannot run here, so the one function that sets MDWE is replaced.
    """
    argv = guard.run_argv(guard.config())
    return [sys.executable, "-c", MISSING_MDWE, *argv[argv.index("run") :]]


def test_require_mode_rejects_missing_layer(guard: Guard) -> None:
    set_mode(guard, "require")
    result = subprocess.run(without_mdwe(guard), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "mosquitto-guard: sandbox: mdwe: NOT active" in result.stderr
    assert "rejected: sandbox layer mdwe is not active" in result.stderr


def test_enforce_mode_starts_without_missing_layer(guard: Guard, processes: list) -> None:
    process = subprocess.Popen(without_mdwe(guard), stderr=subprocess.PIPE)
    processes.append(process)
    assert wait_for_port(guard.port, process)
    status = proc_status(process.pid)
    log = stderr_after_stop(process)
    assert "mosquitto-guard: sandbox: mdwe: NOT active" in log
    assert status["Seccomp"] == "2"


def test_sandbox_plan_names_sources(guard: Guard, capsys: pytest.CaptureFixture[str]) -> None:
    data, config = with_data_dir(guard)
    code = main(["sandbox-plan", "--policy", str(guard.policy), "-c", str(config)])
    text = capsys.readouterr().out
    assert code == 0
    assert (
        f"write (mounted noexec):\n  {data}\n      source: {config}:6: persistence_location" in text
    )
    assert f"bind (TCP port):\n  {guard.port}\n      source: {config}:1: listener" in text
    assert "connect (TCP port): none" in text
    assert "UDP: denied" in text
    assert "  CAP_SETUID\n      needed for the drop to the broker's user" in text


def test_sandbox_plan_json(guard: Guard, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "sandbox-plan",
            "--policy",
            str(guard.policy),
            "-c",
            str(guard.config()),
            "--format",
            "json",
        ]
    )
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(document) == {
        "format_version",
        "mode",
        "broker",
        "grants",
        "capabilities",
        "udp",
        "seccomp_denied",
        "kernel",
        "warnings",
        "problems",
    }
    assert document["format_version"] == 1
    assert {
        "access": "execute",
        "target": "/usr/sbin/mosquitto",
        "source": "the broker binary",
    } in (document["grants"])
    assert "execve" in document["seccomp_denied"]


def test_sandbox_plan_fails_on_missing_file(
    guard: Guard, capsys: pytest.CaptureFixture[str]
) -> None:
    config = guard.config(f"password_file {guard.root}/absent")
    code = main(["sandbox-plan", "--policy", str(guard.policy), "-c", str(config)])
    text = capsys.readouterr().out
    assert code == 1
    assert f"problem: sandbox: {config}:5: password_file" in text
