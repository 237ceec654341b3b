"""Reading ELF files: the tags and symbols the loader and the broker use, and hostile files."""

from __future__ import annotations

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
    set_machine,
)

from mosquitto_guard.inventory.elf import (
    DF_1_NODEFLIB,
    PLUGIN_SYMBOLS,
    ElfError,
    ElfTarget,
    fatal_header_problem,
    loader_rejection,
    plugin_api,
    read_elf,
    read_target,
)

DYNSEC = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
HOST = ElfTarget(64, True, "EM_X86_64")
EM_AARCH64 = 183


@pytest.fixture(scope="module")
def libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("elf")
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
        "nodeflib": add_flags_1(
            build_plugin(base / "nodeflib.so", helper, flags=["-Wl,-z,now"]), DF_1_NODEFLIB
        ),
        "32bit": build("inventory_helper.c", base / "lib32.so", flags=["-m32", "-nostdlib"]),
        "pie": build_program(base / "program-pie", "-pie"),
        "exec": build_program(base / "program-exec", "-no-pie"),
    }


def readelf_build_id(path: Path) -> str:
    output = subprocess.run(
        ["readelf", "-n", str(path)], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"Build ID: ([0-9a-f]+)", output)
    assert match is not None
    return match.group(1)


def test_read_elf_needed_and_soname(libs: dict[str, Path]) -> None:
    helper = read_elf(libs["helper"])
    plugin = read_elf(libs["rpath"])
    assert helper.soname == "libinvhelper.so.1"
    # The plugin calls nothing from libc, so the linker (--as-needed) recorded only the helper.
    assert plugin.needed == ("libinvhelper.so.1",)


def test_read_elf_rpath_kept_raw(libs: dict[str, Path]) -> None:
    info = read_elf(libs["rpath"])
    assert info.rpath == "$ORIGIN/deps"
    assert info.runpath is None


def test_read_elf_runpath_hides_rpath(libs: dict[str, Path]) -> None:
    info = read_elf(libs["runpath"])
    assert info.runpath == "${ORIGIN}/deps:/opt/x"
    assert info.rpath is None


def test_read_elf_nodeflib_flag(libs: dict[str, Path]) -> None:
    assert read_elf(libs["nodeflib"]).nodeflib
    assert not read_elf(libs["rpath"]).nodeflib


def test_read_elf_build_id_matches_readelf(libs: dict[str, Path]) -> None:
    assert read_elf(libs["rpath"]).build_id == readelf_build_id(libs["rpath"])
    assert read_elf(DYNSEC).build_id == readelf_build_id(DYNSEC)


def test_read_elf_target_and_type(libs: dict[str, Path]) -> None:
    info = read_elf(libs["rpath"])
    assert info.target == HOST
    assert info.file_type == "ET_DYN"
    assert info.identity == (os.stat(libs["rpath"]).st_dev, os.stat(libs["rpath"]).st_ino)


def test_plugin_api_v5_legacy_none(libs: dict[str, Path]) -> None:
    assert plugin_api(read_elf(libs["rpath"], PLUGIN_SYMBOLS)) == "v5"
    assert plugin_api(read_elf(libs["legacy"], PLUGIN_SYMBOLS)) == "legacy"
    assert plugin_api(read_elf(libs["helper"], PLUGIN_SYMBOLS)) == "none"
    assert plugin_api(read_elf(DYNSEC, PLUGIN_SYMBOLS)) == "v5"


def test_plugin_api_through_sysv_hash(libs: dict[str, Path]) -> None:
    # Only DT_HASH, no DT_GNU_HASH: the lookup must use the older table.
    info = read_elf(libs["sysv"], [*PLUGIN_SYMBOLS, "absent_symbol"])
    assert plugin_api(info) == "v5"
    assert "absent_symbol" not in info.exported


def test_undefined_symbol_not_exported(libs: dict[str, Path]) -> None:
    # The plugin calls inventory_helper, so the symbol is in its table, but undefined.
    info = read_elf(libs["rpath"], ["inventory_helper", "mosquitto_plugin_init"])
    assert "inventory_helper" not in info.exported
    assert "mosquitto_plugin_init" in info.exported


def test_32bit_object_skipped_not_fatal(libs: dict[str, Path]) -> None:
    target = read_target(libs["32bit"])
    assert target == ElfTarget(32, True, "EM_386")
    assert loader_rejection(target, HOST) == ("wrong ELF class: ELFCLASS32", False)


def test_other_machine_skipped(libs: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "libarm.so"
    copy.write_bytes(libs["helper"].read_bytes())
    set_machine(copy, EM_AARCH64)
    target = read_target(copy)
    assert target.machine == "EM_AARCH64"
    assert loader_rejection(target, HOST) == ("wrong machine: EM_AARCH64", False)


def test_other_byte_order_fatal() -> None:
    big = ElfTarget(64, False, "EM_PPC64")
    assert loader_rejection(big, HOST) == ("ELF file data encoding not little-endian", True)


def test_executables_flagged(libs: dict[str, Path]) -> None:
    pie = read_elf(libs["pie"])
    executable = read_elf(libs["exec"])
    assert pie.pie
    assert pie.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert executable.file_type == "ET_EXEC"
    assert fatal_header_problem(executable) is None


# Hostile input: each case must raise ElfError with a message that names the fault.
def hostile_cases(base: Path, helper: Path) -> dict[str, tuple[Path, str]]:
    data = helper.read_bytes()
    text = base / "notes.txt"
    text.write_text("this is not a shared object, and it is longer than an ELF header\n" * 2)
    empty = base / "empty.so"
    empty.write_bytes(b"")
    short = base / "short.so"
    short.write_bytes(data[:3])
    header_cut = base / "header-cut.so"
    header_cut.write_bytes(data[:40])
    half = base / "half.so"
    half.write_bytes(data[: len(data) // 2])
    directory = base / "dir.so"
    directory.mkdir()
    fifo = base / "fifo.so"
    os.mkfifo(fifo)
    return {
        "text file": (text, "invalid ELF header: not an ELF file"),
        "empty file": (empty, "file too short"),
        "three bytes": (short, "file too short"),
        "header cut": (header_cut, "file too short"),
        "half file": (half, "truncated"),
        "directory": (directory, "is a directory"),
        "fifo": (fifo, "is not a regular file"),
        "missing": (base / "missing.so", "not found"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "text file",
        "empty file",
        "three bytes",
        "header cut",
        "half file",
        "directory",
        "fifo",
        "missing",
    ],
)
def test_hostile_file_clear_error(case: str, libs: dict[str, Path], tmp_path: Path) -> None:
    path, expected = hostile_cases(tmp_path, libs["helper"])[case]
    with pytest.raises(ElfError) as caught:
        read_elf(path, PLUGIN_SYMBOLS)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_unreadable_file_clear_error(libs: dict[str, Path], tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    locked = tmp_path / "locked.so"
    locked.write_bytes(libs["helper"].read_bytes())
    locked.chmod(0)
    with pytest.raises(ElfError, match="permission denied"):
        read_elf(locked)


# Offsets near the start hit the ELF and program headers and the dynamic section; negative
# ones count from the end, where the section headers are.
OFFSETS = st.one_of(st.integers(0, 4095), st.integers(0, 16383), st.integers(-2048, -1))


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(["rpath", "sysv"]),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=16383)),
    flips=st.lists(st.tuples(OFFSETS, st.integers(0, 255)), min_size=1, max_size=8),
)
def test_mutated_elf_never_crashes(
    libs: dict[str, Path],
    tmp_path: Path,
    name: str,
    cut: int | None,
    flips: list[tuple[int, int]],
) -> None:
    data = bytearray(libs[name].read_bytes())
    for offset, value in flips:
        data[offset % len(data)] = value
    path = tmp_path / "mutated.so"
    path.write_bytes(bytes(data if cut is None else data[:cut]))
    try:
        read_elf(path, PLUGIN_SYMBOLS)
    except ElfError as error:
        assert str(path) in str(error)
