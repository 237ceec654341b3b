"""Published security problems of the Mosquitto broker, and the upstream version fixing each.

Compiled from these sources:

* the upstream `ChangeLog.txt` of eclipse-mosquitto/mosquitto, up to 2.1.3-dev;
* the upstream security page, `www/pages/security.md` in the same repository;
* Debian's `changelog.Debian.gz` of mosquitto 2.0.11-1.2+deb12u2, which names the CVE ids of
  fixes whose upstream ChangeLog entry gives none (CVE-2021-41039, CVE-2024-8376,
  CVE-2024-3935, CVE-2024-10525). Its CVE ids were checked against the installed file.

Left out because no upstream source confirms them: CVE-2021-34431, CVE-2021-34432 and
CVE-2023-5632. The upstream ChangeLog up to 2.1.3-dev names no CVE from 2025 or 2026.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SecurityFix:
    """A security problem and the upstream versions that fix it.

    `fixed_in` lists one version per release line that got the fix, lowest line first: a
    version is fixed when it is at or above the entry for its own `major.minor` line, or at or
    above the last entry. `id` is the CVE id, or None for a fix published without one.
    """

    id: str | None
    fixed_in: tuple[str, ...]
    summary: str


CVES: tuple[SecurityFix, ...] = (
    SecurityFix(
        "CVE-2017-7650", ("1.4.12",), "pattern ACLs bypassed with + or # in a username or client id"
    ),
    SecurityFix("CVE-2017-9868", ("1.4.13",), "the persistence file is readable by all users"),
    SecurityFix("CVE-2017-7651", ("1.4.15",), "unauthenticated clients can exhaust memory"),
    SecurityFix("CVE-2017-7652", ("1.4.15",), "a SIGHUP reload problem"),
    SecurityFix("CVE-2017-7653", ("1.5",), "topics with invalid UTF-8 are accepted"),
    SecurityFix("CVE-2017-7654", ("1.5",), "a memory leak through CONNECT packets"),
    SecurityFix("CVE-2017-7655", ("1.5",), "a flaw in versions 1.0 to 1.4.15"),
    SecurityFix("CVE-2018-12543", ("1.5.3",), "an assertion fails on a $ topic other than $SYS"),
    SecurityFix(
        "CVE-2018-20145",
        ("1.5.5",),
        "acl_file is ignored for the default listener with per_listener_settings",
    ),
    SecurityFix(
        "CVE-2018-12546",
        ("1.5.6",),
        "retained messages are still sent after access is revoked",
    ),
    SecurityFix("CVE-2018-12550", ("1.5.6",), "an empty ACL file is treated as no ACL"),
    SecurityFix("CVE-2018-12551", ("1.5.6",), "malformed password file lines are accepted"),
    SecurityFix("CVE-2019-11778", ("1.6.5",), "a flaw in versions 1.6 to 1.6.4"),
    SecurityFix(
        "CVE-2019-11779",
        ("1.5.9", "1.6.6"),
        "deeply nested topic hierarchies (limited to 200 levels by the fix)",
    ),
    SecurityFix(
        "CVE-2020-13849",
        ("2.0.12",),
        "an MQTT protocol flaw; 2.0.12 lets max_keepalive reject long keepalive values",
    ),
    SecurityFix("CVE-2021-28166", ("2.0.10",), "NULL dereference on a crafted MQTT v5 CONNACK"),
    SecurityFix(
        "CVE-2021-34434",
        ("2.0.12",),
        "subscriptions stay after the dynamic security plugin revokes access",
    ),
    SecurityFix("CVE-2021-41039", ("2.0.12",), "CPU exhaustion from many MQTT v5 user properties"),
    SecurityFix(
        "CVE-2023-0809", ("2.0.16",), "memory allocated for initial packets other than CONNECT"
    ),
    SecurityFix("CVE-2023-3592", ("2.0.16",), "a memory leak through invalid will properties"),
    SecurityFix(
        "CVE-2023-28366",
        ("2.0.16",),
        "a memory leak from QoS 2 messages with duplicate message ids",
    ),
    SecurityFix(
        "CVE-2024-8376",
        ("2.0.19",),
        "mismatched subscribe and unsubscribe of normal and shared topics",
    ),
    SecurityFix("CVE-2024-3935", ("2.0.19",), "a crash on a bridge with topic remapping"),
    SecurityFix("CVE-2024-10525", ("2.0.19",), "SUBACK packets with missing reason codes"),
)

# Security fixes that upstream published without a CVE id. A distribution changelog cannot
# name them, so a package with an older upstream version may or may not carry them: Debian 12's
# 2.0.11-1.2+deb12u2 still opens the anonymous listener that 2.0.12 fixed.
UNNAMED_FIXES: tuple[SecurityFix, ...] = (
    SecurityFix(None, ("1.5.4",), "websockets listeners do not enforce require_certificate"),
    SecurityFix(
        None,
        ("1.6.14",),
        "an empty or invalid bridge_cafile skips certificate checks on reconnect",
    ),
    SecurityFix(None, ("2.0.3",), "mosquitto_passwd -b uses the username as the password"),
    SecurityFix(None, ("1.6.15", "2.0.11"), "a memory leak through crafted MQTT v5 CONNECT"),
    SecurityFix(
        None,
        ("2.0.12",),
        "one default-listener option without a listener line opens an anonymous listener "
        "on all interfaces",
    ),
    SecurityFix(None, ("2.0.12",), "QoS 2 messages are not checked against the ACL again"),
    SecurityFix(
        None, ("2.0.15",), "deleting the dynamic security anonymous group can crash the broker"
    ),
    SecurityFix(None, ("2.0.21",), "a memory leak through malicious SUBSCRIBE packets"),
    SecurityFix(None, ("2.0.21",), "allow_anonymous false is ignored in local-only mode"),
)
