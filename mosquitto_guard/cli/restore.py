"""`mosquitto-guard restore PATH... [--policy P] [--baseline FILE]`.

Verifies the signed baseline, then puts each PATH back as the baseline recorded it (see
`mosquitto_guard.integrity.restore`). Prints one line per action, and the evidence file that
contains what was replaced.

Exit codes:

- 0: every path restored, or already as recorded.
- 1: the baseline is invalid, or a path cannot be restored from it: not listed, no intact
  known-good copy, a symlink among its directories, or a symlink at a link's target.
- 2: a usage error.
- 3: a file could not be read or written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from mosquitto_guard.cli.check import add_baseline_argument
from mosquitto_guard.cli.run import add_policy_argument

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """Add the `restore` subcommand to `subparsers`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help_text,
        description="Put each PATH back as the signed baseline recorded it: a file from its "
        "known-good copy, a symlink to its recorded target, a directory's mode and owner. A "
        "file the baseline does not list, in a directory it watches, is quarantined. What was "
        "replaced is kept in evidence/ beside the baseline, and each action is appended to "
        "restore.log there.",
    )
    add_policy_argument(parser)
    add_baseline_argument(parser)
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="file to restore")
    return parser


def run(args: argparse.Namespace) -> int:
    """Verify the baseline, restore each path, and report what was done."""
    from mosquitto_guard.integrity.baseline import load_verified
    from mosquitto_guard.integrity.restore import restore
    from mosquitto_guard.integrity.store import restore_log_path
    from mosquitto_guard.policy.model import load_policy

    policy = load_policy(args.policy)
    baseline_path: Path = args.baseline or policy.integrity.baseline
    baseline = load_verified(baseline_path, policy)
    for path in args.paths:
        actions = restore(path, baseline, baseline_path)
        if not actions:
            print(f"unchanged: {path} already matches the baseline")
        for action in actions:
            evidence = f" (previous content in {action.evidence})" if action.evidence else ""
            print(f"{action.action}: {action.path}{evidence}")
            logger.info("restore: %s %s", action.action, action.path)
    print(f"mosquitto-guard: restore log: {restore_log_path(baseline_path)}", file=sys.stderr)
    return 0
