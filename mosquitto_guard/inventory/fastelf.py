"""Read the ELF facts the inventory needs with `struct`, without pyelftools.

`mosquitto-guard run` has a start-up budget of 100 ms over a plain broker start, Python's own
start-up included, and its inventory reads nine ELF files for a config with three plugins.
pyelftools took 3 to 4 ms per file to read what `ElfInfo` contains (over the 1,437 shared objects
in /usr/lib/x86_64-linux-gnu), and importing it took 30 to 40 ms (`python -X importtime`).
This reader takes 0.1 to 0.2 ms per file and reads a few hundred bytes of each. It imports
only the standard library, except that a machine, file type or OS ABI value other than the
usual Linux ones is named from pyelftools' tables. Both figures were measured on a 2-core AMD
EPYC virtual machine.

`read_elf_fast` returns the same `ElfInfo` as `elf.read_elf`, except that `build_id` is always
None: build ids, and the symbol tables that `sign` reads, still come from pyelftools.
`tests/inventory/test_inventory_fastelf.py` checks that both readers agree on every shared
object in /usr/lib/x86_64-linux-gnu and on the files the tests build.

What is read, from the program headers as the loader reads it:
- the ELF header: class, byte order, machine, file type and OS ABI;
- `PT_INTERP`: the program interpreter;
- `PT_DYNAMIC`: `DT_NEEDED`, `DT_RPATH`, `DT_RUNPATH`, `DT_SONAME` and `DT_FLAGS_1`, with
  strings from `DT_STRTAB`;
- the requested symbols, looked up through `DT_GNU_HASH`, or `DT_HASH` when there is none, in
  `DT_SYMTAB`, as `dlsym` finds them.
Section headers are only checked to lie inside the file, as `elf.read_elf` checks them.

Where pyelftools would fail on a malformed file (a table or string that runs past the end of
the file, a hash table without buckets), this reader raises too. Both readers keep the first
`DT_STRTAB` and `DT_SYMTAB` tag, read tags up to `DT_NULL` even past the segment's file size,
and let a later `PT_DYNAMIC` segment override the search paths of an earlier one. Unlike
pyelftools, this reader takes the dynamic strings from `DT_STRTAB` even when a section header
names another string table, and it rejects a string with no terminating NUL before the end of
the file.

Every failure is an `ElfError` (`ElfAccessError` for a file this process may not open) whose
message names the file; no other exception escapes for any file content.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

from mosquitto_guard.inventory.elf import (
    EXPORTED_BINDINGS,
    MAX_DYNAMIC_TAGS,
    ElfError,
    ElfInfo,
    check_header_tables,
    enum_name,
    open_regular,
    read_identity,
    target_from_header,
)

# Program header types and dynamic tags from <elf.h>.
PT_LOAD = 1
PT_DYNAMIC = 2
PT_INTERP = 3
DT_NULL = 0
DT_NEEDED = 1
DT_HASH = 4
DT_STRTAB = 5
DT_SYMTAB = 6
DT_SONAME = 14
DT_RPATH = 15
DT_RUNPATH = 29
DT_GNU_HASH = 0x6FFFFEF5
DT_FLAGS_1 = 0x6FFFFFFB
# e_phnum value meaning "the count is in sh_info of section 0".
PN_XNUM = 0xFFFF

# The first bytes of a file are read at once: the headers, and in a small object the string,
# symbol and hash tables too, come from this one read.
_HEAD_BYTES = 16384
_STRING_CHUNK = 256


class _Layout:
    """The `struct` formats and field offsets of one ELF class and byte order.

    A plain class rather than a dataclass: building a dataclass costs about 0.5 ms of import
    time on the benchmark machine, and this module is imported on every launch.
    """

    def __init__(self, elf_class: int, order: str) -> None:
        wide = elf_class == 64
        self.bits = elf_class
        # e_type up to e_shstrndx, from offset 16 of the ELF header.
        self.header = struct.Struct(order + ("HHIQQQIHHHHHH" if wide else "HHIIIIIHHHHHH"))
        self.program_header = struct.Struct(order + ("IIQQQQQQ" if wide else "IIIIIIII"))
        self.dynamic = struct.Struct(order + ("qQ" if wide else "iI"))
        self.symbol = struct.Struct(order + ("IBBHQQ" if wide else "IIIBBH"))
        self.word = struct.Struct(order + "I")
        self.bloom_word = struct.Struct(order + ("Q" if wide else "I"))
        # The DT_GNU_HASH header (nbuckets, symoffset, bloom_size, bloom_shift) and the DT_HASH
        # header (nbucket, nchain).
        self.gnu_hash_header = struct.Struct(order + "IIII")
        self.sysv_hash_header = struct.Struct(order + "II")
        # sh_size and sh_info of section 0, which contain the section and segment counts when
        # they do not fit into the ELF header.
        self.section_size = self.bloom_word
        self.section_size_offset = 32 if wide else 20
        self.section_info_offset = 44 if wide else 28
        self.section_header_size = 64 if wide else 40


_LAYOUTS = {
    (elf_class, order): _Layout(elf_class, order) for elf_class in (32, 64) for order in "<>"
}


class _Segment:
    """The fields of one program header that this reader uses."""

    __slots__ = ("filesz", "kind", "offset", "vaddr")

    def __init__(self, kind: int, offset: int, vaddr: int, filesz: int) -> None:
        self.kind = kind
        self.offset = offset
        self.vaddr = vaddr
        self.filesz = filesz


class _File:
    """Bounded reads from one open file. Every read past its end raises `ElfError`."""

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path = path
        self.fd = fd
        self.size = size
        self.head = os.pread(fd, _HEAD_BYTES, 0)

    def check(self, offset: int, length: int, description: str) -> None:
        """Raise `ElfError` unless `length` bytes from `offset` lie inside the file."""
        if offset < 0 or offset + length > self.size:
            raise ElfError(
                f"{self.path}: truncated: {description} at offset {offset} runs past the end "
                f"of the file ({self.size} bytes)"
            )

    def read(self, offset: int, length: int, description: str) -> bytes:
        self.check(offset, length, description)
        if offset + length <= len(self.head):
            return self.head[offset : offset + length]
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise ElfError(f"{self.path}: truncated while reading {description} at offset {offset}")
        return data

    def unpack(self, layout: struct.Struct, offset: int, description: str) -> tuple[int, ...]:
        return layout.unpack(self.read(offset, layout.size, description))

    def c_string(self, offset: int, description: str) -> bytes:
        """Return the bytes from `offset` up to the next NUL byte."""
        chunks: list[bytes] = []
        position = offset
        while True:
            if position >= self.size or position < 0:
                raise ElfError(
                    f"{self.path}: malformed {description}: no NUL byte before the end of the file"
                )
            chunk = self.read(position, min(_STRING_CHUNK, self.size - position), description)
            end = chunk.find(b"\0")
            if end >= 0:
                chunks.append(chunk[:end])
                return b"".join(chunks)
            chunks.append(chunk)
            position += len(chunk)


def read_elf_fast(path: Path, symbols: Iterable[str] = ()) -> ElfInfo:
    """Read `path` and return what the loader needs from it, with `build_id` None.

    `symbols` are looked up through the object's hash table, as `dlsym` finds them; the ones
    the object defines are returned in `ElfInfo.exported`. Raises `ElfAccessError` when this
    process may not open the file and `ElfError` when it is missing, not a regular file, not
    ELF, truncated or malformed.
    """
    fd = open_regular(path)
    try:
        status = os.fstat(fd)
        reader = _File(path, fd, status.st_size)
        identity = (status.st_dev, status.st_ino)
        return _Reader(reader, tuple(symbols)).read(identity)
    finally:
        os.close(fd)


class _Reader:
    """The parse of one file: its headers, then each `PT_DYNAMIC` segment."""

    def __init__(self, file: _File, symbols: tuple[str, ...]) -> None:
        self.file = file
        self.path = file.path
        self.symbols = symbols
        self.header = read_identity(self.path, file.head[:64])
        self.layout = _LAYOUTS[
            (32 if self.header[4] == 1 else 64, "<" if self.header[5] == 1 else ">")
        ]
        self.segments: list[_Segment] = []

    def read(self, identity: tuple[int, int]) -> ElfInfo:
        fields = self.file.unpack(self.layout.header, 16, "ELF header")
        e_type, _machine, _version, _entry, ph_offset, sh_offset = fields[:6]
        ph_entry, ph_count, sh_entry, sh_count = fields[8:12]
        check_header_tables(
            self.path,
            self.file.size,
            (ph_offset, ph_count, ph_entry),
            (sh_offset, self._section_count(sh_offset, sh_count, sh_entry), sh_entry),
        )
        self.segments = self._program_headers(ph_offset, ph_count, ph_entry, sh_offset, sh_entry)

        needed: list[str] = []
        search: dict[int, str] = {}
        flags_1 = 0
        interpreter: str | None = None
        exported: set[str] = set()
        for segment in self.segments:
            if segment.kind == PT_INTERP:
                interpreter = self._interpreter(segment)
            elif segment.kind == PT_DYNAMIC:
                tags = self._dynamic_tags(segment)
                strings = _first(tags, DT_STRTAB)
                for tag, value in tags:
                    if tag == DT_NEEDED:
                        needed.append(self._dynamic_string(strings, value, "DT_NEEDED"))
                    elif tag in (DT_RPATH, DT_RUNPATH, DT_SONAME):
                        search[tag] = self._dynamic_string(strings, value, _TAG_NAMES[tag])
                    elif tag == DT_FLAGS_1:
                        flags_1 = value
                exported |= {name for name in self.symbols if self._exports(tags, name)}

        runpath = search.get(DT_RUNPATH)
        return ElfInfo(
            path=self.path,
            target=target_from_header(self.header),
            file_type=enum_name("ENUM_E_TYPE", e_type),
            osabi=enum_name("ENUM_EI_OSABI", self.header[7]),
            needed=tuple(needed),
            rpath=None if runpath is not None else search.get(DT_RPATH),
            runpath=runpath,
            soname=search.get(DT_SONAME),
            flags_1=flags_1,
            interpreter=interpreter,
            build_id=None,
            exported=frozenset(exported),
            identity=identity,
        )

    # Headers.

    def _section_count(self, sh_offset: int, sh_count: int, sh_entry: int) -> int:
        if sh_offset == 0:
            return 0
        if sh_count != 0:
            return sh_count
        # With 0xff00 sections or more, e_shnum is 0 and section 0's sh_size contains the count.
        self._check_section_entry(sh_entry)
        position = sh_offset + self.layout.section_size_offset
        return self.file.unpack(self.layout.section_size, position, "section header 0")[0]

    def _check_section_entry(self, sh_entry: int) -> None:
        if sh_entry < self.layout.section_header_size:
            raise ElfError(
                f"{self.path}: malformed ELF header: e_shentsize {sh_entry} is too small"
            )

    def _program_headers(
        self, ph_offset: int, ph_count: int, ph_entry: int, sh_offset: int, sh_entry: int
    ) -> list[_Segment]:
        if ph_count == PN_XNUM:
            self._check_section_entry(sh_entry)
            position = sh_offset + self.layout.section_info_offset
            ph_count = self.file.unpack(self.layout.word, position, "section header 0")[0]
        # pyelftools checks the entry size only when e_phoff is not 0. Checking it always, and
        # the whole table's extent, keeps a table of entries of size 0 from looping for long.
        if ph_count and ph_entry < self.layout.program_header.size:
            raise ElfError(
                f"{self.path}: malformed ELF header: e_phentsize {ph_entry} is too small"
            )
        self.file.check(ph_offset, ph_count * ph_entry, "program headers")
        segments: list[_Segment] = []
        for index in range(ph_count):
            values = self.file.unpack(
                self.layout.program_header, ph_offset + index * ph_entry, f"program header {index}"
            )
            if self.layout.bits == 64:
                kind, _flags, offset, vaddr, _paddr, filesz = values[:6]
            else:
                kind, offset, vaddr, _paddr, filesz = values[:5]
            segments.append(_Segment(kind, offset, vaddr, filesz))
        return segments

    def _interpreter(self, segment: _Segment) -> str:
        raw = self.file.c_string(segment.offset, "PT_INTERP")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ElfError(f"{self.path}: malformed PT_INTERP: {error}") from error

    # The dynamic segment.

    def _dynamic_tags(self, segment: _Segment) -> list[tuple[int, int]]:
        if segment.filesz == 0:
            return []
        tags: list[tuple[int, int]] = []
        size = self.layout.dynamic.size
        while True:
            tag, value = self.file.unpack(
                self.layout.dynamic, segment.offset + len(tags) * size, "dynamic section"
            )
            tags.append((tag, value))
            if len(tags) > MAX_DYNAMIC_TAGS:
                raise ElfError(
                    f"{self.path}: malformed dynamic section: no DT_NULL within "
                    f"{MAX_DYNAMIC_TAGS} tags"
                )
            if tag == DT_NULL:
                return tags

    def _file_offset(self, address: int) -> int | None:
        """Return the file offset of virtual `address` in the first `PT_LOAD` that contains it."""
        for segment in self.segments:
            if (
                segment.kind == PT_LOAD
                and segment.vaddr <= address < segment.vaddr + segment.filesz
            ):
                return address - segment.vaddr + segment.offset
        return None

    def _string(self, strings: int | None, offset: int, description: str) -> bytes:
        if strings is None:
            raise ElfError(
                f"{self.path}: malformed dynamic section: {description} but no DT_STRTAB"
            )
        table = self._file_offset(strings)
        if table is None:
            raise ElfError(
                f"{self.path}: malformed dynamic section: DT_STRTAB {strings:#x} lies in no "
                "PT_LOAD segment"
            )
        return self.file.c_string(table + offset, description)

    def _dynamic_string(self, strings: int | None, offset: int, description: str) -> str:
        return self._string(strings, offset, description).decode("utf-8", errors="replace")

    # Symbols.

    def _exports(self, tags: list[tuple[int, int]], name: str) -> bool:
        symbol = self._lookup(tags, name)
        if symbol is None:
            return False
        info, section_index = symbol
        return section_index != 0 and info >> 4 in EXPORTED_BINDINGS

    def _lookup(self, tags: list[tuple[int, int]], name: str) -> tuple[int, int] | None:
        """Find `name` through the hash table; return its (st_info, st_shndx) or None."""
        gnu = _first(tags, DT_GNU_HASH)
        gnu_offset = self._file_offset(gnu) if gnu is not None else None
        if gnu_offset is not None:
            return self._gnu_lookup(tags, gnu_offset, name)
        sysv = _first(tags, DT_HASH)
        sysv_offset = self._file_offset(sysv) if sysv is not None else None
        if sysv_offset is None:
            return None
        return self._sysv_lookup(tags, sysv_offset, name)

    def _gnu_lookup(
        self, tags: list[tuple[int, int]], offset: int, name: str
    ) -> tuple[int, int] | None:
        word, bloom_word = self.layout.word, self.layout.bloom_word
        header = self.layout.gnu_hash_header
        buckets, first_symbol, bloom_size, bloom_shift = self.file.unpack(
            header, offset, "DT_GNU_HASH"
        )
        bloom_at = offset + header.size
        buckets_at = bloom_at + bloom_size * bloom_word.size
        chains_at = buckets_at + buckets * word.size
        # pyelftools reads the bloom filter and the buckets whole, so both must be in the file.
        self.file.check(bloom_at, chains_at - bloom_at, "DT_GNU_HASH")
        if buckets == 0 or bloom_size == 0:
            raise ElfError(f"{self.path}: malformed DT_GNU_HASH: no buckets or no bloom words")
        name_hash = _gnu_hash(name)
        bits = self.layout.bits
        (bloom,) = self.file.unpack(
            bloom_word, bloom_at + (name_hash // bits % bloom_size) * bloom_word.size, "DT_GNU_HASH"
        )
        mask = (1 << (name_hash % bits)) | (1 << ((name_hash >> bloom_shift) % bits))
        if bloom & mask != mask:
            return None
        (index,) = self.file.unpack(
            word, buckets_at + (name_hash % buckets) * word.size, "DT_GNU_HASH"
        )
        if index < first_symbol:
            return None
        # Each step reads the next chain word, so a chain without an end bit ends at EOF.
        while True:
            position = chains_at + (index - first_symbol) * word.size
            (chain_hash,) = self.file.unpack(word, position, "DT_GNU_HASH chain")
            if chain_hash | 1 == name_hash | 1:
                symbol = self._symbol(tags, index, name)
                if symbol is not None:
                    return symbol
            if chain_hash & 1:
                return None
            index += 1

    def _sysv_lookup(
        self, tags: list[tuple[int, int]], offset: int, name: str
    ) -> tuple[int, int] | None:
        word = self.layout.word
        buckets, chains = self.file.unpack(self.layout.sysv_hash_header, offset, "DT_HASH")
        buckets_at = offset + self.layout.sysv_hash_header.size
        chains_at = buckets_at + buckets * word.size
        # pyelftools reads both arrays whole, so both must be in the file.
        self.file.check(buckets_at, (buckets + chains) * word.size, "DT_HASH")
        if buckets == 0:
            return None
        (index,) = self.file.unpack(
            word, buckets_at + (_sysv_hash(name) % buckets) * word.size, "DT_HASH"
        )
        # A corrupt chain can loop. A valid one visits each symbol at most once, so the walk
        # stops after as many steps as there are chain entries.
        for _ in range(chains + 1):
            if index == 0 or index >= chains:
                return None
            symbol = self._symbol(tags, index, name)
            if symbol is not None:
                return symbol
            (index,) = self.file.unpack(word, chains_at + index * word.size, "DT_HASH chain")
        return None

    def _symbol(self, tags: list[tuple[int, int]], index: int, name: str) -> tuple[int, int] | None:
        """Return (st_info, st_shndx) of symbol `index` when its name is `name`, else None."""
        table = _first(tags, DT_SYMTAB)
        table_offset = self._file_offset(table) if table is not None else None
        if table_offset is None:
            raise ElfError(f"{self.path}: malformed dynamic section: no usable DT_SYMTAB")
        symbol = self.layout.symbol
        values = self.file.unpack(symbol, table_offset + index * symbol.size, "DT_SYMTAB")
        if self.layout.bits == 64:
            name_offset, info, _other, section_index = values[:4]
        else:
            name_offset, info, section_index = values[0], values[3], values[5]
        found = self._string(_first(tags, DT_STRTAB), name_offset, "symbol name")
        if found.decode("utf-8", errors="replace") != name:
            return None
        return info, section_index


_TAG_NAMES = {DT_RPATH: "DT_RPATH", DT_RUNPATH: "DT_RUNPATH", DT_SONAME: "DT_SONAME"}


def _first(tags: list[tuple[int, int]], tag_type: int) -> int | None:
    for tag, value in tags:
        if tag == tag_type:
            return value
    return None


def _gnu_hash(name: str) -> int:
    value = 5381
    for byte in name.encode("utf-8"):
        value = value * 33 + byte
    return value & 0xFFFFFFFF


def _sysv_hash(name: str) -> int:
    value = 0
    for byte in name.encode("utf-8"):
        value = (value << 4) + byte
        high = value & 0xF0000000
        if high:
            value ^= high >> 24
        value &= ~high
    return value
