"""`mosquitto-guard check --policy P [-c CONF] [--baseline FILE] [--fast] [--format text|json]`.

Verifies the baseline's signature against the policy's trusted keys first, then compares the
watched files with it. A baseline that fails verification is reported and never replaced.
Expected changes (see `mosquitto_guard.integrity.expected`) are listed with what explains
them, and set no exit bit. `--fast` reads only the files whose ctime, inode, size, mode or
owner changed since the baseline.

The exit code is a bitmask:

- 1: files were added (watched and present now, absent from the baseline);
- 2: files were removed (present in the baseline, missing or no longer watched now);
- 4: files changed (any recorded attribute differs);
- 8: the baseline is invalid (unsigned, signed by an untrusted key or for another
  namespace, modified after signing, or malformed); nothing is compared;
- 16: the check could not run (the baseline, policy, config or a key cannot be read), or
  ran incomplete: when the broker would reject the config, the files the baseline lists are
  compared, and 16 is set beside the bits they give.

0 means every watched file matches the baseline. An invalid command line exits with 16 too,
because 2 would read as "removed".
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mosquitto_guard.cli.baseline import add_target_arguments
from mosquitto_guard.errors import GuardError
from mosquitto_guard.integrity.baseline import DEFAULT_BASELINE_PATH, FORMAT_VERSION
from mosquitto_guard.integrity.compare import BASELINE_INVALID, CHECK_FAILED
from mosquitto_guard.terminal import printable

if TYPE_CHECKING:
    from mosquitto_guard.integrity.compare import Report


def add_parser(subparsers: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """Add the `check` subcommand to `subparsers`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help_text,
        description="Verify the signed baseline, then report watched files added, removed or "
        "changed since it was written, with the old and new value of each changed attribute. "
        "Exit status is a bitmask: 1 added, 2 removed, 4 changed, 8 the baseline is invalid "
        "(nothing is compared), 16 the check could not run; 0 nothing changed.",
    )
    add_target_arguments(parser)
    add_baseline_argument(parser)
    parser.add_argument(
        "--fast",
        action="store_true",
        help="trust the baseline's digest of a file whose ctime, inode, size, mode and owner "
        "are unchanged, instead of reading it",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: one line per difference (default); json: one document on stdout",
    )
    return parser


def add_baseline_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--baseline FILE`; its default comes from the policy."""
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="FILE",
        help="the signed baseline (default: the policy's [integrity] baseline, "
        f"{DEFAULT_BASELINE_PATH} unless set)",
    )


def run(args: argparse.Namespace) -> int:
    """Verify the baseline, compare, print the differences and return the exit bitmask."""
    from mosquitto_guard.cli.baseline import targets_from
    from mosquitto_guard.integrity.baseline import BaselineError
    from mosquitto_guard.integrity.check import check_now
    from mosquitto_guard.integrity.progress import progress_bar
    from mosquitto_guard.policy.model import load_policy

    # A one-shot command over tens of thousands of records, which form no reference cycles:
    # the collector would only scan them again and again.
    gc.disable()
    # A config that the broker would reject sets 16 beside the bits of the files compared:
    # the watch list cannot be derived from it, so the baseline's own list is used.
    try:
        policy = load_policy(args.policy)
        baseline_path: Path = args.baseline or policy.integrity.baseline
        result = check_now(
            baseline_path,
            policy,
            targets_from(args),
            workers=args.workers,
            fast=args.fast,
            bar=partial(progress_bar, label="checking", enabled=not args.no_progress),
        )
    except BaselineError as error:
        return _fail(args, BASELINE_INVALID, "baseline_invalid", f"baseline invalid: {error}")
    except GuardError as error:
        return _fail(args, CHECK_FAILED, "check_failed", f"cannot check: {error}")
    except (OSError, MemoryError, ValueError, RecursionError) as error:
        # Exit 1 would read as "files added": whatever went wrong, the check did not run.
        message = f"cannot check: unexpected {type(error).__name__}: {error}"
        return _fail(args, CHECK_FAILED, "check_failed", message)
    report = result.report
    if args.format == "json":
        document = _report_document(report)
        if result.incomplete is not None:
            document.update(status="incomplete", error=result.incomplete)
            document["exit_code"] |= CHECK_FAILED
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print(format_text(report), end="")
    if result.incomplete is not None:
        print(f"mosquitto-guard: error: {printable(result.incomplete)}", file=sys.stderr)
        return report.exit_code | CHECK_FAILED
    print(
        f"mosquitto-guard: {len(result.current.entries)} file(s) checked against "
        f"{baseline_path}: {len(report.added)} added, {len(report.removed)} removed, "
        f"{len(report.changed)} changed, {len(report.expected)} expected",
        file=sys.stderr,
    )
    return report.exit_code


def _fail(args: argparse.Namespace, code: int, status: str, message: str) -> int:
    print(f"mosquitto-guard: error: {printable(message)}", file=sys.stderr)
    if args.format == "json":
        document = {"format_version": FORMAT_VERSION, "status": status, "error": message}
        print(json.dumps(document, indent=2, sort_keys=True))
    return code


def _report_document(report: Report) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "status": "changed" if report.exit_code else "clean",
        "exit_code": report.exit_code,
        "added": [difference.to_dict() for difference in report.added],
        "removed": [difference.to_dict() for difference in report.removed],
        "changed": [difference.to_dict() for difference in report.changed],
        "expected": [difference.to_dict() for difference in report.expected],
    }


def format_text(report: Report) -> str:
    """Return one line per added or removed file, and one per changed attribute."""
    lines: list[str] = []
    for difference in report.added:
        lines.append(f"added: {difference.path} ({'; '.join(difference.reasons)})")
    for difference in report.removed:
        lines.append(f"removed: {difference.path} ({'; '.join(difference.reasons)})")
    for difference in report.changed:
        lines.append(f"changed: {difference.path} ({'; '.join(difference.reasons)})")
        for change in difference.changes:
            lines.append(f"  {change.attribute}: {change.old!r} -> {change.new!r}")
    for difference in report.expected:
        lines.append(f"expected: {difference.path}: {difference.explanation}")
    # File names come from the watched directories, where an attacker may pick them.
    return "".join(printable(line) + "\n" for line in lines)
