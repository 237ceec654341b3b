"""Collect every piece of code a Mosquitto broker would load, in the order it loads it.

1. `LD_AUDIT` modules, each in its own link-map namespace.
2. When the broker executable is given, its program interpreter and linked libraries.
3. `LD_PRELOAD` entries, then `/etc/ld.so.preload` entries.
4. OpenSSL config modules: 2.0 loads them first thing in `main()`, as root.
5. Plugins, in config order (`plugin_load` entries that no `plugin_use` selects are listed but
   not loaded).
6. NSS modules for the account lookup done before the privilege drop, and for host names of
   bridges and listeners.
7. `tls_engine` modules, loaded when the listeners start.

Every object's `DT_NEEDED` tree follows it, each library listed once for the whole process.
`LD_LIBRARY_PATH` directories are listed first; they load nothing themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import os
import re
import socket
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from mosquitto_guard.config.model import BrokerConfig, Option
from mosquitto_guard.errors import HostError
from mosquitto_guard.inventory.elf import (
    ElfError,
    ElfInfo,
    plugin_api,
    read_build_id,
)
from mosquitto_guard.inventory.fastelf import read_elf_fast
from mosquitto_guard.inventory.ldpath import (
    DEFAULT_INTERPRETER,
    CacheFormatError,
    LdCache,
    LibraryResolver,
    LoadedObject,
    Namespace,
    Resolution,
    expand_tokens,
    probe_loader,
)
from mosquitto_guard.inventory.model import CodeItem, Inventory
from mosquitto_guard.inventory.nss import ACCOUNT_DATABASES, nss_modules
from mosquitto_guard.inventory.openssl import (
    OpenSSLConfigError,
    OpenSSLDirs,
    config_module_loads,
    engine_load,
    parse_openssl_config,
    probe_openssl,
)

logger = logging.getLogger(__name__)

_C_WHITESPACE = " \t\n\v\f\r"
_NO_PLUGIN_API = (
    "exports neither mosquitto_plugin_version nor mosquitto_auth_plugin_version: the broker "
    "runs the file's constructors, then stops with an error"
)


def collect_inventory(
    config: BrokerConfig | None,
    env: Mapping[str, str],
    *,
    root: Path = Path("/"),
    cwd: Path | None = None,
    broker: Path | None = None,
    build_ids: bool = True,
) -> Inventory:
    """List the code a broker with `config` and environment `env` would load.

    `config` None is the broker's built-in default (no plugins). `cwd` is the broker's working
    directory (this process's when None). `root` relocates the host files the loader, glibc and
    OpenSSL read (`/etc/ld.so.preload`, `/etc/nsswitch.conf`, `OPENSSLDIR/openssl.cnf`); library
    search itself always uses this host's loader and `/etc/ld.so.cache`. With `broker`, the
    executable's own libraries are listed too, and its search paths apply. With `build_ids`
    False, `CodeItem.build_id` stays None and pyelftools, which reads the build ids, is never
    imported.

    Problems with single items are recorded in `CodeItem.problem`. Raises `HostError` when
    `broker`, or the executable of this Python process, cannot be read.

    NOTE: without `broker`, the libraries the broker has loaded before any plugin (libc,
    libssl, libcrypto) are unknown here. A plugin that names another copy of one of them
    through its RPATH or RUNPATH is then shown with that copy, where the loader would reuse
    the broker's.
    """
    collector = _Collector(env, root, cwd if cwd is not None else Path.cwd(), broker)
    collector.build_ids = build_ids
    collector.collect(config)
    return collector.inventory


def start_probes(env: Mapping[str, str]) -> list[threading.Thread]:
    """Start, in background threads, the programs `collect_inventory(..., env)` will ask.

    These are the dynamic loader's `--help` and `openssl version`. Their results are cached, so
    a `collect_inventory` call with the same `env` after the returned threads are joined runs
    neither program again. Join the threads before that call; without the join it can run a
    program a second time, with the same result. Raises `HostError` as `collect_inventory`
    does when this process's own executable cannot be read.
    """
    host = _host_program()
    host_loader = Path(host.interpreter) if host.interpreter else DEFAULT_INTERPRETER
    threads = [
        threading.Thread(
            target=probe_loader, args=(host_loader, env.get("GLIBC_TUNABLES")), daemon=True
        ),
        threading.Thread(target=probe_openssl, daemon=True),
    ]
    for thread in threads:
        thread.start()
    return threads


class _Collector:
    """The inventory being built, and the one process namespace its libraries share."""

    def __init__(self, env: Mapping[str, str], root: Path, cwd: Path, broker: Path | None) -> None:
        self.env = env
        self.root = root
        self.cwd = cwd
        self.broker = broker
        self.inventory = Inventory()
        self.namespace = Namespace()
        self._written: dict[int, str] = {}
        self._openssl_dirs: OpenSSLDirs | None = None
        self.build_ids = True
        self._build_id_cache: dict[Path, str | None] = {}

        host = _host_program()
        main_info = _read_broker(broker) if broker is not None else None
        program = main_info or host
        self.target = program.target
        # Only the loader this Python process already runs under is executed (for its --help),
        # never an interpreter named by the broker file being inspected.
        host_loader = Path(host.interpreter) if host.interpreter else DEFAULT_INTERPRETER
        interpreter = Path(program.interpreter) if program.interpreter else host_loader
        self.setup = probe_loader(host_loader, env.get("GLIBC_TUNABLES"))
        if self.setup.warning:
            self.inventory.warnings.append(self.setup.warning)
        if interpreter != host_loader:
            self.inventory.warnings.append(
                f"the broker's program interpreter {interpreter} differs from this host's loader "
                f"{host_loader}, whose search rules are used"
            )
        self.cache = self._load_cache()

        self.main: LoadedObject | None = None
        if broker is not None and main_info is not None:
            self.main = LoadedObject(broker, main_info)
            self.namespace.add(self.main, [str(broker)])
            self._written[id(self.main)] = str(broker)
        self.interpreter = self._seed_interpreter(interpreter)
        self.resolver = LibraryResolver(env, cwd, self.setup, self.cache, self.target, self.main)

    def collect(self, config: BrokerConfig | None) -> None:
        self._library_path()
        self._audit()
        if self.main is not None and self.interpreter is not None:
            self._add_interpreter_item(self.interpreter)
        preloaded = self._preloads()
        if self.main is not None:
            self._dependencies(self.main)
        for loaded in preloaded:
            self._dependencies(loaded)
        self._openssl()
        if config is not None:
            self._plugins(config)
        self._nss(config)
        if config is not None:
            self._tls_engines(config)

    # Set-up.

    def _load_cache(self) -> LdCache | None:
        path = self.setup.cache_path
        try:
            cache = LdCache.load(path)
        except FileNotFoundError:
            return None
        except (OSError, CacheFormatError) as error:
            self.inventory.warnings.append(f"{path} cannot be used ({error}); it is not searched")
            return None
        self.inventory.host_files.append(path)
        return cache

    def _seed_interpreter(self, interpreter: Path) -> LoadedObject | None:
        # The loader is in every process before anything else, under its PT_INTERP path and
        # its soname, so libc's DT_NEEDED on it finds this copy.
        try:
            info = read_elf_fast(interpreter)
        except ElfError as error:
            self.inventory.warnings.append(f"the program interpreter cannot be read: {error}")
            return None
        loaded = LoadedObject(interpreter, info, listed=False)
        self.namespace.add(loaded, [str(interpreter)])
        self._written[id(loaded)] = info.soname or str(interpreter)
        return loaded

    def _add_interpreter_item(self, interpreter: LoadedObject) -> None:
        interpreter.listed = True
        self._append(
            CodeItem(
                "linked_library",
                str(interpreter.path),
                interpreter.path,
                f"PT_INTERP of {self.broker}",
                "program interpreter",
                False,
                parent=str(self.broker),
                build_id=self._build_id(interpreter.info),
            )
        )

    # Environment and host files of the dynamic loader.

    def _library_path(self) -> None:
        text = self.env.get("LD_LIBRARY_PATH")
        if not text:
            return
        origin = self.main.origin if self.main is not None else None
        for element in re.split("[:;]", text):
            expanded = expand_tokens(element, origin, self.setup) if element else ""
            note = None
            path: Path | None = None
            if expanded is None:
                note = "a token in this entry cannot be expanded, so the loader drops it"
            else:
                path = Path(expanded) if expanded.startswith("/") else self.cwd / expanded
                if element == "":
                    note = "an empty entry means the working directory"
                elif not path.is_dir():
                    note = "no such directory"
            how = "relative to the working directory"
            if expanded is not None and expanded.startswith("/"):
                how = "absolute path"
            self._append(
                CodeItem(
                    "ld_library_path", element, path, "env:LD_LIBRARY_PATH", how, False, note=note
                )
            )

    def _audit(self) -> None:
        for name in self.env.get("LD_AUDIT", "").split(":"):
            if not name:
                continue
            # Each audit module gets a namespace of its own (dlmopen with LM_ID_NEWLM).
            namespace = Namespace()
            resolution = self.resolver.resolve(name, self.main, namespace)
            self._append(self._item("ld_audit", name, resolution, "env:LD_AUDIT", False))
            if resolution.loaded is not None and resolution.new:
                self._written[id(resolution.loaded)] = name
                self._dependencies(resolution.loaded, namespace)

    def _preloads(self) -> list[LoadedObject]:
        loaded: list[LoadedObject] = []
        for name in re.split("[ :]", self.env.get("LD_PRELOAD", "")):
            if name:
                found = self._load("ld_preload", name, name, "env:LD_PRELOAD", requester=self.main)
                loaded += [found] if found is not None else []
        path = self.root / "etc/ld.so.preload"
        try:
            text = path.read_bytes().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            return loaded
        except OSError as error:
            self.inventory.warnings.append(f"{path} cannot be read: {error.strerror}")
            return loaded
        self.inventory.host_files.append(path)
        for number, line in enumerate(text.split("\n"), start=1):
            # The loader blanks out `#` comments, then splits on spaces, tabs and colons.
            for name in re.split("[ \t:]", line.split("#", 1)[0]):
                if name:
                    source = f"{path}:{number}"
                    found = self._load("ld_so_preload", name, name, source, requester=self.main)
                    loaded += [found] if found is not None else []
        return loaded

    # OpenSSL.

    @property
    def openssl_dirs(self) -> OpenSSLDirs:
        if self._openssl_dirs is None:
            self._openssl_dirs = probe_openssl()
            if self._openssl_dirs.warning:
                self.inventory.warnings.append(self._openssl_dirs.warning)
        return self._openssl_dirs

    def _openssl(self) -> None:
        dirs = self.openssl_dirs
        named = self.env.get("OPENSSL_CONF")
        if named == "":
            self.inventory.warnings.append("OPENSSL_CONF is empty, so OpenSSL reads no config file")
            return
        if named is not None:
            path = Path(named) if named.startswith("/") else self.cwd / named
        else:
            path = self.root / dirs.openssldir.relative_to("/") / "openssl.cnf"
        try:
            config = parse_openssl_config(path, self.env, self.cwd)
        except FileNotFoundError:
            self.inventory.warnings.append(f"OpenSSL config {path} not found: no module is loaded")
            return
        except OSError as error:
            message = f"OpenSSL config {path} cannot be read: {error.strerror}"
            self.inventory.warnings.append(message)
            self.inventory.undecided.append(message)
            return
        except OpenSSLConfigError as error:
            self.inventory.host_files.append(path)
            self.inventory.warnings.append(
                f"{error}; OpenSSL rejects the config file and loads no module from it"
            )
            self.inventory.undecided.append(
                f"{error}; whether OpenSSL loads a module from it cannot be decided"
            )
            return
        self.inventory.host_files += config.files
        loads = config_module_loads(config, self.env, dirs)
        self.inventory.warnings += config.warnings
        for load in loads:
            note = f"OpenSSL {load.what} {load.name}"
            if load.note:
                note += f"; {load.note}"
            self._load(
                "openssl_module",
                load.written,
                load.load_name,
                load.source,
                requester=None,
                needs_manifest=True,
                how=load.resolved_by,
                note=note,
                dlopen=True,
            )

    def _tls_engines(self, config: BrokerConfig) -> None:
        for option in config.find("tls_engine"):
            engine_id = option.value.strip(_C_WHITESPACE)
            found = engine_load(engine_id, self.env, self.openssl_dirs)
            if found is None:
                self._append(
                    CodeItem(
                        "tls_engine",
                        engine_id,
                        None,
                        str(option.location),
                        "built into OpenSSL",
                        False,
                        option=option,
                        note="a built-in engine: no file is loaded",
                    )
                )
                continue
            load_name, how = found
            self._load(
                "tls_engine",
                engine_id,
                load_name,
                str(option.location),
                requester=None,
                needs_manifest=True,
                option=option,
                how=how,
                dlopen=True,
            )

    # The broker's own options.

    def _plugins(self, config: BrokerConfig) -> None:
        for entry in config.plugins:
            source = str(entry.option.location)
            if not entry.path:
                self._append(
                    CodeItem(
                        entry.kind,
                        entry.path,
                        None,
                        source,
                        "not found",
                        True,
                        option=entry.option,
                        problem="empty plugin path: the broker rejects the line",
                        loaded=entry.loaded,
                    )
                )
                continue
            if entry.loaded:
                self._load(
                    entry.kind,
                    entry.path,
                    entry.path,
                    source,
                    requester=self.main,
                    needs_manifest=True,
                    option=entry.option,
                    plugin=True,
                    dlopen=True,
                )
                continue
            # Resolved in a scratch namespace: the broker never opens it.
            resolution = self.resolver.resolve(entry.path, self.main, Namespace())
            item = self._item(
                entry.kind,
                entry.path,
                resolution,
                source,
                True,
                option=entry.option,
                plugin=True,
                dlopen=True,
                note=f"plugin_load {entry.name or ''} is selected by no plugin_use: never loaded",
            )
            self._append(dataclasses.replace(item, loaded=False))

    def _nss(self, config: BrokerConfig | None) -> None:
        databases = self._account_databases(config)
        host_option = _host_name_option(config) if config is not None else None
        if host_option is not None:
            databases += ("hosts",)
        if not databases:
            return
        path = self.root / "etc/nsswitch.conf"
        modules, warnings = nss_modules(path, databases)
        self.inventory.warnings += warnings
        if path.exists():
            self.inventory.host_files.append(path)

        for module in modules:
            account = [name for name in module.databases if name != "hosts"]
            reasons = []
            if account:
                reasons.append(f"{', '.join(account)} lookups when the broker starts as root")
            if "hosts" in module.databases and host_option is not None:
                reasons.append(f"host name lookups ({host_option.location})")
            note = f"NSS service {module.service} for " + " and ".join(reasons)
            self._load(
                "nss_module",
                module.file_name,
                module.file_name,
                module.source,
                requester=None,
                note=note,
                dlopen=True,
            )

    def _account_databases(self, config: BrokerConfig | None) -> tuple[str, ...]:
        """Return the NSS databases the privilege drop reads, or none when there is no drop."""
        user_option = config.last("user") if config is not None else None
        user = user_option.value.strip(_C_WHITESPACE) if user_option is not None else "mosquitto"
        if user == "root":
            where = user_option.location if user_option is not None else "user"
            self.inventory.warnings.append(
                f"{where}: with user root the broker looks up no account, so no NSS module is "
                "loaded for passwd or group"
            )
            return ()
        if self.env.get("SNAP_NAME") == "mosquitto":
            self.inventory.warnings.append(
                "SNAP_NAME=mosquitto makes the broker skip its privilege drop, so no NSS module "
                "is loaded for passwd or group"
            )
            return ()
        return ACCOUNT_DATABASES

    # Building items.

    def _load(
        self,
        kind: str,
        written: str,
        load_name: str,
        source: str,
        *,
        requester: LoadedObject | None,
        needs_manifest: bool = False,
        option: Option | None = None,
        how: str | None = None,
        note: str | None = None,
        plugin: bool = False,
        dlopen: bool = False,
    ) -> LoadedObject | None:
        """Resolve and map one item, add it, then add its libraries unless it is a preload.

        Returns the object when it was newly mapped and its libraries are still to be added
        (preloads only; their libraries come after the broker's own).
        """
        resolution = self.resolver.resolve(load_name, requester, self.namespace)
        item = self._item(
            kind,
            written,
            resolution,
            source,
            needs_manifest,
            option=option,
            how=how,
            note=note,
            plugin=plugin,
            dlopen=dlopen,
        )
        self._append(item)
        loaded = resolution.loaded
        if loaded is None or not resolution.new:
            return None
        self._written[id(loaded)] = written
        if kind in ("ld_preload", "ld_so_preload"):
            return loaded
        self._dependencies(loaded)
        return None

    def _item(
        self,
        kind: str,
        written: str,
        resolution: Resolution,
        source: str,
        needs_manifest: bool,
        *,
        option: Option | None = None,
        how: str | None = None,
        note: str | None = None,
        plugin: bool = False,
        dlopen: bool = False,
    ) -> CodeItem:
        info = resolution.loaded.info if resolution.loaded is not None else None
        problem = resolution.problem
        if info is not None and problem is None:
            problem = _load_problem(info, dlopen=dlopen)
        api = plugin_api(info) if plugin and info is not None else None
        if api == "none" and problem is None:
            problem = _NO_PLUGIN_API
        return CodeItem(
            kind=kind,
            written=written,
            path=resolution.path,
            source=source,
            resolved_by=how or resolution.resolved_by or "not found",
            needs_manifest=needs_manifest,
            option=option,
            problem=problem,
            note=note,
            plugin_api=api,
            build_id=self._build_id(info) if info is not None else None,
        )

    def _build_id(self, info: ElfInfo) -> str | None:
        if not self.build_ids:
            return None
        if info.path not in self._build_id_cache:
            try:
                build_id = read_build_id(info.path)
            except ElfError as error:
                self.inventory.warnings.append(f"build id not read: {error}")
                build_id = None
            self._build_id_cache[info.path] = build_id
        return self._build_id_cache[info.path]

    def _dependencies(self, root: LoadedObject, namespace: Namespace | None = None) -> None:
        found = self.resolver.load_dependencies(root, namespace or self.namespace)
        for dependency in found:
            resolution = dependency.resolution
            parent = dependency.parent
            loaded = resolution.loaded
            if loaded is not None:
                self._written.setdefault(id(loaded), resolution.name)
            how = resolution.resolved_by
            if loaded is not None and loaded is self.interpreter:
                how = "program interpreter"
            item = self._item(
                "linked_library",
                resolution.name,
                resolution,
                f"DT_NEEDED of {parent.path}",
                False,
                how=how,
            )
            parent_name = self._written.get(id(parent), str(parent.path))
            self._append(dataclasses.replace(item, parent=parent_name))

    def _append(self, item: CodeItem) -> None:
        if item.problem is not None and item.loaded:
            logger.info("cannot load %s (%s): %s", item.written, item.source, item.problem)
        self.inventory.items.append(item)


def _load_problem(info: ElfInfo, *, dlopen: bool) -> str | None:
    if info.file_type == "ET_EXEC":
        return f"{info.path} is an executable, not a shared object: the loader cannot map it"
    if dlopen and info.pie:
        return f"{info.path} is a position-independent executable, which dlopen rejects"
    return None


@functools.cache
def _host_program() -> ElfInfo:
    """Read the running Python interpreter, whose ELF type and loader the broker shares.

    Read once per process: the executable of a running process does not change.
    """
    for candidate in (Path("/proc/self/exe"), Path(os.path.realpath(sys.executable))):
        try:
            return read_elf_fast(candidate)
        except ElfError:
            continue
    raise HostError(
        "cannot read this process's own executable to learn the machine type",
        fix="pass the broker executable so its ELF header is used instead",
    )


def _read_broker(broker: Path) -> ElfInfo:
    try:
        return read_elf_fast(broker)
    except ElfError as error:
        raise HostError(
            f"cannot read the broker executable: {error}",
            fix="pass the path of the mosquitto binary",
        ) from error


def _host_name_option(config: BrokerConfig) -> Option | None:
    """Return the first option that makes the broker look up a host name, if any."""
    for key in ("address", "addresses"):
        for option in config.find(key):
            for token in option.args:
                if not _is_numeric_host(_host_part(token)):
                    return option
    for listener in config.listeners:
        address = listener.address
        if address and not address.startswith("/") and not _is_numeric_host(address):
            return listener.option
    return None


def _host_part(token: str) -> str:
    if token.startswith("["):
        return token[1:].split("]", 1)[0]
    if token.count(":") == 1:
        return token.split(":", 1)[0]
    return token


def _is_numeric_host(host: str) -> bool:
    # getaddrinfo() consults no NSS module for a numeric address, including the short IPv4
    # forms inet_aton() accepts ("127.1").
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
        return True
    except OSError:
        return False
