"""Find the modules OpenSSL loads because of its config file, and where an engine id leads.

Mosquitto 2.0 calls `OPENSSL_init_crypto(... | OPENSSL_INIT_LOAD_CONFIG)` first thing in
`main()`, as root. OpenSSL then reads `OPENSSL_CONF`, or `OPENSSLDIR/openssl.cnf` when that is
unset, and runs the modules named in the section that `openssl_conf` names. No Python library
reads this format with OpenSSL's rules, so the parser below follows `crypto/conf/conf_def.c`:
`[section]` headers, `name = value` lines, `#` comments outside quotes, `\\` escapes and line
continuation, `'`/`"`/`` ` `` quotes, `$name`, `${name}`, `$(name)` and `$section::name`
expansion (`ENV` is the environment), and the `.include` and `.pragma` directives.

What the modules load, from OpenSSL 3.0 (checked with 3.0.19 and a module that records its
own loading):

- `providers`: each provider with `activate` (any value in 3.0) is loaded from its `module`
  path, or from `<name>.so`, relative to `OPENSSL_MODULES` or `MODULESDIR`. The built-in
  providers `default`, `base` and `null` load nothing.
- `engines`: `dynamic_path` loads that file (a bare name becomes `lib<name>.so` and is searched
  by the dynamic loader). Any other setting in an engine section loads the engine by id:
  `<id>.so` in `OPENSSL_ENGINES` or `ENGINESDIR`, unless the id is built in.
- Any init-section name that is not a built-in module loads a config module from the `path`
  in its section, or `lib<name>.so`.

NOTE: OpenSSL stops running further modules after a module fails. This model lists everything
configured, so it can list a module that a failure earlier in the file would have skipped.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mosquitto_guard.errors import VerificationError

logger = logging.getLogger(__name__)

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_PUNCT = frozenset("!.%&*+,/;?@^~|-")
_WS = " \t\r\n"
_QUOTES = "'`\""
# The characters that make `_expand` and `_clear_comments` do more than copy or cut a line.
_SPECIAL_IN_VALUE = frozenset(_QUOTES + "\\$")
_SPECIAL_IN_COMMENT_SCAN = frozenset(_QUOTES + "\\")
_MAX_VALUE = 65536
# OpenSSL has no limit: a file that includes itself makes 3.0.19 fail and load no module.
_MAX_INCLUDE_DEPTH = 64
_UTF8_BOM = "\ufeff"
_OPENSSL_TIMEOUT = 10

# Built-in config modules in the order `OPENSSL_load_builtin_modules()` registers them.
BUILTIN_MODULES = (
    "oid_section",
    "stbl_section",
    "engines",
    "alg_section",
    "ssl_conf",
    "providers",
    "random",
)
BUILTIN_PROVIDERS = frozenset({"default", "base", "null"})
_FALSE_WORDS = frozenset({"0", "no", "NO", "false", "FALSE", "off", "OFF"})


class OpenSSLConfigError(VerificationError):
    """An OpenSSL config file that OpenSSL itself would fail to load."""


class OpenSSLDirs:
    """The directories compiled into the system's OpenSSL, and its built-in engine ids.

    When `builtin_engines` is None, the `openssl` command at `binary` lists them the first time
    the property is read, because only an engine loaded by id needs them. When that command is
    not known or fails, only `dynamic` counts as built in, so any other id is looked for as a
    file.
    """

    def __init__(
        self,
        openssldir: Path,
        enginesdir: Path,
        modulesdir: Path,
        builtin_engines: frozenset[str] | None,
        warning: str | None = None,
        *,
        binary: str | None = None,
    ) -> None:
        self.openssldir = openssldir
        self.enginesdir = enginesdir
        self.modulesdir = modulesdir
        self.warning = warning
        self._builtin_engines = builtin_engines
        self._binary = binary

    def __repr__(self) -> str:
        return (
            f"OpenSSLDirs(openssldir={self.openssldir!r}, enginesdir={self.enginesdir!r}, "
            f"modulesdir={self.modulesdir!r}, warning={self.warning!r})"
        )

    @property
    def builtin_engines(self) -> frozenset[str]:
        """The engine ids built into OpenSSL, which `ENGINE_by_id` loads from no file."""
        if self._builtin_engines is None:
            self._builtin_engines = _probe_engines(self._binary)
        return self._builtin_engines


_OPENSSL_ENV = {"PATH": "/usr/bin:/bin", "OPENSSL_CONF": "/dev/null", "LC_ALL": "C"}


@functools.lru_cache(maxsize=1)
def probe_openssl() -> OpenSSLDirs:
    """Ask the `openssl` command for OPENSSLDIR, ENGINESDIR and MODULESDIR.

    The command runs with `OPENSSL_CONF=/dev/null`, so it loads no module itself. When it is
    missing, the Debian 12 values are assumed and `OpenSSLDirs.warning` explains why. The
    built-in engines are asked of the command only when `OpenSSLDirs.builtin_engines` is read.
    NOTE: the `openssl` command reports the directories of the libcrypto it links; a broker
    linked with a different libcrypto can use other ones.
    """
    fallback = OpenSSLDirs(
        Path("/usr/lib/ssl"),
        Path("/usr/lib/x86_64-linux-gnu/engines-3"),
        Path("/usr/lib/x86_64-linux-gnu/ossl-modules"),
        frozenset({"dynamic"}),
    )
    binary = _find_openssl()
    if binary is None:
        return _with_warning(fallback, "the openssl command was not found in /usr/bin or /bin")
    try:
        version = subprocess.run(
            [binary, "version", "-d", "-e", "-m"],
            capture_output=True,
            text=True,
            timeout=_OPENSSL_TIMEOUT,
            env=_OPENSSL_ENV,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return _with_warning(fallback, f"cannot run {binary}: {error}")
    found = dict(re.findall(r'^(OPENSSLDIR|ENGINESDIR|MODULESDIR): "(.*)"$', version.stdout, re.M))
    if len(found) != 3:
        return _with_warning(
            fallback, f"{binary} version -d -e -m did not print all three directories"
        )
    return OpenSSLDirs(
        Path(found["OPENSSLDIR"]),
        Path(found["ENGINESDIR"]),
        Path(found["MODULESDIR"]),
        None,
        binary=binary,
    )


def _find_openssl() -> str | None:
    for directory in ("/usr/bin", "/bin"):
        candidate = os.path.join(directory, "openssl")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _probe_engines(binary: str | None) -> frozenset[str]:
    """Return the engine ids `openssl engine` lists, or only `dynamic` when it cannot be run."""
    if binary is None:
        return frozenset({"dynamic"})
    try:
        engines = subprocess.run(
            [binary, "engine"],
            capture_output=True,
            text=True,
            timeout=_OPENSSL_TIMEOUT,
            env=_OPENSSL_ENV,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        logger.warning(
            "cannot run %s engine (%s); only the dynamic engine counts as built in", binary, error
        )
        return frozenset({"dynamic"})
    return frozenset(re.findall(r"^\((\S+)\)", engines.stdout, re.M)) or frozenset({"dynamic"})


def _with_warning(dirs: OpenSSLDirs, reason: str) -> OpenSSLDirs:
    return OpenSSLDirs(
        dirs.openssldir,
        dirs.enginesdir,
        dirs.modulesdir,
        dirs.builtin_engines,
        warning=f"{reason}; assuming OPENSSLDIR {dirs.openssldir}, ENGINESDIR {dirs.enginesdir}, "
        f"MODULESDIR {dirs.modulesdir}",
    )


@dataclass(frozen=True)
class ConfValue:
    """One `name = value` of an OpenSSL config, with the file and line it came from."""

    name: str
    value: str
    path: Path
    line: int

    @property
    def location(self) -> str:
        """The value's position as `file:line`."""
        return f"{self.path}:{self.line}"


@dataclass
class OpenSSLConfig:
    """A loaded OpenSSL config: sections in the order OpenSSL keeps them, and the files read."""

    sections: dict[str, dict[str, ConfValue]] = field(default_factory=lambda: {"default": {}})
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    env: Mapping[str, str] = field(default_factory=dict)

    def section(self, name: str) -> list[ConfValue] | None:
        """Return the values of section `name` in order, or None if there is no such section."""
        values = self.sections.get(name)
        return None if values is None else list(values.values())

    def get(self, section: str | None, name: str) -> str | None:
        """Look `name` up as `_CONF_get_string` does: in `section`, `ENV`, then `default`."""
        if section is not None:
            value = self.sections.get(section, {}).get(name)
            if value is not None:
                return value.value
            if section == "ENV" and name in self.env:
                return self.env[name]
        value = self.sections["default"].get(name)
        return None if value is None else value.value

    def add(self, section: str, value: ConfValue) -> None:
        """Set `value` in `section`; a name set again moves to the end, as OpenSSL keeps it."""
        values = self.sections.setdefault(section, {})
        values.pop(value.name, None)
        values[value.name] = value


def parse_openssl_config(path: Path, env: Mapping[str, str], cwd: Path) -> OpenSSLConfig:
    """Load the OpenSSL config file `path` with its includes, as `NCONF_load` does.

    Relative include paths resolve against `OPENSSL_CONF_INCLUDE` from `env`, the `includedir`
    pragma, or `cwd`. Missing includes are skipped, as OpenSSL skips them, and noted in
    `OpenSSLConfig.warnings`. Raises `OpenSSLConfigError` for a file OpenSSL would reject, and
    `OSError` when `path` itself cannot be read.
    """
    parser = _Parser(env, cwd)
    parser.read_file(path, depth=0, from_directory=False, first=True)
    return parser.config


class _Parser:
    """The state `def_load_bio` keeps while it reads a file and everything it includes."""

    def __init__(self, env: Mapping[str, str], cwd: Path) -> None:
        self.config = OpenSSLConfig(env=env)
        self.env = env
        self.cwd = cwd
        self.section = "default"
        self.dollarid = False
        self.abspath = False
        self.includedir: str | None = None

    def read_file(
        self, path: Path, *, depth: int, from_directory: bool, first: bool = False
    ) -> None:
        full = path if path.is_absolute() else self.cwd / path
        data = full.read_bytes()
        self.config.files.append(full)
        if b"\0" in data:
            # OpenSSL's line reader and this one disagree on NUL bytes (OpenSSL 3.0 may stop
            # at one, or join lines around it), so no reading of such a file can be trusted.
            raise OpenSSLConfigError(
                f"{full}: contains a NUL byte, which OpenSSL reads differently"
            )
        text = data.decode("utf-8", "surrogateescape")
        if first and text.startswith(_UTF8_BOM):
            text = text[1:]
        for number, line in _logical_lines(text):
            self._line(line, full, number, depth, from_directory)

    def _line(self, line: str, path: Path, number: int, depth: int, from_directory: bool) -> None:
        stripped = line.lstrip(_WS)
        if not stripped or stripped[0] == "#":
            return  # a blank or comment line, as most of a stock openssl.cnf is
        where = f"{path}:{number}"
        line = _clear_comments(line)
        start = _eat_ws(line, 0)
        if start == len(line):
            return
        if line[start] == "[":
            self._section_header(line, start + 1, where)
            return
        name_end = self._eat_name(line, start)
        section, name_start = self.section, start
        if line.startswith("::", name_end):
            section = line[start:name_end]
            name_start = name_end + 2
            name_end = self._eat_name(line, name_start)
        after = _eat_ws(line, name_end)
        if self._is_directive(line, name_start, after, ".pragma"):
            self._pragma(line, after, where)
            return
        if self._is_directive(line, name_start, after, ".include"):
            self._include(line, after, section, where, depth, from_directory)
            return
        if after >= len(line) or line[after] != "=":
            raise OpenSSLConfigError(f"{where}: missing equal sign: {line[after:]!r}")
        value_text = line[_eat_ws(line, after + 1) :].rstrip(_WS)
        value = self._expand(value_text, section, where)
        self.config.add(section, ConfValue(line[name_start:name_end], value, path, number))

    @staticmethod
    def _is_directive(line: str, name_start: int, after: int, directive: str) -> bool:
        # `conf_def.c` tests only that the name starts with the directive and that something
        # (spaces, more name, or `=`) follows it, so `.includefoo = x` also includes `x`.
        if not line.startswith(directive, name_start):
            return False
        rest = name_start + len(directive)
        return after != rest or line[after : after + 1] == "="

    def _section_header(self, line: str, position: int, where: str) -> None:
        start = _eat_ws(line, position)
        scan = start
        while True:
            end = self._eat_name(line, scan)
            after = _eat_ws(line, end)
            if after < len(line) and line[after] == "]":
                break
            if after < len(line) and scan != after:
                scan = after
                continue
            raise OpenSSLConfigError(f"{where}: missing close square bracket")
        self.section = self._expand(line[start:end], None, where)
        self.config.sections.setdefault(self.section, {})

    def _pragma(self, line: str, position: int, where: str) -> None:
        if line[position : position + 1] == "=":
            position = _eat_ws(line, position + 1)
        text = line[position:].rstrip(_WS)
        colon = text.find(":")
        if colon <= 0 or colon == len(text) - 1:
            raise OpenSSLConfigError(f"{where}: invalid pragma {text!r}: expected keyword:value")
        keyword = text[:colon].rstrip(_WS)
        value = text[_eat_ws(text, colon + 1) :]
        if keyword in ("dollarid", "abspath"):
            lowered = value.lower()
            if lowered not in ("on", "true", "off", "false"):
                raise OpenSSLConfigError(f"{where}: invalid pragma value {value!r} for {keyword}")
            setattr(self, keyword, lowered in ("on", "true"))
        elif keyword == "includedir":
            self.includedir = value

    def _include(
        self, line: str, position: int, section: str, where: str, depth: int, from_directory: bool
    ) -> None:
        if line[position : position + 1] == "=":
            position = _eat_ws(line, position + 1)
        target = self._expand(line[position:].rstrip(_WS), section, where)
        include_dir = self.env.get("OPENSSL_CONF_INCLUDE", self.includedir)
        if include_dir is not None and not target.startswith("/"):
            target = include_dir + ("" if include_dir.endswith("/") else "/") + target
        if self.abspath and not target.startswith("/"):
            raise OpenSSLConfigError(f"{where}: relative include path {target!r} with abspath on")
        if depth >= _MAX_INCLUDE_DEPTH:
            raise OpenSSLConfigError(f"{where}: includes nest deeper than {_MAX_INCLUDE_DEPTH}")
        full = Path(target) if target.startswith("/") else self.cwd / target
        try:
            mode = full.stat().st_mode
        except FileNotFoundError:
            self.config.warnings.append(
                f"{where}: included file {full} not found; OpenSSL skips it"
            )
            return
        except OSError as error:
            self.config.warnings.append(
                f"{where}: included file {full} cannot be read ({error.strerror}); OpenSSL skips it"
            )
            return
        if stat.S_ISDIR(mode):
            if from_directory:
                self.config.warnings.append(
                    f"{where}: {full} is a directory included from a directory; OpenSSL ignores it"
                )
                return
            self._include_directory(full, depth)
            return
        try:
            self.read_file(full, depth=depth + 1, from_directory=from_directory)
        except PermissionError:
            self.config.warnings.append(f"{where}: included file {full} cannot be read")

    def _include_directory(self, directory: Path, depth: int) -> None:
        # OpenSSL reads the directory in readdir order, which os.listdir also returns.
        try:
            names = os.listdir(directory)
        except OSError as error:
            self.config.warnings.append(f"{directory} cannot be listed ({error.strerror})")
            return
        for name in names:
            lowered = name.lower()
            wanted = (len(name) > 5 and lowered.endswith(".conf")) or (
                len(name) > 4 and lowered.endswith(".cnf")
            )
            path = directory / name
            if not wanted or path.is_dir():
                continue
            try:
                self.read_file(path, depth=depth + 1, from_directory=True)
            except PermissionError:
                self.config.warnings.append(f"{path} cannot be read; OpenSSL skips it")

    def _eat_name(self, line: str, position: int) -> int:
        while position < len(line):
            char = line[position]
            if char == "\\":
                position += 2 if position + 1 < len(line) else 1
                continue
            if char in _ALNUM or char in _PUNCT or (self.dollarid and char == "$"):
                position += 1
                continue
            break
        return min(position, len(line))

    def _expand(self, text: str, section: str | None, where: str) -> str:
        """Copy a value as `str_copy` does: quotes, escapes and `$` variables."""
        if not _SPECIAL_IN_VALUE.intersection(text):
            return text  # nothing to unquote, unescape or expand: the loop would copy it as is
        out: list[str] = []
        length = 0
        index = 0
        while index < len(text):
            char = text[index]
            if char in _QUOTES:
                index += 1
                while index < len(text) and text[index] != char:
                    if text[index] == "\\":
                        index += 1
                        if index >= len(text):
                            break
                    out.append(text[index])
                    index += 1
                if index < len(text):
                    index += 1
            elif char == "\\":
                if index + 1 >= len(text):
                    break
                escaped = text[index + 1]
                out.append({"r": "\r", "n": "\n", "b": "\b", "t": "\t"}.get(escaped, escaped))
                index += 2
            elif char == "$" and (not self.dollarid or text[index + 1 : index + 2] in ("{", "(")):
                value, index = self._variable(text, index, section, where)
                length += len(value)
                if length > _MAX_VALUE:
                    raise OpenSSLConfigError(f"{where}: value longer than {_MAX_VALUE} bytes")
                out.append(value)
            else:
                out.append(char)
                index += 1
        return "".join(out)

    def _variable(self, text: str, index: int, section: str | None, where: str) -> tuple[str, int]:
        position = index + 1
        closing = {"{": "}", "(": ")"}.get(text[position : position + 1])
        if closing:
            position += 1
        name_start = position
        position = self._eat_variable_name(text, position)
        lookup_section = section
        if text.startswith("::", position):
            lookup_section = text[name_start:position]
            name_start = position + 2
            position = self._eat_variable_name(text, name_start)
        name = text[name_start:position]
        if closing:
            if text[position : position + 1] != closing:
                raise OpenSSLConfigError(f"{where}: no closing {closing!r} in {text!r}")
            position += 1
        value = self.config.get(lookup_section, name)
        if value is None:
            raise OpenSSLConfigError(f"{where}: variable {name!r} has no value")
        return value, position

    def _eat_variable_name(self, text: str, position: int) -> int:
        while position < len(text) and (
            text[position] in _ALNUM or (self.dollarid and text[position] == "$")
        ):
            position += 1
        return position


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continued lines; each result carries the number of its first physical line."""
    result: list[tuple[int, str]] = []
    pending = ""
    first = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.split("\0", 1)[0].rstrip("\r\n")
        if not pending:
            first = number
        pending += line
        if pending.endswith("\\") and not pending.endswith("\\\\"):
            pending = pending[:-1]
            continue
        result.append((first, pending))
        pending = ""
    if pending:
        result.append((first, pending))
    return result


def _eat_ws(text: str, position: int) -> int:
    while position < len(text) and text[position] in _WS:
        position += 1
    return position


def _clear_comments(line: str) -> str:
    if not _SPECIAL_IN_COMMENT_SCAN.intersection(line):
        return line.split("#", 1)[0]  # no quote or escape can hide a '#' from the scan below
    index = 0
    while index < len(line):
        char = line[index]
        if char == "#":
            return line[:index]
        if char in _QUOTES:
            index += 1
            while index < len(line) and line[index] != char:
                if line[index] == "\\":
                    index += 1
                index += 1
            index += 1
        elif char == "\\":
            index += 2
        else:
            index += 1
    return line


@dataclass(frozen=True)
class ModuleLoad:
    """A file OpenSSL would `dlopen`, and the config line that makes it do so.

    `load_name` is the string passed to `dlopen`: it contains a slash when OpenSSL built a
    path, and is a bare `lib<name>.so` that the dynamic loader searches otherwise.
    `resolved_by` names the directory OpenSSL used, or is None for a loader search.
    """

    what: str
    name: str
    written: str
    load_name: str
    source: str
    resolved_by: str | None
    note: str | None = None


def dso_file_name(name: str, *, extension_only: bool) -> str:
    """Return the file name OpenSSL's DSO layer makes of `name` (`dlfcn_name_converter`).

    A name with a slash is kept; otherwise `.so` is appended and, unless `extension_only`,
    `lib` is put in front.
    """
    if "/" in name:
        return name
    return f"{name}.so" if extension_only else f"lib{name}.so"


def dso_merge(name: str, directory: str) -> str:
    """Join `name` to `directory` as `dlfcn_merger` does: an absolute `name` wins."""
    if name.startswith("/"):
        return name
    if directory.endswith("/"):
        directory = directory[:-1]
    return f"{directory}/{name}"


def engine_load(
    engine_id: str, env: Mapping[str, str], dirs: OpenSSLDirs
) -> tuple[str, str] | None:
    """Return the path `ENGINE_by_id(engine_id)` loads and how it was built, or None if built in.

    OpenSSL looks for `<id>.so` in `OPENSSL_ENGINES`, or in ENGINESDIR when that is unset. An
    id with a slash is used as a path; a relative one is then taken relative to that directory.
    """
    if engine_id in dirs.builtin_engines:
        return None
    if "OPENSSL_ENGINES" in env:
        directory, how = env["OPENSSL_ENGINES"], "OPENSSL_ENGINES"
    else:
        directory, how = str(dirs.enginesdir), "ENGINESDIR"
    path = dso_merge(dso_file_name(engine_id, extension_only=True), directory)
    if engine_id.startswith("/"):
        how = "absolute path"
    return path, how


def provider_load(
    name: str, module: str | None, env: Mapping[str, str], dirs: OpenSSLDirs
) -> tuple[str, str]:
    """Return the path OpenSSL 3 loads for provider `name` and how it was built.

    `module` is the provider's `module` setting. Relative paths and bare names are joined to
    `OPENSSL_MODULES`, or to MODULESDIR when that is unset.
    """
    if "OPENSSL_MODULES" in env:
        directory, how = env["OPENSSL_MODULES"], "OPENSSL_MODULES"
    else:
        directory, how = str(dirs.modulesdir), "MODULESDIR"
    written = module if module is not None else dso_file_name(name, extension_only=True)
    if written.startswith("/"):
        how = "absolute path"
    return dso_merge(written, directory), how


def config_module_loads(
    config: OpenSSLConfig, env: Mapping[str, str], dirs: OpenSSLDirs
) -> list[ModuleLoad]:
    """List every module file the config makes OpenSSL load, in the order OpenSSL loads them.

    The init section is the one the default section's `openssl_conf` names, which is where
    OpenSSL looks when the application (Mosquitto) names none.
    """
    init_name = config.get(None, "openssl_conf")
    if init_name is None:
        return []
    init = config.section(init_name)
    if init is None:
        config.warnings.append(
            f"openssl_conf names the section [{init_name}], which does not exist"
        )
        return []
    loads: list[ModuleLoad] = []
    for entry in init:
        module = _builtin_module(entry.name)
        if module == "providers":
            loads += _provider_loads(config, entry, env, dirs)
        elif module == "engines":
            loads += _engine_loads(config, entry, env, dirs)
        elif module is None:
            path = config.get(entry.value, "path")
            written = path if path is not None else entry.name
            loads.append(
                ModuleLoad(
                    "config module",
                    entry.name,
                    written,
                    dso_file_name(written, extension_only=False),
                    entry.location,
                    _path_kind(written),
                )
            )
    return loads


def _builtin_module(name: str) -> str | None:
    # `module_find` compares only the part before the last dot, and only as many characters as
    # that part has, so `engines.1` and even `eng` select the `engines` module.
    dot = name.rfind(".")
    prefix = name[:dot] if dot >= 0 else name
    for module in BUILTIN_MODULES:
        if module.startswith(prefix):
            return module
    return None


def _path_kind(written: str) -> str | None:
    if written.startswith("/"):
        return "absolute path"
    if "/" in written:
        return "relative to the working directory"
    return None


def _skip_dot(name: str) -> str:
    dot = name.find(".")
    return name[dot + 1 :] if dot >= 0 else name


def _provider_loads(
    config: OpenSSLConfig, entry: ConfValue, env: Mapping[str, str], dirs: OpenSSLDirs
) -> list[ModuleLoad]:
    providers = config.section(entry.value)
    if providers is None:
        config.warnings.append(f"{entry.location}: provider section [{entry.value}] does not exist")
        return []
    loads: list[ModuleLoad] = []
    seen: set[str] = set()
    for provider in providers:
        settings = config.section(provider.value)
        if settings is None:
            config.warnings.append(
                f"{provider.location}: section [{provider.value}] of provider "
                f"{provider.name} does not exist"
            )
            continue
        name = _skip_dot(provider.name)
        module: ConfValue | None = None
        activate: ConfValue | None = None
        for setting in settings:
            key = _skip_dot(setting.name)
            if key == "identity":
                name = setting.value
            elif key == "module":
                module = setting
            elif key == "activate":
                activate = setting
        if activate is None or name in seen:
            continue
        seen.add(name)
        if name in BUILTIN_PROVIDERS:
            continue
        note = None
        if activate.value in _FALSE_WORDS:
            note = (
                f"activate = {activate.value}: OpenSSL 3.0 activates the provider whatever the "
                "value; newer releases read it as a boolean"
            )
        load_name, how = provider_load(name, module.value if module else None, env, dirs)
        source = module.location if module is not None else activate.location
        written = module.value if module is not None else name
        loads.append(ModuleLoad("provider", name, written, load_name, source, how, note))
    return loads


def _engine_loads(
    config: OpenSSLConfig, entry: ConfValue, env: Mapping[str, str], dirs: OpenSSLDirs
) -> list[ModuleLoad]:
    engines = config.section(entry.value)
    if engines is None:
        config.warnings.append(f"{entry.location}: engine section [{entry.value}] does not exist")
        return []
    loads: list[ModuleLoad] = []
    for engine in engines:
        commands = config.section(engine.value)
        if commands is None:
            config.warnings.append(
                f"{engine.location}: section [{engine.value}] of engine {engine.name} "
                "does not exist"
            )
            continue
        name = _skip_dot(engine.name)
        have_engine = False
        for command in commands:
            key = _skip_dot(command.name)
            if key == "engine_id":
                name = command.value
            elif key == "soft_load":
                continue
            elif key == "dynamic_path":
                have_engine = True
                loads.append(
                    ModuleLoad(
                        "engine",
                        name,
                        command.value,
                        dso_file_name(command.value, extension_only=False),
                        command.location,
                        _path_kind(command.value),
                    )
                )
            elif not have_engine:
                # Any other setting needs the engine itself, so OpenSSL loads it by id.
                have_engine = True
                found = engine_load(name, env, dirs)
                if found is not None:
                    load_name, how = found
                    loads.append(ModuleLoad("engine", name, name, load_name, command.location, how))
    return loads
