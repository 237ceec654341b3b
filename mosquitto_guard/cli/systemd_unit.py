"""`mosquitto-guard systemd-unit`: a drop-in that starts the broker through `run`."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from mosquitto_guard.cli.run import DEFAULT_POLICY
from mosquitto_guard.launch.broker import DEFAULT_BROKER

DROP_IN_PATH = "/etc/systemd/system/mosquitto.service.d/mosquitto-guard.conf"
DEFAULT_CONFIG = Path("/etc/mosquitto/mosquitto.conf")


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> None:
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=f"Print a drop-in for mosquitto.service; install it as {DROP_IN_PATH}.",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        default=DEFAULT_POLICY,
        help=f"trust policy file (default {DEFAULT_POLICY})",
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"broker config file (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--broker",
        type=Path,
        default=DEFAULT_BROKER,
        help=f"mosquitto binary (default {DEFAULT_BROKER})",
    )
    parser.add_argument(
        "--guard",
        type=Path,
        default=None,
        help="path of the mosquitto-guard command (default: this one)",
    )


def guard_command() -> Path:
    """Return the absolute path of the installed `mosquitto-guard` script."""
    script = Path(sys.argv[0])
    if script.name == "mosquitto-guard" and script.exists():
        return script.resolve()
    found = shutil.which("mosquitto-guard")
    return Path(found).resolve() if found else Path("/usr/local/bin/mosquitto-guard")


def render_drop_in(guard: Path, policy: Path, config: Path, broker: Path) -> str:
    """Return the text of the drop-in unit."""
    command = shlex.join(
        [
            str(guard),
            "run",
            "--policy",
            str(policy),
            "--broker",
            str(broker),
            "--",
            "-c",
            str(config),
        ]
    )
    return f"""# {DROP_IN_PATH}
# Starts Mosquitto through mosquitto-guard, which verifies every plugin against the signed
# manifests in the trust policy, then replaces itself with the broker (same PID), so
# Type=notify readiness and NotifyAccess=main keep working.
# Install: systemctl edit --full is not needed; copy this file, then
#   systemctl daemon-reload && systemctl restart mosquitto
[Service]
Type=notify
NotifyAccess=main
ExecStart=
ExecStart={command}
# A rejection exits with status 1 before the broker starts; do not restart in a loop on it.
RestartPreventExitStatus=1 2
"""


def run(args: argparse.Namespace) -> int:
    guard = args.guard or guard_command()
    sys.stdout.write(render_drop_in(guard, args.policy, args.config, args.broker))
    return 0
