"""The struct-based ELF reader: the same results as the pyelftools reader, and only ElfError."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inventory_builds import (
    add_flags_1,
    build,
    build_helper,
    build_plugin,
    build_program,
    make_config,
)

from mosquitto_guard.inventory.collect import collect_inventory
from mosquitto_guard.inventory.elf import (
    DF_1_NODEFLIB,
    PLUGIN_SYMBOLS,
    ElfError,
    ElfInfo,
    read_build_id,
    read_elf,
)
from mosquitto_guard.inventory.fastelf import read_elf_fast
from mosquitto_guard.inventory.openssl import OpenSSLDirs, probe_openssl

SYSTEM_LIBRARIES = Path("/usr/lib/x86_64-linux-gnu")
# The plugin entry points, symbols every C library defines, one that the test plugins import and
# one that no file defines, so that lookups hit, miss, and find undefined entries.
SYMBOLS = (*PLUGIN_SYMBOLS, "malloc", "printf", "inventory_helper", "no_such_symbol_anywhere")


def read_both(path: Path) -> tuple[ElfInfo | str, ElfInfo | str]:
    """Read `path` with both readers; an ElfError is returned as its message."""
    results: list[ElfInfo | str] = []
    for reader in (read_elf, read_elf_fast):
        try:
            info = reader(path, SYMBOLS)
        except ElfError as error:
            results.append(str(error))
        else:
            results.append(dataclasses.replace(info, build_id=None))
    return results[0], results[1]


def system_libraries() -> list[Path]:
    if not SYSTEM_LIBRARIES.is_dir():
        return []
    return sorted(
        path for path in SYSTEM_LIBRARIES.rglob("*.so*") if ".so" in path.name and path.is_file()
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fastelf")
    helper = build_helper(base / "deps")
    return {
        "helper": helper,
        "rpath": build_plugin(
            base / "rpath.so", helper, flags=["-Wl,--disable-new-dtags,-rpath,$ORIGIN/deps"]
        ),
        "runpath": build_plugin(
            base / "runpath.so",
            helper,
            flags=["-Wl,--enable-new-dtags,-rpath,${ORIGIN}/deps:/opt/x"],
        ),
        "legacy": build_plugin(base / "legacy.so", helper, legacy=True),
        "sysv": build_plugin(base / "sysv.so", helper, flags=["-Wl,--hash-style=sysv"]),
        "both hashes": build_plugin(base / "both.so", helper, flags=["-Wl,--hash-style=both"]),
        "nodeflib": add_flags_1(
            build_plugin(base / "nodeflib.so", helper, flags=["-Wl,-z,now"]), DF_1_NODEFLIB
        ),
        "32bit": build("inventory_helper.c", base / "lib32.so", flags=["-m32", "-nostdlib"]),
        "marker": build("marker.c", base / "marker.so"),
        "pie": build_program(base / "program-pie", "-pie"),
        "exec": build_program(base / "program-exec", "-no-pie"),
    }


def test_fast_reader_matches_pyelftools_on_system_libraries() -> None:
    libraries = system_libraries()
    if not libraries:
        pytest.skip(f"{SYSTEM_LIBRARIES} holds no shared objects on this host")
    differences = []
    for path in libraries:
        reference, fast = read_both(path)
        if reference != fast:
            differences.append(f"{path}:\n  pyelftools {reference}\n  fast       {fast}")
    assert differences == [], "\n".join(differences[:5])


@pytest.mark.parametrize(
    "name",
    [
        "helper",
        "rpath",
        "runpath",
        "legacy",
        "sysv",
        "both hashes",
        "nodeflib",
        "32bit",
        "marker",
        "pie",
        "exec",
    ],
)
def test_fast_reader_matches_pyelftools_on_built_files(built: dict[str, Path], name: str) -> None:
    reference, fast = read_both(built[name])
    assert isinstance(fast, ElfInfo), fast
    assert fast == reference


def test_fast_reader_finds_plugin_symbols(built: dict[str, Path]) -> None:
    assert "mosquitto_plugin_version" in read_elf_fast(built["rpath"], SYMBOLS).exported
    assert "mosquitto_auth_plugin_version" in read_elf_fast(built["legacy"], SYMBOLS).exported
    # Only DT_HASH: the lookup must walk the older table.
    assert "mosquitto_plugin_version" in read_elf_fast(built["sysv"], SYMBOLS).exported
    # Imported, so in the table but undefined.
    assert "inventory_helper" not in read_elf_fast(built["rpath"], SYMBOLS).exported


def test_fast_reader_leaves_build_id_empty(built: dict[str, Path]) -> None:
    assert read_elf_fast(built["rpath"]).build_id is None
    assert read_build_id(built["rpath"]) == read_elf(built["rpath"]).build_id
    assert read_build_id(built["rpath"]) is not None


def test_inventory_build_ids_only_when_asked(tmp_path: Path) -> None:
    dynsec = SYSTEM_LIBRARIES / "mosquitto_dynamic_security.so"
    config = make_config(tmp_path / "m.conf", f"plugin {dynsec}")
    without = collect_inventory(config, {}, cwd=tmp_path, build_ids=False)
    with_ids = collect_inventory(config, {}, cwd=tmp_path)
    expected = re.search(
        r"Build ID: ([0-9a-f]+)",
        subprocess.run(
            ["readelf", "-n", str(dynsec)], capture_output=True, text=True, check=True
        ).stdout,
    )
    assert expected is not None
    assert [item.build_id for item in without.items] == [None] * len(without.items)
    plugin = next(item for item in with_ids.items if item.kind == "plugin")
    assert plugin.build_id == expected.group(1)
    assert [dataclasses.replace(item, build_id=None) for item in with_ids.items] == without.items


# Hostile files: each case must raise ElfError with a message that names the fault.
def hostile_files(base: Path, helper: Path) -> dict[str, tuple[Path, str]]:
    data = helper.read_bytes()
    text = base / "notes.txt"
    text.write_text("this is not a shared object, and it is longer than an ELF header\n" * 2)
    empty = base / "empty.so"
    empty.write_bytes(b"")
    header_cut = base / "header-cut.so"
    header_cut.write_bytes(data[:40])
    half = base / "half.so"
    half.write_bytes(data[: len(data) // 2])
    no_segments = base / "program-headers-cut.so"
    no_segments.write_bytes(data[:100])
    directory = base / "dir.so"
    directory.mkdir()
    fifo = base / "fifo.so"
    os.mkfifo(fifo)
    return {
        "text file": (text, "invalid ELF header: not an ELF file"),
        "empty file": (empty, "file too short"),
        "header cut": (header_cut, "file too short"),
        "half file": (half, "truncated"),
        "program headers cut": (no_segments, "truncated"),
        "directory": (directory, "is a directory"),
        "fifo": (fifo, "is not a regular file"),
        "missing": (base / "missing.so", "not found"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "text file",
        "empty file",
        "header cut",
        "half file",
        "program headers cut",
        "directory",
        "fifo",
        "missing",
    ],
)
def test_fast_reader_hostile_file_error(case: str, built: dict[str, Path], tmp_path: Path) -> None:
    path, expected = hostile_files(tmp_path, built["helper"])[case]
    with pytest.raises(ElfError) as caught:
        read_elf_fast(path, PLUGIN_SYMBOLS)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def assert_reads_or_elf_error(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        read_elf_fast(path, SYMBOLS)
    except ElfError as error:
        assert str(path) in str(error)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=4096))
def test_fast_reader_arbitrary_bytes_raise_only_elf_error(tmp_path: Path, data: bytes) -> None:
    assert_reads_or_elf_error(tmp_path / "arbitrary.so", data)


ELF64_HEADER = b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x03\x00\x3e\x00\x01\x00\x00\x00" + bytes(8)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.sampled_from([ELF64_HEADER, b"\x7fELF\x01\x01\x01" + bytes(9), b"\x7fELF\x02\x02"]),
    rest=st.binary(min_size=48, max_size=4096),
)
def test_fast_reader_noise_after_magic(tmp_path: Path, header: bytes, rest: bytes) -> None:
    # Past the magic number, so the header fields and tables are read from arbitrary bytes.
    assert_reads_or_elf_error(tmp_path / "noise.so", header + rest)


# Offsets near the start hit the ELF and program headers and the dynamic string and symbol
# tables. Negative ones count from the end, where the section headers are.
OFFSETS = st.one_of(st.integers(0, 4095), st.integers(0, 16383), st.integers(-2048, -1))


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(["rpath", "sysv", "32bit"]),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=16383)),
    flips=st.lists(st.tuples(OFFSETS, st.integers(0, 255)), min_size=1, max_size=8),
)
def test_fast_reader_mutated_elf_raises_only_elf_error(
    built: dict[str, Path],
    tmp_path: Path,
    name: str,
    cut: int | None,
    flips: list[tuple[int, int]],
) -> None:
    data = bytearray(built[name].read_bytes())
    for offset, value in flips:
        data[offset % len(data)] = value
    assert_reads_or_elf_error(tmp_path / "mutated.so", bytes(data if cut is None else data[:cut]))


def test_openssl_engines_asked_on_first_read(tmp_path: Path) -> None:
    # A stand-in for `openssl` that records each run and lists two built-in engines.
    runs = tmp_path / "runs"
    command = tmp_path / "openssl"
    command.write_text(
        f"#!/bin/sh\necho \"$*\" >> {runs}\necho '(rdrand) Intel RDRAND'\n"
        "echo '(dynamic) Dynamic engine loading support'\n"
    )
    command.chmod(0o755)
    dirs = OpenSSLDirs(Path("/usr/lib/ssl"), Path("/e"), Path("/m"), None, binary=str(command))
    assert not runs.exists()
    assert dirs.builtin_engines == frozenset({"rdrand", "dynamic"})
    assert dirs.builtin_engines == frozenset({"rdrand", "dynamic"})
    assert runs.read_text() == "engine\n"


def test_openssl_engines_without_command_only_dynamic() -> None:
    unknown = OpenSSLDirs(Path("/usr/lib/ssl"), Path("/e"), Path("/m"), None)
    assert unknown.builtin_engines == frozenset({"dynamic"})
    assert "dynamic" in probe_openssl().builtin_engines
