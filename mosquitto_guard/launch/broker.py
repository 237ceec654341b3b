"""Facts about the broker binary: its version, which decides how its config is read."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from mosquitto_guard.errors import HostError

DEFAULT_BROKER = Path("/usr/sbin/mosquitto")
_VERSION = re.compile(rb"mosquitto version (\d+)\.(\d+)\.(\d+)")


def broker_version(broker: Path) -> tuple[int, int, int]:
    """Return the broker's version as printed by `mosquitto -h`.

    `-h` prints the usage and exits without reading a config or loading a plugin, and the
    OpenSSL config is pointed at /dev/null. Raises
    `HostError` when the binary cannot run or prints no version.
    """
    try:
        result = subprocess.run(
            [str(broker), "-h"],
            capture_output=True,
            timeout=10,
            check=False,
            # Mosquitto 2.0 loads the OpenSSL config, and the modules it names, first thing in
            # main(), even for -h: /dev/null keeps unverified modules out of this probe.
            env={"OPENSSL_CONF": "/dev/null"},
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise HostError(
            f"cannot run the broker {broker}: {error}",
            fix="install the mosquitto package or pass --broker PATH",
        ) from error
    match = _VERSION.search(result.stdout + result.stderr)
    if not match:
        raise HostError(
            f"{broker} -h printed no 'mosquitto version X.Y.Z' line",
            fix="pass the path of the mosquitto broker with --broker",
        )
    major, minor, patch = (int(group) for group in match.groups())
    return major, minor, patch
