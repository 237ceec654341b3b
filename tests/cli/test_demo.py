"""`mosquitto-guard demo` end to end, as `make demo` runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_demo_runs_broker_and_shows_both_rejections() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mosquitto_guard", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "subscriber received 'hello through a verified broker' on demo/hello" in out
    assert re.search(r"process \d+ is now /usr/sbin/mosquitto \(no Python left\)", out)
    assert out.count("-> rejected with exit status 1; the broker never started") == 2
    assert "does not match manifest" in out
    assert "no manifest in" in out
    work = re.search(r"Working directory: (\S+)", out)
    assert work is not None
    assert f"Removed {work.group(1)}" in out
    assert not Path(work.group(1)).exists()
