"""`mosquitto-guard verify`: the checks of `run`, without starting anything."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mosquitto_guard.cli.run import add_launch_arguments
from mosquitto_guard.errors import GuardError

if TYPE_CHECKING:
    from mosquitto_guard.policy.model import Policy


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> None:
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=(
            "With -c, run every check `run` would run on that config and report the problems. "
            "With plugin files, check each against its signed manifest. Nothing is started "
            "and no state is recorded."
        ),
    )
    add_launch_arguments(parser)
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        action="append",
        default=[],
        help="broker config file to verify as `run` would",
    )
    parser.add_argument(
        "plugins",
        nargs="*",
        type=Path,
        metavar="PLUGIN.so",
        help="plugin files to check against their manifests",
    )


def run(args: argparse.Namespace) -> int:
    from mosquitto_guard.policy.model import load_policy

    if not args.config and not args.plugins:
        print("mosquitto-guard: error: give -c CONF or at least one PLUGIN.so", file=sys.stderr)
        return 2
    policy = load_policy(args.policy)
    problems: list[str] = []
    if args.config:
        problems += _verify_config(policy, args.config, args.broker)
    for plugin in args.plugins:
        problems += _verify_plugin(policy, plugin)
    for problem in problems:
        print(f"mosquitto-guard: rejected: {problem}", file=sys.stderr)
    if problems:
        print(f"mosquitto-guard: {len(problems)} problem(s) found", file=sys.stderr)
        return 1
    return 0


def _verify_config(policy: Policy, configs: list[Path], broker: Path) -> list[str]:
    from mosquitto_guard.launch.runner import prepare_launch

    broker_args: list[str] = []
    for config in configs:
        broker_args += ["-c", str(config)]
    # The sandbox is derived as well, so that a path the broker needs but lacks is found here.
    sandbox = policy.sandbox.mode != "off"
    plan = prepare_launch(policy, broker_args, os.environ, broker=broker, sandbox=sandbox)
    for fd in plan.inherit_fds:
        os.close(fd)
    for verified in plan.accepted:
        name, version, digest = verified
        print(f"ok: {name} version {version} sha256 {digest}")
    for warning in plan.warnings:
        print(f"mosquitto-guard: warning: {warning}", file=sys.stderr)
    if not plan.problems:
        print(f"ok: {', '.join(map(str, configs))}: every loaded file verified")
    return plan.problems


def _verify_plugin(policy: Policy, plugin: Path) -> list[str]:
    from mosquitto_guard.launch.seal import seal_file
    from mosquitto_guard.manifest.verify import find_manifest

    try:
        sealed = seal_file(plugin.absolute())
        os.close(sealed.fd)
        verified = find_manifest(plugin.absolute(), sealed.sha256, policy, datetime.now(UTC))
    except GuardError as error:
        return [str(error)]
    print(
        f"ok: {plugin}: manifest {verified.manifest.name} version {verified.manifest.version}, "
        f"signed by {', '.join(verified.signers)}"
    )
    return []
