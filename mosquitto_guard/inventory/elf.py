"""Read the parts of an ELF shared object that decide what the dynamic loader does with it.

`read_elf` parses with pyelftools. The inventory reads its files with the `struct`-based
`fastelf.read_elf_fast`, which returns the same `ElfInfo` except the build id, because importing
and running pyelftools costs too much of the launch's start-up budget (see that module). This
module keeps what both readers share: the header checks, the target and the loader's verdicts.
`read_build_id` and `read_elf` import pyelftools when they are called, never at import time.

Both readers take what the loader checks from the program headers (`PT_DYNAMIC`, `PT_INTERP`,
`PT_NOTE`): whether a candidate file matches the process (class, byte order, machine), the
search-path tags, and the symbols the broker looks up. pyelftools also reads the section headers
to find the dynamic string table.

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
from typing import TYPE_CHECKING, Any, BinaryIO

from mosquitto_guard.errors import VerificationError

if TYPE_CHECKING:
    from elftools.elf.dynamic import DynamicSegment
    from elftools.elf.elffile import ELFFile
    from elftools.elf.segments import NoteSegment

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
MAX_DYNAMIC_TAGS = 100_000
# Symbol bindings that `dlsym` finds: STB_GLOBAL, STB_WEAK and STB_GNU_UNIQUE (<elf.h>).
EXPORTED_BINDINGS = frozenset({1, 2, 10})

# The pyelftools names of the header values that Linux objects use, so that naming them imports
# no pyelftools. `machine_name` and `enum_name` look any other value up in pyelftools' tables.
_COMMON_NAMES: dict[str, dict[int, str]] = {
    "ENUM_E_MACHINE": {3: "EM_386", 62: "EM_X86_64", 183: "EM_AARCH64"},
    "ENUM_E_TYPE": {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"},
    "ENUM_EI_OSABI": {0: "ELFOSABI_SYSV", 3: "ELFOSABI_LINUX"},
}
_STANDARD_PARSE_ERRORS = (
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
    # A hash table with no buckets or no bloom words makes pyelftools divide by zero.
    ZeroDivisionError,
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
    fd = open_regular(path)
    try:
        return target_from_header(read_identity(path, os.pread(fd, _ELF64_HEADER, 0)))
    finally:
        os.close(fd)


def read_elf(path: Path, symbols: Iterable[str] = ()) -> ElfInfo:
    """Read `path` with pyelftools and return what the loader needs from it.

    `symbols` are looked up in the dynamic symbol table through the object's hash table, as
    `dlsym` does; the ones defined there are returned in `ElfInfo.exported`. Raises `ElfError`
    when the file cannot be read or is malformed.
    """
    from elftools.elf.elffile import ELFFile

    with _RegularFile(open_regular(path)) as stream:
        status = os.fstat(stream.fileno())
        size = status.st_size
        identity = (status.st_dev, status.st_ino)
        header = read_identity(path, stream.read(_ELF64_HEADER))
        stream.seek(0)
        try:
            elf = ELFFile(stream)
            _check_tables(path, elf, size)
            return _read_details(path, elf, tuple(symbols), header, identity)
        except ElfError:
            raise
        except _pyelftools_errors() as error:
            raise ElfError(f"{path}: truncated or malformed ELF file ({error})") from error


def read_build_id(path: Path) -> str | None:
    """Return the GNU build id of `path` from its `PT_NOTE` segments, read with pyelftools.

    Returns None when the file has no build id. Raises `ElfError` when the file cannot be read
    or is malformed.
    """
    from elftools.elf.elffile import ELFFile
    from elftools.elf.segments import NoteSegment

    with _RegularFile(open_regular(path)) as stream:
        size = os.fstat(stream.fileno()).st_size
        read_identity(path, stream.read(_ELF64_HEADER))
        stream.seek(0)
        try:
            elf = ELFFile(stream)
            _check_tables(path, elf, size)
            for segment in elf.iter_segments():
                if isinstance(segment, NoteSegment):
                    build_id = _build_id(segment)
                    if build_id is not None:
                        return build_id
            return None
        except ElfError:
            raise
        except _pyelftools_errors() as error:
            raise ElfError(f"{path}: truncated or malformed ELF file ({error})") from error


def _pyelftools_errors() -> tuple[type[BaseException], ...]:
    from elftools.common.exceptions import ELFError, ELFParseError
    from elftools.construct.core import ConstructError

    return (ELFError, ELFParseError, ConstructError, *_STANDARD_PARSE_ERRORS)


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
    """A buffered reader over a descriptor from `open_regular`; a context manager that closes it."""

    def __init__(self, fd: int) -> None:
        self.stream: BinaryIO = os.fdopen(fd, "rb")

    def __enter__(self) -> BinaryIO:
        return self.stream

    def __exit__(self, *exc: object) -> None:
        self.stream.close()


def open_regular(path: Path) -> int:
    """Open `path` for reading and return the descriptor, which the caller must close.

    Raises `ElfAccessError` when this process may not open the file, and `ElfError` when it
    does not exist or is not a regular file.
    """
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
    return fd


def read_identity(path: Path, header: bytes) -> bytes:
    """Check the first 64 bytes of a file as the loader does and return them.

    Raises `ElfError` for a file shorter than a 64-bit ELF header, a wrong magic number, or an
    unknown class or data encoding.
    """
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


def target_from_header(header: bytes) -> ElfTarget:
    """Return the class, byte order and machine of a header that `read_identity` accepted."""
    elf_class = 32 if header[4] == 1 else 64
    little_endian = header[5] == 1
    (machine_code,) = struct.unpack_from("<H" if little_endian else ">H", header, 18)
    return ElfTarget(elf_class, little_endian, machine_name(machine_code))


def machine_name(code: int) -> str:
    """Return the pyelftools name of `e_machine` value `code`, such as `EM_X86_64`.

    A code pyelftools does not know is named `EM_<code>`.
    """
    common = _COMMON_NAMES["ENUM_E_MACHINE"].get(code)
    if common is not None:
        return common
    from elftools.elf.enums import ENUM_E_MACHINE

    # The first name wins where pyelftools gives a value two names.
    for name, value in ENUM_E_MACHINE.items():
        if value == code and name != "_default_":
            return str(name)
    return f"EM_{code}"


def enum_name(table: str, value: int) -> str:
    """Return the name pyelftools parses `value` of the header field `table` into.

    `table` is `ENUM_E_TYPE` or `ENUM_EI_OSABI`. A value pyelftools does not name is returned
    as its decimal digits, as `str()` of pyelftools' parsed value is.
    """
    common = _COMMON_NAMES[table].get(value)
    if common is not None:
        return common
    from elftools.elf import enums

    # pyelftools decodes through a reversed mapping, so the last name of a value wins.
    names = {number: name for name, number in getattr(enums, table).items()}
    return str(names.get(value, value))


def check_header_tables(
    path: Path, size: int, program_headers: tuple[int, int, int], sections: tuple[int, int, int]
) -> None:
    """Reject header tables that point past the end of a file of `size` bytes.

    `program_headers` is `(e_phoff, e_phnum, e_phentsize)`; `sections` is `(e_shoff, the number
    of sections, e_shentsize)`. Raises `ElfError` naming the end of the table that lies outside.
    """
    ph_offset, ph_count, ph_entry = program_headers
    ph_end = ph_offset + ph_count * ph_entry
    if ph_count and ph_end > size:
        raise ElfError(f"{path}: truncated: program headers end at {ph_end}, file has {size} bytes")
    # NOTE: the loader never reads section headers, but pyelftools looks up the dynamic string
    # table through them, so a broken section header table is rejected here although ld.so
    # would still load the file.
    sh_offset, sh_count, sh_entry = sections
    sh_end = sh_offset + sh_count * sh_entry
    if sh_count and sh_end > size:
        raise ElfError(f"{path}: truncated: section headers end at {sh_end}, file has {size} bytes")


def _check_tables(path: Path, elf: ELFFile, size: int) -> None:
    """Reject header tables that point past the end of the file before pyelftools walks them."""
    check_header_tables(
        path,
        size,
        (elf["e_phoff"], elf["e_phnum"], elf["e_phentsize"]),
        (elf["e_shoff"], elf.num_sections(), elf["e_shentsize"]),
    )


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
    from elftools.elf.dynamic import DynamicSegment
    from elftools.elf.segments import InterpSegment, NoteSegment

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
        target=target_from_header(header),
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
        if len(tags) > MAX_DYNAMIC_TAGS:
            raise ElfError(
                f"{path}: malformed dynamic section: no DT_NULL within {MAX_DYNAMIC_TAGS} tags"
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
    # pyelftools names binding 10, STB_GNU_UNIQUE in <elf.h>, after the start of the OS range:
    # STB_LOOS.
    visible = symbol["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK", "STB_LOOS")
    return bool(defined and visible)


def _hash_lookup(elf: ELFFile, segment: DynamicSegment, name: str) -> Any:
    """Find `name` through the object's hash table, the only way the loader finds symbols."""
    from elftools.elf.hash import ELFHashTable, GNUHashTable

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
