"""The systemd drop-in: it starts the broker through `run`, and systemd accepts it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mosquitto_guard.cli import main
from mosquitto_guard.cli.systemd_unit import launcher_command, render_drop_in

STOCK_UNIT = Path("/lib/systemd/system/mosquitto.service")


def drop_in(launcher: list[str]) -> str:
    return render_drop_in(
        launcher,
        Path("/etc/mosquitto-guard/policy.toml"),
        Path("/etc/mosquitto/mosquitto.conf"),
        Path("/usr/sbin/mosquitto"),
    )


def test_systemd_unit_execs_guard_run() -> None:
    text = drop_in(["/usr/local/bin/mosquitto-guard"])
    lines = text.splitlines()
    assert "ExecStart=" in lines
    assert (
        "ExecStart=/usr/local/bin/mosquitto-guard run --policy "
        "/etc/mosquitto-guard/policy.toml --broker /usr/sbin/mosquitto -- -c "
        "/etc/mosquitto/mosquitto.conf"
    ) in lines
    assert "Type=notify" in lines
    assert "NotifyAccess=main" in lines


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not STOCK_UNIT.exists(),
    reason="needs systemd-analyze and the mosquitto package's unit",
)
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    shutil.copy(STOCK_UNIT, tmp_path / "mosquitto.service")
    (tmp_path / "mosquitto.service.d").mkdir()
    drop_in_text = drop_in(launcher_command())
    (tmp_path / "mosquitto.service.d" / "mosquitto-guard.conf").write_text(drop_in_text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "mosquitto.service")],
        capture_output=True,
        text=True,
        env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "mosquitto-guard.conf" not in result.stderr


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not STOCK_UNIT.exists(),
    reason="needs systemd-analyze and the mosquitto package's unit",
)
def test_systemd_analyze_sees_drop_in_errors(tmp_path: Path) -> None:
    """The check above can fail: a drop-in with a relative ExecStart is reported."""
    shutil.copy(STOCK_UNIT, tmp_path / "mosquitto.service")
    (tmp_path / "mosquitto.service.d").mkdir()
    broken = drop_in(["relative/mosquitto-guard"])
    (tmp_path / "mosquitto.service.d" / "mosquitto-guard.conf").write_text(broken)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "mosquitto.service")],
        capture_output=True,
        text=True,
        env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "mosquitto-guard.conf" in result.stderr


def test_systemd_unit_isolates_launcher_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["systemd-unit"]) == 0
    lines = capsys.readouterr().out.splitlines()
    [exec_start] = [line for line in lines if line.startswith("ExecStart=/")]
    assert exec_start.split()[1:4] == ["-I", "-m", "mosquitto_guard"]
    [unset] = [line for line in lines if line.startswith("UnsetEnvironment=")]
    for name in ("LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME"):
        assert name in unset.split("=", 1)[1].split()
