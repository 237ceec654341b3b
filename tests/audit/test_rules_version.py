"""The version rules: Debian version order, upstream fixes, changelog backports, this host."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mosquitto_guard.audit.context import AuditContext, AuditOptions
from mosquitto_guard.audit.cves import CVES, UNNAMED_FIXES
from mosquitto_guard.audit.engine import run_audit
from mosquitto_guard.audit.model import AuditReport, Severity
from mosquitto_guard.audit.rules.version import RULES, compare_debian_versions, is_fixed

DEBIAN_12 = "2.0.11-1.2+deb12u2"
# The CVE ids that the changelog of Debian 12's 2.0.11-1.2+deb12u2 names.
DEBIAN_12_CHANGELOG_CVES = frozenset(
    {
        "CVE-2021-28166",
        "CVE-2021-34434",
        "CVE-2021-41039",
        "CVE-2023-0809",
        "CVE-2023-28366",
        "CVE-2023-3592",
        "CVE-2024-10525",
        "CVE-2024-3935",
        "CVE-2024-8376",
    }
)


def audit_package(
    tmp_path: Path, version: str, changelog_cves: frozenset[str] = frozenset()
) -> AuditReport:
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\n")
    context = AuditContext(AuditOptions([config], host=False, package_version=version))
    # Stands in for the changelog of the package under test; cached_property reads it from here.
    context.__dict__["backported_cves"] = changelog_cves
    return run_audit(context, RULES)


def cve_ids(report: AuditReport) -> list[str]:
    return sorted(f.evidence.split(":")[0] for f in report.findings if f.rule == "VER-001")


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("2.0.11-1.2+deb12u2", "2.0.12", -1),
        ("2.0.12-1", "2.0.12", 1),
        ("2.0.12~rc1-1", "2.0.12", -1),
        ("1:1.0", "2.0.22", 1),
        ("2.0.11-1.2+deb12u10", "2.0.11-1.2+deb12u2", 1),
        ("2.0.18-1ubuntu4.1", "2.0.18-1ubuntu4", 1),
        ("2.0.11a", "2.0.11+dfsg", -1),
        ("1.5", "1.5.0", -1),
        ("2.0.11", "2.0.11-0", 0),
    ],
)
def test_debian_order_matches_dpkg(left: str, right: str, expected: int) -> None:
    result = compare_debian_versions(left, right)
    assert (result > 0) - (result < 0) == expected


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg is not installed")
def test_debian_order_agrees_with_dpkg_binary() -> None:
    versions = ["2.0.11-1.2+deb12u2", "2.0.12~rc1", "2.0.12", "1:0.1", "2.0.11+dfsg-1", "2.0.9"]
    for left in versions:
        for right in versions:
            ours = compare_debian_versions(left, right) > 0
            dpkg = subprocess.run(["dpkg", "--compare-versions", left, "gt", right], check=False)
            assert ours == (dpkg.returncode == 0), (left, right)


def test_invalid_debian_version_raises() -> None:
    with pytest.raises(ValueError, match="invalid Debian package version"):
        compare_debian_versions("two point oh", "2.0.0")


def test_fix_on_older_release_line_counts() -> None:
    fix = next(cve for cve in CVES if cve.id == "CVE-2019-11779")
    assert is_fixed(fix, "1.5.9-1")
    assert not is_fixed(fix, "1.5.8-1")
    assert not is_fixed(fix, "1.6.5-1")
    assert is_fixed(fix, "2.0.11-1")


def test_cve_table_has_unique_ids() -> None:
    ids = [cve.id for cve in CVES]
    assert len(ids) == len(set(ids))
    assert all(cve.id is not None and cve.id.startswith("CVE-") for cve in CVES)
    assert all(fix.id is None for fix in UNNAMED_FIXES)


def test_upstream_2_0_11_without_backports(tmp_path: Path) -> None:
    report = audit_package(tmp_path, "2.0.11-1")
    assert cve_ids(report) == sorted(
        [
            "CVE-2020-13849",
            "CVE-2021-34434",
            "CVE-2021-41039",
            "CVE-2023-0809",
            "CVE-2023-3592",
            "CVE-2023-28366",
            "CVE-2024-8376",
            "CVE-2024-3935",
            "CVE-2024-10525",
        ]
    )


def test_changelog_backports_count_as_fixed(tmp_path: Path) -> None:
    report = audit_package(tmp_path, DEBIAN_12, DEBIAN_12_CHANGELOG_CVES)
    assert cve_ids(report) == ["CVE-2020-13849"]


def test_finding_names_cve_versions_and_fix(tmp_path: Path) -> None:
    report = audit_package(tmp_path, "2.0.15-1", frozenset({"CVE-2023-0809"}))
    finding = next(f for f in report.findings if f.evidence.startswith("CVE-2023-3592:"))
    assert finding.rule == "VER-001"
    assert finding.severity is Severity.HIGH
    assert finding.path is None
    assert finding.line is None
    assert "fixed in 2.0.16" in finding.evidence
    assert "installed package 2.0.15-1" in finding.evidence
    assert finding.fix == "upgrade to 2.0.16 or a distribution package that backports it"
    assert "CVE-2023-0809" not in cve_ids(report)


def test_current_release_has_no_findings(tmp_path: Path) -> None:
    report = audit_package(tmp_path, "2.0.22-1")
    assert report.findings == []
    assert report.skipped == []


def test_pre_release_of_fixed_version_is_unfixed(tmp_path: Path) -> None:
    report = audit_package(tmp_path, "2.0.19~rc1-1")
    assert cve_ids(report) == ["CVE-2024-10525", "CVE-2024-3935", "CVE-2024-8376"]


def test_unnamed_fixes_reported_by_upstream_version(tmp_path: Path) -> None:
    report = audit_package(tmp_path, DEBIAN_12, DEBIAN_12_CHANGELOG_CVES)
    unnamed = [f for f in report.findings if f.rule == "VER-002"]
    assert len(unnamed) == 5
    assert all(f.severity is Severity.LOW for f in unnamed)
    assert any("opens an anonymous listener" in f.evidence for f in unnamed)


def test_config_only_audit_skips_version_rules(tmp_path: Path) -> None:
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\n")
    report = run_audit(AuditContext(AuditOptions([config], host=False)), RULES)
    assert report.findings == []
    assert [skipped.rule for skipped in report.skipped] == ["VER-001", "VER-002"]
    assert all("the host is not audited" in skipped.reason for skipped in report.skipped)


def installed_package_version() -> str | None:
    dpkg = shutil.which("dpkg-query")
    if dpkg is None:
        return None
    result = subprocess.run(
        [dpkg, "-W", "-f", "${Version}", "mosquitto"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or None


@pytest.mark.skipif(
    installed_package_version() != DEBIAN_12,
    reason=f"needs the Debian 12 mosquitto package {DEBIAN_12}",
)
def test_debian_12_host_reports_only_cve_2020_13849(tmp_path: Path) -> None:
    # Debian 12's changelog names every CVE fixed after 2.0.11 except CVE-2020-13849, whose
    # mitigation (max_keepalive applying to MQTT 3.1.1 clients) came with upstream 2.0.12.
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\n")
    context = AuditContext(AuditOptions([config], host=True))
    report = run_audit(context, RULES)
    assert context.backported_cves >= DEBIAN_12_CHANGELOG_CVES
    assert cve_ids(report) == ["CVE-2020-13849"]
    assert len([f for f in report.findings if f.rule == "VER-002"]) == 5
