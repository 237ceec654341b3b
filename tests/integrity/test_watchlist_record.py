"""The watched-file list and the per-file record, on real files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from support import DYNSEC_PLUGIN, MOSQUITTO, Guard

from mosquitto_guard.errors import PolicyError
from mosquitto_guard.integrity.record import record_file
from mosquitto_guard.integrity.watchlist import watched_files
from mosquitto_guard.policy.model import load_policy


def test_watched_files_cover_every_source(guard: Guard) -> None:
    root = guard.root
    for name in ("passwd", "acl", "psk", "dynsec.json", "ca.pem", "cert.pem", "key.pem"):
        (root / name).write_text(f"{name}\n")
    (root / "conf.d").mkdir()
    hidden = root / "conf.d" / ".hidden.conf"
    hidden.write_text("max_keepalive 60\n")
    unit = root / "mosquitto.service"
    unit.write_text("[Service]\n")
    (root / "mosquitto.service.d").mkdir()
    drop_in = root / "mosquitto.service.d" / "override.conf"
    drop_in.write_text("[Service]\n")
    extra = root / "extra.txt"
    with guard.policy.open("a") as handle:
        handle.write(f'\n[integrity]\npaths = ["{extra}"]\n')
    config = guard.config(
        f"cafile {root / 'ca.pem'}",
        f"certfile {root / 'cert.pem'}",
        f"keyfile {root / 'key.pem'}",
        f"password_file {root / 'passwd'}",
        f"acl_file {root / 'acl'}",
        f"plugin {DYNSEC_PLUGIN}",
        f"plugin_opt_config_file {root / 'dynsec.json'}",
        f"include_dir {root / 'conf.d'}",
        f"listener {guard.port + 1} 127.0.0.1",
        "psk_hint guard",
        f"psk_file {root / 'psk'}",
    )
    policy = load_policy(guard.policy)
    watched = {
        item.path: item.reasons for item in watched_files([config], policy, Path(MOSQUITTO), unit)
    }

    expected = [
        config,
        hidden,
        root / "conf.d",
        root / "passwd",
        root / "acl",
        root / "psk",
        root / "dynsec.json",
        root / "ca.pem",
        root / "cert.pem",
        root / "key.pem",
        unit,
        drop_in,
        guard.policy,
        Path(f"{guard.keys['alice']}.pub"),
        extra,
        Path(MOSQUITTO),
        DYNSEC_PLUGIN,
        Path("/etc/hosts.allow"),
        Path("/etc/hosts.deny"),
        Path("/etc/nsswitch.conf"),
        Path("/etc/ld.so.preload"),
    ]
    for path in expected:
        assert path in watched, path
    assert watched[root / "dynsec.json"][0].startswith("dynamic security config (")
    assert watched[hidden][0] == "included config file"
    assert watched[hidden][1].startswith("include_dir (")
    assert any(path.name.startswith("libc.so") for path in watched)
    assert [str(path) for path in watched] == sorted(str(path) for path in watched)


def test_policy_rejects_unknown_integrity_field(guard: Guard) -> None:
    with guard.policy.open("a") as handle:
        handle.write('\n[integrity]\nfiles = ["/etc/x"]\n')
    with pytest.raises(PolicyError, match=r"integrity\.files: unknown field"):
        load_policy(guard.policy)


def test_record_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"abc")
    os.chmod(path, 0o640)
    record = record_file(path)
    info = path.stat()
    assert record["type"] == "file"
    assert record["sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert record["size"] == 3
    assert record["mode"] == "0640"
    assert record["uid"] == info.st_uid
    assert record["gid"] == info.st_gid
    assert record["inode"] == info.st_ino
    assert "build_id" not in record


def test_record_missing_file(tmp_path: Path) -> None:
    assert record_file(tmp_path / "absent") == {"type": "missing"}


def test_record_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to("absent")
    record = record_file(link)
    assert record["type"] == "symlink"
    assert record["link_target"] == "absent"
    assert record["target.type"] == "missing"


def test_record_elf_build_id() -> None:
    record = record_file(Path(MOSQUITTO))
    assert record["type"] == "file"
    build_id = record["build_id"]
    assert isinstance(build_id, str)
    assert len(build_id) >= 16


def test_watched_files_include_plugin_option_files(guard: Guard) -> None:
    # A copy of the dynamic-security plugin under another name, and an option naming no file.
    renamed = guard.plugins / "dynsec.so"
    renamed.write_bytes(DYNSEC_PLUGIN.read_bytes())
    (guard.root / "dynsec.json").write_text("{}\n")
    config = guard.config(
        f"plugin {renamed}",
        f"plugin_opt_config_file {guard.root / 'dynsec.json'}",
        "plugin_opt_mode strict",
    )
    policy = load_policy(guard.policy)
    watched = {item.path: item for item in watched_files([config], policy, Path(MOSQUITTO), None)}
    item = watched[guard.root / "dynsec.json"]
    assert item.reasons[0].startswith("plugin_opt_config_file (")
    assert item.keep_copy
    assert Path("strict") not in watched
    assert guard.root / "strict" not in watched
