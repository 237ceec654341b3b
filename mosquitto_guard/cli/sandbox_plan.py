"""`mosquitto-guard sandbox-plan -c CONF --policy P`: the rules `run` would apply, and why."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mosquitto_guard.cli.run import add_config_argument, add_launch_arguments

FORMAT_VERSION = 1
# Grant kinds in the order they are printed, with their headings.
SECTIONS = (
    ("execute", "execute"),
    ("read", "read"),
    ("write", "write (mounted noexec)"),
    ("bind", "bind (TCP port)"),
    ("connect", "connect (TCP port)"),
)


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> None:
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=(
            "Verify the config as run does, then print every sandbox rule run would apply and "
            "the config line, manifest permission or policy entry it comes from. Starts "
            "nothing. Exits 1 when verification or the sandbox finds a problem."
        ),
    )
    add_launch_arguments(parser)
    add_config_argument(parser)
    parser.add_argument("--format", choices=("text", "json"), default="text")


def run(args: argparse.Namespace) -> int:
    from mosquitto_guard.policy.model import load_policy
    from mosquitto_guard.sandbox.preview import preview_launch

    policy = load_policy(args.policy)
    plan = preview_launch(policy, args.broker, args.config)
    document = _document(plan, policy.sandbox.mode)
    if args.format == "json":
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write(_text(document, args.config))
    return 1 if plan.problems else 0


def _document(plan: Any, mode: str) -> dict[str, Any]:
    from mosquitto_guard.sandbox.landlock import landlock_abi, rights_for_abi
    from mosquitto_guard.sandbox.seccomp import SECCOMP_DENIED

    sandbox = plan.sandbox
    abi = landlock_abi()
    _, missing = rights_for_abi(abi)
    return {
        "format_version": FORMAT_VERSION,
        "mode": mode,
        "broker": plan.argv[0] if plan.argv else None,
        "grants": [
            {"access": g.access, "target": g.target, "source": g.source} for g in sandbox.grants
        ],
        "capabilities": [{"name": n, "reason": r} for n, r in sandbox.capabilities],
        "udp": {"allowed": sandbox.udp, "source": sandbox.udp_source or None},
        "seccomp_denied": list(SECCOMP_DENIED),
        "kernel": {"landlock_abi": abi, "landlock_missing": list(missing)},
        "warnings": list(sandbox.warnings),
        "problems": list(plan.problems),
    }


def _text(document: dict[str, Any], config: Path) -> str:
    lines = [f"Sandbox for {document['broker']} -c {config} (mode {document['mode']})", ""]
    for access, heading in SECTIONS:
        grants = [g for g in document["grants"] if g["access"] == access]
        lines.append(f"{heading}:" if grants else f"{heading}: none")
        lines += [f"  {g['target']}\n      source: {g['source']}" for g in grants]
    udp = document["udp"]
    if udp["allowed"]:
        lines.append(f"UDP: allowed, to resolve host names ({udp['source']})")
    else:
        lines.append("UDP: denied")
    lines.append("capability bounding set:" if document["capabilities"] else "capabilities: none")
    lines += [f"  {c['name']}\n      needed for {c['reason']}" for c in document["capabilities"]]
    lines.append("seccomp denies: " + ", ".join(document["seccomp_denied"]))
    kernel = document["kernel"]
    missing = ", ".join(kernel["landlock_missing"]) or "nothing"
    lines.append(f"kernel: Landlock ABI {kernel['landlock_abi']}; missing: {missing}")
    lines += [f"warning: {warning}" for warning in document["warnings"]]
    lines += [f"problem: {problem}" for problem in document["problems"]]
    return "\n".join(lines) + "\n"
