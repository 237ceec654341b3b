"""Review of `mosquitto-guard audit` on hard inputs: odd files, secrets, exit codes and rules.

Each test writes real files under `tmp_path` and runs the real reader and rules. The facts
about Mosquitto 2.0.11 that the expected results rely on are stated next to each test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mosquitto_guard.audit.context import AuditContext, AuditOptions
from mosquitto_guard.audit.model import Finding
from mosquitto_guard.audit.rules import all_rules, hardening, network
from mosquitto_guard.cli import main

REPOSITORY = Path(__file__).resolve().parents[2]
TLS = "cafile /etc/mosquitto/ca.pem\ncertfile /etc/mosquitto/c.pem\nkeyfile /etc/mosquitto/k.pem\n"
SECRET = "hunter2-do-not-print"


def audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["audit", *args])
    return code, capsys.readouterr().out


def run_cli(
    *args: str, timeout: float = 30, as_nobody: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the audit in a child process, so that a hang fails the test instead of the run.

    With `as_nobody`, a root caller runs it as uid and gid 65534 through setpriv.
    """
    command = [sys.executable, "-m", "mosquitto_guard", "audit", *args]
    if as_nobody and os.geteuid() == 0:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        cwd=REPOSITORY,
        check=False,
    )


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can traverse; pytest's tmp_path sits below a 0700 directory."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to run the audit as an unprivileged user")
    directory = Path(tempfile.mkdtemp(prefix="audit-review-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def findings_of(rule_check: object, config: Path) -> list[Finding]:
    options = AuditOptions(config_paths=[config], host=False)
    return list(rule_check.check(AuditContext(options)))  # type: ignore[attr-defined]


# Odd files.


def test_fifo_config_does_not_hang(tmp_path: Path) -> None:
    # The reader rejects a FIFO without reading it. A rule that read the same path would
    # block until a writer opened the FIFO.
    fifo = tmp_path / "mosquitto.conf"
    os.mkfifo(fifo)
    try:
        result = run_cli("-c", str(fifo), timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("audit -c FIFO did not finish within 20 s")
    assert result.returncode in (1, 3)
    assert "Traceback" not in result.stderr


def test_fifo_in_include_dir_does_not_hang(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    os.mkfifo(conf_d / "pipe.conf")
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener 1883 127.0.0.1\ninclude_dir {conf_d}\n")
    try:
        result = run_cli("-c", str(config), timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("audit with a FIFO in include_dir did not finish within 20 s")
    assert result.returncode == 1
    assert "SYNTAX-001" in result.stdout


def test_unreadable_config_exits_3(public_dir: Path) -> None:
    # The broker cannot be audited when its config cannot be read, so CI must not pass:
    # the README gives exit code 3 for an audit that could not run.
    config = public_dir / "mosquitto.conf"
    config.write_text("listener 1883\nallow_anonymous true\n")
    config.chmod(0o600)
    result = run_cli("-c", str(config), as_nobody=True)
    assert "permission denied" in (result.stdout + result.stderr).lower()
    assert result.returncode == 3


def test_unreadable_include_file_exits_3(public_dir: Path) -> None:
    conf_d = public_dir / "conf.d"
    conf_d.mkdir(mode=0o755)
    bridge = conf_d / "bridge.conf"
    bridge.write_text("connection out\naddress 192.0.2.1\ntopic # out\n")
    bridge.chmod(0o600)
    config = public_dir / "mosquitto.conf"
    config.write_text(f"listener 1883 127.0.0.1\ninclude_dir {conf_d}\n")
    config.chmod(0o644)
    result = run_cli("-c", str(config), as_nobody=True)
    assert result.returncode == 3


def test_untraversable_config_dir_no_traceback(public_dir: Path) -> None:
    # Path.exists() raises PermissionError when a parent directory cannot be searched.
    private = public_dir / "private"
    private.mkdir(mode=0o700)
    config = private / "mosquitto.conf"
    config.write_text("listener 1883\n")
    config.chmod(0o644)
    result = run_cli("-c", str(config), as_nobody=True)
    assert "Traceback" not in result.stderr
    assert result.returncode == 3


def test_symlink_loop_in_include_dir_reported(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "loop.conf").symlink_to("loop.conf")
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener 1883 127.0.0.1\ninclude_dir {conf_d}\n")
    result = run_cli("-c", str(config), "--format", "json")
    assert result.returncode == 1
    ids = [finding["id"] for finding in json.loads(result.stdout)["findings"]]
    assert "SYNTAX-001" in ids
    assert "FILE-011" in ids


def test_include_dir_containing_main_file(tmp_path: Path) -> None:
    # 2.0 ignores include_dir in an included file, so a main file inside its own include_dir
    # is read twice but does not recurse.
    config = tmp_path / "main.conf"
    config.write_text(f"include_dir {tmp_path}\nlistener 1883 127.0.0.1\n")
    result = run_cli("-c", str(config), "--format", "json")
    assert result.returncode in (0, 1)
    assert "Traceback" not in result.stderr


def test_non_utf8_include_name_text_output(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    name = os.fsencode(conf_d) + b"/a\xffb.conf"
    with open(name, "wb") as handle:
        handle.write(b"listener 1883\n")
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"include_dir {conf_d}\n")
    for output_format in ("text", "json", "sarif"):
        result = run_cli("-c", str(config), "--format", output_format)
        assert result.returncode == 1, output_format
        assert "NET-001" in result.stdout, output_format


def test_500_include_files_finish_quickly(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    for number in range(500):
        (conf_d / f"{number:03d}-l.conf").write_text(f"listener {3000 + number} 127.0.0.1\n")
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"include_dir {conf_d}\n")
    try:
        result = run_cli("-c", str(config), "--format", "json", timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("500 include files took more than 30 s")
    assert result.returncode == 1


# Explicit inputs that are missing must not silently turn rules off.


def test_missing_policy_file_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A typo in --policy now only skips PLUGIN-001 and PLUGIN-004, and CI passes with 0.
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\n")
    code = main(
        [
            "audit",
            "-c",
            str(config),
            "--policy",
            str(tmp_path / "absent.toml"),
            "--min-severity",
            "critical",
        ]
    )
    capsys.readouterr()
    assert code in (2, 3)


def test_missing_unit_file_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\n")
    code = main(
        [
            "audit",
            "-c",
            str(config),
            "--unit",
            str(tmp_path / "absent.service"),
            "--min-severity",
            "critical",
        ]
    )
    capsys.readouterr()
    assert code in (2, 3)


# Secrets.


@pytest.mark.parametrize("output_format", ["text", "json", "sarif"])
def test_indented_secret_line_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output_format: str
) -> None:
    # The broker skips spaces before the option name, so this is remote_password, and the
    # reader rejects it because no connection line comes first.
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener 1883 127.0.0.1\n  remote_password {SECRET}\n")
    code, out = audit(capsys, "-c", str(config), "--format", output_format)
    assert code == 1
    assert SECRET not in out


@pytest.mark.parametrize("key", ["remote_passwd", "bridge_pass", "plugin_opt"])
def test_misspelled_secret_key_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    # A misspelt option name is exactly when the broker rejects a line, and its value is
    # still the secret the administrator meant to set.
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"connection up\naddress 192.0.2.1:8883\ntopic a out\n{key} {SECRET}\n")
    code, out = audit(capsys, "-c", str(config), "--format", "json")
    assert code == 1
    assert SECRET not in out


# Text output.


def test_text_output_strips_terminal_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A dropped config file can hold ESC sequences that erase the finding from the terminal.
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        "listener 1883 127.0.0.1\nconnection up\n"
        "address 192.0.2.1\x1b[2K\x1b[1A:1883\ntopic # out\n"
    )
    code, out = audit(capsys, "-c", str(config))
    assert code == 1
    assert "NET-011" in out
    assert "\x1b" not in out


# Network rules.


def test_psk_listener_identity_not_reported(tmp_path: Path) -> None:
    # On a PSK listener use_identity_as_username takes the PSK identity as the username, and
    # require_certificate does not apply. The current fix (add a cafile) would put certificate
    # and PSK options on one listener, which the broker rejects.
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        "listener 8883 0.0.0.0\npsk_hint broker\npsk_file /etc/mosquitto/psk\n"
        "use_identity_as_username true\n"
    )
    assert findings_of(network.IDENTITY, config) == []


@pytest.mark.parametrize("address", ["0.0.0.0", "::"])  # noqa: S104
def test_wildcard_address_is_all_interfaces(tmp_path: Path, address: str) -> None:
    # `listener 1883 0.0.0.0` binds every interface, as `listener 1883` does.
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener 1883 {address}\n")
    findings = findings_of(network.ALL_INTERFACES, config)
    assert [(f.rule, f.line) for f in findings] == [("NET-001", 1)]


def test_unix_socket_anonymous_not_network(tmp_path: Path) -> None:
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener 0 {tmp_path}/mqtt.sock\nallow_anonymous true\n")
    assert findings_of(network.ANONYMOUS, config) == []
    assert findings_of(network.NO_TLS, config) == []
    assert findings_of(network.ALL_INTERFACES, config) == []


def test_local_only_deny_in_include_dir(tmp_path: Path) -> None:
    # Debian's stock main file defines no listener, and 2.0.11 ignores allow_anonymous false
    # placed in conf.d and still accepts anonymous clients on 127.0.0.1 and ::1.
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "auth.conf").write_text(
        "allow_anonymous false\npassword_file /etc/mosquitto/passwd\n"
    )
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"include_dir {conf_d}\n")
    options = AuditOptions(config_paths=[config], host=False, package_version="2.0.11-1.2")
    context = AuditContext(options)
    context.__dict__["version"] = (2, 0, 11)
    findings = list(network.LOCAL_ONLY.check(context))
    assert [(f.rule, f.path, f.line) for f in findings] == [
        ("NET-004", str(conf_d / "auth.conf"), 1)
    ]


def test_security_option_in_include_opens_hidden(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "p.conf").write_text("password_file /etc/mosquitto/passwd\n")
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        f"per_listener_settings true\nlistener 18830 127.0.0.1\ninclude_dir {conf_d}\n"
    )
    findings = findings_of(network.HIDDEN, config)
    assert [(f.rule, f.path, f.line) for f in findings] == [("NET-005", str(conf_d / "p.conf"), 1)]


def test_bridge_several_addresses_one_finding(tmp_path: Path) -> None:
    config = tmp_path / "mosquitto.conf"
    config.write_text("connection up\naddress 192.0.2.1:8883 192.0.2.2 # fallback\ntopic a out\n")
    findings = findings_of(network.BRIDGE, config)
    assert len(findings) == 1
    assert "192.0.2.1:8883, 192.0.2.2:1883" in findings[0].evidence


# Hardening rules.


def test_log_dest_none_hides_plugin_loading(tmp_path: Path) -> None:
    # `log_dest none` turns every log line off, "Loading plugin:" included, which hides a
    # plugin more than any log_type line can.
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\nlog_dest none\n")
    options = AuditOptions(config_paths=[config], host=False)
    context = AuditContext(options)
    found = [
        finding
        for rule in all_rules()
        if rule.id.startswith("HARD-")
        for finding in rule.check(context)
    ]
    assert any("log_dest none" in finding.evidence for finding in found)


def test_log_type_none_after_others_reported(tmp_path: Path) -> None:
    # 2.0 replaces the log mask at `log_type none`, so the earlier lines no longer count.
    config = tmp_path / "mosquitto.conf"
    config.write_text("log_type information\nlog_type notice\nlog_type none\n")
    findings = findings_of(hardening.LOG_TYPE, config)
    assert [(f.rule, f.line) for f in findings] == [("HARD-004", 3)]
