"""`mosquitto-guard keygen`: create a signing key pair for manifests.

Prints the public key line on stdout, ready to paste into the `key` field of a `[[keys]]`
entry of the trust policy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mosquitto_guard.errors import HostError, UsageError
from mosquitto_guard.signing.keys import KEY_KINDS, generate_keypair, resolve_passphrase

MAX_PASSPHRASE_FILE_BYTES = 4096


def add_parser(subparsers: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """Add the `keygen` subcommand to `subparsers`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help_text,
        description="Create a private key at PATH (mode 0600) and its public key at PATH.pub. "
        "Without --passphrase-file or --no-passphrase, the passphrase comes from "
        "MOSQUITTO_GUARD_PASSPHRASE or is asked for on the terminal.",
    )
    parser.add_argument(
        "--type",
        choices=KEY_KINDS,
        default="ssh",
        help="key format: an OpenSSH ed25519 key or a minisign key (default: ssh)",
    )
    parser.add_argument(
        "--comment",
        default="",
        help="comment stored in the public key file (default: none for ssh, the key id for "
        "minisign)",
    )
    secrecy = parser.add_mutually_exclusive_group()
    secrecy.add_argument(
        "--passphrase-file",
        type=Path,
        metavar="FILE",
        help="read the passphrase from the first line of FILE",
    )
    secrecy.add_argument(
        "--no-passphrase",
        action="store_true",
        help="store the private key unencrypted",
    )
    parser.add_argument("path", type=Path, metavar="PATH", help="where to write the private key")
    return parser


def read_passphrase_file(path: Path) -> str:
    """Return the first line of `path`, without its line break; raises on an empty passphrase."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PASSPHRASE_FILE_BYTES + 1)
    except OSError as error:
        raise HostError(f"cannot read passphrase file {path}: {error.strerror}") from None
    if len(data) > MAX_PASSPHRASE_FILE_BYTES:
        raise UsageError(f"passphrase file {path} is larger than {MAX_PASSPHRASE_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"passphrase file {path} is not UTF-8 text") from None
    passphrase = text.split("\n", 1)[0].removesuffix("\r")
    if not passphrase:
        raise UsageError(
            f"passphrase file {path} starts with an empty line",
            fix="write the passphrase on the first line, or use --no-passphrase",
        )
    return passphrase


def run(args: argparse.Namespace) -> int:
    """Create the key pair and print its public key line."""
    path: Path = args.path
    passphrase: str | None
    if args.no_passphrase:
        passphrase = None
    elif args.passphrase_file is not None:
        passphrase = read_passphrase_file(args.passphrase_file)
    else:
        passphrase = resolve_passphrase(f"new key {path}", confirm=True)
        if not passphrase:
            raise UsageError("the passphrase is empty", fix="use --no-passphrase instead")
    public_key = generate_keypair(args.type, path, comment=args.comment, passphrase=passphrase)
    line = public_key.text
    if public_key.kind == "ssh" and public_key.comment:
        line = f"{line} {public_key.comment}"
    print(line)
    print(
        f"mosquitto-guard: wrote {path} and {path}.pub (key id {public_key.key_id})",
        file=sys.stderr,
    )
    return 0
