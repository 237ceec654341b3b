"""The manifest format: round trips, and a named dataset of malformed manifests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mosquitto_guard.errors import ManifestError
from mosquitto_guard.manifest.model import (
    Manifest,
    Permissions,
    PluginFile,
    PluginRequirements,
    parse_manifest,
    render_manifest,
)

DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

VALID = f"""\
format = "mosquitto-guard-manifest"
format_version = 1
name = "auth-ldap"
version = 3
signed_at = 2025-01-10T09:30:00Z
expires = 2026-01-10T09:30:00Z

[file]
name = "auth_ldap.so"
sha256 = "{DIGEST}"
size = 48212

[plugin]
api_version = 5
mosquitto = ">=2.0,<2.2"
options = ["ldap_uri", "ldap_base"]

[permissions]
connect = ["ldap.example.com:636", "[::1]:1883", "192.0.2.7:1883"]
read = ["/etc/ssl/certs"]
write = []
"""


def sample_manifest() -> Manifest:
    return Manifest(
        name="auth-ldap",
        version=3,
        file=PluginFile(name="auth_ldap.so", sha256=DIGEST, size=48212),
        plugin=PluginRequirements(
            api_version=5, mosquitto=">=2.0,<2.2", options=("ldap_uri", "ldap_base")
        ),
        permissions=Permissions(
            connect=("ldap.example.com:636", "[::1]:1883", "192.0.2.7:1883"),
            read=("/etc/ssl/certs",),
            write=(),
        ),
        signed_at=datetime(2025, 1, 10, 9, 30, tzinfo=UTC),
        expires=datetime(2026, 1, 10, 9, 30, tzinfo=UTC),
    )


def test_valid_manifest_parses() -> None:
    assert parse_manifest(VALID.encode(), "m.toml") == sample_manifest()


def test_render_then_parse_round_trips() -> None:
    manifest = sample_manifest()
    assert parse_manifest(render_manifest(manifest), "m.toml") == manifest


def test_render_rejects_invalid_manifest() -> None:
    bad = Manifest(
        name="Bad Name",
        version=1,
        file=PluginFile(name="x.so", sha256=DIGEST, size=1),
        plugin=PluginRequirements(api_version=5, mosquitto=">=2.0", options=()),
        permissions=Permissions(),
        signed_at=datetime(2025, 1, 1, tzinfo=UTC),
        expires=datetime(2026, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(ManifestError) as raised:
        render_manifest(bad)
    assert str(raised.value).startswith("manifest 'Bad Name': invalid plugin name 'Bad Name'")


def edit(old: str, new: str) -> bytes:
    assert old in VALID, old
    return VALID.replace(old, new, 1).encode()


HOSTILE_MANIFESTS: dict[str, tuple[bytes, str]] = {
    "not utf-8": (
        VALID.encode().replace(b"auth-ldap", b"auth-\xffldap"),
        "m.toml: manifest is not UTF-8 (invalid byte at offset 68)",
    ),
    "utf-16": (
        VALID.encode("utf-16"),
        "m.toml: manifest is not UTF-8 (it starts with a UTF-16 byte order mark); "
        "fix: re-create it with mosquitto-guard sign, or convert it: iconv -t UTF-8",
    ),
    "nul byte": (
        VALID.encode().replace(b"\nname", b"\n\x00name"),
        "m.toml: manifest contains NUL bytes",
    ),
    "larger than 64 KiB": (
        VALID.encode() + b"#" * 65536,
        f"m.toml: manifest is {len(VALID) + 65536} bytes, more than the maximum of 65536",
    ),
    "truncated": (
        VALID.encode()[:120],
        "m.toml: TOML syntax error: Expected '=' after a key in a key/value pair "
        "(at end of document)",
    ),
    "syntax error": (
        edit("version = 3", "version = = 3"),
        "m.toml: TOML syntax error: Invalid value (at line 4, column 11)",
    ),
    "unknown format": (
        edit('format = "mosquitto-guard-manifest"', 'format = "other"'),
        "m.toml: unknown format 'other', expected 'mosquitto-guard-manifest'",
    ),
    "format version 2": (
        edit("format_version = 1", "format_version = 2"),
        "m.toml: unsupported format_version 2, expected 1",
    ),
    "missing name": (
        edit('name = "auth-ldap"\n', ""),
        "m.toml: missing field 'name'",
    ),
    "missing file digest": (
        edit(f'sha256 = "{DIGEST}"\n', ""),
        "m.toml: missing field 'file.sha256'",
    ),
    "missing permissions table": (
        VALID.split("[permissions]")[0].encode(),
        "m.toml: missing field 'permissions'",
    ),
    "extra top-level field": (
        edit("version = 3\n", 'version = 3\nauthor = "me"\n'),
        "m.toml: unknown field 'author'",
    ),
    "extra plugin field": (
        edit("api_version = 5\n", "api_version = 5\nsandbox = false\n"),
        "m.toml: unknown field 'plugin.sandbox'",
    ),
    "version as string": (
        edit("version = 3", 'version = "3"'),
        "m.toml: field 'version' must be an integer, not a string",
    ),
    "version as boolean": (
        edit("version = 3", "version = true"),
        "m.toml: field 'version' must be an integer, not a boolean",
    ),
    "version zero": (
        edit("version = 3", "version = 0"),
        "m.toml: field 'version' must be an integer >= 1, not 0",
    ),
    "file as string": (
        VALID.replace("[file]\n", 'file = "x"\n[filex]\n').encode(),
        "m.toml: field 'file' must be a table, not a string",
    ),
    "api version 6": (
        edit("api_version = 5", "api_version = 6"),
        "m.toml: field 'plugin.api_version' must be an integer from 2 to 5, not 6",
    ),
    "bad name": (
        edit('name = "auth-ldap"', 'name = "Auth LDAP"'),
        "m.toml: invalid plugin name 'Auth LDAP': use 1 to 64 characters from a-z, 0-9, '.', "
        "'_' and '-', starting with a letter or digit",
    ),
    "name too long": (
        edit('name = "auth-ldap"', f'name = "{"a" * 65}"'),
        f"m.toml: invalid plugin name '{'a' * 65}': use 1 to 64 characters from a-z, 0-9, '.', "
        "'_' and '-', starting with a letter or digit",
    ),
    "file name with directory": (
        edit('name = "auth_ldap.so"', 'name = "../auth_ldap.so"'),
        "m.toml: invalid file.name '../auth_ldap.so': expected the base name of the shared "
        "object, without a directory",
    ),
    "upper-case digest": (
        edit(DIGEST, DIGEST.upper()),
        f"m.toml: invalid file.sha256 '{DIGEST.upper()}': expected 64 lower-case hex digits",
    ),
    "short digest": (
        edit(DIGEST, DIGEST[:63]),
        f"m.toml: invalid file.sha256 '{DIGEST[:63]}': expected 64 lower-case hex digits",
    ),
    "size zero": (
        edit("size = 48212", "size = 0"),
        "m.toml: field 'file.size' must be an integer >= 1, not 0",
    ),
    "endpoint without port": (
        edit('"ldap.example.com:636"', '"ldap.example.com"'),
        "m.toml: permissions.connect: invalid endpoint 'ldap.example.com': expected host:port",
    ),
    "endpoint port out of range": (
        edit('"ldap.example.com:636"', '"ldap.example.com:65536"'),
        "m.toml: permissions.connect: invalid endpoint 'ldap.example.com:65536': the port must "
        "be a number from 1 to 65535",
    ),
    "ipv6 without brackets": (
        edit('"[::1]:1883"', '"::1:1883"'),
        "m.toml: permissions.connect: invalid endpoint '::1:1883': an IPv6 address must be "
        "written in brackets, such as [::1]:1883",
    ),
    "invalid ipv6": (
        edit('"[::1]:1883"', '"[::g]:1883"'),
        "m.toml: permissions.connect: invalid endpoint '[::g]:1883': an IPv6 address must be "
        "written in brackets, such as [::1]:1883",
    ),
    "invalid ipv4": (
        edit('"192.0.2.7:1883"', '"192.0.2.700:1883"'),
        "m.toml: permissions.connect: invalid endpoint '192.0.2.700:1883': the host must be a "
        "DNS name or an IPv4 address",
    ),
    "host with underscore": (
        edit('"ldap.example.com:636"', '"ldap_server:636"'),
        "m.toml: permissions.connect: invalid endpoint 'ldap_server:636': the host must be a "
        "DNS name or an IPv4 address",
    ),
    "relative read path": (
        edit('read = ["/etc/ssl/certs"]', 'read = ["etc/ssl"]'),
        "m.toml: permissions.read: path 'etc/ssl' is relative; give an absolute path",
    ),
    "write path with dot-dot": (
        edit("write = []", 'write = ["/var/lib/../../etc"]'),
        "m.toml: permissions.write: path '/var/lib/../../etc' contains '..'; give a normalized "
        "path",
    ),
    "read path not a string": (
        edit('read = ["/etc/ssl/certs"]', "read = [1]"),
        "m.toml: field permissions.read[0] must be a string, not an integer",
    ),
    "duplicate option": (
        edit('options = ["ldap_uri", "ldap_base"]', 'options = ["ldap_uri", "ldap_uri"]'),
        "m.toml: field 'plugin.options' lists 'ldap_uri' more than once",
    ),
    "option with prefix": (
        edit('"ldap_base"]', '"plugin_opt_ldap_base"]'),
        "m.toml: invalid option key 'plugin_opt_ldap_base' in plugin.options: give the key "
        "without the plugin_opt_ prefix, using letters, digits, '_', '.' and '-'",
    ),
    "option with space": (
        edit('"ldap_base"]', '"ldap base"]'),
        "m.toml: invalid option key 'ldap base' in plugin.options: give the key without the "
        "plugin_opt_ prefix, using letters, digits, '_', '.' and '-'",
    ),
    "bad specifier": (
        edit('">=2.0,<2.2"', '"2.0 or later"'),
        "m.toml: plugin.mosquitto: invalid version specifier '2.0 or later'; use for example "
        "'>=2.0,<2.2'",
    ),
    "empty specifier": (
        edit('">=2.0,<2.2"', '""'),
        "m.toml: plugin.mosquitto: version specifier is empty; use for example '>=2.0'",
    ),
    "local datetime": (
        edit("expires = 2026-01-10T09:30:00Z", "expires = 2026-01-10T09:30:00"),
        "m.toml: field 'expires' must be an offset date-time such as 2025-01-01T00:00:00Z, "
        "not a local date-time",
    ),
    "non-utc offset": (
        edit("expires = 2026-01-10T09:30:00Z", "expires = 2026-01-10T10:30:00+01:00"),
        "m.toml: field 'expires' must be in UTC (such as 2025-01-01T00:00:00Z), not "
        "2026-01-10T10:30:00+01:00",
    ),
    "date without time": (
        edit("expires = 2026-01-10T09:30:00Z", "expires = 2026-01-10"),
        "m.toml: field 'expires' must be an offset date-time such as 2025-01-01T00:00:00Z, "
        "not a date or time",
    ),
    "expires before signed_at": (
        edit("expires = 2026-01-10T09:30:00Z", "expires = 2024-01-10T09:30:00Z"),
        "m.toml: expires must be later than signed_at",
    ),
    "control character in string": (
        edit('mosquitto = ">=2.0,<2.2"', 'mosquitto = ">=2.0\\u0007"'),
        "m.toml: field 'plugin.mosquitto' contains control characters",
    ),
    "too many connect entries": (
        edit(
            'connect = ["ldap.example.com:636", "[::1]:1883", "192.0.2.7:1883"]',
            "connect = [" + ", ".join(f'"h{i}.example:1"' for i in range(257)) + "]",
        ),
        "m.toml: field 'permissions.connect' has 257 entries, more than the maximum of 256",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MANIFESTS))
def test_hostile_manifest_rejected(case: str) -> None:
    data, message = HOSTILE_MANIFESTS[case]
    with pytest.raises(ManifestError) as raised:
        parse_manifest(data, "m.toml")
    assert str(raised.value) == message


def test_specifier_property_matches_versions() -> None:
    specifier = sample_manifest().plugin.specifier
    assert "2.0.18" in specifier
    assert "2.2.0" not in specifier


def test_documented_example_parses() -> None:
    document = (Path(__file__).parents[2] / "docs" / "manifest.md").read_text()
    example = document.split("```toml\n", 1)[1].split("```", 1)[0]
    sample = sample_manifest()
    expected = replace(
        sample,
        plugin=replace(sample.plugin, options=(*sample.plugin.options, "cache_file")),
        permissions=Permissions(
            connect=("ldap.example.com:636", "[::1]:1883"),
            read=("/etc/ssl/certs",),
            write=(),
            write_options=("cache_file",),
        ),
    )

    assert parse_manifest(example.encode(), "manifest.md") == expected


def test_option_permissions_round_trip() -> None:
    sample = sample_manifest()
    manifest = replace(
        sample, permissions=Permissions(read_options=("ldap_base",), write_options=("ldap_uri",))
    )
    assert parse_manifest(render_manifest(manifest), "m.toml") == manifest


def test_option_permission_must_be_accepted_option() -> None:
    sample = sample_manifest()
    manifest = replace(sample, permissions=Permissions(write_options=("cache_file",)))
    with pytest.raises(ManifestError, match=r"'cache_file', which plugin\.options does not list"):
        render_manifest(manifest)


def test_manifest_without_option_permissions_parses() -> None:
    text = render_manifest(sample_manifest()).decode()
    older = "\n".join(line for line in text.splitlines() if "_options" not in line)
    assert parse_manifest(older.encode(), "m.toml").permissions.write_options == ()
