"""The progress bar: drawn on a terminal for long scans, never in a pipe or with --no-progress."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from baseline_setup import Setup


def tree_setup(setup: Setup, files: int) -> None:
    tree = setup.root / "tree"
    tree.mkdir()
    for index in range(files):
        (tree / f"{index}.txt").write_text(f"{index}\n")
    with setup.guard.policy.open("a") as handle:
        handle.write(f'\n[integrity]\npaths = ["{tree}"]\n')


def check_with_terminal(setup: Setup, *extra: str) -> tuple[int, str]:
    """Run check with stderr on a pseudo-terminal; return its exit code and what it drew."""
    controller, terminal = pty.openpty()
    argv = [sys.executable, "-m", "mosquitto_guard", "check", *setup.target_args()]
    process = subprocess.Popen(
        [*argv, "--baseline", str(setup.baseline), *extra],
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    return process.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_terminal(setup: Setup) -> None:
    tree_setup(setup, 400)
    assert setup.write_baseline() == 0
    code, drawn = check_with_terminal(setup)
    assert code == 0, drawn
    assert "checking" in drawn
    assert "/4" in drawn  # the files done out of the total, which is above 400


def test_no_progress_bar_when_asked(setup: Setup) -> None:
    tree_setup(setup, 400)
    assert setup.write_baseline() == 0
    code, drawn = check_with_terminal(setup, "--no-progress")
    assert code == 0, drawn
    assert "checking" not in drawn


def test_no_progress_bar_in_a_pipe(setup: Setup) -> None:
    tree_setup(setup, 400)
    assert setup.write_baseline() == 0
    argv = [sys.executable, "-m", "mosquitto_guard", "check", *setup.target_args()]
    result = subprocess.run(
        [*argv, "--baseline", str(setup.baseline)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "checking" not in result.stderr
    assert "\x1b[" not in result.stderr
