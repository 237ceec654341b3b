"""The privilege audit rules, on real unit files and real running brokers."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from support import MOSQUITTO, free_port, wait_for_port

from mosquitto_guard.audit.context import AuditContext, AuditOptions
from mosquitto_guard.audit.engine import run_audit
from mosquitto_guard.audit.model import Finding, Rule, Severity
from mosquitto_guard.audit.rules import privileges

DEBIAN_UNIT = """\
[Unit]
Description=Mosquitto MQTT Broker

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
"""
HARDENED = """\
User=mosquitto
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
CapabilityBoundingSet=
SystemCallFilter=@system-service
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
"""


def findings(rule: Rule, config: Path | None = None, **options: Any) -> list[Finding]:
    """Run `rule` alone and return its findings, asserting that it was not skipped."""
    context = AuditContext(
        AuditOptions(config_paths=[config] if config is not None else [], **options)
    )
    report = run_audit(context, [rule])
    assert report.skipped == []
    return report.findings


def write_unit(directory: Path, text: str) -> Path:
    unit = directory / "mosquitto.service"
    unit.write_text(text)
    return unit


def start_broker(
    directory: Path, *lines: str, prefix: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start the real broker on a free 127.0.0.1 port and wait until it listens."""
    port = free_port()
    config = directory / f"broker-{port}.conf"
    config.write_text(
        "\n".join([f"listener {port} 127.0.0.1", "persistence false", "log_dest stderr", *lines])
        + "\n"
    )
    config.chmod(0o644)
    process = subprocess.Popen(
        [*prefix, MOSQUITTO, "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_for_port(port, process), "the broker did not start"
    return process


def evidence_of(found: list[Finding], pid: int) -> list[str]:
    return [finding.evidence for finding in found if f"pid {pid} " in finding.evidence]


# PRIV-001: `user root`.


def test_user_root_flagged(tmp_path: Path) -> None:
    config = tmp_path / "m.conf"
    config.write_text("listener 1883 127.0.0.1\nuser root\n")
    [finding] = findings(privileges.ROOT, config, host=False)
    assert (finding.rule, finding.path, finding.line) == ("PRIV-001", str(config), 2)


def test_user_mosquitto_accepted(tmp_path: Path) -> None:
    config = tmp_path / "m.conf"
    config.write_text("listener 1883 127.0.0.1\nuser mosquitto\n")
    assert findings(privileges.ROOT, config, host=False) == []


# PRIV-002 and PRIV-005: running brokers.


def test_running_root_broker_flagged(safe_dir: Path, processes: list[Any]) -> None:
    broker = start_broker(safe_dir, "user root")
    processes.append(broker)
    found = findings(privileges.RUNNING_ROOT, host=True)
    [evidence] = evidence_of(found, broker.pid)
    assert evidence.startswith(f"broker pid {broker.pid} runs with effective uid 0")
    assert all(finding.path is None for finding in found)


def test_running_dropped_broker_accepted(safe_dir: Path, processes: list[Any]) -> None:
    broker = start_broker(safe_dir)
    processes.append(broker)
    assert evidence_of(findings(privileges.RUNNING_ROOT, host=True), broker.pid) == []
    assert evidence_of(findings(privileges.CAPABILITIES, host=True), broker.pid) == []


def test_capabilities_of_root_broker_listed(safe_dir: Path, processes: list[Any]) -> None:
    broker = start_broker(safe_dir, "user root")
    processes.append(broker)
    [evidence] = evidence_of(findings(privileges.CAPABILITIES, host=True), broker.pid)
    assert evidence.startswith(f"broker pid {broker.pid} (uid 0) has effective capabilities:")
    assert "cap_sys_admin" in evidence
    assert "cap_setuid" in evidence


def test_capabilities_of_unprivileged_broker(safe_dir: Path, processes: list[Any]) -> None:
    keep_bind = (
        "setpriv",
        "--reuid=mosquitto",
        "--regid=mosquitto",
        "--init-groups",
        "--inh-caps=+net_bind_service",
        "--ambient-caps=+net_bind_service",
    )
    broker = start_broker(safe_dir, prefix=keep_bind)
    processes.append(broker)
    [evidence] = evidence_of(findings(privileges.CAPABILITIES, host=True), broker.pid)
    assert evidence.endswith("has effective capabilities: cap_net_bind_service")
    assert "(uid 0)" not in evidence


def test_capability_names_decode_mask() -> None:
    assert privileges.capability_names(0x400) == ["cap_net_bind_service"]
    assert privileges.capability_names(0b11 | 1 << 45) == [
        "cap_chown",
        "cap_dac_override",
        "cap_45",
    ]
    assert privileges.capability_names(0) == []


def test_process_rules_need_host() -> None:
    context = AuditContext(AuditOptions(config_paths=[], host=False))
    report = run_audit(context, [privileges.RUNNING_ROOT, privileges.CAPABILITIES])
    assert [skip.rule for skip in report.skipped] == ["PRIV-002", "PRIV-005"]


# PRIV-003: the service unit.


def test_unit_debian_lacks_everything(tmp_path: Path) -> None:
    unit = write_unit(tmp_path, DEBIAN_UNIT)
    found = findings(privileges.UNIT, host=False, unit_path=unit)
    assert {(finding.rule, finding.path, finding.line) for finding in found} == {
        ("PRIV-003", str(unit), None)
    }
    seen = {finding.evidence.split(":", 1)[0]: finding.fix for finding in found}
    assert sorted(seen) == sorted(
        [
            "no User=",
            "no NoNewPrivileges=",
            "no ProtectSystem=",
            "no ProtectHome=",
            "no PrivateTmp=",
            "no CapabilityBoundingSet=",
            "no SystemCallFilter=",
            "no RestrictAddressFamilies=",
        ]
    )
    assert "add User=mosquitto" in seen["no User="]
    assert "add NoNewPrivileges=yes" in seen["no NoNewPrivileges="]


def test_unit_hardened_accepted(tmp_path: Path) -> None:
    unit = write_unit(tmp_path, DEBIAN_UNIT + HARDENED)
    assert findings(privileges.UNIT, host=False, unit_path=unit) == []


def test_unit_drop_in_counts(tmp_path: Path) -> None:
    unit = write_unit(tmp_path, DEBIAN_UNIT)
    drop_ins = tmp_path / "mosquitto.service.d"
    drop_ins.mkdir()
    (drop_ins / "harden.conf").write_text("[Service]\n" + HARDENED)
    assert findings(privileges.UNIT, host=False, unit_path=unit) == []


def test_unit_weak_values_located(tmp_path: Path) -> None:
    text = DEBIAN_UNIT + HARDENED.replace("User=mosquitto", "User=root").replace(
        "PrivateTmp=yes", "PrivateTmp=no"
    )
    unit = write_unit(tmp_path, text)
    found = findings(privileges.UNIT, host=False, unit_path=unit)
    lines = text.splitlines()
    assert [(finding.evidence.split(":", 1)[0], finding.line) for finding in found] == [
        ("User=root", lines.index("User=root") + 1),
        ("PrivateTmp=no", lines.index("PrivateTmp=no") + 1),
    ]


# PRIV-004: the unit's environment.


def test_environment_snap_name_flagged(tmp_path: Path) -> None:
    unit = write_unit(tmp_path, DEBIAN_UNIT + 'Environment="SNAP_NAME=mosquitto" LANG=C\n')
    [finding] = findings(privileges.ENVIRONMENT, host=False, unit_path=unit)
    assert (finding.rule, finding.path, finding.line) == ("PRIV-004", str(unit), 10)
    assert finding.severity == Severity.CRITICAL
    assert finding.evidence.startswith("SNAP_NAME=mosquitto: the broker skips its privilege drop")


def test_environment_file_puid_flagged(tmp_path: Path) -> None:
    defaults = tmp_path / "etc" / "default" / "mosquitto"
    defaults.parent.mkdir(parents=True)
    defaults.write_text("# set by the image\nPUID=0\nPGID=1000\n")
    unit = write_unit(tmp_path, DEBIAN_UNIT + "EnvironmentFile=-/etc/default/mosquitto\n")
    found = findings(privileges.ENVIRONMENT, host=False, unit_path=unit, root=tmp_path)
    assert [(f.path, f.line, f.severity) for f in found] == [
        (str(defaults), 2, Severity.CRITICAL),
        (str(defaults), 3, Severity.LOW),
    ]
    assert found[0].evidence == "PUID=0: keeps Mosquitto 2.1 and later running as root"


def test_environment_other_values_accepted(tmp_path: Path) -> None:
    unit = write_unit(
        tmp_path,
        DEBIAN_UNIT + "Environment=SNAP_NAME=other LANG=C\nEnvironmentFile=-/etc/default/none\n",
    )
    assert findings(privileges.ENVIRONMENT, host=False, unit_path=unit, root=tmp_path) == []


def test_environment_reset_drops_earlier(tmp_path: Path) -> None:
    unit = write_unit(tmp_path, DEBIAN_UNIT + "Environment=SNAP_NAME=mosquitto\nEnvironment=\n")
    assert findings(privileges.ENVIRONMENT, host=False, unit_path=unit) == []
