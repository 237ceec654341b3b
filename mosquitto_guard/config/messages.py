"""Error messages for config lines the broker would reject, and printable paths.

Every message names the file, the line and the text, and gives the fix. Hostile
lines are shortened so that one line of output stays readable.
"""

from __future__ import annotations

import os
from pathlib import Path

from mosquitto_guard.config.model import Location, Option
from mosquitto_guard.config.options import OptionSpec, Scope
from mosquitto_guard.errors import ConfigError


def display_path(path: Path | str) -> str:
    """Return `path` as one printable line, with undecodable bytes and control bytes escaped."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(
        f"\\x{ord(char):02x}" if ord(char) < 0x20 or ord(char) == 0x7F else char for char in text
    )


def option_error(option: Option, reason: str, fix: str) -> ConfigError:
    return ConfigError(
        display_path(option.location.path), option.location.line, option.raw, reason, fix=fix
    )


def line_error(location: Location, line: bytes, reason: str, fix: str) -> ConfigError:
    text = line.decode("utf-8", "backslashreplace").replace("\0", "\\x00")
    return ConfigError(display_path(location.path), location.line, text, reason, fix=fix)


def file_error(
    include_line: Option | None, printable_path: str, reason: str, fix: str
) -> ConfigError:
    if include_line is None:
        return ConfigError(printable_path, 0, printable_path, reason, fix=fix)
    return option_error(include_line, f"{reason}: {printable_path}", fix)


def unknown_option(option: Option) -> ConfigError:
    name = quoted(option.key)
    if "\t" in option.key:
        return option_error(
            option,
            f"unknown option {name}: Mosquitto separates words with spaces only",
            "replace the tabs with spaces",
        )
    if option.key.startswith("#"):
        return option_error(
            option,
            f"unknown option {name}: a comment must start in the first column",
            "remove the spaces before #",
        )
    return option_error(
        option,
        f"unknown option {name}",
        "correct the name (see mosquitto.conf(5)) or remove the line; "
        "the broker stops at unknown options",
    )


def empty_value(option: Option) -> ConfigError:
    key = shortened(option.key)
    return option_error(option, f"missing value for {key}", f"write a value after {key}")


def needs_listener(option: Option) -> ConfigError:
    return option_error(
        option,
        f"{option.key} needs a listener line before it in the same file",
        "put this line after the listener line it belongs to",
    )


def out_of_range(
    option: Option, word: str, number: int, low: int | None, high: int | None
) -> ConfigError:
    if low is not None and high is not None:
        allowed = f"from {low} to {high}"
    elif low is not None:
        allowed = f"of at least {low}"
    else:
        allowed = f"of at most {high}"
    read = "" if word == str(number) else f" (read as {number})"
    return option_error(
        option,
        f"invalid {option.key} value {quoted(word)}{read}",
        f"use a whole number {allowed}",
    )


def bad_keyword(option: Option, spec: OptionSpec, word: str) -> ConfigError:
    allowed = ", ".join(sorted(spec.keywords))
    return option_error(
        option, f"invalid {option.key} value {quoted(word)}", f"use one of: {allowed}"
    )


def shortened(text: str, limit: int = 60) -> str:
    """Return `text` cut to `limit` characters, so that hostile lines keep messages short."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quoted(text: str, limit: int = 60) -> str:
    return repr(shortened(text, limit))


def scope_name(scope: Scope) -> str:
    return {
        Scope.GLOBAL: "config",
        Scope.DEFAULT_LISTENER: "default listener",
        Scope.LISTENER: "listener",
        Scope.SECURITY: "set of security options",
        Scope.BRIDGE: "bridge",
        Scope.PLUGIN: "plugin",
    }[scope]
