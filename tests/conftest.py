"""Fixtures shared by the whole suite: compiled test plugins, free ports and real brokers.

Nothing here mocks Mosquitto: brokers are the distribution's `/usr/sbin/mosquitto`, plugins are
compiled from the C sources in `tests/plugins/` against the installed plugin headers.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

PLUGIN_SOURCES = Path(__file__).parent / "plugins"
MOSQUITTO = shutil.which("mosquitto", path="/usr/sbin:/usr/bin") or "/usr/sbin/mosquitto"
DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


def compile_plugin(
    source: str, output: Path, defines: dict[str, str] | None = None, extra: Sequence[str] = ()
) -> Path:
    """Compile `tests/plugins/<source>` into the shared object `output` and return its path."""
    flags = [f"-D{key}={value}" for key, value in (defines or {}).items()]
    command = [
        "gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror",
        *flags, "-o", str(output), str(PLUGIN_SOURCES / source), *extra,
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return output


def c_string(text: str) -> str:
    """Quote `text` as a C string literal for a -D define."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> bool:
    """Wait until 127.0.0.1:`port` accepts a connection; False if `process` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate `process` and reap it, killing it if it ignores SIGTERM."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


# Plugins must sit in a path whose every directory is owned by root and writable by nobody
# else, so they cannot live under /tmp (mode 1777). Test brokers drop to the `mosquitto` user,
# which must be able to read what they load.
SAFE_BASE = Path("/var/lib/mosquitto-guard-tests")


@pytest.fixture
def safe_dir() -> Iterator[Path]:
    """A fresh root-owned directory, mode 0755, on a path that passes the ownership checks."""
    SAFE_BASE.mkdir(mode=0o755, exist_ok=True)
    os.chmod(SAFE_BASE, 0o755)
    directory = Path(tempfile.mkdtemp(dir=SAFE_BASE))
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """A list of processes that are stopped when the test ends, whatever its outcome."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop_process(process)
