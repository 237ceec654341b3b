"""The systemd drop-in: it starts the broker through `run`, and systemd accepts it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support import Guard

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


def unit_for(guard: Guard, config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["systemd-unit", "--policy", str(guard.policy), "-c", str(config)])
    return code, capsys.readouterr().out


def directive(text: str, name: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{name}=")]


def test_systemd_unit_isolates_launcher_environment(
    guard: Guard, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = unit_for(guard, guard.config(), capsys)
    assert code == 0
    lines = text.splitlines()
    [exec_start] = [line for line in lines if line.startswith("ExecStart=/")]
    assert exec_start.split()[1:4] == ["-I", "-m", "mosquitto_guard"]
    [unset] = [line for line in lines if line.startswith("UnsetEnvironment=")]
    for name in ("LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME"):
        assert name in unset.split("=", 1)[1].split()


def test_hardening_follows_the_config(guard: Guard, capsys: pytest.CaptureFixture[str]) -> None:
    data = guard.root / "data"
    data.mkdir()
    config = guard.config("persistence true", f"persistence_location {data}/", "user mosquitto")
    code, text = unit_for(guard, config, capsys)
    assert code == 0
    assert directive(text, "ReadWritePaths") == [f"{data} {guard.root / 'state'}"]
    assert directive(text, "NoExecPaths") == [f"/ {data}"]
    assert directive(text, "CapabilityBoundingSet") == ["CAP_SETUID CAP_SETGID"]
    assert f"+/bin/chown mosquitto {data}" in directive(text, "ExecStartPre")
    assert directive(text, "NoNewPrivileges") == ["yes"]
    assert directive(text, "ProtectSystem") == ["strict"]
    assert "landlock_restrict_self" in directive(text, "SystemCallFilter")[0].split()
    assert directive(text, "IPAddressDeny") == ["any"]
    assert directive(text, "IPAddressAllow") == ["localhost"]


def test_open_listener_gets_no_address_filter(
    guard: Guard, capsys: pytest.CaptureFixture[str]
) -> None:
    config = guard.root / "open.conf"
    config.write_text(f"listener {guard.port}\nallow_anonymous true\n")
    code, text = unit_for(guard, config, capsys)
    assert code == 0
    assert directive(text, "IPAddressDeny") == []
    assert "# No IPAddressAllow=: a listener accepts clients from any address." in text


def test_unsigned_plugin_fails_but_prints(guard: Guard, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = guard.build("unsigned.so")
    code = main(
        ["systemd-unit", "--policy", str(guard.policy), "-c", str(guard.config(f"plugin {plugin}"))]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "no manifest" in captured.err
    assert "no drop-in was printed" in captured.err
    assert captured.out == ""


def exposure(unit_dir: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", "mosquitto.service"],
        capture_output=True,
        text=True,
        env={"SYSTEMD_UNIT_PATH": f"{unit_dir}:", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    match = re.search(r"Overall exposure level for mosquitto.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not STOCK_UNIT.exists(),
    reason="needs systemd-analyze and the mosquitto package's unit",
)
def test_hardening_lowers_exposure_score(
    guard: Guard, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    shutil.copy(STOCK_UNIT, tmp_path / "mosquitto.service")
    stock = exposure(tmp_path)
    code, text = unit_for(guard, guard.config(), capsys)
    assert code == 0
    (tmp_path / "mosquitto.service.d").mkdir()
    (tmp_path / "mosquitto.service.d" / "mosquitto-guard.conf").write_text(text)
    hardened = exposure(tmp_path)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "mosquitto.service")],
        capture_output=True,
        text=True,
        env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    print(f"systemd-analyze security: stock unit {stock}, with the drop-in {hardened}")
    assert verify.returncode == 0, verify.stderr
    assert stock > 9.0
    assert hardened < 3.0


def test_paths_with_spaces_and_percent_are_quoted(
    guard: Guard, capsys: pytest.CaptureFixture[str]
) -> None:
    data = guard.root / "data 100%"
    data.mkdir()
    config = guard.config("persistence true", f"persistence_location {data}/")
    code, text = unit_for(guard, config, capsys)
    assert code == 0
    quoted = f'"{guard.root}/data 100%%"'
    assert directive(text, "ReadWritePaths") == [f"{quoted} {guard.root / 'state'}"]
    assert f"+/bin/chown mosquitto {quoted}" in directive(text, "ExecStartPre")


def test_directory_below_writable_one_is_not_chowned(
    guard: Guard, capsys: pytest.CaptureFixture[str]
) -> None:
    """chown runs as root and follows symlinks, which the broker's user could plant here."""
    shared = guard.root / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    logs = shared / "logs"
    logs.mkdir()
    code, text = unit_for(guard, guard.config(f"log_dest file {logs}/broker.log"), capsys)
    assert code == 0
    assert f"+/bin/chown mosquitto {logs}" not in directive(text, "ExecStartPre")
    assert f"# {logs} is not created here: {shared} above it is not root's alone." in text
