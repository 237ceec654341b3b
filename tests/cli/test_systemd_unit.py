"""The systemd drop-in: it starts the broker through `run`, and systemd accepts it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mosquitto_guard.cli.systemd_unit import render_drop_in

STOCK_UNIT = Path("/lib/systemd/system/mosquitto.service")


def drop_in(guard: Path) -> str:
    return render_drop_in(guard, Path("/etc/mosquitto-guard/policy.toml"),
                          Path("/etc/mosquitto/mosquitto.conf"), Path("/usr/sbin/mosquitto"))


def test_systemd_unit_execs_guard_run() -> None:
    text = drop_in(Path("/usr/local/bin/mosquitto-guard"))
    lines = text.splitlines()
    assert "ExecStart=" in lines
    assert ("ExecStart=/usr/local/bin/mosquitto-guard run --policy "
            "/etc/mosquitto-guard/policy.toml --broker /usr/sbin/mosquitto -- -c "
            "/etc/mosquitto/mosquitto.conf") in lines
    assert "Type=notify" in lines
    assert "NotifyAccess=main" in lines


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or not STOCK_UNIT.exists(),
                    reason="needs systemd-analyze and the mosquitto package's unit")
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    shutil.copy(STOCK_UNIT, tmp_path / "mosquitto.service")
    (tmp_path / "mosquitto.service.d").mkdir()
    guard = Path(shutil.which("mosquitto-guard") or "/bin/true")
    (tmp_path / "mosquitto.service.d" / "mosquitto-guard.conf").write_text(drop_in(guard))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "mosquitto.service")],
        capture_output=True, text=True, env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "mosquitto-guard.conf" not in result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or not STOCK_UNIT.exists(),
                    reason="needs systemd-analyze and the mosquitto package's unit")
def test_systemd_analyze_sees_drop_in_errors(tmp_path: Path) -> None:
    """The check above can fail: a drop-in with a relative ExecStart is reported."""
    shutil.copy(STOCK_UNIT, tmp_path / "mosquitto.service")
    (tmp_path / "mosquitto.service.d").mkdir()
    broken = drop_in(Path("relative/mosquitto-guard"))
    (tmp_path / "mosquitto.service.d" / "mosquitto-guard.conf").write_text(broken)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "mosquitto.service")],
        capture_output=True, text=True, env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "mosquitto-guard.conf" in result.stderr
