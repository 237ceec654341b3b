"""Helpers shared by the whole suite: compiled test plugins, free ports and real brokers.

Nothing here mocks Mosquitto: brokers are the distribution's `/usr/sbin/mosquitto`, plugins are
compiled from the C sources in `tests/plugins/` against the installed plugin headers.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mosquitto_guard.cli import main

PLUGIN_SOURCES = Path(__file__).parent / "plugins"
MOSQUITTO = shutil.which("mosquitto", path="/usr/sbin:/usr/bin") or "/usr/sbin/mosquitto"
DYNSEC_PLUGIN = (
    Path("/usr/lib")
    / str(sysconfig.get_config_var("MULTIARCH") or "")
    / "mosquitto_dynamic_security.so"
)

# Plugins must sit in a path whose every directory is owned by root and writable by nobody
# else, so they cannot live under /tmp (mode 1777). Test brokers drop to the `mosquitto` user,
# which must be able to read what they load.
SAFE_BASE = Path("/var/lib/mosquitto-guard-tests")


def compile_plugin(
    source: str, output: Path, defines: dict[str, str] | None = None, extra: Sequence[str] = ()
) -> Path:
    """Compile `tests/plugins/<source>` into the shared object `output` and return its path."""
    flags = [f"-D{key}={value}" for key, value in (defines or {}).items()]
    command = [
        "gcc",
        "-shared",
        "-fPIC",
        "-O1",
        "-Wall",
        "-Werror",
        *flags,
        "-o",
        str(output),
        str(PLUGIN_SOURCES / source),
        *extra,
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


def wait_for_port(
    port: int, process: subprocess.Popen[bytes] | None, timeout: float = 30.0
) -> bool:
    """Wait until 127.0.0.1:`port` accepts; False when `process` exits or time runs out."""
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


@dataclass
class Guard:
    """Paths and helpers for one isolated mosquitto-guard set-up."""

    root: Path
    port: int
    keys: dict[str, Path] = field(default_factory=dict)
    # False adds --no-sandbox to `run`. Tests that prove code never ran by the absence of a
    # mark turn the sandbox off, because the sandbox would also stop a plugin writing its mark.
    sandbox: bool = True

    @property
    def policy(self) -> Path:
        return self.root / "policy.toml"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def plugins(self) -> Path:
        return self.root / "plugins"

    def keygen(self, name: str, kind: str = "ssh") -> Path:
        """Create a key pair named `name` and return the private key path."""
        path = self.root / "keys" / name
        assert main(["keygen", "--type", kind, "--no-passphrase", str(path)]) == 0
        self.keys[name] = path
        return path

    def write_policy(
        self,
        trusted: Sequence[str],
        *,
        threshold: int = 1,
        revoked: Sequence[str] = (),
        extra_dirs: Sequence[Path] = (),
    ) -> None:
        dirs = [self.plugins, DYNSEC_PLUGIN.parent, *extra_dirs]
        lines = [
            "format_version = 1",
            f"threshold = {threshold}",
            "plugin_dirs = [" + ", ".join(f'"{d}"' for d in dirs) + "]",
            f'manifest_dir = "{self.manifests}"',
            f'state_dir = "{self.root / "state"}"',
        ]
        if revoked:
            lines.append("revoked = [" + ", ".join(f'"{r}"' for r in revoked) + "]")
        for name in trusted:
            lines += ["", "[[keys]]", f'name = "{name}"', f'file = "{self.keys[name]}.pub"']
        self.policy.write_text("\n".join(lines) + "\n")

    def sign(self, plugin: Path, name: str, version: int, key: str, *extra: str) -> None:
        assert (
            main(
                [
                    "sign",
                    str(plugin),
                    "--key",
                    str(self.keys[key]),
                    "--name",
                    name,
                    "--version",
                    str(version),
                    "--manifest-dir",
                    str(self.manifests),
                    *extra,
                ]
            )
            == 0
        )

    def build(self, filename: str, defines: dict[str, str] | None = None) -> Path:
        return compile_plugin("marker.c", self.plugins / filename, defines)

    def config(self, *lines: str, name: str = "mosquitto.conf") -> Path:
        path = self.root / name
        base = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
        ]
        path.write_text("\n".join([*base, *lines]) + "\n")
        return path

    def run_argv(
        self, config: Path | None, *options: str, broker_args: Sequence[str] = ()
    ) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "mosquitto_guard",
            "run",
            "--policy",
            str(self.policy),
            *([] if self.sandbox else ["--no-sandbox"]),
            *options,
            "--",
        ]
        if config is not None:
            args += ["-c", str(config)]
        return [*args, *broker_args]

    def run(
        self,
        config: Path | None,
        *options: str,
        env: dict[str, str] | None = None,
        broker_args: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Run `mosquitto-guard run` to completion (for launches expected to be rejected)."""
        return subprocess.run(
            self.run_argv(config, *options, broker_args=broker_args),
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )


def start_run(
    guard: Guard,
    config: Path,
    processes: list[subprocess.Popen[bytes]],
    *options: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `run` with `config` in the background and wait until the broker listens.

    The process joins `processes`, which the fixture of that name stops after the test.
    """
    process = subprocess.Popen(
        guard.run_argv(config, *options), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    processes.append(process)
    assert wait_for_port(guard.port, process), process.communicate()[1].decode()
    return process


def broker_user_can_write(path: Path) -> None:
    """Let the `mosquitto` user, which the broker drops to, write `path`."""
    user = pwd.getpwnam("mosquitto")
    os.chown(path, user.pw_uid, user.pw_gid)


def make_mark(directory: Path, name: str) -> Path:
    """Create an empty mark file that a test plugin's constructor appends to."""
    directory.mkdir(mode=0o755, exist_ok=True)
    mark = directory / name
    mark.touch()
    # Plugins write marks after the broker drops to the mosquitto user, so anyone may write them.
    os.chmod(mark, 0o666)
    return mark


def marked_build(guard: Guard, filename: str, mark: Path, text: str = "loaded\n") -> Path:
    """Compile `marker.c` into `guard.plugins`, appending `text` to `mark` when loaded."""
    return guard.build(
        filename, {"MARKER_FILE": c_string(str(mark)), "MARKER_TEXT": c_string(text)}
    )


def process_marker(output: Path, mark: Path) -> Path:
    """Compile `process_marker.c`, which writes the loading process's pid and executable."""
    return compile_plugin("process_marker.c", output, {"MARKER_FILE": c_string(str(mark))})


def launch(
    argv: list[str], port: int, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[bool, int, str]:
    """Run `argv` until a broker listens or it exits. Return (started, pid, stderr)."""
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd
    )
    try:
        started = wait_for_port(port, process, timeout=20)
    finally:
        stop_process(process)
    assert process.stderr is not None
    return started, process.pid, process.stderr.read().decode(errors="replace")
