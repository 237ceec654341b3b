"""`mosquitto-guard run --policy P -- [broker arguments]`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mosquitto_guard.launch.broker import DEFAULT_BROKER

if TYPE_CHECKING:
    from mosquitto_guard.launch.runner import LaunchPlan
    from mosquitto_guard.policy.model import Policy
    from mosquitto_guard.sandbox.plan import SandboxPlan

DEFAULT_POLICY = Path("/etc/mosquitto-guard/policy.toml")
DEFAULT_CONFIG = Path("/etc/mosquitto/mosquitto.conf")


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> None:
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=(
            "Verify every plugin and library the broker would load against the trust policy, "
            "copy the verified bytes into sealed memory, then replace this process with the "
            "broker. Exits non-zero before the broker starts when anything fails."
        ),
    )
    add_launch_arguments(parser)
    parser.add_argument(
        "--permissive",
        action="store_true",
        help="log each rejection and start the broker anyway (for a gradual rollout)",
    )
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="start the broker without the sandbox (verification still applies)",
    )
    parser.add_argument(
        "broker_args",
        nargs=argparse.REMAINDER,
        metavar="-- BROKER_ARGS",
        help="arguments for mosquitto, after --, e.g. -- -c /etc/mosquitto/mosquitto.conf",
    )


def add_policy_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--policy P`, with its default."""
    parser.add_argument(
        "--policy",
        type=Path,
        default=DEFAULT_POLICY,
        help=f"trust policy file (default {DEFAULT_POLICY})",
    )


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that `run` and `verify` share."""
    add_policy_argument(parser)
    parser.add_argument(
        "--broker",
        type=Path,
        default=DEFAULT_BROKER,
        help=f"the mosquitto binary to start (default {DEFAULT_BROKER})",
    )


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Add `-c CONF`, for the commands that read a config without starting the broker."""
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"broker config file (default {DEFAULT_CONFIG})",
    )


def broker_arguments(raw: list[str]) -> list[str]:
    """Drop the `--` that separates our options from the broker's."""
    return raw[1:] if raw[:1] == ["--"] else raw


def run(args: argparse.Namespace) -> int:
    from mosquitto_guard.errors import LaunchRejected
    from mosquitto_guard.launch.environment import launcher_problems
    from mosquitto_guard.launch.runner import exec_broker, finish_plan, prepare_launch
    from mosquitto_guard.policy.model import load_policy

    # Checked first, and never relaxed by --permissive: these variables already ran code in
    # this process, which is about to become the broker.
    tainted = launcher_problems(os.environ)
    if tainted:
        raise LaunchRejected(tainted)
    policy = load_policy(args.policy)
    permissive = bool(args.permissive or policy.permissive)
    mode = "off" if args.no_sandbox else policy.sandbox.mode
    plan = prepare_launch(
        policy,
        broker_arguments(args.broker_args),
        os.environ,
        broker=args.broker,
        sandbox=mode != "off",
    )
    finish_plan(plan, policy, permissive=permissive)
    if policy.integrity.require_clean_check:
        _require_clean_check(
            plan, policy, broker_arguments(args.broker_args), args.broker, permissive=permissive
        )
    if plan.sandbox is None:
        _say("off: the broker starts unconfined")
    else:
        _confine(plan, plan.sandbox, mode, permissive=permissive)
    exec_broker(plan)


def _require_clean_check(
    plan: LaunchPlan, policy: Policy, broker_args: list[str], broker: Path, *, permissive: bool
) -> None:
    """Reject the launch unless the signed baseline verifies and nothing unexpected changed."""
    from mosquitto_guard.errors import GuardError, LaunchRejected
    from mosquitto_guard.integrity.check import check_now
    from mosquitto_guard.integrity.scan import default_workers
    from mosquitto_guard.integrity.watchlist import Targets
    from mosquitto_guard.inventory.argv import parse_broker_args

    configs = tuple(Path(path) for path in parse_broker_args(broker_args).config_files)
    baseline = policy.integrity.baseline
    try:
        result = check_now(
            baseline, policy, Targets(configs=configs, broker=broker), workers=default_workers()
        )
    except GuardError as error:
        problems = [f"integrity: the baseline check could not pass: {error}"]
    else:
        problems = [
            f"integrity: {difference.kind} since the baseline {baseline}: {difference.path}"
            for difference in result.report.alerts
        ]
        if result.incomplete is not None:
            problems.append(f"integrity: {result.incomplete}")
        for difference in result.report.expected:
            _log_integrity(f"expected change: {difference.path}: {difference.explanation}")
    if not problems:
        _log_integrity(f"every watched file matches the baseline {baseline}")
        return
    if permissive:
        for problem in problems:
            _log_integrity(f"permissive, starting anyway: {problem}")
        return
    for fd in plan.inherit_fds:
        os.close(fd)
    _log_integrity(
        "[integrity] require_clean_check is set: review the changes with mosquitto-guard "
        "check, then restore the files or write a new baseline"
    )
    raise LaunchRejected(problems)


def _log_integrity(message: str) -> None:
    print(f"mosquitto-guard: integrity: {message}", file=sys.stderr, flush=True)


def _confine(plan: LaunchPlan, sandbox: SandboxPlan, mode: str, *, permissive: bool) -> None:
    """Apply the sandbox; with mode "require", reject the launch when a layer is missing."""
    from mosquitto_guard.errors import LaunchRejected
    from mosquitto_guard.sandbox.confine import confine

    for warning in sandbox.warnings:
        _say(f"warning: {warning}")
    report = confine(sandbox)
    for line in report.lines():
        _say(line)
    if report.missing and mode == "require" and not permissive:
        for fd in plan.inherit_fds:
            os.close(fd)
        raise LaunchRejected(
            [
                f"sandbox layer {layer.name} is not active: {layer.detail}"
                for layer in report.missing
            ]
        )


def _say(message: str) -> None:
    print(f"mosquitto-guard: sandbox: {message}", file=sys.stderr, flush=True)
