"""`mosquitto-guard systemd-unit`: a drop-in that starts the broker through `run`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mosquitto_guard.cli.run import add_config_argument, add_launch_arguments

DROP_IN_PATH = "/etc/systemd/system/mosquitto.service.d/mosquitto-guard.conf"


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> None:
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=f"Print a drop-in for mosquitto.service; install it as {DROP_IN_PATH}.",
    )
    add_launch_arguments(parser)
    add_config_argument(parser)
    parser.add_argument(
        "--guard",
        type=Path,
        default=None,
        help="path of the mosquitto-guard command (default: this interpreter with -I -m)",
    )


def launcher_command() -> list[str]:
    """Return the command that starts this installation of mosquitto-guard, isolated.

    `-I` makes the interpreter ignore every PYTHON* variable and the user's site directory, so
    nothing from the service environment is imported before the checks run.
    """
    return [sys.executable, "-I", "-m", "mosquitto_guard"]


# Variables that would load code into mosquitto-guard itself or into the broker; systemd
# removes them before starting the service, whatever EnvironmentFile= or Environment= set.
UNSET_VARIABLES = (
    "LD_PRELOAD LD_AUDIT LD_LIBRARY_PATH PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE "
    "OPENSSL_CONF OPENSSL_ENGINES OPENSSL_MODULES GCONV_PATH GLIBC_TUNABLES SNAP_NAME"
)


def render_drop_in(
    launcher: list[str],
    policy: Path,
    config: Path,
    broker: Path,
    hardening: Sequence[str] = (),
) -> str:
    """Return the text of the drop-in unit that starts the broker through `launcher run`.

    `hardening` lines, from `sandbox.systemd.hardening_directives`, end the `[Service]` section.
    """
    from mosquitto_guard.sandbox.systemd import quote

    arguments: list[str | Path] = [*launcher, "run", "--policy", policy, "--broker", broker]
    arguments += ["--", "-c", config]
    command = " ".join(quote(argument) for argument in arguments)
    return f"""# {DROP_IN_PATH}
# Starts Mosquitto through mosquitto-guard, which verifies every plugin against the signed
# manifests in the trust policy, then replaces itself with the broker (same PID), so
# Type=notify readiness and NotifyAccess=main keep working.
# Install: copy this file, then run: systemctl daemon-reload && systemctl restart mosquitto
[Service]
Type=notify
NotifyAccess=main
UnsetEnvironment={UNSET_VARIABLES}
ExecStart=
ExecStart={command}
# A rejection exits with status 1 (2 for a bad policy) before the broker starts; restarting
# would only repeat it.
RestartPreventExitStatus=1 2
""" + "".join(f"{line}\n" for line in hardening)


def run(args: argparse.Namespace) -> int:
    from mosquitto_guard.policy.model import load_policy
    from mosquitto_guard.sandbox.preview import preview_launch
    from mosquitto_guard.sandbox.systemd import hardening_directives

    launcher = [str(args.guard)] if args.guard else launcher_command()
    policy = load_policy(args.policy)
    hardening: list[str] = []
    if policy.sandbox.mode != "off":
        plan = preview_launch(policy, args.broker, args.config)
        if plan.problems:
            for problem in plan.problems:
                print(f"mosquitto-guard: rejected: {problem}", file=sys.stderr)
            # Nothing is printed, so that a shell redirection leaves no drop-in that run rejects.
            print(
                f"mosquitto-guard: error: {len(plan.problems)} problem(s) found; run would "
                "reject this config, so no drop-in was printed",
                file=sys.stderr,
            )
            return 1
        if plan.sandbox is not None:
            hardening = hardening_directives(
                plan.sandbox, args.broker, policy.state_dir, plan.sandbox.broker_user
            )
    sys.stdout.write(render_drop_in(launcher, args.policy, args.config, args.broker, hardening))
    return 0
