"""`mosquitto-guard baseline --policy P [-c CONF] --key KEY [--output FILE]`.

Records every file that decides what the broker runs (see `mosquitto_guard.integrity.watchlist`)
into a JSON baseline and signs it in the namespace `mosquitto-guard-baseline`. stdout lists
the two files written: the baseline and its signature, `FILE.sig` for an SSH key or
`FILE.minisig` for a minisign key. Known-good copies of plugins and config files go to
`known-good/` beside the baseline, for `restore`.

Exit codes: 0 written; 1 the config is rejected, or the key is invalid or not trusted by the
policy; 2 a usage or policy error; 3 an operational error.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mosquitto_guard.cli.run import DEFAULT_CONFIG, add_policy_argument
from mosquitto_guard.errors import GuardError, VerificationError
from mosquitto_guard.integrity.baseline import DEFAULT_BASELINE_PATH
from mosquitto_guard.integrity.scan import default_workers
from mosquitto_guard.integrity.watchlist import Targets
from mosquitto_guard.launch.broker import DEFAULT_BROKER
from mosquitto_guard.units import SERVICE_UNIT_NAME

if TYPE_CHECKING:
    from mosquitto_guard.integrity.baseline import Baseline
    from mosquitto_guard.integrity.watchlist import WatchedFile
    from mosquitto_guard.policy.model import Policy

logger = logging.getLogger(__name__)


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
        metavar="FILE",
        help="where to write the baseline (default: the policy's [integrity] baseline, "
        f"{DEFAULT_BASELINE_PATH} unless set)",
    )
    return parser


def add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--workers` and `--no-progress`."""
    parser.add_argument(
        "--workers",
        type=_positive,
        default=default_workers(),
        metavar="N",
        help="files read and hashed in parallel (default: the number of CPUs, "
        f"{default_workers()} here)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar, even on a terminal"
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that `baseline`, `check` and `watch` share: what to watch, and how."""
    add_policy_argument(parser)
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        action="append",
        help=f"broker config file, repeatable (default: as the baseline recorded, else "
        f"{DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--broker",
        type=Path,
        help=f"the mosquitto binary (default: as the baseline recorded, else {DEFAULT_BROKER})",
    )
    parser.add_argument(
        "--unit",
        type=Path,
        help="systemd unit file (default: as the baseline recorded, else the first "
        f"{SERVICE_UNIT_NAME} in /etc/systemd/system, /run/systemd/system, /lib/systemd/system "
        "or /usr/lib/systemd/system)",
    )
    add_scan_arguments(parser)


def targets_from(args: argparse.Namespace) -> Targets:
    """Return the targets the options in `args` name, as absolute paths; the fields not given
    are empty."""

    def absolute(path: Path | None) -> Path | None:
        return None if path is None else Path(os.path.abspath(path))

    return Targets(
        configs=tuple(Path(os.path.abspath(path)) for path in args.config or ()),
        broker=absolute(args.broker),
        unit=absolute(args.unit),
    )


def run(args: argparse.Namespace) -> int:
    """Write and sign the baseline, keep the known-good copies, and print the files written."""
    from mosquitto_guard.integrity.baseline import check_target, render_baseline, write_signed
    from mosquitto_guard.integrity.progress import progress_bar
    from mosquitto_guard.integrity.scan import scan
    from mosquitto_guard.integrity.store import keep_copies
    from mosquitto_guard.policy.model import load_policy
    from mosquitto_guard.signing.keys import load_private_key

    # A one-shot command over tens of thousands of records, which form no reference cycles:
    # the collector would only scan them again and again.
    gc.disable()
    policy = load_policy(args.policy)
    output: Path = args.output or policy.integrity.baseline
    check_target(output)
    key = load_private_key(args.key)
    if policy.trusted_key(key.public_key.key_id) is None:
        raise VerificationError(
            f"key {key.public_key.key_id} ({args.key}) is not trusted by the policy "
            f"{policy.path}: check would reject the baseline, so {output} is left as it is",
            fix="sign with a key listed in the policy's [[keys]], or add its public key there",
        )
    targets = targets_from(args).resolve(_previous_targets(output, policy))
    watched = targets.watched(policy, exclude=output)
    created = datetime.now(UTC)
    with progress_bar(len(watched), "recording", enabled=not args.no_progress) as progress:
        scanned = scan(watched, workers=args.workers, progress=progress)
    baseline = replace(scanned, targets=targets, created=created)
    _warn_missing(baseline, targets, policy)
    keep_copies(output, _copies(baseline, watched))
    signature = write_signed(output, render_baseline(baseline), key)
    print(output)
    print(signature)
    return 0


def _warn_missing(baseline: Baseline, targets: Targets, policy: Policy) -> None:
    """Warn about each path the admin named that does not exist: it may be a typo.

    Such a path is still recorded, as missing, so that its creation is reported later.
    """
    for path in (*policy.integrity.paths, targets.unit):
        entry = baseline.entries.get(str(path)) if path is not None else None
        if entry is not None and entry.record.get("type") == "missing":
            logger.warning("%s does not exist; it is recorded as missing", path)


def _previous_targets(output: Path, policy: Policy) -> Targets | None:
    """Return the targets of the baseline being replaced, when it verifies.

    Options not given on the command line keep their recorded values, so running `baseline`
    again watches the same config. A baseline that does not verify is not trusted for this.
    """
    from mosquitto_guard.integrity.baseline import verified_targets

    if not output.exists():
        return None
    try:
        return verified_targets(output, policy)
    except GuardError as error:
        logger.warning("the targets of %s are not reused: %s", output, error.message)
        return None


def _copies(baseline: Baseline, watched: list[WatchedFile]) -> list[tuple[Path, str]]:
    """Return (path, sha256) of each regular file marked `keep_copy`."""
    copies: list[tuple[Path, str]] = []
    for item in watched:
        if not item.keep_copy:
            continue
        record = baseline.entries[item.name].record
        if record.get("type") == "file" and isinstance(record.get("sha256"), str):
            copies.append((item.path, str(record["sha256"])))
        elif record.get("type") == "symlink" and isinstance(record.get("target.sha256"), str):
            # The copy is of the file the link resolves to, so restore can put back both.
            copies.append((Path(os.path.realpath(item.path)), str(record["target.sha256"])))
    return copies
