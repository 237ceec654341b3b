"""`mosquitto-guard baseline --policy P [-c CONF] --key KEY [--output FILE]`.

Records every file that decides what the broker runs (see `mosquitto_guard.integrity.watch`)
into a JSON baseline and signs it in the namespace `mosquitto-guard-baseline`. stdout lists
the two files written: the baseline and its signature, `FILE.sig` for an SSH key or
`FILE.minisig` for a minisign key.

Exit codes: 0 written; 1 the config is rejected or the key is invalid; 2 a usage or policy
error; 3 an operational error.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mosquitto_guard.cli.run import DEFAULT_CONFIG, add_policy_argument
from mosquitto_guard.integrity.baseline import DEFAULT_BASELINE_PATH
from mosquitto_guard.launch.broker import DEFAULT_BROKER

if TYPE_CHECKING:
    from mosquitto_guard.integrity.baseline import Baseline
    from mosquitto_guard.policy.model import Policy

logger = logging.getLogger(__name__)

SERVICE_UNIT_NAME = "mosquitto.service"


def add_parser(subparsers: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """Add the `baseline` subcommand to `subparsers`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help_text,
        description="Record the digest, size, owner, mode, inode, symlink target and ELF build "
        "id of every file that decides what the broker runs, and sign the record. An "
        "encrypted key's passphrase comes from MOSQUITTO_GUARD_PASSPHRASE or is asked for on "
        "the terminal.",
    )
    add_target_arguments(parser)
    parser.add_argument("--key", type=Path, required=True, help="OpenSSH or minisign private key")
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_BASELINE_PATH,
        metavar="FILE",
        help=f"where to write the baseline (default {DEFAULT_BASELINE_PATH})",
    )
    return parser


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that `baseline` and `check` share: what to watch."""
    add_policy_argument(parser)
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        action="append",
        help=f"broker config file, repeatable (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--broker",
        type=Path,
        default=DEFAULT_BROKER,
        help=f"the mosquitto binary (default {DEFAULT_BROKER})",
    )
    parser.add_argument(
        "--unit",
        type=Path,
        help=f"systemd unit file (default: the first {SERVICE_UNIT_NAME} found in "
        "/etc/systemd/system, /run/systemd/system, /lib/systemd/system, /usr/lib/systemd/system)",
    )


def find_unit(explicit: Path | None) -> Path | None:
    """Return `explicit`, else the first installed mosquitto unit, else None."""
    if explicit is not None:
        return explicit
    from mosquitto_guard.audit.context import UNIT_DIRECTORIES

    for directory in UNIT_DIRECTORIES:
        candidate = directory / SERVICE_UNIT_NAME
        if candidate.exists():
            return candidate
    return None


def current_baseline(args: argparse.Namespace, policy: Policy) -> Baseline:
    """Record the files watched under the options in `args` now, as a `Baseline`."""
    from mosquitto_guard.integrity.baseline import build_baseline
    from mosquitto_guard.integrity.watch import watched_files

    configs = args.config or [DEFAULT_CONFIG]
    watched = watched_files(configs, policy, args.broker, find_unit(args.unit))
    return build_baseline(watched)


def run(args: argparse.Namespace) -> int:
    """Write and sign the baseline, and print the files written."""
    from mosquitto_guard.integrity.baseline import render_baseline, write_signed
    from mosquitto_guard.policy.model import load_policy
    from mosquitto_guard.signing.keys import load_private_key

    policy = load_policy(args.policy)
    key = load_private_key(args.key)
    if policy.trusted_key(key.public_key.key_id) is None:
        logger.warning(
            "key %s is not trusted by the policy %s: check will reject this baseline",
            key.public_key.key_id,
            policy.path,
        )
    baseline = current_baseline(args, policy)
    signature = write_signed(args.output, render_baseline(baseline), key)
    print(args.output)
    print(signature)
    return 0
