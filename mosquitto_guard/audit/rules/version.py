"""Audit rules: the installed broker package against the published security fixes.

A fix counts as present when the package version is at or above the upstream version that
fixed it. A CVE also counts as fixed when the package's Debian changelog names its id, because
Debian backports fixes into older upstream versions: 2.0.11-1.2+deb12u2 carries the 2024 fixes.

NOTE: the rules read the installed Debian package, not the binary given with `--broker`, so a
broker built from source is judged by the package's version.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from mosquitto_guard.audit.context import AuditContext
from mosquitto_guard.audit.cves import CVES, UNNAMED_FIXES, SecurityFix
from mosquitto_guard.audit.model import Finding, Rule, Severity

_UPSTREAM = re.compile(r"[0-9][A-Za-z0-9.+~-]*")
_REVISION = re.compile(r"[A-Za-z0-9.+~]+")


def compare_debian_versions(left: str, right: str) -> int:
    """Compare two Debian package versions as `dpkg --compare-versions` does.

    Returns a negative number, zero or a positive number as `left` sorts before, equal to or
    after `right`. Written here because python-apt is a system package that a virtualenv does
    not see, and `packaging.version` rejects Debian versions such as `2.0.11-1.2+deb12u2` and
    orders `~` pre-releases differently. Raises ValueError for a string that is no Debian
    version.
    """
    left_epoch, left_upstream, left_revision = _split_version(left)
    right_epoch, right_upstream, right_revision = _split_version(right)
    if left_epoch != right_epoch:
        return left_epoch - right_epoch
    return _compare_part(left_upstream, right_upstream) or _compare_part(
        left_revision, right_revision
    )


def _split_version(version: str) -> tuple[int, str, str]:
    text = version.strip()
    epoch, colon, rest = text.partition(":")
    if not colon:
        epoch, rest = "0", text
    upstream, hyphen, revision = rest.rpartition("-")
    if not hyphen:
        upstream, revision = rest, "0"
    if not (epoch.isdigit() and _UPSTREAM.fullmatch(upstream) and _REVISION.fullmatch(revision)):
        raise ValueError(f"invalid Debian package version {version!r}")
    return int(epoch), upstream, revision


def _character_order(character: str | None) -> int:
    # dpkg's order inside a run of non-digits: `~` sorts before the end of the run, the end
    # (None) before letters, and letters before every other character.
    if character is None:
        return 0
    if character == "~":
        return -1
    if character.isalpha():
        return ord(character)
    return ord(character) + 256


def _compare_part(left: str, right: str) -> int:
    """Compare an upstream version or a revision by dpkg's alternating non-digit and digit runs."""
    while left or right:
        left_text, left = _take(left, digits=False)
        right_text, right = _take(right, digits=False)
        for index in range(max(len(left_text), len(right_text))):
            left_order = _character_order(left_text[index] if index < len(left_text) else None)
            right_order = _character_order(right_text[index] if index < len(right_text) else None)
            if left_order != right_order:
                return left_order - right_order
        left_digits, left = _take(left, digits=True)
        right_digits, right = _take(right, digits=True)
        difference = int(left_digits or 0) - int(right_digits or 0)
        if difference:
            return difference
    return 0


def _take(text: str, *, digits: bool) -> tuple[str, str]:
    """Split `text` into its leading run of digits (or of non-digits) and the rest."""
    end = 0
    while end < len(text) and text[end].isdigit() == digits:
        end += 1
    return text[:end], text[end:]


def is_fixed(fix: SecurityFix, package_version: str) -> bool:
    """Return whether `package_version` is at or above the upstream version fixing `fix`."""
    upstream = _split_version(package_version)[1]
    line = upstream.split(".")[:2]
    for fixed in fix.fixed_in:
        same_line = fixed.split(".")[:2] == line
        if (same_line or fixed == fix.fixed_in[-1]) and (
            compare_debian_versions(package_version, fixed) >= 0
        ):
            return True
    return False


def _unfixed_cves(context: AuditContext) -> Iterator[Finding]:
    installed = context.package_version
    backported = context.backported_cves
    for cve in CVES:
        if cve.id in backported or is_fixed(cve, installed):
            continue
        fixed_in = " or ".join(cve.fixed_in)
        yield UNFIXED_CVE.finding(
            f"{cve.id}: {cve.summary}; fixed in {fixed_in}; installed package "
            f"{installed}, whose changelog does not name {cve.id}",
            f"upgrade to {cve.fixed_in[-1]} or a distribution package that backports it",
        )


def _unnamed_fixes(context: AuditContext) -> Iterator[Finding]:
    installed = context.package_version
    for fix in UNNAMED_FIXES:
        if is_fixed(fix, installed):
            continue
        yield UNNAMED_FIX.finding(
            f"{fix.summary}; fixed upstream in {' or '.join(fix.fixed_in)} without a CVE id, so "
            f"the changelog of the installed package {installed} cannot show a backport",
            f"upgrade to {fix.fixed_in[-1]} or later, or check the distribution's patches "
            "for this fix",
        )


UNFIXED_CVE = Rule(
    "VER-001",
    Severity.HIGH,
    "the installed broker has a published CVE that is neither fixed upstream nor backported",
    _unfixed_cves,
)
UNNAMED_FIX = Rule(
    "VER-002",
    Severity.LOW,
    "the installed broker predates a security fix published without a CVE id",
    _unnamed_fixes,
)

RULES = [UNFIXED_CVE, UNNAMED_FIX]
