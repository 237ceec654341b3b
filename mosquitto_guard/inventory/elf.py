"""Read the parts of an ELF shared object that decide what the dynamic loader does with it.

Parsing is done by pyelftools. This module only adds what the loader checks on top: whether a
candidate file matches the process (class, byte order, machine), the search-path tags, and the
symbols the broker looks up. Like the loader, it takes these from the program headers
(`PT_DYNAMIC`, `PT_INTERP`, `PT_NOTE`); pyelftools also reads the section headers to find the
dynamic string table.

Every failure to read a file is an `ElfError` whose message names what is wrong with it (not
found, a directory, not ELF, truncated), never a traceback.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from elftools.common.exceptions import ELFError, ELFParseError
from elftools.construct.core import ConstructError
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_E_MACHINE
from elftools.elf.hash import ELFHashTable, GNUHashTable
from elftools.elf.segments import InterpSegment, NoteSegment

from mosquitto_guard.errors import VerificationError

# `DT_FLAGS_1` bits from <elf.h>.
DF_1_NODEFLIB = 0x00000800
DF_1_PIE = 0x08000000

# The symbols Mosquitto 2.x looks up first to pick the plugin interface.
PLUGIN_V5_SYMBOL = "mosquitto_plugin_version"
PLUGIN_LEGACY_SYMBOL = "mosquitto_auth_plugin_version"
PLUGIN_SYMBOLS = (PLUGIN_V5_SYMBOL, PLUGIN_LEGACY_SYMBOL)

# OS ABI values the glibc loader accepts on Linux (`VALID_ELF_OSABI`).
_ACCEPTED_OSABI = frozenset({"ELFOSABI_SYSV", "ELFOSABI_LINUX"})
_ELF_MAGIC = b"\x7fELF"
_ELF64_HEADER = 64
# Reading stops after this many dynamic tags, so a file without DT_NULL cannot loop for long.
_MAX_DYNAMIC_TAGS = 100_000
_PARSE_ERRORS = (
    ELFError,
    ELFParseError,
    ConstructError,
    struct.error,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    OverflowError,
    UnicodeDecodeError,
    EOFError,
    # A negative seek offset from a corrupt header.
    OSError,
    # pyelftools checks some of its own state with assert.
    AssertionError,
)


class ElfError(VerificationError):
    """A file is missing, unreadable, or not a well-formed ELF shared object."""


class ElfAccessError(ElfError):
    """A file exists but this process may not open it."""


@dataclass(frozen=True)
class ElfTarget:
    """The process type an object belongs to: ELF class (32 or 64), byte order and machine.

    `machine` is the `e_machine` name pyelftools uses, such as `EM_X86_64`.
    """

    elf_class: int
    little_endian: bool
    machine: str

    def __str__(self) -> str:
        order = "LSB" if self.little_endian else "MSB"
        return f"ELFCLASS{self.elf_class} {order} {self.machine}"


@dataclass(frozen=True)
class ElfInfo:
    """The parts of one object that the loader reads.

    `rpath` is None when the object also has `DT_RUNPATH`, because the loader then ignores
    `DT_RPATH`. `exported` is the subset of the symbols asked for in `read_elf` that the
    object defines in its dynamic symbol table.
    """

    path: Path
    target: ElfTarget
    file_type: str
    osabi: str
    needed: tuple[str, ...]
    rpath: str | None
    runpath: str | None
    soname: str | None
    flags_1: int
    interpreter: str | None
    build_id: str | None
    exported: frozenset[str]
    identity: tuple[int, int]

    @property
    def nodeflib(self) -> bool:
        """Whether the object has `DF_1_NODEFLIB`, so its requests skip the system directories."""
        return bool(self.flags_1 & DF_1_NODEFLIB)

    @property
    def pie(self) -> bool:
        """Whether the object is a position-independent executable, which dlopen rejects."""
        return bool(self.flags_1 & DF_1_PIE)


def read_target(path: Path) -> ElfTarget:
    """Read only the ELF header of `path`, as the loader does for each search candidate.

    Raises `ElfError` when the file cannot be opened or is not ELF.
    """
    with _open_regular(path) as stream:
        header = _read_identity(path, stream)
        return _target_from_header(header)


def read_elf(path: Path, symbols: Iterable[str] = ()) -> ElfInfo:
    """Read `path` and return what the loader needs from it.

    `symbols` are looked up in the dynamic symbol table through the object's hash table, as
    `dlsym` does; the ones defined there are returned in `ElfInfo.exported`. Raises `ElfError`
    when the file cannot be read or is malformed.
    """
    with _open_regular(path) as stream:
        status = os.fstat(stream.fileno())
        size = status.st_size
        identity = (status.st_dev, status.st_ino)
        header = _read_identity(path, stream)
        try:
            elf = ELFFile(stream)
            _check_tables(path, elf, size)
            return _read_details(path, elf, tuple(symbols), header, identity)
        except ElfError:
            raise
        except _PARSE_ERRORS as error:
            raise ElfError(f"{path}: truncated or malformed ELF file ({error})") from error


def plugin_api(info: ElfInfo) -> str:
    """Return the Mosquitto plugin interface `info` offers: `v5`, `legacy` or `none`.

    Mosquitto 2.x calls `mosquitto_plugin_version` when the plugin exports it and falls back to
    `mosquitto_auth_plugin_version` (the v2 to v4 interface) otherwise.
    """
    if PLUGIN_V5_SYMBOL in info.exported:
        return "v5"
    if PLUGIN_LEGACY_SYMBOL in info.exported:
        return "legacy"
    return "none"


class _RegularFile:
    """An open, regular file; a context manager that closes it."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def __enter__(self) -> BinaryIO:
        return self.stream

    def __exit__(self, *exc: object) -> None:
        self.stream.close()


def _open_regular(path: Path) -> _RegularFile:
    # O_NONBLOCK keeps a FIFO from blocking the open. The type is checked on the open
    # descriptor, so a file swapped in after a path check cannot slip through.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as error:
        raise ElfError(f"{path}: not found") from error
    except NotADirectoryError as error:
        raise ElfError(f"{path}: not found (a parent is not a directory)") from error
    except PermissionError as error:
        raise ElfAccessError(f"{path}: cannot be read: permission denied") from error
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ElfError(f"{path}: too many levels of symbolic links") from error
        raise ElfError(f"{path}: cannot be opened: {error.strerror}") from error
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        os.close(fd)
        raise ElfError(f"{path}: is a directory, not a shared object")
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ElfError(f"{path}: is not a regular file")
    return _RegularFile(os.fdopen(fd, "rb"))


def _read_identity(path: Path, stream: BinaryIO) -> bytes:
    header = stream.read(_ELF64_HEADER)
    stream.seek(0)
    # The loader reads a whole 64-bit header first and reports a shorter file as too short,
    # whatever its content.
    if len(header) < _ELF64_HEADER:
        raise ElfError(f"{path}: file too short for an ELF header ({len(header)} bytes)")
    if header[:4] != _ELF_MAGIC:
        raise ElfError(f"{path}: invalid ELF header: not an ELF file")
    if header[4] not in (1, 2):
        raise ElfError(f"{path}: invalid ELF header: unknown ELF class {header[4]}")
    if header[5] not in (1, 2):
        raise ElfError(f"{path}: invalid ELF header: unknown data encoding {header[5]}")
    return header


def _target_from_header(header: bytes) -> ElfTarget:
    elf_class = 32 if header[4] == 1 else 64
    little_endian = header[5] == 1
    (machine_code,) = struct.unpack_from("<H" if little_endian else ">H", header, 18)
    return ElfTarget(elf_class, little_endian, _machine_name(machine_code))


def _machine_name(code: int) -> str:
    # pyelftools' own table, so names match `ELFFile['e_machine']`.
    for name, value in ENUM_E_MACHINE.items():
        if value == code and name != "_default_":
            return str(name)
    return f"EM_{code}"


def _check_tables(path: Path, elf: ELFFile, size: int) -> None:
    """Reject header tables that point past the end of the file before pyelftools walks them."""
    ph_end = elf["e_phoff"] + elf["e_phnum"] * elf["e_phentsize"]
    if elf["e_phnum"] and ph_end > size:
        raise ElfError(f"{path}: truncated: program headers end at {ph_end}, file has {size} bytes")
    # NOTE: the loader never reads section headers, but pyelftools looks up the dynamic string
    # table through them, so a broken section header table is rejected here although ld.so
    # would still load the file.
    sh_count = elf.num_sections()
    sh_end = elf["e_shoff"] + sh_count * elf["e_shentsize"]
    if sh_count and sh_end > size:
        raise ElfError(f"{path}: truncated: section headers end at {sh_end}, file has {size} bytes")


def _read_details(
    path: Path, elf: ELFFile, symbols: tuple[str, ...], header: bytes, identity: tuple[int, int]
) -> ElfInfo:
    needed: list[str] = []
    rpath: str | None = None
    runpath: str | None = None
    soname: str | None = None
    flags_1 = 0
    interpreter: str | None = None
    build_id: str | None = None
    exported: set[str] = set()
    for segment in elf.iter_segments():
        if isinstance(segment, InterpSegment):
            interpreter = segment.get_interp_name()
        elif isinstance(segment, NoteSegment):
            build_id = build_id or _build_id(segment)
        elif isinstance(segment, DynamicSegment):
            for tag in _dynamic_tags(path, segment):
                kind = tag.entry.d_tag
                if kind == "DT_NEEDED":
                    needed.append(tag.needed)
                elif kind == "DT_RPATH":
                    rpath = tag.rpath
                elif kind == "DT_RUNPATH":
                    runpath = tag.runpath
                elif kind == "DT_SONAME":
                    soname = tag.soname
                elif kind == "DT_FLAGS_1":
                    flags_1 = int(tag.entry.d_val)
            exported |= {name for name in symbols if _exports(elf, segment, name)}
    return ElfInfo(
        path=path,
        target=_target_from_header(header),
        file_type=str(elf["e_type"]),
        osabi=str(elf["e_ident"]["EI_OSABI"]),
        needed=tuple(needed),
        rpath=None if runpath is not None else rpath,
        runpath=runpath,
        soname=soname,
        flags_1=flags_1,
        interpreter=interpreter,
        build_id=build_id,
        exported=frozenset(exported),
        identity=identity,
    )


def _dynamic_tags(path: Path, segment: DynamicSegment) -> list[Any]:
    tags = []
    for tag in segment.iter_tags():
        tags.append(tag)
        if len(tags) > _MAX_DYNAMIC_TAGS:
            raise ElfError(
                f"{path}: malformed dynamic section: no DT_NULL within {_MAX_DYNAMIC_TAGS} tags"
            )
    return tags


def _build_id(segment: NoteSegment) -> str | None:
    for note in segment.iter_notes():
        if note["n_type"] == "NT_GNU_BUILD_ID":
            return str(note["n_desc"])
    return None


def _exports(elf: ELFFile, segment: DynamicSegment, name: str) -> bool:
    symbol = _hash_lookup(elf, segment, name)
    if symbol is None:
        return False
    defined = symbol["st_shndx"] != "SHN_UNDEF"
    visible = symbol["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK", "STB_GNU_UNIQUE")
    return bool(defined and visible)


def _hash_lookup(elf: ELFFile, segment: DynamicSegment, name: str) -> Any:
    """Find `name` through the object's hash table, the only way the loader finds symbols."""
    _, gnu_offset = segment.get_table_offset("DT_GNU_HASH")
    if gnu_offset is not None:
        # Each step of the GNU chain walk reads further into the file, so it ends at EOF.
        return GNUHashTable(elf, gnu_offset, segment).get_symbol(name)
    _, offset = segment.get_table_offset("DT_HASH")
    if offset is None:
        return None
    table = ELFHashTable(elf, offset, None, segment)
    buckets, chains = table.params["buckets"], table.params["chains"]
    if not buckets:
        return None
    index = buckets[ELFHashTable.elf_hash(name) % len(buckets)]
    # A corrupt chain can loop. A valid one visits each symbol at most once, so the walk
    # stops after as many steps as there are chain entries.
    for _ in range(len(chains) + 1):
        if index == 0 or index >= len(chains):
            return None
        symbol = segment.get_symbol(index)
        if symbol.name == name:
            return symbol
        index = chains[index]
    return None


def loader_rejection(target: ElfTarget, expected: ElfTarget) -> tuple[str, bool] | None:
    """Return why the loader rejects a candidate of `target` in a process of `expected`.

    The second value is True when the rejection ends the whole search with an error, and False
    when the loader only skips the candidate and tries the next one. glibc checks in this order:
    ELF class (skipped), byte order (fatal), machine (skipped).
    """
    if target.elf_class != expected.elf_class:
        return f"wrong ELF class: ELFCLASS{target.elf_class}", False
    if target.little_endian != expected.little_endian:
        order = "little" if expected.little_endian else "big"
        return f"ELF file data encoding not {order}-endian", True
    if target.machine != expected.machine:
        return f"wrong machine: {target.machine}", False
    return None


def fatal_header_problem(info: ElfInfo) -> str | None:
    """Return why the loader stops with an error on `info`, or None when it can map the file.

    These end the whole load: an OS ABI the loader does not accept, or a file type other than
    a shared object or an executable.
    """
    if info.osabi not in _ACCEPTED_OSABI:
        return f"ELF file OS ABI invalid ({info.osabi})"
    if info.file_type not in ("ET_DYN", "ET_EXEC"):
        return f"only ET_DYN and ET_EXEC can be loaded, not {info.file_type}"
    return None
