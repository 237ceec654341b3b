"""File rules on real files with real owners and modes. The tests need root for chown."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import pytest

from mosquitto_guard.audit.context import AuditContext, AuditOptions
from mosquitto_guard.audit.model import Finding, Rule, Severity
from mosquitto_guard.audit.rules import files

BROKER = pwd.getpwnam("mosquitto")
BROKER_GROUP = grp.getgrgid(BROKER.pw_gid).gr_name
LISTENER = "listener 1883 127.0.0.1\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def write(path: Path, text: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Path:
    path.write_text(text)
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def check(rule: Rule, config: Path) -> list[Finding]:
    context = AuditContext(AuditOptions(config_paths=[config], host=False))
    return list(rule.check(context))


def places(findings: list[Finding]) -> list[tuple[str, str | None, int | None]]:
    return [(f.rule, f.path, f.line) for f in findings]


@pytest.fixture
def root_dir(tmp_path: Path) -> Path:
    """A root-owned directory, mode 0755, that the broker's user cannot write."""
    tmp_path.chmod(0o755)
    return tmp_path


# FILE-001


def test_config_owned_by_broker_reported(root_dir: Path) -> None:
    config = write(root_dir / "mosquitto.conf", LISTENER, 0o600, uid=BROKER.pw_uid)
    findings = check(files.WRITABLE_CONFIG, config)
    assert places(findings) == [("FILE-001", str(config), None)]
    assert "owner mosquitto:root, mode 0600" in findings[0].evidence
    assert "mosquitto owns it" in findings[0].evidence
    assert findings[0].fix == f"chown root:root {config} && chmod go-w {config}"


def test_root_owned_config_passes(root_dir: Path) -> None:
    config = write(root_dir / "mosquitto.conf", LISTENER)
    assert check(files.WRITABLE_CONFIG, config) == []


def test_group_writable_include_reported(root_dir: Path) -> None:
    included = root_dir / "conf.d"
    included.mkdir(mode=0o755)
    part = write(included / "a.conf", "max_keepalive 60\n", 0o664, gid=BROKER.pw_gid)
    config = write(root_dir / "mosquitto.conf", f"{LISTENER}include_dir {included}\n")
    findings = check(files.WRITABLE_CONFIG, config)
    assert places(findings) == [("FILE-001", str(part), None)]
    assert f"mosquitto is in its group {BROKER_GROUP}, which can write it" in (findings[0].evidence)


def test_group_writable_other_group_passes(root_dir: Path) -> None:
    config = write(root_dir / "mosquitto.conf", LISTENER, 0o664, gid=0)
    assert check(files.WRITABLE_CONFIG, config) == []


def test_world_writable_include_dir_reported(root_dir: Path) -> None:
    included = root_dir / "conf.d"
    included.mkdir()
    included.chmod(0o777)
    config = write(root_dir / "mosquitto.conf", f"{LISTENER}include_dir {included}\n")
    findings = check(files.WRITABLE_CONFIG, config)
    assert places(findings) == [("FILE-001", str(config), 2)]
    assert findings[0].evidence.startswith(f"config directory {included} (owner root:root")
    assert "every user can write it" in findings[0].evidence


# FILE-002


def test_password_file_owned_by_broker_reported(root_dir: Path) -> None:
    passwd = write(root_dir / "passwd", "u:$7$x\n", 0o600, uid=BROKER.pw_uid)
    config = write(root_dir / "mosquitto.conf", f"{LISTENER}password_file {passwd}\n")
    findings = check(files.WRITABLE_ACCESS, config)
    assert places(findings) == [("FILE-002", str(config), 2)]
    assert findings[0].evidence.startswith(f"{passwd} (owner mosquitto:root, mode 0600)")


def test_acl_file_readable_by_group_passes(root_dir: Path) -> None:
    acl = write(root_dir / "acl", "topic read #\n", 0o640, gid=BROKER.pw_gid)
    config = write(root_dir / "mosquitto.conf", f"{LISTENER}acl_file {acl}\n")
    assert check(files.WRITABLE_ACCESS, config) == []


# FILE-003


def test_world_readable_secrets_reported(root_dir: Path) -> None:
    psk = write(root_dir / "psk", "id:00ff\n")
    passwd = write(root_dir / "passwd", "u:$7$x\n")
    config = write(
        root_dir / "mosquitto.conf",
        f"{LISTENER}psk_hint hint\npsk_file {psk}\npassword_file {passwd}\n",
    )
    findings = check(files.READABLE_SECRET, config)
    assert places(findings) == [("FILE-003", str(config), 3), ("FILE-003", str(config), 4)]
    assert findings[0].severity is Severity.HIGH
    assert findings[1].severity is Severity.MEDIUM
    assert (
        findings[0].evidence
        == f"{psk} (owner root:root, mode 0644) can be read by every local user"
    )


def test_world_readable_dynsec_file_reported(root_dir: Path) -> None:
    state = write(root_dir / "dynsec.json", "{}\n")
    text = (
        f"{LISTENER}plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n"
        f"plugin_opt_config_file {state}\n"
    )
    config = write(root_dir / "mosquitto.conf", text)
    findings = check(files.READABLE_SECRET, config)
    assert places(findings) == [("FILE-003", str(config), 3)]
    assert str(state) in findings[0].evidence


def test_private_key_not_world_readable_passes(root_dir: Path) -> None:
    key = write(root_dir / "key.pem", "-----BEGIN PRIVATE KEY-----\n", 0o640, gid=BROKER.pw_gid)
    text = f"listener 8883 127.0.0.1\ncertfile /etc/c.pem\nkeyfile {key}\n"
    config = write(root_dir / "mosquitto.conf", text)
    assert check(files.READABLE_SECRET, config) == []


# FILE-010 to FILE-014: include_dir


@pytest.fixture
def conf_d(root_dir: Path) -> Path:
    directory = root_dir / "conf.d"
    directory.mkdir(mode=0o755)
    return directory


def main_config(root_dir: Path, conf_d: Path) -> Path:
    return write(root_dir / "mosquitto.conf", f"{LISTENER}include_dir {conf_d}\n")


def test_hidden_file_reported(root_dir: Path, conf_d: Path) -> None:
    write(conf_d / ".x.conf", "max_keepalive 60\n")
    write(conf_d / "a.conf", "max_packet_size 1000\n")
    config = main_config(root_dir, conf_d)
    findings = check(files.HIDDEN, config)
    assert places(findings) == [("FILE-010", str(config), 2)]
    assert findings[0].evidence.startswith(f"{conf_d}/.x.conf is read by the broker")


def test_visible_files_pass(root_dir: Path, conf_d: Path) -> None:
    write(conf_d / "a.conf", "max_keepalive 60\n")
    write(conf_d / ".conf", "max_keepalive 60\n")  # too short: not read
    assert check(files.HIDDEN, main_config(root_dir, conf_d)) == []


def test_symlink_reported(root_dir: Path, conf_d: Path) -> None:
    target = write(root_dir / "elsewhere.txt", "max_keepalive 60\n")
    (conf_d / "link.conf").symlink_to(target)
    config = main_config(root_dir, conf_d)
    findings = check(files.SYMLINK, config)
    assert places(findings) == [("FILE-011", str(config), 2)]
    assert findings[0].evidence.startswith(f"{conf_d}/link.conf -> {target}:")


def test_regular_file_not_symlink_passes(root_dir: Path, conf_d: Path) -> None:
    write(conf_d / "a.conf", "max_keepalive 60\n")
    (conf_d / "notes.txt").symlink_to(root_dir / "missing")  # not read: wrong suffix
    assert check(files.SYMLINK, main_config(root_dir, conf_d)) == []


def test_conf_directory_reported(root_dir: Path, conf_d: Path) -> None:
    (conf_d / "extra.conf").mkdir()
    config = main_config(root_dir, conf_d)
    findings = check(files.CONF_DIRECTORY, config)
    assert places(findings) == [("FILE-012", str(config), 2)]
    assert findings[0].fix.endswith(f"mv {conf_d}/extra.conf {conf_d}/extra")


def test_plain_subdirectory_not_conf_passes(root_dir: Path, conf_d: Path) -> None:
    (conf_d / "extra").mkdir()
    assert check(files.CONF_DIRECTORY, main_config(root_dir, conf_d)) == []


def test_subdirectory_files_listed(root_dir: Path, conf_d: Path) -> None:
    (conf_d / "old" / "deep").mkdir(parents=True)
    write(conf_d / "old" / "b.conf", "max_keepalive 60\n")
    write(conf_d / "old" / "deep" / "a.conf", "max_keepalive 60\n")
    write(conf_d / "old" / "README", "notes\n")
    config = main_config(root_dir, conf_d)
    findings = check(files.SUBDIRECTORY, config)
    assert places(findings) == [("FILE-013", str(config), 2)]
    assert findings[0].evidence.endswith(f"{conf_d}/old/b.conf, {conf_d}/old/deep/a.conf")
    assert "README" not in findings[0].evidence


def test_subdirectory_without_conf_passes(root_dir: Path, conf_d: Path) -> None:
    (conf_d / "old").mkdir()
    write(conf_d / "old" / "README", "notes\n")
    assert check(files.SUBDIRECTORY, main_config(root_dir, conf_d)) == []


def test_ignored_name_reported(root_dir: Path, conf_d: Path) -> None:
    write(conf_d / "auth.CONF", "password_file /etc/x\n")
    config = main_config(root_dir, conf_d)
    findings = check(files.IGNORED_NAME, config)
    assert places(findings) == [("FILE-014", str(config), 2)]
    assert f"rename it to end in .conf, such as {conf_d}/auth.conf" in findings[0].fix


def test_read_and_unrelated_names_pass(root_dir: Path, conf_d: Path) -> None:
    write(conf_d / "auth.conf", "max_keepalive 60\n")
    write(conf_d / "auth.conf.bak", "max_keepalive 60\n")
    assert check(files.IGNORED_NAME, main_config(root_dir, conf_d)) == []


def test_include_dir_rules_run_on_unreadable_config(root_dir: Path, conf_d: Path) -> None:
    (conf_d / "extra.conf").mkdir()
    write(conf_d / ".x.conf", "max_keepalive 60\n")
    config = main_config(root_dir, conf_d)
    assert [f.rule for f in check(files.HIDDEN, config)] == ["FILE-010"]


def test_relative_symlink_fix_names_real_source(root_dir: Path, conf_d: Path) -> None:
    write(root_dir / "shared.conf", "max_keepalive 60\n")
    (conf_d / "link.conf").symlink_to("../shared.conf")
    findings = check(files.SYMLINK, main_config(root_dir, conf_d))
    assert findings[0].fix.endswith(f"{conf_d}/../shared.conf {conf_d}/link.conf")
