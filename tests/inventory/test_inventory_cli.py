"""`mosquitto-guard inventory` end to end: the real config reader, both output formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mosquitto_guard.cli import main

DYNSEC = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "OPENSSL_CONF",
        "OPENSSL_ENGINES",
        "OPENSSL_MODULES",
        "MOSQUITTO_GUARD_LOG",
    ):
        monkeypatch.delenv(name, raising=False)


def write_config(directory: Path, *lines: str) -> Path:
    path = directory / "mosquitto.conf"
    path.write_text("\n".join(["listener 18830 127.0.0.1", "allow_anonymous true", *lines]) + "\n")
    return path


def test_cli_json_lists_plugin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, f"plugin {DYNSEC}")
    assert main(["inventory", "-c", str(config), "--format", "json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["format_version"] == 1
    plugins = [item for item in document["items"] if item["kind"] == "plugin"]
    assert [(item["path"], item["source"]) for item in plugins] == [
        (str(DYNSEC), f"{config}:3"),
    ]
    cjson = [item for item in document["items"] if item["written"] == "libcjson.so.1"]
    assert cjson[0]["parent"] == str(DYNSEC)


def test_cli_text_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, f"plugin {DYNSEC}")
    assert main(["inventory", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["KIND", "WRITTEN", "PATH", "SOURCE", "HOW"]
    plugin_line = next(line for line in lines if line.startswith("plugin "))
    assert plugin_line.split() == [
        "plugin",
        str(DYNSEC),
        str(DYNSEC),
        f"{config}:3",
        "absolute",
        "path",
    ]
    assert lines[-1].endswith("0 problem(s)")


def test_cli_dangling_plugin_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, f"plugin {tmp_path / 'gone.so'}")
    assert main(["inventory", "-c", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"problem: {config}:3: {tmp_path / 'gone.so'}: {tmp_path / 'gone.so'}: not found" in out
    assert main(["inventory", "-c", str(config), "--format", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    plugin = next(item for item in document["items"] if item["kind"] == "plugin")
    assert plugin["path"] is None
    assert plugin["problem"].endswith("not found")


def test_cli_repeated_c_merges(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = write_config(tmp_path)
    second = tmp_path / "second.conf"
    second.write_text(f"plugin {DYNSEC}\n")
    assert main(["inventory", "-c", str(first), "-c", str(second), "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [item["source"] for item in document["items"] if item["kind"] == "plugin"] == [
        f"{second}:1",
    ]


def test_cli_broker_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, f"plugin {DYNSEC}")
    code = main(
        ["inventory", "--format", "json", "--", "/usr/sbin/mosquitto", "-c", str(config), "-v"]
    )
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    parents = {item["parent"] for item in document["items"] if item["kind"] == "linked_library"}
    assert "/usr/sbin/mosquitto" in parents
    assert any(item["kind"] == "plugin" for item in document["items"])


def test_cli_relative_config_with_cwd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(tmp_path, "plugin ./missing.so")
    assert (
        main(["inventory", "--cwd", str(tmp_path), "-c", "mosquitto.conf", "--format", "json"]) == 1
    )
    document = json.loads(capsys.readouterr().out)
    plugin = next(item for item in document["items"] if item["kind"] == "plugin")
    assert plugin["problem"] == f"{tmp_path / 'missing.so'}: not found"


def test_cli_unknown_broker_flag_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inventory", "--", "/usr/sbin/mosquitto", "--bogus"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unknown broker option '--bogus'" in captured.err


def test_cli_both_config_forms_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert (
        main(["inventory", "-c", str(config), "--", "/usr/sbin/mosquitto", "-c", str(config)]) == 2
    )
    assert "either with -c or inside the broker command" in capsys.readouterr().err


def test_cli_missing_config_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The reader treats a missing -c file as a config the broker rejects.
    assert main(["inventory", "-c", str(tmp_path / "absent.conf")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "absent.conf" in captured.err


def test_cli_unreadable_broker_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "mosquitto"
    fake.write_text("#!/bin/sh\nexit 0\n")
    assert main(["inventory", "--broker", str(fake)]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cannot read the broker executable" in captured.err


def test_cli_no_config_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inventory", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [item for item in document["items"] if item["needs_manifest"]] == []


def test_cli_warnings_on_stderr_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENSSL_CONF", str(tmp_path / "missing.cnf"))
    assert main(["inventory", "--format", "json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert any("missing.cnf" in warning for warning in document["warnings"])
    assert "missing.cnf" in captured.err


def test_cli_text_escapes_control_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "plugin /tmp/\x1b[31mred.so")
    assert main(["inventory", "-c", str(config)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\\x1b[31mred.so" in out


def test_cli_trailing_comment_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "m.conf"
    config.write_text("plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so # dynsec\n")
    assert main(["inventory", "-c", str(config)]) == 1
    out = capsys.readouterr().out
    assert (
        f"hint: {config}:1: the value contains '#'; Mosquitto reads a trailing comment as part "
        "of the path, so put the comment on its own line"
    ) in out
