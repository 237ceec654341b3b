"""A broker config with every kind of watched file, and helpers to baseline and check it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import DYNSEC_PLUGIN, Guard

from mosquitto_guard.cli import main


@dataclass
class Setup:
    """A broker config in the guard root, with every file it names."""

    guard: Guard
    config: Path
    unit: Path

    @property
    def root(self) -> Path:
        return self.guard.root

    @property
    def baseline(self) -> Path:
        return self.root / "state" / "baseline.json"

    def target_args(self) -> list[str]:
        return [
            "--policy",
            str(self.guard.policy),
            "-c",
            str(self.config),
            "--unit",
            str(self.unit),
        ]

    def write_baseline(self, key: str = "alice") -> int:
        return main(
            [
                "baseline",
                *self.target_args(),
                "--key",
                str(self.guard.keys[key]),
                "--output",
                str(self.baseline),
            ]
        )

    def check(self, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
        capsys.readouterr()
        code = main(
            ["check", *self.target_args(), "--baseline", str(self.baseline), "--format", "json"]
        )
        return code, json.loads(capsys.readouterr().out)


def changes_of(document: dict[str, Any], path: Path) -> dict[str, Any]:
    """Return the changed attributes that the check reported for `path`, without the ctime.

    Every change of an inode moves its ctime, so the check lists the ctime beside each change.
    """
    for entry in document["changed"]:
        if entry["path"] == str(path):
            changes = dict(entry["changes"])
            assert "ctime" in changes or "target.ctime" in changes, changes
            changes.pop("ctime", None)
            changes.pop("target.ctime", None)
            return changes
    raise AssertionError(f"{path} not reported as changed: {document['changed']}")


def make_setup(guard: Guard) -> Setup:
    """Write a config naming one file of every kind the baseline watches, in the guard root."""
    root = guard.root
    (root / "passwd").write_text("user:$7$101$c2FsdA==$aGFzaA==\n")
    (root / "acl").write_text("topic readwrite #\n")
    (root / "dynsec.json").write_text('{"clients": []}\n')
    tls = root / "tls"
    tls.mkdir()
    for name in ("ca.pem", "cert.pem", "key-a.pem", "key-b.pem"):
        (tls / name).write_text(f"{name} contents\n")
    (tls / "key.pem").symlink_to("key-a.pem")
    (root / "conf.d").mkdir()
    (root / "conf.d" / "limits.conf").write_text("max_keepalive 120\n")
    unit = root / "mosquitto.service"
    unit.write_text("[Service]\nExecStart=/usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf\n")
    (root / "mosquitto.service.d").mkdir()
    (root / "mosquitto.service.d" / "guard.conf").write_text("[Service]\nExecStart=\n")
    config = guard.config(
        f"cafile {tls / 'ca.pem'}",
        f"certfile {tls / 'cert.pem'}",
        f"keyfile {tls / 'key.pem'}",
        f"password_file {root / 'passwd'}",
        f"acl_file {root / 'acl'}",
        f"plugin {DYNSEC_PLUGIN}",
        f"plugin_opt_config_file {root / 'dynsec.json'}",
        f"include_dir {root / 'conf.d'}",
    )
    return Setup(guard, config, unit)
