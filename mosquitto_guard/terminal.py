"""Text for a terminal: file names and config values may carry control characters."""

from __future__ import annotations


def printable(text: str) -> str:
    """Escape control characters, so that a file name or config value cannot drive the
    terminal or start a line of its own."""
    return "".join(
        f"\\x{ord(char):02x}" if ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F else char
        for char in text
    )
