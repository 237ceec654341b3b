"""The `mosquitto-guard` command line.

Each subcommand lives in its own module under `mosquitto_guard.cli` and provides
`add_parser(subparsers)` and `run(args) -> int`. Modules are imported only when their
command runs, so that `mosquitto-guard run` starts the broker without paying for the imports
of the other commands.

Exit codes: 0 success; 1 a verification failed or findings were reported; 2 a usage error;
3 an operational error (missing file, tool or kernel feature).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence

from mosquitto_guard import __version__
from mosquitto_guard.errors import GuardError, LaunchRejected

# Command name -> (module, one-line help). The help is kept here so that building the parser
# does not import every command module.
COMMANDS: dict[str, tuple[str, str]] = {
    "inventory": ("inventory", "list every piece of code the broker would load"),
    "keygen": ("keygen", "create a signing key pair"),
    "sign": ("sign", "write and sign a manifest for a plugin"),
    "verify": ("verify", "verify plugins or a whole config against the trust policy"),
    "run": ("run", "verify everything, then replace this process with the broker"),
    "sandbox-plan": ("sandbox_plan", "print the sandbox rules run would apply, and their sources"),
    "audit": ("audit", "report misconfigurations that let a malicious plugin in, with fixes"),
    "demo": ("demo", "show verified launch on a throwaway broker"),
    "systemd-unit": ("systemd_unit", "print a systemd drop-in that starts the broker via run"),
    "baseline": ("baseline", "record and sign the state of every file the broker depends on"),
    "check": ("check", "report files changed since the signed baseline; exit code is a bitmask"),
    "watch": ("watch", "watch every baselined file with inotify and alert on each change"),
    "restore": ("restore", "put back the known-good copy of a file from the signed baseline"),
}

logger = logging.getLogger("mosquitto_guard")

# The exit bit of `check` for "the check could not run" (mosquitto_guard.integrity.compare).
CHECK_COULD_NOT_RUN = 16


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """Build the top-level parser; only `command`'s module is imported for its options."""
    parser = argparse.ArgumentParser(
        prog="mosquitto-guard",
        description="Verified launch and auditing for Eclipse Mosquitto and its plugins.",
    )
    parser.add_argument("--version", action="version", version=f"mosquitto-guard {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name == command:
            module = importlib.import_module(f"mosquitto_guard.cli.{module_name}")
            module.add_parser(subparsers, name, help_text)
        else:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def configure_logging(verbosity: int) -> None:
    """Send log records to stderr; `MOSQUITTO_GUARD_LOG` (a level name) overrides -v."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    env_level = os.environ.get("MOSQUITTO_GUARD_LOG")
    if env_level:
        level = logging.getLevelName(env_level.upper())
        if not isinstance(level, int):
            level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mosquitto-guard: %(levelname)s: %(message)s"))
    root = logging.getLogger("mosquitto_guard")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def find_command(argv: Sequence[str]) -> str | None:
    """Return the first argument that names a command, skipping the global options."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def _asks_for_json(args: list[str]) -> bool:
    """Return True when `args` ask for JSON output, so a usage error is reported as JSON too."""
    pairs = zip(args, [*args[1:], ""], strict=True)
    return "--format=json" in args or any(a == "--format" and b == "json" for a, b in pairs)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(find_command(args_list))
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            return 0
        if find_command(args_list) in ("check", "watch"):
            # The exit status of check (and watch's) is a bitmask in which 2 means "files
            # removed"; an invalid command line is "could not check".
            if _asks_for_json(args_list):
                document = {"format_version": 1, "status": "check_failed", "error": "usage error"}
                print(json.dumps(document, indent=2, sort_keys=True))
            return CHECK_COULD_NOT_RUN
        if find_command(args_list) == "run" and "--" not in args_list:
            print(
                "mosquitto-guard: hint: put the broker's arguments after --, e.g. "
                "mosquitto-guard run --policy P -- -c /etc/mosquitto/mosquitto.conf",
                file=sys.stderr,
            )
        return 2
    configure_logging(args.verbose)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    module = importlib.import_module(f"mosquitto_guard.cli.{COMMANDS[args.command][0]}")
    try:
        return int(module.run(args))
    except LaunchRejected as error:
        for problem in error.problems:
            print(f"mosquitto-guard: rejected: {problem}", file=sys.stderr)
        print(f"mosquitto-guard: error: {error}", file=sys.stderr)
        return error.exit_code
    except GuardError as error:
        print(f"mosquitto-guard: error: {error}", file=sys.stderr)
        if args.verbose >= 2:
            logger.debug("details", exc_info=True)
        return error.exit_code
    except KeyboardInterrupt:
        print("mosquitto-guard: interrupted", file=sys.stderr)
        return 130
