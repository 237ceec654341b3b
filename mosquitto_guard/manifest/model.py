"""The plugin manifest: a small TOML file that describes one exact plugin build.

A manifest is signed as a whole (see `mosquitto_guard.manifest.verify`), so every statement in
it is covered by the signature. Format version 1, with every field required and no other
field allowed:

    format = "mosquitto-guard-manifest"
    format_version = 1
    name = "auth-ldap"                     # plugin name: [a-z0-9][a-z0-9._-]{0,63}
    version = 3                            # integer >= 1; a later release must use a larger one
    signed_at = 2025-01-10T09:30:00Z       # TOML offset date-time in UTC
    expires = 2026-01-10T09:30:00Z         # after signed_at

    [file]
    name = "auth_ldap.so"                  # base name of the shared object
    sha256 = "9f86d08...15b0f00a08"        # 64 lower-case hex digits
    size = 48212                           # bytes

    [plugin]
    api_version = 5                        # Mosquitto plugin API, 2 to 5
    mosquitto = ">=2.0,<2.2"               # broker versions, a PEP 440 version specifier
    options = ["ldap_uri", "ldap_base"]    # accepted plugin_opt_ keys, without the prefix

    [permissions]
    connect = ["ldap.example.com:636", "[::1]:1883"]   # host:port, IPv6 in brackets
    read = ["/etc/ssl/certs"]              # absolute paths
    write = []

`render_manifest` writes this layout with `tomli-w`, and `parse_manifest` reads it with
`tomllib` and raises `ManifestError` with a one-line message for any deviation. The same
description, with the reasons behind each field, is in docs/manifest.md.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from mosquitto_guard.errors import ManifestError

FORMAT = "mosquitto-guard-manifest"
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 64 * 1024
MIN_API_VERSION = 2
MAX_API_VERSION = 5
MAX_LIST_ENTRIES = 256
MAX_PATH_LENGTH = 4096

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# A shared object's base name: no directory part, no leading dot, no whitespace.
FILE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]{0,254}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
# plugin_opt_ keys end at the first whitespace in a Mosquitto config line.
OPTION_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class PluginFile:
    """The `[file]` table: the base name, SHA-256 digest (lower-case hex) and size in bytes."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class PluginRequirements:
    """The `[plugin]` table: API version, accepted broker versions and accepted option keys."""

    api_version: int
    mosquitto: str
    options: tuple[str, ...]

    @property
    def specifier(self) -> SpecifierSet:
        """The `mosquitto` field as a `packaging` specifier set."""
        return SpecifierSet(self.mosquitto)


@dataclass(frozen=True)
class Permissions:
    """The `[permissions]` table: network endpoints and filesystem paths the plugin may use."""

    connect: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    # `plugin_opt_` keys, without the prefix, whose values name a file the plugin reads or
    # writes: the path is known only from the broker config, not when the manifest is signed.
    read_options: tuple[str, ...] = ()
    write_options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest; datetimes are timezone-aware and in UTC."""

    name: str
    version: int
    file: PluginFile
    plugin: PluginRequirements
    permissions: Permissions
    signed_at: datetime
    expires: datetime


def render_manifest(manifest: Manifest) -> bytes:
    """Serialize `manifest` as TOML in the layout `parse_manifest` reads.

    Raises `ManifestError` when the manifest breaks a rule of the format, so a manifest that is
    written can always be read back.
    """
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": manifest.name,
        "version": manifest.version,
        "signed_at": manifest.signed_at.astimezone(UTC),
        "expires": manifest.expires.astimezone(UTC),
        "file": {
            "name": manifest.file.name,
            "sha256": manifest.file.sha256,
            "size": manifest.file.size,
        },
        "plugin": {
            "api_version": manifest.plugin.api_version,
            "mosquitto": manifest.plugin.mosquitto,
            "options": list(manifest.plugin.options),
        },
        "permissions": {
            "connect": list(manifest.permissions.connect),
            "read": list(manifest.permissions.read),
            "write": list(manifest.permissions.write),
            "read_options": list(manifest.permissions.read_options),
            "write_options": list(manifest.permissions.write_options),
        },
    }
    import tomli_w  # only `sign` renders manifests

    data = tomli_w.dumps(document).encode("utf-8")
    parse_manifest(data, f"manifest {manifest.name!r}")
    return data


def parse_manifest(data: bytes, source: str) -> Manifest:
    """Parse and validate the bytes of a manifest; `source` names it in error messages.

    Raises `ManifestError` with a one-line message for bytes that are too large, not UTF-8 or
    contain NUL, for TOML syntax errors, and for any field that is missing, unknown, of the
    wrong type or invalid.
    """
    document = _load_toml(data, source)
    fields = _Fields(document, source, "")
    fmt = fields.string("format")
    if fmt != FORMAT:
        raise ManifestError(f"{source}: unknown format {fmt!r}, expected {FORMAT!r}")
    format_version = fields.integer("format_version")
    if format_version != FORMAT_VERSION:
        raise ManifestError(
            f"{source}: unsupported format_version {format_version}, expected {FORMAT_VERSION}"
        )
    manifest = Manifest(
        name=_check_name(fields.string("name"), source),
        version=fields.integer("version", minimum=1),
        file=_parse_file(fields.table("file")),
        plugin=_parse_plugin(fields.table("plugin")),
        permissions=_parse_permissions(fields.table("permissions")),
        signed_at=fields.utc_datetime("signed_at"),
        expires=fields.utc_datetime("expires"),
    )
    fields.reject_unknown()
    declared = set(manifest.permissions.read_options + manifest.permissions.write_options)
    undeclared = sorted(declared - set(manifest.plugin.options))
    if undeclared:
        raise ManifestError(
            f"{source}: permissions name the option {undeclared[0]!r}, which plugin.options "
            "does not list; add it to plugin.options"
        )
    if manifest.expires <= manifest.signed_at:
        raise ManifestError(f"{source}: expires must be later than signed_at")
    return manifest


def _load_toml(data: bytes, source: str) -> dict[str, Any]:
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{source}: manifest is {len(data)} bytes, more than the maximum of "
            f"{MAX_MANIFEST_BYTES}"
        )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ManifestError(
            f"{source}: manifest is not UTF-8 (it starts with a UTF-16 byte order mark)",
            fix="re-create it with mosquitto-guard sign, or convert it: iconv -t UTF-8",
        )
    if b"\x00" in data:
        raise ManifestError(f"{source}: manifest contains NUL bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ManifestError(
            f"{source}: manifest is not UTF-8 (invalid byte at offset {error.start})"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # tomllib's message already ends with "(at line L, column C)".
        raise ManifestError(f"{source}: TOML syntax error: {error}") from None


class _Fields:
    """Typed access to one TOML table that records which keys were read."""

    def __init__(self, values: dict[str, Any], source: str, prefix: str) -> None:
        self.values = values
        self.source = source
        self.prefix = prefix
        self.seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def get(self, key: str, type_name: str, check: type) -> Any:
        self.seen.add(key)
        if key not in self.values:
            raise ManifestError(f"{self.source}: missing field {self.where(key)!r}")
        value = self.values[key]
        # bool is a subclass of int in Python, but TOML keeps booleans and integers apart.
        wrong_bool = isinstance(value, bool) and check is not bool
        if wrong_bool or not isinstance(value, check):
            raise ManifestError(
                f"{self.source}: field {self.where(key)!r} must be {type_name}, "
                f"not {_toml_type(value)}"
            )
        return value

    def string(self, key: str) -> str:
        value: str = self.get(key, "a string", str)
        if not value.isprintable():
            raise ManifestError(
                f"{self.source}: field {self.where(key)!r} contains control characters"
            )
        return value

    def integer(self, key: str, minimum: int | None = None, maximum: int | None = None) -> int:
        value: int = self.get(key, "an integer", int)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = _bounds_text(minimum, maximum)
            raise ManifestError(
                f"{self.source}: field {self.where(key)!r} must be {bounds}, not {value}"
            )
        return value

    def table_value(self, key: str) -> dict[str, Any]:
        value: dict[str, Any] = self.get(key, "a table", dict)
        return value

    def table(self, key: str) -> _Fields:
        return _Fields(self.table_value(key), self.source, f"{self.prefix}{key}.")

    def string_list(self, key: str) -> list[str]:
        values: list[Any] = self.get(key, "an array of strings", list)
        if len(values) > MAX_LIST_ENTRIES:
            raise ManifestError(
                f"{self.source}: field {self.where(key)!r} has {len(values)} entries, "
                f"more than the maximum of {MAX_LIST_ENTRIES}"
            )
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise ManifestError(
                    f"{self.source}: field {self.where(key)}[{index}] must be a string, "
                    f"not {_toml_type(value)}"
                )
            if not value.isprintable():
                raise ManifestError(
                    f"{self.source}: field {self.where(key)}[{index}] contains control characters"
                )
        duplicates = sorted({value for value in values if values.count(value) > 1})
        if duplicates:
            raise ManifestError(
                f"{self.source}: field {self.where(key)!r} lists {duplicates[0]!r} more than once"
            )
        return values

    def utc_datetime(self, key: str) -> datetime:
        expected = "an offset date-time such as 2025-01-01T00:00:00Z"
        value: datetime = self.get(key, expected, datetime)
        if value.tzinfo is None:
            raise ManifestError(
                f"{self.source}: field {self.where(key)!r} must be {expected}, "
                "not a local date-time"
            )
        if value.utcoffset() != timedelta(0):
            raise ManifestError(
                f"{self.source}: field {self.where(key)!r} must be in UTC "
                f"(such as 2025-01-01T00:00:00Z), not {value.isoformat()}"
            )
        return value.astimezone(UTC)

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.values) - self.seen)
        if unknown:
            raise ManifestError(f"{self.source}: unknown field {self.where(unknown[0])!r}")


def _bounds_text(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    if minimum is not None:
        return f"an integer >= {minimum}"
    return f"an integer <= {maximum}"


def _toml_type(value: object) -> str:
    """Name the TOML type of a value that `tomllib` returned."""
    names: list[tuple[type, str]] = [
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (list, "an array"),
        (dict, "a table"),
        (datetime, "a date-time"),
    ]
    for python_type, name in names:
        if isinstance(value, python_type):
            return name
    return "a date or time"


def _check_name(name: str, source: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ManifestError(
            f"{source}: invalid plugin name {name!r}: use 1 to 64 characters from a-z, 0-9, "
            "'.', '_' and '-', starting with a letter or digit"
        )
    return name


def _parse_file(fields: _Fields) -> PluginFile:
    source = fields.source
    name = fields.string("name")
    if not FILE_NAME_PATTERN.fullmatch(name):
        raise ManifestError(
            f"{source}: invalid file.name {name!r}: expected the base name of the shared object, "
            "without a directory"
        )
    sha256 = fields.string("sha256")
    if not SHA256_PATTERN.fullmatch(sha256):
        raise ManifestError(
            f"{source}: invalid file.sha256 {sha256!r}: expected 64 lower-case hex digits"
        )
    size = fields.integer("size", minimum=1)
    fields.reject_unknown()
    return PluginFile(name=name, sha256=sha256, size=size)


def _parse_plugin(fields: _Fields) -> PluginRequirements:
    source = fields.source
    api_version = fields.integer("api_version", minimum=MIN_API_VERSION, maximum=MAX_API_VERSION)
    mosquitto = fields.string("mosquitto")
    check_specifier(mosquitto, f"{source}: plugin.mosquitto")
    options = fields.string_list("options")
    for option in options:
        if option.startswith("plugin_opt_") or not OPTION_PATTERN.fullmatch(option):
            raise ManifestError(
                f"{source}: invalid option key {option!r} in plugin.options: give the key "
                "without the plugin_opt_ prefix, using letters, digits, '_', '.' and '-'"
            )
    fields.reject_unknown()
    return PluginRequirements(api_version=api_version, mosquitto=mosquitto, options=tuple(options))


def check_specifier(text: str, where: str) -> SpecifierSet:
    """Parse a broker version specifier such as `>=2.0,<2.2`; raises `ManifestError`."""
    if not text.strip():
        raise ManifestError(f"{where}: version specifier is empty; use for example '>=2.0'")
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise ManifestError(
            f"{where}: invalid version specifier {text!r}; use for example '>=2.0,<2.2'"
        ) from None


def _parse_permissions(fields: _Fields) -> Permissions:
    source = fields.source
    connect = fields.string_list("connect")
    for endpoint in connect:
        check_endpoint(endpoint, f"{source}: permissions.connect")
    paths: dict[str, list[str]] = {}
    for key in ("read", "write"):
        paths[key] = fields.string_list(key)
        for path in paths[key]:
            check_absolute_path(path, f"{source}: permissions.{key}")
    options: dict[str, list[str]] = {}
    for key in ("read_options", "write_options"):
        # Optional: manifests signed before these fields existed have neither.
        options[key] = fields.string_list(key) if key in fields.values else []
        for option in options[key]:
            if not OPTION_PATTERN.fullmatch(option) or option.startswith("plugin_opt_"):
                raise ManifestError(
                    f"{source}: permissions.{key}: invalid option key {option!r}; write the "
                    "key without the plugin_opt_ prefix"
                )
    fields.reject_unknown()
    return Permissions(
        connect=tuple(connect),
        read=tuple(paths["read"]),
        write=tuple(paths["write"]),
        read_options=tuple(options["read_options"]),
        write_options=tuple(options["write_options"]),
    )


def check_endpoint(endpoint: str, where: str) -> None:
    """Check a `host:port` entry (IPv6 as `[::1]:1883`); raises `ManifestError`."""
    host, separator, port_text = endpoint.rpartition(":")
    problem = None
    if not separator or not host:
        problem = "expected host:port"
    elif not port_text.isdigit() or not port_text.isascii() or not 1 <= int(port_text) <= 65535:
        problem = "the port must be a number from 1 to 65535"
    elif host.startswith("["):
        if not host.endswith("]") or not _is_ipv6(host[1:-1]):
            problem = "an IPv6 address must be written in brackets, such as [::1]:1883"
    elif ":" in host:
        problem = "an IPv6 address must be written in brackets, such as [::1]:1883"
    elif not _is_hostname(host):
        problem = "the host must be a DNS name or an IPv4 address"
    if problem:
        raise ManifestError(f"{where}: invalid endpoint {endpoint!r}: {problem}")


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _is_hostname(host: str) -> bool:
    if len(host) > 253:
        return False
    labels = host.split(".")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return all(HOSTNAME_LABEL.fullmatch(label) for label in labels)


def check_absolute_path(path: str, where: str) -> None:
    """Check that `path` is absolute and has no `..` component; raises `ManifestError`."""
    if not path.startswith("/"):
        raise ManifestError(f"{where}: path {path!r} is relative; give an absolute path")
    if ".." in path.split("/"):
        raise ManifestError(f"{where}: path {path!r} contains '..'; give a normalized path")
    if len(path) > MAX_PATH_LENGTH:
        raise ManifestError(f"{where}: path is longer than {MAX_PATH_LENGTH} characters")
