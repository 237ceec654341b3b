"""`mosquitto-guard audit [-c CONF] [--policy P] [--format text|json|sarif] [--min-severity S]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mosquitto_guard.cli.run import DEFAULT_CONFIG
from mosquitto_guard.launch.broker import DEFAULT_BROKER

SEVERITIES = ("info", "low", "medium", "high", "critical")


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> None:
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=(
            "Report every misconfiguration that lets a malicious plugin in or helps one, with "
            "file, line and fix. Without -c it audits this host: the default config, the "
            "installed package, the service unit and the running broker. Exit status: 0 no "
            "finding at or above --min-severity, 1 findings, 2 usage error, 3 the audit could "
            "not run."
        ),
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        action="append",
        help=f"config file to audit (default {DEFAULT_CONFIG}, with the host)",
    )
    parser.add_argument(
        "--host",
        action="store_true",
        help="with -c, also audit this host's package, unit and running broker",
    )
    parser.add_argument("--policy", type=Path, help="trust policy, for the plugin directory rule")
    parser.add_argument(
        "--broker",
        type=Path,
        default=DEFAULT_BROKER,
        help=f"the mosquitto binary (default {DEFAULT_BROKER})",
    )
    parser.add_argument("--unit", type=Path, help="service unit file to audit (default: found)")
    parser.add_argument("--format", choices=("text", "json", "sarif"), default="text")
    parser.add_argument(
        "--list-rules", action="store_true", help="print every rule's id, severity and title"
    )
    parser.add_argument(
        "--min-severity",
        choices=SEVERITIES,
        default="low",
        help="report and fail on findings of this severity or above (default low)",
    )


def run(args: argparse.Namespace) -> int:
    from mosquitto_guard.audit.context import AuditContext, AuditOptions
    from mosquitto_guard.audit.engine import run_audit
    from mosquitto_guard.audit.model import Severity
    from mosquitto_guard.audit.output import to_json, to_sarif, to_text
    from mosquitto_guard.audit.rules import all_rules
    from mosquitto_guard.errors import HostError

    if args.list_rules:
        for rule in all_rules():
            print(f"{rule.id:11} {rule.severity.label:8} {rule.title}")
        return 0
    configs = args.config or [DEFAULT_CONFIG]
    options = AuditOptions(
        config_paths=configs,
        host=args.host or not args.config,
        broker=args.broker,
        policy_path=args.policy,
        unit_path=args.unit,
    )
    _check_named_files(configs, args.policy, args.unit)
    context = AuditContext(options)
    report = run_audit(context, all_rules())
    if context.read_error is not None:
        raise HostError(f"the audit could not run: {context.read_error}")
    shown = report.at_least(Severity.parse(args.min_severity))
    writer = {"text": to_text, "json": to_json, "sarif": to_sarif}[args.format]
    sys.stdout.write(writer(report, shown))
    return 1 if shown else 0


def _check_named_files(configs: list[Path], policy: Path | None, unit: Path | None) -> None:
    """Fail before auditing when a file the user named is missing or out of reach."""
    from mosquitto_guard.errors import HostError, UsageError

    for config in configs:
        try:
            found = config.is_file()
        except OSError as error:
            raise HostError(f"config file {config} cannot be reached: {error.strerror}") from None
        if not found:
            raise HostError(
                f"config file {config} not found", fix="give the broker's config with -c FILE"
            )
    for what, path in (("policy file", policy), ("unit file", unit)):
        if path is not None and not path.is_file():
            raise UsageError(f"{what} {path} not found", fix="correct the path")
