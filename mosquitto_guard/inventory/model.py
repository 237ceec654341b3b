"""The inventory of code a broker would load: one `CodeItem` per file, in loading order."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosquitto_guard.config.model import Option

FORMAT_VERSION = 1

# Every `CodeItem.kind`. `needs_manifest` is True for the admin-chosen kinds: the four plugin
# kinds, `tls_engine` (unless the id names a built-in engine) and `openssl_module`.
KINDS = (
    "plugin",
    "auth_plugin",
    "global_plugin",
    "plugin_load",
    "tls_engine",
    "openssl_module",
    "ld_preload",
    "ld_audit",
    "ld_library_path",
    "ld_so_preload",
    "nss_module",
    "linked_library",
)


@dataclass(frozen=True)
class CodeItem:
    """One file the broker would map into its process, or one directory the loader searches.

    `written` is the name or path as written where it came from. `path` is the file the loader
    would open, as the loader names it (symlinks are not resolved), or None when no file is
    found or the item is built into OpenSSL. `source` is where the item was named (`file:line`,
    `env:LD_PRELOAD`, `/etc/ld.so.preload:2`, `DT_NEEDED of /path`), and `resolved_by` how
    `path` was found. `parent` is, for a linked library, the written name of the object that
    first needs it. `problem` is why the loader or the broker would fail on the item. `path` is
    still set when a file exists but is rejected (not ELF, truncated, no plugin symbols).
    `loaded` is False for a `plugin_load` that no `plugin_use` selects: it is listed, with a
    `note`, but never opened. `plugin_api` is `v5`, `legacy` or `none` for plugins, from the
    symbols the file exports.
    """

    kind: str
    written: str
    path: Path | None
    source: str
    resolved_by: str
    needs_manifest: bool
    option: Option | None = None
    parent: str | None = None
    problem: str | None = None
    loaded: bool = True
    note: str | None = None
    plugin_api: str | None = None
    build_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the item as JSON-ready values; the option appears as its key and location."""
        option = None
        if self.option is not None:
            option = {
                "key": self.option.key,
                "value": self.option.value,
                "path": str(self.option.location.path),
                "line": self.option.location.line,
            }
        return {
            "kind": self.kind,
            "written": self.written,
            "path": None if self.path is None else str(self.path),
            "source": self.source,
            "resolved_by": self.resolved_by,
            "needs_manifest": self.needs_manifest,
            "option": option,
            "parent": self.parent,
            "problem": self.problem,
            "loaded": self.loaded,
            "note": self.note,
            "plugin_api": self.plugin_api,
            "build_id": self.build_id,
        }


@dataclass
class Inventory:
    """Every item found, in the order the broker loads them, and what could not be checked.

    `host_files` lists the host files that decided what is loaded (the OpenSSL config and its
    includes, `/etc/nsswitch.conf`, `/etc/ld.so.preload`, `/etc/ld.so.cache`), so that an
    integrity baseline can cover them too.
    """

    items: list[CodeItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    host_files: list[Path] = field(default_factory=list)
    # Inputs whose effect could not be decided, such as an OpenSSL config this reader cannot
    # follow. A verifier must treat each as a failure, because code may load from it.
    undecided: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[CodeItem]:
        """Return the loaded items that the loader or the broker would fail on."""
        return [item for item in self.items if item.loaded and item.problem is not None]

    def to_dict(self) -> dict[str, Any]:
        """Return the inventory as JSON-ready values, with its `format_version`."""
        return {
            "format_version": FORMAT_VERSION,
            "items": [item.to_dict() for item in self.items],
            "warnings": list(self.warnings),
            "undecided": list(self.undecided),
            "host_files": [str(path) for path in self.host_files],
        }

    def to_json(self) -> str:
        """Return the inventory as a JSON document."""
        import json  # only the inventory command prints JSON

        return json.dumps(self.to_dict(), indent=2)
