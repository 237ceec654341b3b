"""The bytes that were verified are the bytes the broker loads, even while the file is swapped.

A background thread keeps renaming a good build and an evil build over the plugin path while
`run` starts the broker again and again. Only the good build is signed. Each build's ELF
constructor appends to its own mark file, so an evil mark proves the evil bytes were mapped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from support import MOSQUITTO, Guard, c_string, make_mark, stop_process, wait_for_port


@pytest.fixture(autouse=True)
def verification_only(request: pytest.FixtureRequest) -> None:
    """Launch without the sandbox, so that a missing mark proves the code never ran."""
    if "guard" in request.fixturenames:
        request.getfixturevalue("guard").sandbox = False


LAUNCHES = 200
CONTROL_LAUNCHES = 20


class Swapper(threading.Thread):
    """Renames copies of `builds` over `target` in turn until stopped."""

    def __init__(self, target: Path, builds: list[Path]) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.builds = builds
        self.stop = threading.Event()
        self.swaps = 0

    def run(self) -> None:
        staging = self.target.with_name(".swap.tmp")
        while not self.stop.is_set():
            for build in self.builds:
                shutil.copyfile(build, staging)
                os.rename(staging, self.target)
                self.swaps += 1


def launch_once(argv: list[str], port: int) -> bool:
    """Start `argv`; return True if a broker came up (then stop it), False if it exited."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return wait_for_port(port, process, timeout=20)
    finally:
        stop_process(process)


def prepare(guard: Guard, safe_dir: Path) -> tuple[Path, Path, Path, Path, Path]:
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    good_mark, evil_mark = make_mark(marks, "good"), make_mark(marks, "evil")
    builds = safe_dir / "builds"
    builds.mkdir(mode=0o755)
    good = guard.build("good-build.so", {"MARKER_FILE": c_string(str(good_mark))})
    evil = guard.build(
        "evil-build.so",
        {"MARKER_FILE": c_string(str(evil_mark)), "MARKER_TEXT": c_string("evil\n")},
    )
    good = Path(shutil.move(good, builds / "good.so"))
    evil = Path(shutil.move(evil, builds / "evil.so"))
    target = guard.plugins / "swapped.so"
    shutil.copyfile(good, target)
    guard.sign(target, "swapped", 1, "alice")
    return target, good, evil, good_mark, evil_mark


def test_race_swapped_plugin_never_loads_evil_bytes(guard: Guard, safe_dir: Path) -> None:
    target, good, evil, good_mark, evil_mark = prepare(guard, safe_dir)
    argv = guard.run_argv(guard.config(f"plugin {target}"))
    swapper = Swapper(target, [good, evil])
    swapper.start()
    started = 0
    try:
        for _ in range(LAUNCHES):
            started += launch_once(argv, guard.port)
    finally:
        swapper.stop.set()
        swapper.join()
    assert evil_mark.read_text() == ""
    # Both outcomes must occur, or the swapping did not overlap the launches.
    assert 0 < started < LAUNCHES
    assert good_mark.read_text().count("loaded") == started
    assert swapper.swaps > LAUNCHES


def test_race_plain_broker_does_load_evil_bytes(guard: Guard, safe_dir: Path) -> None:
    """The control: without mosquitto-guard the same swapping gets the evil build loaded."""
    target, good, evil, _, evil_mark = prepare(guard, safe_dir)
    config = guard.config(f"plugin {target}")
    swapper = Swapper(target, [good, evil])
    swapper.start()
    try:
        for _ in range(CONTROL_LAUNCHES):
            launch_once([MOSQUITTO, "-c", str(config)], guard.port)
            if evil_mark.read_text():
                break
    finally:
        swapper.stop.set()
        swapper.join()
    assert "evil" in evil_mark.read_text()
