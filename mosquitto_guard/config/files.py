"""Reading config files as the broker opens them, and listing `include_dir` directories.

`include_dir` lists only names longer than five characters that end in `.conf` (hidden files
included, no recursion) and sorts them as the broker's `scmp_p()` does on glibc.
"""

from __future__ import annotations

import os
import stat
from functools import cmp_to_key
from pathlib import Path

from mosquitto_guard.config.messages import (
    display_path,
    file_error,
    line_error,
    option_error,
    quoted,
)
from mosquitto_guard.config.model import Location, Option
from mosquitto_guard.errors import HostError


def parse_line(
    path: Path, number: int, line: bytes, included_from: Location | None
) -> Option | None:
    """Split one line into an `Option`, or return None for a line the broker skips."""
    location = Location(path, number)
    if b"\0" in line:
        raise line_error(location, line, "line contains a NUL byte", "remove the NUL byte")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise line_error(
            location, line, "line is not valid UTF-8", "save the file as UTF-8"
        ) from None
    if not text or text[0] in "#\r":
        return None
    text = text.rstrip("\r\n")
    stripped = text.lstrip(" ")
    if not stripped:
        return None
    key = stripped.split(" ", 1)[0]
    value_start = len(text) - len(stripped) + len(key) + 1
    value = text[value_start:]
    args = tuple(word for word in value.split(" ") if word)
    return Option(key, value, args, location, text, included_from)


def load_lines(path: Path, include_line: Option | None) -> list[bytes]:
    """Read a config file as the broker opens it, and split it into lines."""
    printable_path = display_path(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise file_error(
            include_line, printable_path, "config file not found", "check the path"
        ) from None
    except PermissionError:
        raise HostError(
            f"cannot read config file {printable_path}: permission denied",
            fix="run as a user that can read it, or correct its permissions",
        ) from None
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise file_error(
            include_line, printable_path, f"cannot open config file: {reason}", "check the path"
        ) from None
    try:
        data = _read_regular_file(descriptor, include_line, printable_path)
    finally:
        os.close(descriptor)
    if not data:
        return []
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    return lines


def _read_regular_file(descriptor: int, include_line: Option | None, printable_path: str) -> bytes:
    mode = os.fstat(descriptor).st_mode
    if stat.S_ISDIR(mode):
        raise file_error(
            include_line,
            printable_path,
            "config file is a directory",
            "point at a file, or rename the directory so its name does not end in .conf",
        )
    if not stat.S_ISREG(mode):
        raise file_error(
            include_line,
            printable_path,
            "config file is not a regular file",
            "use a regular file for the config",
        )
    chunks = []
    try:
        while chunk := os.read(descriptor, 1 << 20):
            chunks.append(chunk)
    except OSError as error:
        raise HostError(f"cannot read config file {printable_path}: {error.strerror}") from None
    return b"".join(chunks)


def list_include_dir(option: Option) -> list[Path]:
    """List the files an `include_dir` line reads, in the order the broker reads them."""
    directory = os.fsencode(option.value)
    try:
        names = os.listdir(directory)
    except OSError as error:
        raise option_error(
            option,
            f"cannot open include_dir {quoted(option.value, 4096)}: {error.strerror}",
            "create the directory, or correct the path (spaces after it are part of it)",
        ) from None
    chosen = [name for name in names if len(name) > 5 and name.endswith(b".conf")]
    chosen.sort(key=cmp_to_key(compare_names))
    return [Path(os.fsdecode(directory + b"/" + name)) for name in chosen]


def compare_names(first: bytes, second: bytes) -> int:
    """Compare two file names as the broker's `scmp_p()` does on glibc.

    Each character compares by its `toupper()` value first and by its value as a signed C
    char second. glibc's `toupper()` returns bytes above 0x7F unsigned (0xFF becomes -1), so
    such names sort after ASCII ones. When one name starts the other, the next character of
    the longer one decides, as a signed char.
    """
    for left, right in zip(first, second, strict=False):
        difference = _c_toupper(left) - _c_toupper(right)
        if difference == 0:
            difference = _signed_char(left) - _signed_char(right)
        if difference:
            return difference
    left_end = _signed_char(first[len(second)]) if len(first) > len(second) else 0
    right_end = _signed_char(second[len(first)]) if len(second) > len(first) else 0
    return left_end - right_end


def _c_toupper(byte: int) -> int:
    if 97 <= byte <= 122:
        return byte - 32
    return -1 if byte == 0xFF else byte


def _signed_char(byte: int) -> int:
    return byte - 256 if byte > 127 else byte
