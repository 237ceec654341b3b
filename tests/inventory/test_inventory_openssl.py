"""The OpenSSL config reader and the module list it builds, checked against real OpenSSL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from inventory_builds import build

from mosquitto_guard.inventory.openssl import (
    OpenSSLConfig,
    OpenSSLConfigError,
    OpenSSLDirs,
    config_module_loads,
    dso_file_name,
    dso_merge,
    engine_load,
    parse_openssl_config,
    probe_openssl,
    provider_load,
)

DIRS = OpenSSLDirs(
    Path("/usr/lib/ssl"), Path("/opt/engines"), Path("/opt/modules"), frozenset({"dynamic"})
)


def parse(
    tmp_path: Path, text: str, env: dict[str, str] | None = None, name: str = "openssl.cnf"
) -> OpenSSLConfig:
    path = tmp_path / name
    path.write_text(text)
    return parse_openssl_config(path, env or {}, tmp_path)


def loads(
    tmp_path: Path, text: str, env: dict[str, str] | None = None
) -> list[tuple[str, str, str | None]]:
    config = parse(tmp_path, text, env)
    return [
        (load.what, load.load_name, load.resolved_by)
        for load in config_module_loads(config, env or {}, DIRS)
    ]


# Syntax.


def test_parse_sections_and_default(tmp_path: Path) -> None:
    config = parse(tmp_path, "a = 1\n[ one ]\nb = 2\n[two]\nc=3\n")
    assert config.get(None, "a") == "1"
    assert config.get("one", "b") == "2"
    assert config.get("two", "c") == "3"
    # A name missing from a section is looked up in the default section.
    assert config.get("two", "a") == "1"


def test_parse_comments_quotes_escapes(tmp_path: Path) -> None:
    config = parse(
        tmp_path, "a = x # comment\nb = \"y # not a comment\"  \nc = one\\#two\nd = 'q\\'r'\n"
    )
    assert config.get(None, "a") == "x"
    assert config.get(None, "b") == "y # not a comment"
    assert config.get(None, "c") == "one#two"
    assert config.get(None, "d") == "q'r"


def test_parse_line_continuation(tmp_path: Path) -> None:
    config = parse(tmp_path, "a = one\\\ntwo\nb = ends\\\\\nc = 3\n")
    assert config.get(None, "a") == "onetwo"
    assert config.get(None, "b") == "ends\\"
    assert config.get(None, "c") == "3"


def test_parse_variables(tmp_path: Path) -> None:
    text = "dir = /base\n[s]\nx = $dir/a\ny = ${dir}/b\nz = $(dir)/c\nw = ${s::x}-$ENV::HOME\n"
    config = parse(tmp_path, text, {"HOME": "/home/m"})
    assert config.get("s", "x") == "/base/a"
    assert config.get("s", "y") == "/base/b"
    assert config.get("s", "z") == "/base/c"
    assert config.get("s", "w") == "/base/a-/home/m"


def test_parse_dollarid_pragma(tmp_path: Path) -> None:
    config = parse(tmp_path, ".pragma dollarid:on\nv = 1\na = x$y\nb = ${v}\n")
    assert config.get(None, "a") == "x$y"
    assert config.get(None, "b") == "1"


def test_parse_repeated_name_moves_to_end(tmp_path: Path) -> None:
    config = parse(tmp_path, "[s]\na = 1\nb = 2\na = 3\n")
    section = config.section("s")
    assert section is not None
    assert [(value.name, value.value) for value in section] == [("b", "2"), ("a", "3")]


def test_parse_sets_other_section(tmp_path: Path) -> None:
    config = parse(tmp_path, "[s]\nother::k = v\n")
    assert config.get("other", "k") == "v"


def test_parse_utf8_bom_skipped(tmp_path: Path) -> None:
    path = tmp_path / "bom.cnf"
    path.write_bytes(b"\xef\xbb\xbfa = 1\n")
    assert parse_openssl_config(path, {}, tmp_path).get(None, "a") == "1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a = $missing\n", "variable 'missing' has no value"),
        ("a = ${b\n", "no closing"),
        ("just words\n", "missing equal sign"),
        ("[unclosed\n", "missing close square bracket"),
        (".pragma dollarid\n", "invalid pragma"),
        (".pragma abspath:maybe\n", "invalid pragma value"),
        (".pragma abspath:on\n.include relative.cnf\n", "relative include path"),
    ],
    ids=[
        "undefined variable",
        "open brace",
        "no equal sign",
        "open bracket",
        "pragma no colon",
        "pragma bad bool",
        "abspath",
    ],
)
def test_parse_rejects_like_openssl(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(OpenSSLConfigError, match=message):
        parse(tmp_path, text)


def test_include_file_and_directory(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "one.cnf").write_text("[inc]\na = 1\n")
    (tmp_path / "conf.d" / "two.CONF").write_text("[inc]\nb = 2\n")
    (tmp_path / "conf.d" / "skip.txt").write_text("[inc]\nc = 3\n")
    (tmp_path / "extra.cnf").write_text("d = 4\n")
    config = parse(tmp_path, ".include conf.d\n.include = extra.cnf\n.include missing.cnf\n")
    assert config.get("inc", "a") == "1"
    assert config.get("inc", "b") == "2"
    assert config.get("inc", "c") is None
    # The section an include ends in carries on after it, as in OpenSSL.
    assert config.get("inc", "d") == "4"
    assert tmp_path / "extra.cnf" in config.files
    assert any("missing.cnf not found" in warning for warning in config.warnings)


def test_include_relative_to_env_dir(tmp_path: Path) -> None:
    (tmp_path / "incdir").mkdir()
    (tmp_path / "incdir" / "x.cnf").write_text("k = from-env-dir\n")
    config = parse(tmp_path, ".include x.cnf\n", {"OPENSSL_CONF_INCLUDE": str(tmp_path / "incdir")})
    assert config.get(None, "k") == "from-env-dir"


def test_include_loop_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OpenSSLConfigError, match="nest deeper"):
        parse(tmp_path, ".include openssl.cnf\n")


# What the modules load.


def test_provider_module_paths(tmp_path: Path) -> None:
    text = """openssl_conf = init
[init]
providers = provs
[provs]
default = builtin
abs = abs_sect
rel = rel_sect
byname = name_sect
renamed = renamed_sect
inactive = inactive_sect
[builtin]
activate = 1
[abs_sect]
module = /opt/p/abs.so
activate = 1
[rel_sect]
module = sub/rel.so
activate = 1
[name_sect]
activate = 1
[renamed_sect]
identity = legacy
activate = yes
[inactive_sect]
module = /opt/p/inactive.so
"""
    assert loads(tmp_path, text) == [
        ("provider", "/opt/p/abs.so", "absolute path"),
        ("provider", "/opt/modules/sub/rel.so", "MODULESDIR"),
        ("provider", "/opt/modules/byname.so", "MODULESDIR"),
        ("provider", "/opt/modules/legacy.so", "MODULESDIR"),
    ]


def test_provider_modules_env_dir(tmp_path: Path) -> None:
    text = "openssl_conf = init\n[init]\nproviders = p\n[p]\nx = s\n[s]\nactivate = 0\n"
    config = parse(tmp_path, text)
    found = config_module_loads(config, {"OPENSSL_MODULES": "/env/mods"}, DIRS)
    assert [(load.load_name, load.resolved_by) for load in found] == [
        ("/env/mods/x.so", "OPENSSL_MODULES"),
    ]
    assert found[0].note is not None
    assert "activate = 0" in found[0].note


def test_engine_loads(tmp_path: Path) -> None:
    text = """openssl_conf = init
[init]
engines.1 = engs
[engs]
dyn = dyn_sect
bare = bare_sect
byid = id_sect
renamed = renamed_sect
quiet = quiet_sect
builtin = builtin_sect
[dyn_sect]
dynamic_path = /opt/e/dyn.so
default_algorithms = ALL
[bare_sect]
dynamic_path = myeng
[id_sect]
init = 1
[renamed_sect]
engine_id = other
default_algorithms = RSA
[quiet_sect]
soft_load = 1
[builtin_sect]
engine_id = dynamic
init = 0
"""
    assert loads(tmp_path, text) == [
        ("engine", "/opt/e/dyn.so", "absolute path"),
        ("engine", "libmyeng.so", None),
        ("engine", "/opt/engines/byid.so", "ENGINESDIR"),
        ("engine", "/opt/engines/other.so", "ENGINESDIR"),
    ]


def test_config_module_dso(tmp_path: Path) -> None:
    text = (
        "openssl_conf = init\n[init]\nmymod = m\nbare = b\neng = e\n"
        "[m]\npath = /opt/m.so\n[b]\nx = 1\n[e]\n"
    )
    # `eng` is a prefix of `engines`, so OpenSSL runs the engines module, which loads nothing.
    assert loads(tmp_path, text) == [
        ("config module", "/opt/m.so", "absolute path"),
        ("config module", "libbare.so", None),
    ]


def test_no_openssl_conf_loads_nothing(tmp_path: Path) -> None:
    assert loads(tmp_path, "[init]\nproviders = p\n") == []


def test_dso_name_rules() -> None:
    assert dso_file_name("foo", extension_only=False) == "libfoo.so"
    assert dso_file_name("foo", extension_only=True) == "foo.so"
    assert dso_file_name("foo.so", extension_only=True) == "foo.so.so"
    assert dso_file_name("./foo", extension_only=True) == "./foo"
    assert dso_merge("x.so", "/dir/") == "/dir/x.so"
    assert dso_merge("/abs.so", "/dir") == "/abs.so"


def test_engine_and_provider_lookups() -> None:
    assert engine_load("dynamic", {}, DIRS) is None
    assert engine_load("pkcs11", {}, DIRS) == ("/opt/engines/pkcs11.so", "ENGINESDIR")
    assert engine_load("/x/e.so", {}, DIRS) == ("/x/e.so", "absolute path")
    assert engine_load("e", {"OPENSSL_ENGINES": "/env"}, DIRS) == ("/env/e.so", "OPENSSL_ENGINES")
    assert provider_load("fips", None, {}, DIRS) == ("/opt/modules/fips.so", "MODULESDIR")


def test_probe_openssl_debian_dirs() -> None:
    dirs = probe_openssl()
    assert dirs.warning is None
    assert dirs.openssldir == Path("/usr/lib/ssl")
    assert dirs.enginesdir == Path("/usr/lib/x86_64-linux-gnu/engines-3")
    assert dirs.modulesdir == Path("/usr/lib/x86_64-linux-gnu/ossl-modules")
    assert "dynamic" in dirs.builtin_engines


# Cross-check with the real OpenSSL: modules that record their own loading.


def marker_module(path: Path, log: Path, text: str) -> Path:
    return build(
        "marker.c",
        path,
        defines={
            "MARKER_FILE": f'"{log}"',
            "MARKER_TEXT": f'"{text}\\n"',
        },
    )


def openssl_loaded(config: Path, log: Path, env: dict[str, str]) -> list[str]:
    log.unlink(missing_ok=True)
    child_env = {"PATH": "/usr/bin:/bin", "OPENSSL_CONF": str(config), **env}
    subprocess.run(
        ["openssl", "list", "-providers"],
        capture_output=True,
        env=child_env,
        cwd=config.parent,
        check=False,
        timeout=60,
    )
    return log.read_text().split() if log.exists() else []


def test_real_openssl_loads_what_inventory_lists(tmp_path: Path) -> None:
    log = tmp_path / "loaded.log"
    modules = tmp_path / "modules"
    marker_module(tmp_path / "abs-provider.so", log, "abs-provider")
    marker_module(modules / "named.so", log, "named-provider")
    marker_module(tmp_path / "engine.so", log, "engine")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "providers.cnf").write_text(
        "[provs]\nabs = abs_sect\nnamed = named_sect\n"
        "[abs_sect]\nmodule = $ENV::PLUGINS/abs-provider.so\nactivate = 1\n"
        "[named_sect]\nactivate = 1\n"
    )
    config = tmp_path / "openssl.cnf"
    # Engines come last: these test modules are no real engines, so OpenSSL stops after one.
    config.write_text(
        "openssl_conf = init\n.include conf.d\n"
        "[init]\nproviders = provs\nengines = engs\n"
        "[engs]\ne = eng_sect\n[eng_sect]\ndynamic_path = " + str(tmp_path / "engine.so") + "\n"
    )
    env = {"OPENSSL_MODULES": str(modules), "PLUGINS": str(tmp_path)}
    parsed = parse_openssl_config(config, env, tmp_path)
    listed = [load.load_name for load in config_module_loads(parsed, env, probe_openssl())]
    assert listed == [
        str(tmp_path / "abs-provider.so"),
        str(modules / "named.so"),
        str(tmp_path / "engine.so"),
    ]
    assert openssl_loaded(config, log, env) == ["abs-provider", "named-provider", "engine"]


def test_real_openssl_engine_by_id(tmp_path: Path) -> None:
    log = tmp_path / "loaded.log"
    marker_module(tmp_path / "engines" / "myid.so", log, "engine-by-id")
    config = tmp_path / "openssl.cnf"
    config.write_text("openssl_conf = init\n[init]\nengines = e\n[e]\nmyid = s\n[s]\ninit = 1\n")
    env = {"OPENSSL_ENGINES": str(tmp_path / "engines")}
    parsed = parse_openssl_config(config, env, tmp_path)
    listed = config_module_loads(parsed, env, probe_openssl())
    assert [(load.load_name, load.resolved_by) for load in listed] == [
        (str(tmp_path / "engines" / "myid.so"), "OPENSSL_ENGINES"),
    ]
    assert openssl_loaded(config, log, env) == ["engine-by-id"]


def test_real_openssl_ignores_undefined_variable_file(tmp_path: Path) -> None:
    log = tmp_path / "loaded.log"
    marker_module(tmp_path / "p.so", log, "provider")
    config = tmp_path / "openssl.cnf"
    config.write_text(
        "openssl_conf = init\n[init]\nproviders = p\n[p]\nx = s\n"
        f"[s]\nmodule = {tmp_path}/p.so\nactivate = 1\nbroken = $nowhere\n"
    )
    with pytest.raises(OpenSSLConfigError):
        parse_openssl_config(config, {}, tmp_path)
    assert openssl_loaded(config, log, {}) == []


def test_real_openssl_config_module_name(tmp_path: Path) -> None:
    log = tmp_path / "loaded.log"
    marker_module(tmp_path / "libmymod.so", log, "config-module")
    config = tmp_path / "openssl.cnf"
    config.write_text("openssl_conf = init\n[init]\nmymod = m\n[m]\nx = 1\n")
    env = {"LD_LIBRARY_PATH": str(tmp_path)}
    parsed = parse_openssl_config(config, env, tmp_path)
    listed = config_module_loads(parsed, env, probe_openssl())
    assert [load.load_name for load in listed] == ["libmymod.so"]
    assert openssl_loaded(config, log, env) == ["config-module"]


def test_config_with_nul_byte_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "openssl.cnf"
    config.write_bytes(b"openssl_conf = init\n\0[init]\nproviders = p\n")
    with pytest.raises(OpenSSLConfigError) as raised:
        parse_openssl_config(config, {}, tmp_path)
    assert str(raised.value) == (f"{config}: contains a NUL byte, which OpenSSL reads differently")
