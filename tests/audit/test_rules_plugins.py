"""The plugin audit rules, on real config files, compiled plugins and signed manifests."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path
from typing import Any

import pytest
from support import DYNSEC_PLUGIN, Guard, c_string, compile_plugin

from mosquitto_guard.audit.context import DEFAULT_BROKER, AuditContext, AuditOptions
from mosquitto_guard.audit.engine import run_audit
from mosquitto_guard.audit.model import AuditReport, Finding, Rule, Severity
from mosquitto_guard.audit.rules import plugins


def audit(
    rule: Rule,
    config: Path | None,
    *,
    host: bool = False,
    policy: Path | None = None,
    root: Path = Path("/"),
    broker: Path = DEFAULT_BROKER,
) -> AuditReport:
    """Run `rule` alone over `config`; None audits no config file, for the host-file rules."""
    options = AuditOptions(
        config_paths=[config] if config is not None else [],
        host=host,
        broker=broker,
        policy_path=policy,
        root=root,
    )
    return run_audit(AuditContext(options), [rule])


def findings(rule: Rule, config: Path | None, **options: Any) -> list[Finding]:
    report = audit(rule, config, **options)
    assert report.skipped == []
    return report.findings


def write_config(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(["listener 1883 127.0.0.1", *lines]) + "\n")
    return path


# PLUGIN-001: outside the policy's plugin directories.


def test_outside_dirs_flags_tmp_plugin(guard: Guard, tmp_path: Path) -> None:
    plugin = compile_plugin("marker.c", tmp_path / "stray.so")
    config = write_config(tmp_path / "m.conf", f"plugin {plugin}")
    [finding] = findings(plugins.OUTSIDE_DIRS, config, policy=guard.policy)
    assert finding.rule == "PLUGIN-001"
    assert (finding.path, finding.line) == (str(config), 2)
    assert f"plugin {plugin} is outside the policy's plugin_dirs" in finding.evidence
    assert str(guard.policy) in finding.fix


def test_outside_dirs_accepts_plugin_dir(guard: Guard, tmp_path: Path) -> None:
    plugin = guard.build("inside.so")
    config = write_config(tmp_path / "m.conf", f"plugin {plugin}", f"plugin {DYNSEC_PLUGIN}")
    assert findings(plugins.OUTSIDE_DIRS, config, policy=guard.policy) == []


def test_outside_dirs_follows_symlink(guard: Guard, tmp_path: Path) -> None:
    real = compile_plugin("marker.c", tmp_path / "real.so")
    link = guard.plugins / "link.so"
    link.symlink_to(real)
    config = write_config(tmp_path / "m.conf", f"plugin {link}")
    [finding] = findings(plugins.OUTSIDE_DIRS, config, policy=guard.policy)
    assert f"{link} (really {real})" in finding.evidence


def test_outside_dirs_skipped_without_policy(tmp_path: Path) -> None:
    config = write_config(tmp_path / "m.conf", f"plugin {DYNSEC_PLUGIN}")
    report = audit(plugins.OUTSIDE_DIRS, config)
    assert report.findings == []
    assert [skip.rule for skip in report.skipped] == ["PLUGIN-001"]
    assert "no trust policy" in report.skipped[0].reason


# PLUGIN-003: who can replace the file.


def test_unsafe_path_flags_world_writable_tmp(tmp_path: Path) -> None:
    plugin = compile_plugin("marker.c", tmp_path / "p.so")
    config = write_config(tmp_path / "m.conf", f"auth_plugin {plugin}")
    found = findings(plugins.UNSAFE_PATH, config)
    assert [(f.rule, f.line) for f in found] == [("PLUGIN-003", 2)]
    assert found[0].evidence == (
        f"auth_plugin {plugin}: /tmp directory is writable by group and others (mode 1777)"
    )
    assert found[0].fix == "move the file into a directory only root can write"


def test_unsafe_path_accepts_root_owned(guard: Guard, tmp_path: Path) -> None:
    plugin = guard.build("safe.so")
    config = write_config(tmp_path / "m.conf", f"plugin {plugin}")
    assert findings(plugins.UNSAFE_PATH, config) == []


def test_unsafe_path_names_broker_user(guard: Guard, tmp_path: Path) -> None:
    directory = guard.plugins / "owned"
    directory.mkdir(mode=0o755)
    plugin = compile_plugin("marker.c", directory / "p.so")
    mosquitto = pwd.getpwnam("mosquitto")
    os.chown(directory, mosquitto.pw_uid, mosquitto.pw_gid)
    config = write_config(tmp_path / "m.conf", f"plugin {plugin}")
    [finding] = findings(plugins.UNSAFE_PATH, config)
    assert f"{directory} directory is owned by uid {mosquitto.pw_uid}, not root" in finding.evidence
    assert "its owner is the broker's user mosquitto" in finding.evidence
    assert finding.fix == f"chown root {directory}"


def test_unsafe_path_checks_symlink_target(guard: Guard, tmp_path: Path) -> None:
    real = compile_plugin("marker.c", tmp_path / "real.so")
    link = guard.plugins / "link.so"
    link.symlink_to(real)
    config = write_config(tmp_path / "m.conf", f"plugin {link}")
    [finding] = findings(plugins.UNSAFE_PATH, config)
    assert finding.evidence.startswith(f"plugin {link}: /tmp directory is writable")


def test_unsafe_path_covers_tls_engine_file(tmp_path: Path) -> None:
    engine = compile_plugin("marker.c", tmp_path / "engine.so")
    config = write_config(tmp_path / "m.conf", f"tls_engine {engine}")
    [finding] = findings(plugins.UNSAFE_PATH, config)
    assert finding.evidence.startswith(f"tls_engine {engine}: /tmp directory")
    assert finding.line == 2


# PLUGIN-004: signed manifests.


def test_unsigned_flags_plugin_without_manifest(guard: Guard, tmp_path: Path) -> None:
    plugin = guard.build("unsigned.so")
    config = write_config(tmp_path / "m.conf", f"plugin {plugin}")
    [finding] = findings(plugins.UNSIGNED, config, policy=guard.policy)
    assert (finding.rule, finding.line) == ("PLUGIN-004", 2)
    assert f"no manifest in {guard.manifests} for this plugin" in finding.evidence
    assert finding.fix.startswith(f"mosquitto-guard sign {plugin}")


def test_unsigned_accepts_signed_plugin(guard: Guard, tmp_path: Path) -> None:
    plugin = guard.build("signed.so")
    guard.sign(plugin, "signed", 1, "alice")
    config = write_config(tmp_path / "m.conf", f"plugin {plugin}")
    assert findings(plugins.UNSIGNED, config, policy=guard.policy) == []


def test_unsigned_flags_changed_bytes(guard: Guard, tmp_path: Path) -> None:
    plugin = guard.build("changed.so")
    guard.sign(plugin, "changed", 1, "alice")
    guard.build("changed.so", {"MARKER_TEXT": c_string("other\n")})
    config = write_config(tmp_path / "m.conf", f"plugin {plugin}")
    [finding] = findings(plugins.UNSIGNED, config, policy=guard.policy)
    assert "changed" in finding.evidence
    assert "sha256" in finding.evidence


def test_unsigned_skipped_without_policy(tmp_path: Path) -> None:
    config = write_config(tmp_path / "m.conf", f"plugin {DYNSEC_PLUGIN}")
    report = audit(plugins.UNSIGNED, config)
    assert [skip.rule for skip in report.skipped] == ["PLUGIN-004"]


# PLUGIN-005: one file loaded twice.


def test_duplicate_flags_same_path(guard: Guard, tmp_path: Path) -> None:
    plugin = guard.build("twice.so")
    config = write_config(tmp_path / "m.conf", f"plugin {plugin}", f"plugin {plugin}")
    [finding] = findings(plugins.DUPLICATE, config)
    assert (finding.rule, finding.line, finding.severity) == ("PLUGIN-005", 3, Severity.MEDIUM)
    assert f"loads the same file as plugin {plugin} at {config}:2" in finding.evidence


def test_duplicate_flags_same_bytes(guard: Guard, tmp_path: Path) -> None:
    first = guard.build("first.so")
    second = guard.plugins / "second.so"
    shutil.copyfile(first, second)
    config = write_config(tmp_path / "m.conf", f"plugin {first}", f"plugin {second}")
    [finding] = findings(plugins.DUPLICATE, config)
    assert finding.line == 3
    assert f"plugin {second} loads a copy (sha256 " in finding.evidence
    assert f"of plugin {first} at {config}:2" in finding.evidence


def test_duplicate_lowers_separate_listeners(guard: Guard, tmp_path: Path) -> None:
    plugin = guard.build("shared.so")
    config = tmp_path / "m.conf"
    config.write_text(
        "per_listener_settings true\n"
        f"listener 1883 127.0.0.1\nplugin {plugin}\n"
        f"listener 1884 127.0.0.1\nplugin {plugin}\n"
    )
    [finding] = findings(plugins.DUPLICATE, config)
    assert (finding.line, finding.severity) == (5, Severity.LOW)
    assert "once for each of two listeners" in finding.evidence


def test_duplicate_accepts_different_plugins(guard: Guard, tmp_path: Path) -> None:
    plugin = guard.build("one.so")
    config = write_config(tmp_path / "m.conf", f"plugin {plugin}", f"plugin {DYNSEC_PLUGIN}")
    assert findings(plugins.DUPLICATE, config) == []


# PLUGIN-002 and PLUGIN-006: the written value.


def test_relative_flags_bare_name(tmp_path: Path) -> None:
    config = write_config(tmp_path / "m.conf", "plugin mosquitto_dynamic_security.so")
    [finding] = findings(plugins.RELATIVE, config)
    assert (finding.rule, finding.line) == ("PLUGIN-002", 2)
    assert (
        findings(plugins.RELATIVE, write_config(tmp_path / "ok.conf", f"plugin {DYNSEC_PLUGIN}"))
        == []
    )


def test_hash_flags_trailing_comment(tmp_path: Path) -> None:
    config = write_config(tmp_path / "m.conf", f"plugin {DYNSEC_PLUGIN} # dynsec")
    [finding] = findings(plugins.HASH, config)
    assert (finding.rule, finding.line) == ("PLUGIN-006", 2)
    assert (
        findings(plugins.HASH, write_config(tmp_path / "ok.conf", f"plugin {DYNSEC_PLUGIN}")) == []
    )


# PLUGIN-007: tls_engine given as a path.


def test_engine_path_flags_absolute_path(tmp_path: Path) -> None:
    config = write_config(tmp_path / "m.conf", "tls_engine /opt/engines/evil.so")
    [finding] = findings(plugins.ENGINE_PATH, config)
    assert (finding.rule, finding.path, finding.line) == ("PLUGIN-007", str(config), 2)
    assert "tls_engine '/opt/engines/evil.so'" in finding.evidence


def test_engine_path_accepts_engine_id(tmp_path: Path) -> None:
    config = write_config(tmp_path / "m.conf", "tls_engine pkcs11")
    assert findings(plugins.ENGINE_PATH, config) == []


# PLUGIN-008: OpenSSL config modules.


def test_openssl_modules_flags_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = compile_plugin("marker.c", tmp_path / "prov.so")
    cnf = tmp_path / "openssl.cnf"
    cnf.write_text(
        "openssl_conf = init\n[init]\nproviders = p\n"
        f"[p]\nmine = ps\n[ps]\nmodule = {provider}\nactivate = 1\n"
    )
    monkeypatch.setenv("OPENSSL_CONF", str(cnf))
    config = write_config(tmp_path / "m.conf")
    [finding] = findings(plugins.OPENSSL_MODULES, config)
    assert (finding.rule, finding.path, finding.line) == ("PLUGIN-008", str(cnf), 7)
    assert f"OpenSSL provider mine, file {provider}" in finding.evidence


def test_openssl_modules_accepts_plain_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cnf = tmp_path / "openssl.cnf"
    cnf.write_text("[req]\ndefault_bits = 2048\n")
    monkeypatch.setenv("OPENSSL_CONF", str(cnf))
    assert findings(plugins.OPENSSL_MODULES, write_config(tmp_path / "m.conf")) == []


# PLUGIN-009: /etc/ld.so.preload.


def test_ld_so_preload_flags_entry(tmp_path: Path) -> None:
    preload = tmp_path / "etc" / "ld.so.preload"
    preload.parent.mkdir()
    preload.write_text("# audit hook\n/usr/lib/libevil.so /usr/lib/libother.so\n")
    [finding] = findings(plugins.LD_SO_PRELOAD, None, host=True, root=tmp_path)
    assert (finding.rule, finding.path, finding.line) == ("PLUGIN-009", str(preload), 2)
    assert "preloads /usr/lib/libevil.so /usr/lib/libother.so into every program" in (
        finding.evidence
    )


def test_ld_so_preload_accepts_comments(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ld.so.preload").write_text("# nothing\n\n")
    assert findings(plugins.LD_SO_PRELOAD, None, host=True, root=tmp_path) == []


def test_ld_so_preload_needs_host(tmp_path: Path) -> None:
    report = audit(plugins.LD_SO_PRELOAD, None, root=tmp_path)
    assert [skip.rule for skip in report.skipped] == ["PLUGIN-009"]


# PLUGIN-010: libwrap commands.


def write_hosts(root: Path, allow: str, deny: str = "") -> Path:
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "hosts.deny").write_text(deny)
    path = root / "etc" / "hosts.allow"
    path.write_text(allow)
    return path


def test_libwrap_flags_spawn_and_twist(tmp_path: Path) -> None:
    allow = write_hosts(
        tmp_path,
        "# local\nmosquitto: 127.0.0.1: spawn /bin/echo %a \\\n >> /tmp/log\n"
        "ALL: ALL: twist /bin/false\n",
        deny="ALL EXCEPT sshd: ALL: spawn /bin/logger denied\n",
    )
    found = findings(plugins.LIBWRAP, None, host=True, root=tmp_path)
    assert [(f.rule, f.path, f.line) for f in found] == [
        ("PLUGIN-010", str(allow), 2),
        ("PLUGIN-010", str(allow), 4),
        ("PLUGIN-010", str(tmp_path / "etc" / "hosts.deny"), 1),
    ]
    assert found[0].evidence.startswith("spawn '/bin/echo %a   >> /tmp/log' applies")
    assert found[1].evidence.startswith("twist '/bin/false'")


def test_libwrap_ignores_other_daemons(tmp_path: Path) -> None:
    write_hosts(
        tmp_path,
        "sshd: ALL: spawn /bin/echo\nALL EXCEPT mosquitto: ALL: twist /bin/false\n",
        deny="mosquitto: ALL\n",
    )
    assert findings(plugins.LIBWRAP, None, host=True, root=tmp_path) == []


def test_libwrap_ignores_broker_without_libwrap(tmp_path: Path) -> None:
    write_hosts(tmp_path, "ALL: ALL: spawn /bin/echo\n")
    other = Path(shutil.which("true") or "/bin/true")
    assert findings(plugins.LIBWRAP, None, host=True, root=tmp_path, broker=other) == []
