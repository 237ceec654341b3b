"""The loader's search, checked against the real glibc loader wherever a test-built file allows."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inventory_builds import (
    add_flags_1,
    build,
    build_helper,
    build_plugin,
    real_loader_error,
    real_loader_maps,
    set_machine,
)

from mosquitto_guard.inventory.elf import DF_1_NODEFLIB, ElfTarget, read_elf
from mosquitto_guard.inventory.ldpath import (
    CacheFormatError,
    LdCache,
    LibraryResolver,
    LoadedObject,
    LoaderSetup,
    Namespace,
    expand_tokens,
    parse_loader_help,
    probe_loader,
    split_search_path,
)

HOST = ElfTarget(64, True, "EM_X86_64")
CJSON = Path("/lib/x86_64-linux-gnu/libcjson.so.1")

# `ld.so --help` of Debian 12 (glibc 2.36) on an x86-64-v4 machine, trimmed.
LOADER_HELP = """\
Usage: /lib64/ld-linux-x86-64.so.2 [OPTION]... EXECUTABLE-FILE [ARGS-FOR-PROGRAM...]

This program interpreter self-identifies as: /lib64/ld-linux-x86-64.so.2

Shared library search path:
  (libraries located via /etc/ld.so.cache)
  /lib/x86_64-linux-gnu (system search path)
  /usr/lib/x86_64-linux-gnu (system search path)
  /lib (system search path)
  /usr/lib (system search path)

Subdirectories of glibc-hwcaps directories, in priority order:
  x86-64-v4 (supported, searched)
  x86-64-v3 (supported, searched)
  x86-64-v2
  x86-64-v1 (supported, searched)

Legacy HWCAP subdirectories under library search path directories:
  x86_64 (AT_PLATFORM; supported, searched)
  tls (supported, searched)
  avx512_1
  x86_64 (supported, searched)
"""


def fresh_resolver(env: dict[str, str], cwd: Path) -> LibraryResolver:
    setup = probe_loader()
    return LibraryResolver(env, cwd, setup, LdCache.load(setup.cache_path), HOST)


def resolve_tree(
    resolver: LibraryResolver, path: Path
) -> dict[str, tuple[Path | None, str, str | None]]:
    """Resolve `path` and its libraries; return name -> (path, how, problem)."""
    namespace = Namespace()
    top = resolver.resolve(str(path), None, namespace)
    assert top.loaded is not None, top.problem
    result = {}
    for dependency in resolver.load_dependencies(top.loaded, namespace):
        found = dependency.resolution
        result[found.name] = (found.path, found.resolved_by, found.problem)
    return result


def under(paths: set[Path], directory: Path) -> set[Path]:
    return {path for path in paths if directory in path.parents}


# Loader facts from `ld.so --help`.


def test_parse_loader_help_dirs() -> None:
    setup = parse_loader_help(LOADER_HELP, Path("/lib64/ld-linux-x86-64.so.2"))
    assert setup is not None
    assert setup.system_dirs == (
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib",
        "/usr/lib",
    )
    assert setup.cache_path == Path("/etc/ld.so.cache")
    assert setup.lib == "lib/x86_64-linux-gnu"
    assert setup.platform == "x86_64"


def test_parse_loader_help_subdir_order() -> None:
    setup = parse_loader_help(LOADER_HELP, Path("/lib64/ld-linux-x86-64.so.2"))
    assert setup is not None
    # Unsupported x86-64-v2 is left out; the legacy order is what LD_DEBUG=libs shows.
    assert setup.hwcaps == ("x86-64-v4", "x86-64-v3", "x86-64-v1")
    assert setup.subdirs == (
        "glibc-hwcaps/x86-64-v4",
        "glibc-hwcaps/x86-64-v3",
        "glibc-hwcaps/x86-64-v1",
        "tls/x86_64/x86_64",
        "tls/x86_64",
        "tls",
        "x86_64/x86_64",
        "x86_64",
        "",
    )


def test_parse_loader_help_rejects_other_text() -> None:
    assert (
        parse_loader_help("musl libc (x86_64)\nVersion 1.2.3\n", Path("/lib/ld-musl.so.1")) is None
    )


def test_probe_loader_on_this_host() -> None:
    setup = probe_loader()
    assert setup.warning is None
    assert "/lib/x86_64-linux-gnu" in setup.system_dirs
    assert setup.subdirs[-1] == ""


def test_probe_loader_missing_interpreter_guesses(tmp_path: Path) -> None:
    setup = probe_loader(tmp_path / "no-such-ld.so")
    assert setup.warning is not None
    assert "cannot run" in setup.warning
    assert setup.subdirs == ("",)


# Dynamic string tokens and search-path splitting.


def test_expand_tokens_forms() -> None:
    setup = probe_loader()
    assert expand_tokens("$ORIGIN/x", "/opt/p", setup) == "/opt/p/x"
    assert expand_tokens("${ORIGIN}/../lib", "/opt/p", setup) == "/opt/p/../lib"
    assert expand_tokens("/a/$LIB/b", None, setup) == "/a/lib/x86_64-linux-gnu/b"
    assert expand_tokens("/a/$PLATFORM", None, setup) == "/a/x86_64"
    # `$ORIGINAL` is not the token `$ORIGIN`, so it stays as written.
    assert expand_tokens("/a/$ORIGINAL", None, setup) == "/a/$ORIGINAL"


def test_expand_tokens_unknown_origin() -> None:
    assert expand_tokens("$ORIGIN/x", None, probe_loader()) is None


def test_split_search_path_rules() -> None:
    setup = probe_loader()
    assert split_search_path("/a/:/b//::/a", ":", None, setup) == ["/a", "/b", ""]
    assert split_search_path("/x;/y:$ORIGIN/z", ":;", None, setup) == ["/x", "/y"]
    assert split_search_path("/", ":", None, setup) == ["/"]


# The cache file.


def cached(cache: LdCache, name: str, target: ElfTarget, hwcaps: tuple[str, ...]) -> str | None:
    entry = cache.lookup(name, target, hwcaps)
    return None if entry is None else entry.path


def cache_bytes(entries: list[tuple[str, str, int, int]], hwcaps: Sequence[str] = ()) -> bytes:
    """Build a little-endian glibc-ld.so.cache1.1 file with an optional hwcaps extension."""
    strings = bytearray()
    offsets: dict[str, int] = {}
    header_size = 48 + 24 * len(entries)

    def intern(text: str) -> int:
        if text not in offsets:
            offsets[text] = header_size + len(strings)
            strings.extend(text.encode() + b"\0")
        return offsets[text]

    records = b"".join(
        struct.pack("<iIIIQ", flags, intern(name), intern(path), 0, hwcap)
        for name, path, flags, hwcap in entries
    )
    hwcap_offsets = [intern(name) for name in hwcaps]
    while (header_size + len(strings)) % 4:
        strings.append(0)
    extension_offset = header_size + len(strings)
    extension = b""
    if hwcaps:
        data_offset = extension_offset + 8 + 16
        extension = struct.pack("<II", 0xEAA42174, 1)
        extension += struct.pack("<IIII", 1, 0, data_offset, 4 * len(hwcaps))
        extension += b"".join(struct.pack("<I", offset) for offset in hwcap_offsets)
    header = b"glibc-ld.so.cache1.1" + struct.pack("<II", len(entries), len(strings))
    header += bytes([2, 0, 0, 0]) + struct.pack("<I", extension_offset if hwcaps else 0)
    header += bytes(12)
    return header + records + bytes(strings) + extension


def test_cache_parse_plain_entries() -> None:
    cache = LdCache.parse(
        cache_bytes(
            [
                ("libfoo.so.1", "/lib32/libfoo.so.1", 0x0003, 0),
                ("libfoo.so.1", "/usr/lib/x86_64-linux-gnu/libfoo.so.1", 0x0303, 0),
            ]
        )
    )
    entry = cache.lookup("libfoo.so.1", HOST, ())
    assert entry is not None
    assert entry.path == "/usr/lib/x86_64-linux-gnu/libfoo.so.1"
    assert cached(cache, "libfoo.so.1", ElfTarget(32, True, "EM_386"), ()) == "/lib32/libfoo.so.1"
    assert cache.lookup("libbar.so.1", HOST, ()) is None


def test_cache_hwcaps_entry_wins_when_active() -> None:
    extension = 1 << 62
    cache = LdCache.parse(
        cache_bytes(
            [
                (
                    "libfoo.so.1",
                    "/usr/lib/glibc-hwcaps/x86-64-v3/libfoo.so.1",
                    0x0303,
                    extension | 1,
                ),
                (
                    "libfoo.so.1",
                    "/usr/lib/glibc-hwcaps/x86-64-v2/libfoo.so.1",
                    0x0303,
                    extension | 0,
                ),
                ("libfoo.so.1", "/usr/lib/libfoo.so.1", 0x0303, 0),
            ],
            hwcaps=["x86-64-v2", "x86-64-v3"],
        )
    )
    both = ("x86-64-v3", "x86-64-v2")
    assert cached(cache, "libfoo.so.1", HOST, both) == "/usr/lib/glibc-hwcaps/x86-64-v3/libfoo.so.1"
    assert (
        cached(cache, "libfoo.so.1", HOST, ("x86-64-v2",))
        == "/usr/lib/glibc-hwcaps/x86-64-v2/libfoo.so.1"
    )
    assert cached(cache, "libfoo.so.1", HOST, ()) == "/usr/lib/libfoo.so.1"


def test_cache_after_old_format_header() -> None:
    new = cache_bytes([("libfoo.so.1", "/lib/libfoo.so.1", 0x0303, 0)])
    old = b"ld.so-1.7.0\0" + struct.pack("<I", 0)
    cache = LdCache.parse(old + new)
    assert cached(cache, "libfoo.so.1", HOST, ()) == "/lib/libfoo.so.1"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"ld.so-1.7.0",
        b"glibc-ld.so.cache1.1",
        b"glibc-ld.so.cache1.0" + bytes(40),
        b"glibc-ld.so.cache1.1" + struct.pack("<II", 1000, 0) + bytes(20),
    ],
    ids=["empty", "old only", "header cut", "wrong version", "entries past end"],
)
def test_cache_rejects_malformed(data: bytes) -> None:
    with pytest.raises(CacheFormatError):
        LdCache.parse(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 199))
def test_cache_parse_fuzz(noise: bytes, cut: int) -> None:
    data = cache_bytes([("libfoo.so.1", "/lib/libfoo.so.1", 0x0303, 0)], hwcaps=["x86-64-v2"])
    mutated = data[:cut] + noise + data[cut + len(noise) :]
    # Any outcome but CacheFormatError would escape as a crash.
    with contextlib.suppress(CacheFormatError):
        LdCache.parse(mutated)


def test_real_cache_finds_cjson() -> None:
    cache = LdCache.load(probe_loader().cache_path)
    entry = cache.lookup("libcjson.so.1", HOST, probe_loader().hwcaps)
    assert entry is not None
    assert entry.path == str(CJSON)


# Searching, with the real loader as the reference.


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Directories for one test: plugins in `tree`, their libraries in `tree/deps`."""
    (tmp_path / "deps").mkdir()
    return tmp_path


def test_rpath_origin_resolves_helper(tree: Path) -> None:
    helper = build_helper(tree / "deps")
    plugin = build_plugin(
        tree / "p.so", helper, flags=["-Wl,--disable-new-dtags,-rpath,$ORIGIN/deps"]
    )
    found = resolve_tree(fresh_resolver({}, tree), plugin)
    assert found["libinvhelper.so.1"] == (helper, "RPATH", None)
    assert under(real_loader_maps(plugin), tree) == {plugin, helper}


def test_rpath_beats_ld_library_path(tree: Path) -> None:
    helper = build_helper(tree / "deps")
    other = build_helper(tree / "other")
    plugin = build_plugin(
        tree / "p.so", helper, flags=["-Wl,--disable-new-dtags,-rpath,$ORIGIN/deps"]
    )
    env = {"LD_LIBRARY_PATH": str(other.parent)}
    assert resolve_tree(fresh_resolver(env, tree), plugin)["libinvhelper.so.1"][:2] == (
        helper,
        "RPATH",
    )
    assert helper in real_loader_maps(plugin, env)


def test_ld_library_path_beats_runpath(tree: Path) -> None:
    helper = build_helper(tree / "deps")
    other = build_helper(tree / "other")
    plugin = build_plugin(
        tree / "p.so", helper, flags=["-Wl,--enable-new-dtags,-rpath,$ORIGIN/deps"]
    )
    env = {"LD_LIBRARY_PATH": str(other.parent)}
    found = resolve_tree(fresh_resolver(env, tree), plugin)
    assert found["libinvhelper.so.1"][:2] == (other, "LD_LIBRARY_PATH")
    assert resolve_tree(fresh_resolver({}, tree), plugin)["libinvhelper.so.1"][:2] == (
        helper,
        "RUNPATH",
    )
    assert other in real_loader_maps(plugin, env)


def build_chain(tree: Path, tag: str) -> tuple[Path, Path, Path]:
    """Build p.so -> libmid.so.1 -> libinvhelper.so.1, where only p.so names search paths."""
    helper = build_helper(tree / "deps")
    middle = build_helper(
        tree / "mid",
        "libmid.so.1",
        function="middle",
        flags=[
            "-Wl,--no-as-needed",
            "-L",
            str(helper.parent),
            f"-l:{helper.name}",
        ],
    )
    plugin = build(
        "inventory_helper.c",
        tree / "p.so",
        defines={"HELPER_NAME": "top"},
        flags=[
            "-Wl,--no-as-needed",
            "-L",
            str(middle.parent),
            f"-l:{middle.name}",
            f"-Wl,{tag},-rpath,$ORIGIN/deps:$ORIGIN/mid",
        ],
    )
    return plugin, middle, helper


def test_rpath_inherited_by_dependency(tree: Path) -> None:
    plugin, middle, helper = build_chain(tree, "--disable-new-dtags")
    found = resolve_tree(fresh_resolver({}, tree), plugin)
    assert found["libmid.so.1"][:2] == (middle, "RPATH")
    # libmid.so.1 has no search path; the loader uses the RPATH of p.so, which loaded it.
    assert found["libinvhelper.so.1"][:2] == (helper, "RPATH")
    assert under(real_loader_maps(plugin), tree) == {plugin, middle, helper}


def test_runpath_not_inherited_by_dependency(tree: Path) -> None:
    plugin, middle, _helper = build_chain(tree, "--enable-new-dtags")
    found = resolve_tree(fresh_resolver({}, tree), plugin)
    assert found["libmid.so.1"][:2] == (middle, "RUNPATH")
    path, _how, problem = found["libinvhelper.so.1"]
    assert path is None
    assert problem is not None
    assert "libinvhelper.so.1: not found" in problem
    assert "libinvhelper.so.1" in real_loader_error(plugin)


def test_bare_name_needs_ld_library_path(tree: Path) -> None:
    helper = build_helper(tree / "deps")
    namespace = Namespace()
    missing = fresh_resolver({}, tree).resolve(helper.name, None, namespace)
    assert missing.path is None
    assert "not found; searched" in (missing.problem or "")
    found = fresh_resolver({"LD_LIBRARY_PATH": str(helper.parent)}, tree).resolve(
        helper.name, None, Namespace()
    )
    assert (found.path, found.resolved_by) == (helper, "LD_LIBRARY_PATH")


def test_empty_ld_library_path_entry_is_cwd(tree: Path) -> None:
    helper = build_helper(tree / "deps")
    found = fresh_resolver({"LD_LIBRARY_PATH": "/nonexistent::"}, helper.parent).resolve(
        helper.name, None, Namespace()
    )
    assert found.path == helper


def test_bare_name_through_cache() -> None:
    found = fresh_resolver({}, Path("/")).resolve("libcjson.so.1", None, Namespace())
    assert (found.path, found.resolved_by) == (CJSON, "ld.so.cache")


def test_slash_name_relative_to_cwd(tree: Path) -> None:
    helper = build_helper(tree / "deps")
    found = fresh_resolver({}, tree).resolve("deps/libinvhelper.so.1", None, Namespace())
    assert (found.path, found.resolved_by) == (helper, "relative to the working directory")


def test_32bit_candidate_skipped(tree: Path) -> None:
    helper = build_helper(tree / "deps")
    build_helper(tree / "lib32", flags=["-m32", "-nostdlib"])
    env = {"LD_LIBRARY_PATH": f"{tree / 'lib32'}:{tree / 'deps'}"}
    found = fresh_resolver(env, tree).resolve(helper.name, None, Namespace())
    assert found.path == helper
    assert found.skipped == (f"{tree / 'lib32' / helper.name} (wrong ELF class: ELFCLASS32)",)
    plugin = build_plugin(tree / "p.so", helper)
    assert helper in real_loader_maps(plugin, env)


def test_other_machine_candidate_skipped(tree: Path) -> None:
    helper = build_helper(tree / "deps")
    arm = build_helper(tree / "arm")
    set_machine(arm, 183)
    env = {"LD_LIBRARY_PATH": f"{arm.parent}:{helper.parent}"}
    found = fresh_resolver(env, tree).resolve(helper.name, None, Namespace())
    assert found.path == helper
    assert "wrong machine: EM_AARCH64" in found.skipped[0]
    plugin = build_plugin(tree / "p.so", helper)
    assert helper in real_loader_maps(plugin, env)


def test_malformed_candidate_ends_search(tree: Path) -> None:
    helper = build_helper(tree / "deps")
    (tree / "bad").mkdir()
    (tree / "bad" / helper.name).write_text("not a library\n")
    env = {"LD_LIBRARY_PATH": f"{tree / 'bad'}:{helper.parent}"}
    found = fresh_resolver(env, tree).resolve(helper.name, None, Namespace())
    assert found.path == tree / "bad" / helper.name
    assert "file too short" in (found.problem or "")
    plugin = build_plugin(tree / "p.so", helper)
    assert "file too short" in real_loader_error(plugin, env)
    (tree / "bad" / helper.name).write_text("not a library, but longer than an ELF header " * 3)
    found = fresh_resolver(env, tree).resolve(helper.name, None, Namespace())
    assert "invalid ELF header" in (found.problem or "")
    assert "invalid ELF header" in real_loader_error(plugin, env)


def test_directory_candidate_ends_search(tree: Path) -> None:
    helper = build_helper(tree / "deps")
    (tree / "bad" / helper.name).mkdir(parents=True)
    env = {"LD_LIBRARY_PATH": f"{tree / 'bad'}:{helper.parent}"}
    found = fresh_resolver(env, tree).resolve(helper.name, None, Namespace())
    assert "is a directory" in (found.problem or "")
    plugin = build_plugin(tree / "p.so", helper)
    real_loader_error(plugin, env)


def test_dependency_cycle_terminates(tree: Path) -> None:
    deps = tree / "deps"
    build_helper(deps, "libcyclea.so.1", function="cycle_a")
    cycle_b = build_helper(
        deps,
        "libcycleb.so.1",
        function="cycle_b",
        flags=[
            "-Wl,--no-as-needed",
            "-L",
            str(deps),
            "-l:libcyclea.so.1",
            "-Wl,-rpath,$ORIGIN",
        ],
    )
    cycle_a = build_helper(
        deps,
        "libcyclea.so.1",
        function="cycle_a",
        flags=[
            "-Wl,--no-as-needed",
            "-L",
            str(deps),
            "-l:libcycleb.so.1",
            "-Wl,-rpath,$ORIGIN",
        ],
    )
    assert read_elf(cycle_a).needed[0] == "libcycleb.so.1"
    assert read_elf(cycle_b).needed[0] == "libcyclea.so.1"
    found = resolve_tree(fresh_resolver({}, tree), cycle_a)
    assert "libcyclea.so.1" not in found
    assert found["libcycleb.so.1"][0] == cycle_b
    assert under(real_loader_maps(cycle_a), tree) == {cycle_a, cycle_b}


def test_nodeflib_skips_system_dirs(tree: Path) -> None:
    plain = build(
        "inventory_helper.c",
        tree / "plain.so",
        flags=["-Wl,--no-as-needed", "-l:libcjson.so.1", "-Wl,-z,now"],
    )
    nodeflib = tree / "nodeflib.so"
    shutil.copy(plain, nodeflib)
    add_flags_1(nodeflib, DF_1_NODEFLIB)
    assert resolve_tree(fresh_resolver({}, tree), plain)["libcjson.so.1"][0] == CJSON
    path, _how, problem = resolve_tree(fresh_resolver({}, tree), nodeflib)["libcjson.so.1"]
    assert path is None
    assert problem is not None
    assert "libcjson.so.1" in real_loader_error(nodeflib)


def test_hwcaps_subdir_searched_first(tree: Path) -> None:
    setup = probe_loader()
    if not setup.hwcaps:
        pytest.skip("this loader searches no glibc-hwcaps subdirectory")
    helper = build_helper(tree / "deps")
    preferred = tree / "deps" / "glibc-hwcaps" / setup.hwcaps[-1] / helper.name
    preferred.parent.mkdir(parents=True)
    shutil.copy(helper, preferred)
    env = {"LD_LIBRARY_PATH": str(helper.parent)}
    found = fresh_resolver(env, tree).resolve(helper.name, None, Namespace())
    assert found.path == preferred
    plugin = build_plugin(tree / "p.so", helper)
    assert preferred in real_loader_maps(plugin, env)


def test_already_loaded_soname_reused(tree: Path) -> None:
    helper = build_helper(tree / "deps")
    copy = build_helper(tree / "copy")
    resolver = fresh_resolver({}, tree)
    namespace = Namespace()
    first = resolver.resolve(str(helper), None, namespace)
    assert first.new
    again = resolver.resolve(helper.name, None, namespace)
    assert (again.path, again.resolved_by, again.new) == (helper, "already loaded", False)
    other = resolver.resolve(str(copy), None, namespace)
    assert other.new


def test_same_file_by_two_names_mapped_once(tree: Path) -> None:
    helper = build_helper(tree / "deps")
    link = tree / "link.so"
    os.symlink(helper, link)
    resolver = fresh_resolver({}, tree)
    namespace = Namespace()
    assert resolver.resolve(str(helper), None, namespace).new
    again = resolver.resolve(str(link), None, namespace)
    assert not again.new
    assert again.loaded is not None
    assert again.loaded.path == helper


def test_main_rpath_applies_to_dlopen(tree: Path) -> None:
    helper = build_helper(tree / "deps")
    main_file = build(
        "inventory_helper.c",
        tree / "main.so",
        defines={"HELPER_NAME": "main"},
        flags=["-Wl,--disable-new-dtags,-rpath,$ORIGIN/deps"],
    )
    main = LoadedObject(main_file, read_elf(main_file))
    setup = probe_loader()
    resolver = LibraryResolver({}, tree, setup, LdCache.load(setup.cache_path), HOST, main)
    found = resolver.resolve(helper.name, None, Namespace())
    assert (found.path, found.resolved_by) == (helper, "RPATH")


def test_guessed_setup_is_usable(tree: Path) -> None:
    setup = LoaderSetup(
        Path("/x"),
        ("/lib/x86_64-linux-gnu",),
        ("",),
        (),
        "x86_64",
        "lib/x86_64-linux-gnu",
        Path("/etc/ld.so.cache"),
    )
    resolver = LibraryResolver({}, tree, setup, None, HOST)
    found = resolver.resolve("libcjson.so.1", None, Namespace())
    assert (found.path, found.resolved_by) == (CJSON, "default directory")
