"""The whole inventory: config, environment and host files, against real files and ldd."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from inventory_builds import build, build_helper, build_plugin, build_program, make_config

from mosquitto_guard.inventory.collect import collect_inventory
from mosquitto_guard.inventory.model import CodeItem, Inventory
from mosquitto_guard.inventory.openssl import probe_openssl

DYNSEC = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
CJSON = Path("/lib/x86_64-linux-gnu/libcjson.so.1")
BROKER = Path("/usr/sbin/mosquitto")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty host tree: no ld.so.preload, no nsswitch.conf, an OpenSSL config with nothing."""
    fake = tmp_path / "root"
    ssl = fake / probe_openssl().openssldir.relative_to("/")
    ssl.mkdir(parents=True)
    (ssl / "openssl.cnf").write_text("# nothing to load\n")
    (fake / "etc").mkdir()
    return fake


def kinds(inventory: Inventory, kind: str) -> list[CodeItem]:
    return [item for item in inventory.items if item.kind == kind]


def by_written(inventory: Inventory, written: str) -> CodeItem:
    matches = [item for item in inventory.items if item.written == written]
    assert len(matches) == 1, [item.written for item in inventory.items]
    return matches[0]


def descendants(inventory: Inventory, top: str) -> set[str]:
    """Return the written names of the libraries linked below the item written `top`."""
    found = {top}
    changed = True
    while changed:
        changed = False
        for item in kinds(inventory, "linked_library"):
            if item.parent in found and item.written not in found:
                found.add(item.written)
                changed = True
    return found - {top}


def ldd_paths(path: Path) -> set[Path]:
    # ldd runs the loader on its argument; used only here, on a trusted system file.
    output = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=True).stdout
    paths = set()
    for line in output.splitlines():
        match = re.search(r"(?:=> )?(/\S+) \(0x", line)
        if match:
            paths.add(Path(match.group(1)))
    return paths


# Plugins.


def test_dynsec_links_real_cjson(tmp_path: Path, root: Path) -> None:
    config = make_config(tmp_path / "m.conf", f"plugin {DYNSEC}")
    inventory = collect_inventory(config, {}, root=root, cwd=tmp_path)
    plugin = kinds(inventory, "plugin")[0]
    assert (plugin.path, plugin.resolved_by, plugin.plugin_api) == (DYNSEC, "absolute path", "v5")
    assert plugin.needs_manifest
    assert plugin.source == f"{tmp_path / 'm.conf'}:1"
    cjson = by_written(inventory, "libcjson.so.1")
    assert (cjson.path, cjson.resolved_by, cjson.parent) == (CJSON, "ld.so.cache", str(DYNSEC))
    assert cjson.path is not None
    assert cjson.path.resolve() == Path("/usr/lib/x86_64-linux-gnu/libcjson.so.1").resolve()
    assert not cjson.needs_manifest
    assert inventory.problems == []


def test_dynsec_libraries_match_ldd(tmp_path: Path, root: Path) -> None:
    config = make_config(tmp_path / "m.conf", f"plugin {DYNSEC}")
    inventory = collect_inventory(config, {}, root=root, cwd=tmp_path)
    names = descendants(inventory, str(DYNSEC))
    resolved = {by_written(inventory, name).path for name in names}
    assert resolved == ldd_paths(DYNSEC)


def test_bare_plugin_name_and_ld_library_path(tmp_path: Path, root: Path) -> None:
    helper = build_helper(tmp_path / "deps")
    build_plugin(tmp_path / "plugins" / "myplugin.so", helper, flags=["-Wl,-rpath,$ORIGIN/../deps"])
    config = make_config(tmp_path / "m.conf", "plugin myplugin.so")
    missing = collect_inventory(config, {}, root=root, cwd=tmp_path / "plugins")
    # Like the broker, a bare name is not looked up in the working directory.
    item = kinds(missing, "plugin")[0]
    assert item.path is None
    assert "myplugin.so: not found" in (item.problem or "")
    assert missing.problems == [item]
    env = {"LD_LIBRARY_PATH": str(tmp_path / "plugins")}
    found = collect_inventory(config, env, root=root, cwd=tmp_path)
    plugin = kinds(found, "plugin")[0]
    assert (plugin.path, plugin.resolved_by) == (
        tmp_path / "plugins" / "myplugin.so",
        "LD_LIBRARY_PATH",
    )
    # The loader names the file by the expanded RUNPATH entry, `..` included.
    assert by_written(found, "libinvhelper.so.1").path == tmp_path / "plugins/../deps" / helper.name
    directory = kinds(found, "ld_library_path")[0]
    assert (directory.written, directory.path) == (str(tmp_path / "plugins"), tmp_path / "plugins")


def test_bare_plugin_name_through_cache(tmp_path: Path, root: Path) -> None:
    config = make_config(tmp_path / "m.conf", "plugin libcjson.so.1")
    inventory = collect_inventory(config, {}, root=root, cwd=tmp_path)
    item = kinds(inventory, "plugin")[0]
    assert (item.path, item.resolved_by) == (CJSON, "ld.so.cache")
    assert item.plugin_api == "none"
    assert "neither mosquitto_plugin_version nor" in (item.problem or "")


def test_relative_plugin_path_uses_cwd(tmp_path: Path, root: Path) -> None:
    helper = build_helper(tmp_path / "deps")
    build_plugin(tmp_path / "p.so", helper, flags=["-Wl,-rpath,$ORIGIN/deps"])
    config = make_config(tmp_path / "m.conf", "plugin ./p.so")
    inventory = collect_inventory(config, {}, root=root, cwd=tmp_path)
    item = kinds(inventory, "plugin")[0]
    assert (item.path, item.resolved_by) == (tmp_path / "p.so", "relative to the working directory")
    elsewhere = collect_inventory(config, {}, root=root, cwd=Path("/"))
    assert kinds(elsewhere, "plugin")[0].problem == "/p.so: not found"


def test_legacy_plugin_api(tmp_path: Path, root: Path) -> None:
    helper = build_helper(tmp_path / "deps")
    legacy = build_plugin(
        tmp_path / "legacy.so", helper, legacy=True, flags=["-Wl,-rpath,$ORIGIN/deps"]
    )
    inventory = collect_inventory(
        make_config(tmp_path / "m.conf", f"auth_plugin {legacy}"), {}, root=root, cwd=tmp_path
    )
    item = kinds(inventory, "auth_plugin")[0]
    assert (item.plugin_api, item.problem) == ("legacy", None)


def test_same_plugin_twice_libraries_once(tmp_path: Path, root: Path) -> None:
    config = make_config(
        tmp_path / "m.conf", f"plugin {DYNSEC}", "listener 1884", f"plugin {DYNSEC}"
    )
    inventory = collect_inventory(config, {}, root=root, cwd=tmp_path)
    assert len(kinds(inventory, "plugin")) == 2
    assert len([item for item in inventory.items if item.written == "libcjson.so.1"]) == 1


def test_plugin_load_without_use_not_loaded(tmp_path: Path, root: Path) -> None:
    config = make_config(
        tmp_path / "m.conf",
        f"plugin_load dyn {DYNSEC}",
        f"plugin_load gone {tmp_path / 'missing.so'}",
        "plugin_use dyn",
    )
    inventory = collect_inventory(config, {}, root=root, cwd=tmp_path)
    used, unused = kinds(inventory, "plugin_load")
    assert used.loaded
    assert not unused.loaded
    assert unused.note is not None
    assert "selected by no plugin_use" in unused.note
    assert unused.problem is not None
    # A dangling plugin that is never loaded does not make the inventory fail.
    assert inventory.problems == []


def test_broker_libraries_listed_once(tmp_path: Path, root: Path) -> None:
    config = make_config(tmp_path / "m.conf", f"plugin {DYNSEC}")
    inventory = collect_inventory(config, {}, root=root, cwd=tmp_path, broker=BROKER)
    libc = by_written(inventory, "libc.so.6")
    assert libc.parent == str(BROKER)
    interpreter = kinds(inventory, "linked_library")[0]
    assert (interpreter.resolved_by, interpreter.path) == (
        "program interpreter",
        Path("/lib64/ld-linux-x86-64.so.2"),
    )
    linked = {
        item.path
        for item in kinds(inventory, "linked_library")
        if item.parent == str(BROKER) or item.written in descendants(inventory, str(BROKER))
    }
    assert linked == ldd_paths(BROKER)
    assert by_written(inventory, "libcjson.so.1").parent == str(DYNSEC)


# Hostile plugin files: a clear problem on the item, never a traceback.


@pytest.mark.parametrize(
    "case", ["text", "truncated", "directory", "missing", "empty", "pie", "executable"]
)
def test_hostile_plugin_file_problem(case: str, tmp_path: Path, root: Path) -> None:
    target = tmp_path / f"{case}.so"
    expected = {
        "text": "invalid ELF header",
        "truncated": "truncated",
        "directory": "is a directory",
        "missing": "not found",
        "empty": "file too short",
        "pie": "position-independent executable",
        "executable": "is an executable, not a shared object",
    }[case]
    if case == "text":
        target.write_text("#!/bin/sh\necho this is a script, not a shared object at all\n" * 2)
    elif case == "truncated":
        data = DYNSEC.read_bytes()
        target.write_bytes(data[: len(data) // 3])
    elif case == "directory":
        target.mkdir()
    elif case == "empty":
        target.write_bytes(b"")
    elif case == "pie":
        build_program(target, "-pie")
    elif case == "executable":
        build_program(target, "-no-pie")
    inventory = collect_inventory(
        make_config(tmp_path / "m.conf", f"plugin {target}"), {}, root=root, cwd=tmp_path
    )
    item = kinds(inventory, "plugin")[0]
    assert item.problem is not None
    assert expected in item.problem
    assert inventory.problems == [item]


# The environment and host files of the loader.


def test_ld_so_preload_from_root(tmp_path: Path, root: Path) -> None:
    helper = build_helper(tmp_path / "deps")
    (root / "etc" / "ld.so.preload").write_text(
        f"# preloaded everywhere\n{helper} libcjson.so.1:{tmp_path / 'gone.so'}\n"
    )
    inventory = collect_inventory(None, {}, root=root, cwd=tmp_path)
    preloads = kinds(inventory, "ld_so_preload")
    source = f"{root / 'etc' / 'ld.so.preload'}:2"
    assert [(item.written, item.path, item.source) for item in preloads] == [
        (str(helper), helper, source),
        ("libcjson.so.1", CJSON, source),
        (str(tmp_path / "gone.so"), None, source),
    ]
    assert not preloads[0].needs_manifest
    assert "not found" in (preloads[2].problem or "")
    assert root / "etc" / "ld.so.preload" in inventory.host_files


def test_ld_preload_env(tmp_path: Path, root: Path) -> None:
    helper = build_helper(tmp_path / "deps")
    env = {"LD_PRELOAD": f"{helper} libcjson.so.1"}
    inventory = collect_inventory(
        make_config(tmp_path / "m.conf", f"plugin {DYNSEC}"), env, root=root, cwd=tmp_path
    )
    preloads = kinds(inventory, "ld_preload")
    assert [(item.path, item.source) for item in preloads] == [
        (helper, "env:LD_PRELOAD"),
        (CJSON, "env:LD_PRELOAD"),
    ]
    # The plugin's libcjson.so.1 is the preloaded object, so it is not listed again.
    assert [item.written for item in inventory.items].count("libcjson.so.1") == 1


def test_ld_audit_env(tmp_path: Path, root: Path) -> None:
    helper = build_helper(tmp_path / "deps")
    inventory = collect_inventory(None, {"LD_AUDIT": str(helper)}, root=root, cwd=tmp_path)
    audit = kinds(inventory, "ld_audit")[0]
    assert (audit.path, audit.source) == (helper, "env:LD_AUDIT")


def test_ld_library_path_entries(tmp_path: Path, root: Path) -> None:
    env = {"LD_LIBRARY_PATH": f"{tmp_path}::{tmp_path / 'none'};rel"}
    inventory = collect_inventory(None, env, root=root, cwd=tmp_path)
    entries = kinds(inventory, "ld_library_path")
    assert [(item.written, item.path) for item in entries] == [
        (str(tmp_path), tmp_path),
        ("", tmp_path),
        (str(tmp_path / "none"), tmp_path / "none"),
        ("rel", tmp_path / "rel"),
    ]
    assert entries[2].note == "no such directory"
    assert inventory.problems == []


def test_nss_modules_from_root(tmp_path: Path, root: Path) -> None:
    (root / "etc" / "nsswitch.conf").write_text(
        "passwd: files systemd\ngroup: files [NOTFOUND=return] hesiod\nhosts: files mymachines\n"
    )
    inventory = collect_inventory(None, {}, root=root, cwd=tmp_path)
    modules = kinds(inventory, "nss_module")
    assert [(item.written, item.source) for item in modules] == [
        ("libnss_systemd.so.2", f"{root / 'etc' / 'nsswitch.conf'}:1"),
        ("libnss_hesiod.so.2", f"{root / 'etc' / 'nsswitch.conf'}:2"),
    ]
    assert modules[0].path is not None
    assert modules[0].path.name == "libnss_systemd.so.2"
    assert not modules[0].needs_manifest
    assert "when the broker starts as root" in (modules[0].note or "")


def test_nss_skipped_for_user_root(tmp_path: Path, root: Path) -> None:
    (root / "etc" / "nsswitch.conf").write_text("passwd: files systemd\n")
    inventory = collect_inventory(
        make_config(tmp_path / "m.conf", "user root"), {}, root=root, cwd=tmp_path
    )
    assert kinds(inventory, "nss_module") == []
    assert any("user root" in warning for warning in inventory.warnings)


def test_nss_hosts_for_bridge_name(tmp_path: Path, root: Path) -> None:
    (root / "etc" / "nsswitch.conf").write_text("passwd: files\nhosts: files mymachines dns\n")
    numeric = make_config(tmp_path / "a.conf", "connection b", "address 192.0.2.1:1883")
    named = make_config(tmp_path / "b.conf", "connection b", "address broker.example:1883")
    assert kinds(collect_inventory(numeric, {}, root=root, cwd=tmp_path), "nss_module") == []
    modules = kinds(collect_inventory(named, {}, root=root, cwd=tmp_path), "nss_module")
    assert [item.written for item in modules] == ["libnss_mymachines.so.2"]
    assert "host name lookups" in (modules[0].note or "")


# OpenSSL.


def test_openssl_conf_env_modules(tmp_path: Path, root: Path) -> None:
    provider = build("marker.c", tmp_path / "prov.so")
    engine = build("marker.c", tmp_path / "eng.so")
    conf = tmp_path / "openssl.cnf"
    conf.write_text(
        "openssl_conf = init\n[init]\nproviders = p\nengines = e\n"
        f"[p]\nmine = ps\n[ps]\nmodule = {provider}\nactivate = 1\n"
        f"[e]\nmine = es\n[es]\ndynamic_path = {engine}\n"
    )
    inventory = collect_inventory(None, {"OPENSSL_CONF": str(conf)}, root=root, cwd=tmp_path)
    modules = kinds(inventory, "openssl_module")
    assert [(item.path, item.source, item.resolved_by) for item in modules] == [
        (provider, f"{conf}:8", "absolute path"),
        (engine, f"{conf}:13", "absolute path"),
    ]
    assert all(item.needs_manifest for item in modules)
    assert conf in inventory.host_files


def test_openssl_default_config_from_root(tmp_path: Path, root: Path) -> None:
    cnf = root / probe_openssl().openssldir.relative_to("/") / "openssl.cnf"
    cnf.write_text("openssl_conf = i\n[i]\nproviders = p\n[p]\nlegacy = l\n[l]\nactivate = 1\n")
    inventory = collect_inventory(None, {}, root=root, cwd=tmp_path)
    legacy = kinds(inventory, "openssl_module")[0]
    assert legacy.resolved_by == "MODULESDIR"
    assert legacy.path == probe_openssl().modulesdir / "legacy.so"


def test_openssl_config_error_is_warning(tmp_path: Path, root: Path) -> None:
    conf = tmp_path / "openssl.cnf"
    conf.write_text("openssl_conf = $undefined\n")
    inventory = collect_inventory(None, {"OPENSSL_CONF": str(conf)}, root=root, cwd=tmp_path)
    assert kinds(inventory, "openssl_module") == []
    assert any("loads no module" in warning for warning in inventory.warnings)


def test_tls_engine_path_id_and_builtin(tmp_path: Path, root: Path) -> None:
    engine = build("marker.c", tmp_path / "engine.so")
    engines = tmp_path / "engines"
    by_id = build("marker.c", engines / "myeng.so")
    config = make_config(
        tmp_path / "m.conf",
        "listener 8883",
        f"tls_engine {engine}",
        "listener 8884",
        "tls_engine myeng",
        "listener 8885",
        "tls_engine dynamic",
        "listener 8886",
        "tls_engine absent",
    )
    env = {"OPENSSL_ENGINES": str(engines)}
    inventory = collect_inventory(config, env, root=root, cwd=tmp_path)
    items = kinds(inventory, "tls_engine")
    assert [(item.written, item.path, item.resolved_by) for item in items] == [
        (str(engine), engine, "absolute path"),
        ("myeng", by_id, "OPENSSL_ENGINES"),
        ("dynamic", None, "built into OpenSSL"),
        ("absent", None, "OPENSSL_ENGINES"),
    ]
    assert items[0].needs_manifest
    assert not items[2].needs_manifest
    assert items[2].problem is None
    assert "absent.so: not found" in (items[3].problem or "")


def test_tls_engine_id_in_enginesdir(tmp_path: Path, root: Path) -> None:
    enginesdir = probe_openssl().enginesdir
    if not (enginesdir / "afalg.so").exists():
        pytest.skip("no afalg engine installed")
    config = make_config(tmp_path / "m.conf", "listener 8883", "tls_engine afalg")
    item = kinds(collect_inventory(config, {}, root=root, cwd=tmp_path), "tls_engine")[0]
    assert (item.path, item.resolved_by) == (enginesdir / "afalg.so", "ENGINESDIR")


# The result document.


def test_default_config_lists_no_plugin(tmp_path: Path, root: Path) -> None:
    inventory = collect_inventory(None, {}, root=root, cwd=tmp_path)
    assert [item for item in inventory.items if item.needs_manifest] == []
    assert inventory.problems == []


def test_inventory_json_document(tmp_path: Path, root: Path) -> None:
    config = make_config(tmp_path / "m.conf", f"plugin {DYNSEC}")
    document = json.loads(collect_inventory(config, {}, root=root, cwd=tmp_path).to_json())
    assert document["format_version"] == 1
    plugin = document["items"][0]
    assert plugin["kind"] == "plugin"
    assert plugin["path"] == str(DYNSEC)
    assert plugin["option"] == {
        "key": "plugin",
        "value": str(DYNSEC),
        "path": str(tmp_path / "m.conf"),
        "line": 1,
    }
    assert plugin["plugin_api"] == "v5"
    assert set(plugin) == {
        "kind",
        "written",
        "path",
        "source",
        "resolved_by",
        "needs_manifest",
        "option",
        "parent",
        "problem",
        "loaded",
        "note",
        "plugin_api",
        "build_id",
    }
    assert isinstance(document["warnings"], list)
    assert isinstance(document["host_files"], list)


def test_environment_of_this_process_unused(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LD_PRELOAD", str(DYNSEC))
    monkeypatch.setenv("OPENSSL_CONF", str(tmp_path / "nowhere.cnf"))
    inventory = collect_inventory(None, {}, root=root, cwd=tmp_path)
    assert kinds(inventory, "ld_preload") == []
    assert not any("nowhere.cnf" in warning for warning in inventory.warnings)
    assert os.environ["LD_PRELOAD"] == str(DYNSEC)
