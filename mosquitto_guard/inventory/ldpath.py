"""Find shared objects the way the glibc dynamic loader does, without running it on them.

No maintained Python library reproduces the loader's search, so it is written here by hand from
the glibc 2.36 sources (`elf/dl-load.c`, `elf/dl-cache.c`) and checked against `LD_DEBUG=libs`
on Debian 12. For a name without a slash the loader tries, in order:

1. the name of an object already loaded (its path, the name it was requested by, or its
   `DT_SONAME`);
2. `DT_RPATH` of the requesting object and of each object that loaded it, up to the program,
   unless the requesting object has `DT_RUNPATH`;
3. `LD_LIBRARY_PATH`;
4. `DT_RUNPATH` of the requesting object only;
5. `/etc/ld.so.cache`, then the system directories, unless the requesting object was linked
   with `-z nodeflib`.

Each directory is searched first in its `glibc-hwcaps` and legacy hwcap subdirectories. A
candidate of another ELF class or machine is skipped, and so is a file the process may not
open. Any other unreadable or malformed candidate ends the search with an error. A name with
a slash is opened as it is, relative to the working directory. `$ORIGIN`, `$LIB` and
`$PLATFORM` are expanded in search paths and in `DT_NEEDED` names.

The cache is parsed from `/etc/ld.so.cache` (format `glibc-ld.so.cache1.1`) rather than read
from `ldconfig -p`. The file is exactly what the loader reads. Parsing it also yields each
entry's architecture flags and glibc-hwcaps subdirectory, which `ldconfig -p` only prints as
free text, and it starts no subprocess.

The system directories, hwcap subdirectories, `$LIB` and `$PLATFORM` come from the loader's
own `ld.so --help` (glibc 2.33 and later), which runs no code from the objects searched.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import stat
import struct
import subprocess
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mosquitto_guard.inventory.elf import (
    PLUGIN_SYMBOLS,
    ElfAccessError,
    ElfError,
    ElfInfo,
    ElfTarget,
    fatal_header_problem,
    loader_rejection,
    read_target,
)
from mosquitto_guard.inventory.fastelf import read_elf_fast

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/etc/ld.so.cache")
DEFAULT_INTERPRETER = Path("/lib64/ld-linux-x86-64.so.2")

_CACHE_MAGIC = b"glibc-ld.so.cache1.1"
_OLD_CACHE_MAGIC = b"ld.so-1.7.0"
_CACHE_HEADER = 48
_CACHE_ENTRY = 24
_OLD_CACHE_HEADER = 16
_OLD_CACHE_ENTRY = 12
_CACHE_EXTENSION_MAGIC = 0xEAA42174
_CACHE_EXTENSION_HWCAPS = 1
_HWCAP_EXTENSION = 1 << 62
_FLAG_ELF_LIBC6 = 0x0003
# `_DL_CACHE_DEFAULT_ID` of glibc's `sysdeps/*/dl-cache.h`: the flags a cache entry must carry
# to be used by a process of that type. Only the x86-64 value is checked against a real cache.
# NOTE: for other machines any libc6 entry is accepted, and the ELF header check of the file
# then skips one of the wrong type, which can differ from glibc when two entries share a name.
_CACHE_FLAGS = {
    (64, "EM_X86_64"): 0x0303,
    (32, "EM_386"): 0x0003,
    (64, "EM_AARCH64"): 0x0A03,
}
_LOADER_TIMEOUT = 10
_DST = re.compile(r"\$(?:\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?![A-Za-z0-9_]))")


@dataclass(frozen=True)
class LoaderSetup:
    """The search configuration of the system's dynamic loader, as that loader reports it.

    `subdirs` lists, in search order, the subdirectories tried in each search directory before
    the directory itself (the empty string). `hwcaps` are the active glibc-hwcaps names in
    priority order, used to pick cache entries. `lib` is the value of `$LIB`, the first system
    directory without its leading slash (`lib/x86_64-linux-gnu` on Debian, as `LD_DEBUG=libs`
    shows).
    """

    interpreter: Path
    system_dirs: tuple[str, ...]
    subdirs: tuple[str, ...]
    hwcaps: tuple[str, ...]
    platform: str | None
    lib: str
    cache_path: Path
    warning: str | None = None


@functools.lru_cache(maxsize=8)
def probe_loader(
    interpreter: Path = DEFAULT_INTERPRETER, tunables: str | None = None
) -> LoaderSetup:
    """Ask `interpreter --help` for its search directories, hwcap subdirectories and platform.

    `tunables` is passed as `GLIBC_TUNABLES`, which can switch hwcap subdirectories off. When the
    loader cannot be run or is older than glibc 2.33, the Debian multiarch layout is assumed and
    `LoaderSetup.warning` explains why.
    """
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    try:
        result = subprocess.run(
            [str(interpreter), "--help"],
            capture_output=True,
            text=True,
            timeout=_LOADER_TIMEOUT,
            env=env,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return _guessed_setup(interpreter, f"cannot run {interpreter} --help: {error}")
    setup = parse_loader_help(result.stdout, interpreter)
    if setup is None:
        return _guessed_setup(interpreter, f"{interpreter} --help does not list its search path")
    return setup


def parse_loader_help(text: str, interpreter: Path) -> LoaderSetup | None:
    """Parse the output of glibc's `ld.so --help`; None when it has no search-path section."""
    system_dirs: list[str] = []
    cache_path = DEFAULT_CACHE
    hwcaps: list[str] = []
    legacy: list[tuple[str, str]] = []
    section = ""
    for line in text.splitlines():
        if not line.startswith(" "):
            section = line.strip()
            continue
        entry = line.strip()
        if section.startswith("Shared library search path"):
            cache = re.fullmatch(r"\(libraries located via (.+)\)", entry)
            if cache:
                cache_path = Path(cache.group(1))
            elif entry.endswith("(system search path)"):
                system_dirs.append(entry.rsplit(" (", 1)[0])
        elif section.startswith("Subdirectories of glibc-hwcaps"):
            if "searched)" in entry:
                hwcaps.append(entry.split(" ", 1)[0])
        elif section.startswith("Legacy HWCAP subdirectories") and "searched)" in entry:
            name = entry.split(" ", 1)[0]
            if "AT_PLATFORM" in entry:
                role = "platform"
            elif name == "tls":
                role = "tls"
            else:
                role = "hwcap"
            legacy.append((role, name))
    if not system_dirs:
        return None
    platform = next((name for role, name in legacy if role == "platform"), None)
    subdirs = [f"glibc-hwcaps/{name}" for name in hwcaps] + _legacy_subdirs(legacy) + [""]
    return LoaderSetup(
        interpreter=interpreter,
        system_dirs=tuple(system_dirs),
        subdirs=tuple(dict.fromkeys(subdirs)),
        hwcaps=tuple(hwcaps),
        platform=platform,
        lib=system_dirs[0].lstrip("/"),
        cache_path=cache_path,
    )


def _legacy_subdirs(legacy: list[tuple[str, str]]) -> list[str]:
    """Return every combination of the legacy hwcap names, longest first, as glibc 2.36 does.

    The path order is `tls`, then hwcap names, then the platform. `LD_DEBUG=libs` on x86-64
    shows `tls/x86_64/x86_64`, `tls/x86_64`, `tls`, `x86_64/x86_64`, `x86_64`.
    NOTE: the relative order of a hwcap name and the platform was only observed where both
    are `x86_64`.
    """
    order = {"tls": 0, "hwcap": 1, "platform": 2}
    parts = [name for _, name in sorted(legacy, key=lambda item: order[item[0]])]
    combos = []
    for mask in range((1 << len(parts)) - 1, 0, -1):
        chosen = [part for bit, part in enumerate(parts) if mask & (1 << (len(parts) - 1 - bit))]
        combos.append("/".join(chosen))
    return combos


def _guessed_setup(interpreter: Path, reason: str) -> LoaderSetup:
    import sysconfig  # only on this fallback path, which a working loader never takes

    triplet = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [f"/lib/{triplet}", f"/usr/lib/{triplet}"] if triplet else []
    dirs += ["/lib", "/usr/lib"]
    return LoaderSetup(
        interpreter=interpreter,
        system_dirs=tuple(dirs),
        subdirs=("",),
        hwcaps=(),
        platform=os.uname().machine,
        lib=dirs[0].lstrip("/"),
        cache_path=DEFAULT_CACHE,
        warning=f"{reason}; assuming the system directories {', '.join(dirs)} and no hwcap "
        "subdirectories",
    )


@dataclass(frozen=True)
class CacheEntry:
    """One `/etc/ld.so.cache` entry: a library name, its path and what it was built for."""

    name: str
    path: str
    flags: int
    hwcaps: str | None
    legacy_hwcap: bool


class CacheFormatError(ValueError):
    """`/etc/ld.so.cache` is not in a format this parser reads."""


@dataclass
class LdCache:
    """The parsed loader cache, by library name in file order."""

    entries: dict[str, list[CacheEntry]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = DEFAULT_CACHE) -> LdCache:
        """Read and parse the cache at `path`. Raises `OSError` or `CacheFormatError`."""
        return cls.parse(path.read_bytes())

    @classmethod
    def parse(cls, data: bytes) -> LdCache:
        """Parse cache bytes in the `glibc-ld.so.cache1.1` format, alone or after the old one.

        Raises `CacheFormatError` when the data is in neither form or is truncated.
        """
        try:
            return cls._parse(data)
        except struct.error as error:
            raise CacheFormatError(f"truncated cache: {error}") from error

    @classmethod
    def _parse(cls, data: bytes) -> LdCache:
        # String and extension offsets count from the start of the new-format header, which
        # follows the old-format table when the file has one.
        body = _new_format_body(data)
        order = {2: "<", 3: ">"}.get(body[28] & 3, "=")
        count, _strings_size = struct.unpack_from(order + "II", body, 20)
        (extension_offset,) = struct.unpack_from(order + "I", body, 32)
        if _CACHE_HEADER + count * _CACHE_ENTRY > len(body):
            raise CacheFormatError(f"{count} entries do not fit in {len(body)} bytes")
        hwcap_names = _hwcap_names(body, order, extension_offset)

        cache = cls()
        for index in range(count):
            entry = _read_entry(body, order, _CACHE_HEADER + index * _CACHE_ENTRY, hwcap_names)
            cache.entries.setdefault(entry.name, []).append(entry)
        return cache

    def lookup(self, name: str, target: ElfTarget, hwcaps: tuple[str, ...]) -> CacheEntry | None:
        """Return the entry the loader picks for `name` in a process of type `target`.

        An entry for an active glibc-hwcaps subdirectory wins by `hwcaps` priority; otherwise
        the first plain entry with the right flags is used.
        NOTE: entries for legacy hwcaps (before glibc 2.33) are ignored.
        """
        best: CacheEntry | None = None
        best_rank = len(hwcaps)
        plain: CacheEntry | None = None
        for entry in self.entries.get(name, ()):
            if not _flags_match(entry.flags, target) or entry.legacy_hwcap:
                continue
            if entry.hwcaps is None:
                plain = plain or entry
            elif entry.hwcaps in hwcaps and hwcaps.index(entry.hwcaps) < best_rank:
                best, best_rank = entry, hwcaps.index(entry.hwcaps)
        return best or plain


def _new_format_body(data: bytes) -> bytes:
    start = 0
    if data.startswith(_OLD_CACHE_MAGIC):
        (old_count,) = struct.unpack_from("=I", data, 12)
        start = _OLD_CACHE_HEADER + old_count * _OLD_CACHE_ENTRY
        start = (start + 7) & ~7
    if data[start : start + len(_CACHE_MAGIC)] != _CACHE_MAGIC:
        raise CacheFormatError("not a glibc-ld.so.cache1.1 file")
    body = data[start:]
    if len(body) < _CACHE_HEADER:
        raise CacheFormatError("truncated header")
    return body


def _read_entry(body: bytes, order: str, offset: int, hwcap_names: dict[int, str]) -> CacheEntry:
    flags, key, value, _os_version, hwcap = struct.unpack_from(order + "iIIIQ", body, offset)
    named: str | None = None
    legacy = False
    if hwcap & _HWCAP_EXTENSION:
        named = hwcap_names.get(hwcap & 0xFFFFFFFF, "")
    elif hwcap:
        legacy = True
    return CacheEntry(_c_string(body, key), _c_string(body, value), flags, named, legacy)


def _flags_match(flags: int, target: ElfTarget) -> bool:
    expected = _CACHE_FLAGS.get((target.elf_class, target.machine))
    if expected is not None:
        return flags == expected
    return flags & 0xFF == _FLAG_ELF_LIBC6


def _c_string(data: bytes, offset: int) -> str:
    end = data.find(b"\0", offset)
    if offset >= len(data) or end < 0:
        raise CacheFormatError(f"string offset {offset} is outside the file")
    return os.fsdecode(data[offset:end])


def _hwcap_names(body: bytes, order: str, offset: int) -> dict[int, str]:
    if offset == 0 or offset + 8 > len(body):
        return {}
    magic, count = struct.unpack_from(order + "II", body, offset)
    if magic != _CACHE_EXTENSION_MAGIC:
        return {}
    names: dict[int, str] = {}
    for index in range(min(count, (len(body) - offset - 8) // 16)):
        tag, _flags, data_offset, size = struct.unpack_from(
            order + "IIII", body, offset + 8 + 16 * index
        )
        if tag != _CACHE_EXTENSION_HWCAPS or data_offset + size > len(body):
            continue
        for slot in range(size // 4):
            (string_offset,) = struct.unpack_from(order + "I", body, data_offset + 4 * slot)
            names[slot] = _c_string(body, string_offset)
    return names


def expand_tokens(text: str, origin: str | None, setup: LoaderSetup) -> str | None:
    """Expand `$ORIGIN`, `$LIB` and `$PLATFORM` (also in `${...}` form) as the loader does.

    Returns None when a token cannot be expanded, because the object's directory or the
    platform name is unknown. The loader then drops that search directory or name.
    """
    values = {"ORIGIN": origin, "LIB": setup.lib, "PLATFORM": setup.platform}
    missing = False

    def replace(match: re.Match[str]) -> str:
        nonlocal missing
        value = values[match.group(1) or match.group(2)]
        if value is None:
            missing = True
            return ""
        return value

    expanded = _DST.sub(replace, text)
    return None if missing else expanded


def split_search_path(
    text: str, separators: str, origin: str | None, setup: LoaderSetup
) -> list[str]:
    """Split a search path into directories, as the loader's `fillin_rpath` does.

    An empty element is the working directory (returned as ""). Elements whose tokens cannot
    be expanded are dropped, and trailing slashes are removed.
    """
    directories: list[str] = []
    for element in re.split(f"[{re.escape(separators)}]", text):
        if element == "":
            directories.append("")
            continue
        expanded = expand_tokens(element, origin, setup)
        if not expanded:
            continue
        if len(expanded) > 1:
            expanded = expanded.rstrip("/") or "/"
        directories.append(expanded)
    return list(dict.fromkeys(directories))


@dataclass(eq=False)
class LoadedObject:
    """An object mapped into one namespace; `loader` is the object whose request loaded it."""

    path: Path
    info: ElfInfo
    loader: LoadedObject | None = None
    listed: bool = True

    @property
    def origin(self) -> str:
        """The value of `$ORIGIN` for this object: the directory of its path as loaded."""
        return os.path.dirname(str(self.path))


class Namespace:
    """The objects of one link-map namespace, found again by name or by file identity."""

    def __init__(self) -> None:
        self.objects: list[LoadedObject] = []
        self._names: dict[str, LoadedObject] = {}
        self._files: dict[tuple[int, int], LoadedObject] = {}

    def by_name(self, name: str) -> LoadedObject | None:
        """Return the object loaded under `name` (path, requested name or soname), if any."""
        return self._names.get(name)

    def by_file(self, identity: tuple[int, int]) -> LoadedObject | None:
        """Return the object loaded from the file with this (device, inode), if any."""
        return self._files.get(identity)

    def add(self, loaded: LoadedObject, names: Iterable[str]) -> None:
        """Record `loaded` under `names`, its path and its soname."""
        self.objects.append(loaded)
        self._files.setdefault(loaded.info.identity, loaded)
        for name in (*names, str(loaded.path), loaded.info.soname):
            if name:
                self.alias(loaded, name)

    def alias(self, loaded: LoadedObject, name: str) -> None:
        """Record one more name that finds `loaded`, unless the name already finds an object."""
        self._names.setdefault(name, loaded)


@dataclass(frozen=True)
class Resolution:
    """The outcome of one lookup: the file found and how, or why none was.

    `loaded` is the namespace entry. `new` is True when this lookup mapped the file for the
    first time, so its own dependencies still have to be loaded.
    """

    name: str
    path: Path | None
    resolved_by: str
    problem: str | None = None
    loaded: LoadedObject | None = None
    new: bool = False
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dependency:
    """A `DT_NEEDED` entry of `parent`, and how it resolved."""

    parent: LoadedObject
    resolution: Resolution


@dataclass(frozen=True)
class _Found:
    """A search candidate that ends the search: usable (`info`) or fatal (`fatal`)."""

    path: Path
    info: ElfInfo | None
    fatal: str | None


class _Candidate:
    """The loader's verdict on one candidate path: absent, skipped, fatal or usable."""

    def __init__(
        self, info: ElfInfo | None = None, skip: str | None = None, fatal: str | None = None
    ) -> None:
        self.info = info
        self.skip = skip
        self.fatal = fatal


class LibraryResolver:
    """Resolve names to files for one process, given its environment and working directory.

    `target` is the ELF type every candidate must match. `main` is the broker executable when
    known: its `DT_RPATH` is searched for every request, and `$ORIGIN` in `LD_LIBRARY_PATH`
    means its directory.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        cwd: Path,
        setup: LoaderSetup,
        cache: LdCache | None,
        target: ElfTarget,
        main: LoadedObject | None = None,
    ) -> None:
        self.cwd = cwd
        self.setup = setup
        self.cache = cache
        self.target = target
        self.main = main
        origin = main.origin if main is not None else None
        self.library_path = library_search_dirs(env, setup, origin)

    def resolve(
        self, name: str, requester: LoadedObject | None, namespace: Namespace
    ) -> Resolution:
        """Find `name` as the loader would for a request made by `requester`.

        `requester` is None for a `dlopen` from a system library with no search path of its
        own (libc for NSS modules, libcrypto for OpenSSL modules).
        """
        written = name
        if "$" in name:
            origin = requester.origin if requester is not None else None
            expanded = expand_tokens(name, origin, self.setup)
            if expanded is None:
                problem = f"{name}: cannot expand $ORIGIN, $LIB or $PLATFORM here"
                return Resolution(written, None, "", problem=problem)
            name = expanded
        loaded = namespace.by_name(name)
        if loaded is not None:
            result = Resolution(name, loaded.path, "already loaded", loaded=loaded)
        elif "/" in name:
            result = self._open_path(name, requester, namespace)
        else:
            result = self._search(name, requester, namespace)
        return dataclasses.replace(result, name=written)

    def load_dependencies(self, root: LoadedObject, namespace: Namespace) -> list[Dependency]:
        """Load the `DT_NEEDED` tree of `root` breadth-first, as `_dl_map_object_deps` does.

        Each library is returned once, by the first object that needs it; an object already
        in the namespace is not returned again, so cycles end. Names that cannot be resolved
        are returned once each, with the problem.
        """
        found: list[Dependency] = []
        failed: set[str] = set()
        queue = deque([root])
        while queue:
            current = queue.popleft()
            for name in current.info.needed:
                resolution = self.resolve(name, current, namespace)
                if resolution.loaded is None:
                    if name not in failed:
                        failed.add(name)
                        found.append(Dependency(current, resolution))
                    continue
                if resolution.new:
                    queue.append(resolution.loaded)
                    found.append(Dependency(current, resolution))
                elif not resolution.loaded.listed:
                    resolution.loaded.listed = True
                    found.append(Dependency(current, resolution))
        return found

    def _open_path(
        self, name: str, requester: LoadedObject | None, namespace: Namespace
    ) -> Resolution:
        how = "absolute path" if name.startswith("/") else "relative to the working directory"
        path = Path(name) if name.startswith("/") else self.cwd / name
        candidate = self._check(path)
        if candidate.fatal is not None:
            return Resolution(name, path, how, problem=candidate.fatal)
        if candidate.skip is not None:
            return Resolution(name, path, how, problem=f"{path}: {candidate.skip}")
        if candidate.info is None:
            return Resolution(name, None, how, problem=f"{path}: not found")
        return self._map(name, path, how, candidate.info, requester, namespace)

    def _search(
        self, name: str, requester: LoadedObject | None, namespace: Namespace
    ) -> Resolution:
        skipped: list[str] = []
        searched: list[str] = []
        for how, directories in self._search_order(requester):
            if how == "ld.so.cache":
                searched.append(f"{self.setup.cache_path}")
                result = self._from_cache(name, requester, skipped)
            else:
                searched.append(f"{how} ({':'.join(d or '.' for d in directories)})")
                result = self._from_directories(name, directories, skipped)
            if result is not None and result.fatal is not None:
                return Resolution(
                    name, result.path, how, problem=result.fatal, skipped=tuple(skipped)
                )
            if result is not None and result.info is not None:
                resolution = self._map(name, result.path, how, result.info, requester, namespace)
                return dataclasses.replace(resolution, skipped=tuple(skipped))
        problem = f"{name}: not found; searched {', '.join(searched)}"
        if skipped:
            problem += f"; skipped {', '.join(skipped)}"
        return Resolution(name, None, "", problem=problem, skipped=tuple(skipped))

    def _search_order(self, requester: LoadedObject | None) -> list[tuple[str, list[str]]]:
        order: list[tuple[str, list[str]]] = []
        if requester is None or requester.info.runpath is None:
            chain: list[LoadedObject] = []
            current = requester
            while current is not None:
                chain.append(current)
                current = current.loader
            if self.main is not None and self.main not in chain:
                chain.append(self.main)
            for holder in chain:
                if holder.info.rpath is not None:
                    directories = split_search_path(
                        holder.info.rpath, ":", holder.origin, self.setup
                    )
                    order.append(("RPATH", directories))
        if self.library_path:
            order.append(("LD_LIBRARY_PATH", self.library_path))
        if requester is not None and requester.info.runpath is not None:
            directories = split_search_path(
                requester.info.runpath, ":", requester.origin, self.setup
            )
            order.append(("RUNPATH", directories))
        nodeflib = requester is not None and requester.info.nodeflib
        if self.cache is not None:
            order.append(("ld.so.cache", []))
        if not nodeflib:
            order.append(("default directory", list(self.setup.system_dirs)))
        return order

    def _from_cache(
        self, name: str, requester: LoadedObject | None, skipped: list[str]
    ) -> _Found | None:
        if self.cache is None:
            return None
        entry = self.cache.lookup(name, self.target, self.setup.hwcaps)
        if entry is None:
            return None
        # With -z nodeflib the loader still uses the cache, but not for files in the system
        # directories.
        nodeflib = requester is not None and requester.info.nodeflib
        if nodeflib and os.path.dirname(entry.path) in self.setup.system_dirs:
            return None
        return self._accept(Path(entry.path), skipped)

    def _from_directories(
        self, name: str, directories: list[str], skipped: list[str]
    ) -> _Found | None:
        for directory in directories:
            for subdir in self.setup.subdirs:
                relative = (
                    os.path.join(directory, subdir, name)
                    if subdir
                    else os.path.join(directory, name)
                )
                path = Path(relative) if relative.startswith("/") else self.cwd / relative
                result = self._accept(path, skipped)
                if result is not None:
                    return result
        return None

    def _accept(self, path: Path, skipped: list[str]) -> _Found | None:
        candidate = self._check(path)
        if candidate.fatal is not None:
            return _Found(path, None, candidate.fatal)
        if candidate.skip is not None:
            skipped.append(f"{path} ({candidate.skip})")
            return None
        if candidate.info is None:
            return None
        return _Found(path, candidate.info, None)

    def _check(self, path: Path) -> _Candidate:
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return _Candidate()
        except PermissionError:
            return _Candidate(skip="permission denied")
        except OSError as error:
            return _Candidate(fatal=f"{path}: {error.strerror}")
        if stat.S_ISDIR(mode):
            return _Candidate(fatal=f"{path}: is a directory, not a shared object")
        try:
            target = read_target(path)
        except ElfAccessError:
            # The loader moves on past a file it may not open, as for one it cannot find.
            return _Candidate(skip="permission denied")
        except ElfError as error:
            return _Candidate(fatal=str(error))
        rejection = loader_rejection(target, self.target)
        if rejection is not None:
            reason, fatal = rejection
            return _Candidate(fatal=f"{path}: {reason}") if fatal else _Candidate(skip=reason)
        try:
            info = read_elf_fast(path, PLUGIN_SYMBOLS)
        except ElfError as error:
            return _Candidate(fatal=str(error))
        problem = fatal_header_problem(info)
        if problem is not None:
            return _Candidate(fatal=f"{path}: {problem}")
        return _Candidate(info=info)

    def _map(
        self,
        name: str,
        path: Path,
        how: str,
        info: ElfInfo,
        requester: LoadedObject | None,
        namespace: Namespace,
    ) -> Resolution:
        existing = namespace.by_file(info.identity)
        if existing is not None:
            # The same file under another name: the loader reuses the object and remembers
            # this name for it too.
            namespace.alias(existing, name)
            return Resolution(name, path, how, loaded=existing)
        loaded = LoadedObject(path, info, loader=requester)
        namespace.add(loaded, [name])
        return Resolution(name, path, how, loaded=loaded, new=True)


def library_search_dirs(
    env: Mapping[str, str], setup: LoaderSetup, origin: str | None
) -> list[str]:
    """Return the directories of `LD_LIBRARY_PATH` in `env`, split and expanded."""
    text = env.get("LD_LIBRARY_PATH", "")
    return split_search_path(text, ":;", origin, setup) if text else []
