"""`mosquitto-guard inventory`: list every piece of code the broker would load.

The config comes from `-c` options or from a broker command line given after `--`. The
environment is this process's own, which a broker started from here would inherit.

Exit codes: 0 when every item resolves; 1 when a loaded item cannot be resolved or loaded
(the broker, or the loader, would fail on it) or the config is rejected; 3 on an operational
error.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from mosquitto_guard.config.messages import display_path
from mosquitto_guard.config.model import BrokerConfig
from mosquitto_guard.config.reader import read_config
from mosquitto_guard.errors import UsageError
from mosquitto_guard.inventory.argv import parse_broker_args
from mosquitto_guard.inventory.collect import collect_inventory
from mosquitto_guard.inventory.model import Inventory

logger = logging.getLogger(__name__)

_VERSIONS = {"2.0": (2, 0), "2.1": (2, 1)}
_COLUMNS = ("KIND", "WRITTEN", "PATH", "SOURCE", "HOW")


def add_parser(subparsers: Any, name: str, help_text: str) -> None:
    """Add the `inventory` command and its options to `subparsers`."""
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description="List every file the broker would load: plugins, tls_engine and OpenSSL "
        "modules, preloaded and NSS libraries, and every library they link.",
    )
    parser.add_argument(
        "-c",
        "--config-file",
        dest="config_files",
        action="append",
        default=[],
        metavar="CONF",
        help="a broker config file, as given to mosquitto -c; repeat it for several",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: a table for people (default); json: a document for programs, on stdout only",
    )
    parser.add_argument(
        "--broker",
        type=Path,
        metavar="PATH",
        help="the broker executable; its own libraries and search paths are included",
    )
    parser.add_argument(
        "--cwd",
        type=Path,
        metavar="DIR",
        help="the broker's working directory, against which relative paths resolve "
        "(default: the current directory)",
    )
    parser.add_argument(
        "--mosquitto-version",
        choices=sorted(_VERSIONS),
        default="2.0",
        help="the Mosquitto release whose config and argument rules apply (default: 2.0)",
    )
    parser.add_argument(
        "broker_command",
        nargs="*",
        metavar="BROKER_COMMAND",
        help="after --, the broker command line (for example /usr/sbin/mosquitto -c FILE); "
        "its -c files are read and its executable is used as --broker",
    )


def run(args: argparse.Namespace) -> int:
    """Build the inventory, print it, and return the exit code."""
    version = _VERSIONS[args.mosquitto_version]
    cwd = args.cwd if args.cwd is not None else Path.cwd()
    config_files = list(args.config_files)
    broker = args.broker
    if args.broker_command:
        if config_files:
            raise UsageError(
                "give the config either with -c or inside the broker command, not both",
                fix="drop the -c options before --",
            )
        broker_args = parse_broker_args(args.broker_command[1:], version=version)
        config_files = list(broker_args.config_files)
        broker = broker or Path(args.broker_command[0])
        if broker_args.help:
            logger.warning("the broker command has -h: the broker only prints its usage")
    config = _read(config_files, cwd, version)
    inventory = collect_inventory(config, os.environ, cwd=cwd, broker=broker)
    for warning in inventory.warnings:
        logger.warning("%s", warning)
    if args.format == "json":
        print(inventory.to_json())
    else:
        print(format_text(inventory), end="")
    return 1 if inventory.problems else 0


def _read(config_files: list[str], cwd: Path, version: tuple[int, int]) -> BrokerConfig | None:
    if not config_files:
        return None
    paths = [Path(name) if Path(name).is_absolute() else cwd / name for name in config_files]
    return read_config(paths, version=version)


def format_text(inventory: Inventory) -> str:
    """Return the inventory as an aligned table, then one line per problem and note."""
    rows = [_COLUMNS]
    for item in inventory.items:
        path = display_path(item.path) if item.path is not None else "-"
        rows.append(
            (
                item.kind,
                display_path(item.written),
                path,
                display_path(item.source),
                item.resolved_by,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    for item in inventory.items:
        where = f"{display_path(item.source)}: {display_path(item.written)}"
        if item.problem is not None:
            label = "problem" if item.loaded else "problem (not loaded)"
            lines.append(f"{label}: {where}: {display_path(item.problem)}")
            if item.option is not None and "#" in item.written:
                lines.append(
                    f"hint: {display_path(item.source)}: the value contains '#'; Mosquitto reads "
                    "a trailing comment as part of the path, so put the comment on its own line"
                )
        if item.note is not None:
            lines.append(f"note: {where}: {display_path(item.note)}")
    summary = f"{len(inventory.items)} item(s), {len(inventory.problems)} problem(s)"
    return "\n".join([*lines, summary]) + "\n"
