"""Build the ELF files the inventory tests resolve, and ask the real loader about them.

Everything is compiled by the tests from the C sources in `tests/plugins/`. To ask the real
loader, a child Python process dlopens one of these test-built files and prints its memory map.
No system file is run this way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile

from mosquitto_guard.config.model import BrokerConfig, Location, Option, PluginEntry

SOURCES = Path(__file__).resolve().parent.parent / "plugins"
HELPER_SONAME = "libinvhelper.so.1"


def build(
    source: str, output: Path, *, defines: dict[str, str] | None = None, flags: Sequence[str] = ()
) -> Path:
    """Compile `tests/plugins/<source>` into the shared object `output` and return its path."""
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [
        "gcc",
        "-shared",
        "-fPIC",
        "-O1",
        "-Wall",
        "-Werror",
        *(f"-D{key}={value}" for key, value in (defines or {}).items()),
        "-o",
        str(output),
        str(SOURCES / source),
        *flags,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return output


def build_helper(
    directory: Path,
    soname: str = HELPER_SONAME,
    *,
    function: str = "inventory_helper",
    flags: Sequence[str] = (),
) -> Path:
    """Build the helper library as `directory/soname`, with that soname."""
    return build(
        "inventory_helper.c",
        directory / soname,
        defines={"HELPER_NAME": function},
        flags=[f"-Wl,-soname,{soname}", *flags],
    )


def build_plugin(
    output: Path, helper: Path, *, flags: Sequence[str] = (), legacy: bool = False
) -> Path:
    """Build a plugin that links the helper library `helper` (a DT_NEEDED on its soname)."""
    defines = {"LEGACY_API": "1"} if legacy else {}
    return build(
        "inventory_plugin.c",
        output,
        defines=defines,
        flags=["-L", str(helper.parent), f"-l:{helper.name}", *flags],
    )


def build_program(output: Path, *flags: str) -> Path:
    """Build the test executable; `-no-pie` gives ET_EXEC, the default a PIE."""
    command = ["gcc", "-O1", "-o", str(output), str(SOURCES / "inventory_program.c"), *flags]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return output


def set_machine(path: Path, machine: int) -> Path:
    """Overwrite `e_machine` in the ELF header of `path` (a little-endian file)."""
    data = bytearray(path.read_bytes())
    data[18:20] = machine.to_bytes(2, "little")
    path.write_bytes(bytes(data))
    return path


def add_flags_1(path: Path, bits: int) -> Path:
    """Set `bits` in the DT_FLAGS_1 entry of `path`, which must have one (link with -z now).

    GNU ld 2.40 ignores `-z nodeflib` for shared objects, so the tests set the flag this way.
    """
    with path.open("rb") as stream:
        elf = ELFFile(stream)
        segment = next(seg for seg in elf.iter_segments() if isinstance(seg, DynamicSegment))
        tags = list(segment.iter_tags())
        index = next(i for i, tag in enumerate(tags) if tag.entry.d_tag == "DT_FLAGS_1")
        offset = segment["p_offset"] + index * 16 + 8
        value = tags[index].entry.d_val | bits
    data = bytearray(path.read_bytes())
    data[offset : offset + 8] = value.to_bytes(8, "little")
    path.write_bytes(bytes(data))
    return path


def real_loader_maps(path: Path, env: dict[str, str] | None = None) -> set[Path]:
    """Return the files the real dynamic loader maps for a dlopen of the test file `path`."""
    code = "import ctypes, sys\nctypes.CDLL(sys.argv[1])\nprint(open('/proc/self/maps').read())\n"
    child_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        env=child_env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    mapped = set()
    for line in result.stdout.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            mapped.add(Path(fields[5]))
    return mapped


def real_loader_error(path: Path, env: dict[str, str] | None = None) -> str:
    """Return the error the real loader gives for a dlopen of `path`, which must fail."""
    code = "import ctypes, sys\nctypes.CDLL(sys.argv[1])\n"
    child_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        env=child_env,
        check=False,
        timeout=60,
    )
    assert result.returncode != 0, "the real loader loaded the file"
    return result.stderr


def make_config(path: Path, *lines: str) -> BrokerConfig:
    """Build a `BrokerConfig` from config lines, the way the reader would for simple files.

    `plugin`, `auth_plugin` and `global_plugin` lines become plugin entries; `plugin_load NAME
    PATH` becomes an entry that is loaded only if a `plugin_use NAME` line exists.
    """
    options = []
    for number, line in enumerate(lines, start=1):
        key, _, value = line.partition(" ")
        options.append(Option(key, value, tuple(value.split(" ")), Location(path, number), line))
    used = {option.value.strip() for option in options if option.key == "plugin_use"}
    plugins = []
    for option in options:
        if option.key in ("plugin", "auth_plugin", "global_plugin"):
            plugins.append(PluginEntry(option.key, option.value.strip(), option, None))
        elif option.key == "plugin_load":
            name, _, plugin_path = option.value.partition(" ")
            plugins.append(
                PluginEntry(
                    "plugin_load",
                    plugin_path.strip(),
                    option,
                    None,
                    name=name,
                    loaded=name in used,
                )
            )
    return BrokerConfig([path], [path], options, [], plugins, False, (2, 0))
