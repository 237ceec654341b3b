"""The audit command over the real-world config corpus: no crash, and known findings.

Each `include_dir` line is aimed at an empty directory first, keeping the line count, so the
findings depend on the file alone and not on the directories of the machine running the test.
The host is not audited, so host-only rules are skipped and do not appear.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mosquitto_guard.cli import main

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "mosquitto-conf"

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"config corpus not found at {CORPUS}")

# The corpus files that are templates, which the broker would read with placeholders unfilled.
TEMPLATES = {"002.conf", "055.conf", "056.conf", "058.conf"}

# Every finding at --min-severity info, as (rule id, line), for files checked by hand against
# the file. Line None marks a finding about the whole file (a setting that is missing).
MISSING_LIMITS = [("HARD-001", None), ("HARD-002", None), ("HARD-003", None)]
EXPECTED: dict[str, list[tuple[str, int | None]]] = {
    "001.conf": [("SYNTAX-001", 3)],  # unknown option `z#log_type`
    "002.conf": [
        ("SYNTAX-001", 20),  # `listener [mqtt-broker-port]` reads as port 0 without a socket
        ("SYNTAX-001", 22),  # the same for the TLS listener
        ("SYNTAX-001", 27),  # and for the websockets listener
        # With the three listener lines passed over, cafile, certfile and keyfile of lines
        # 29 to 31 repeat those of lines 23 to 25 on one listener.
        *[("SYNTAX-001", line) for line in (29, 30, 31)],
        *[
            ("SYNTAX-002", line)  # `[name-with-dashes]` placeholders
            for line in (6, 9, 10, 11, 12, 13, 14, 15, 20, 22, 23, 24, 25, 27, 29, 30, 31)
        ],
    ],
    # Every auth_opt_ line comes before the auth_plugin line of line 13.
    "007.conf": [("SYNTAX-001", line) for line in (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)],
    "016.conf": [*MISSING_LIMITS, ("NET-001", 1)],  # `listener 8883` binds every address
    "020.conf": [*MISSING_LIMITS, ("NET-004", 1)],  # allow_anonymous false and no listener
    "022.conf": [*MISSING_LIMITS, ("PLUGIN-002", 1)],  # auth_plugin target/debug/...dylib
    "028.conf": [("SYNTAX-001", 19)],  # max_keepalive 0, below the 2.0 minimum of 10
    # user root; `listener 8883 0.0.0.0` binds every interface
    "029.conf": [*MISSING_LIMITS, ("NET-001", 12), ("PRIV-001", 4)],
    "038.conf": [("SYNTAX-001", 8)],  # protocol http_api exists only in 2.1
    "047.conf": MISSING_LIMITS,  # the Debian default config: no listener, local only
    "053.conf": [("SYNTAX-001", 4), ("SYNTAX-001", 5)],  # graph_interval, graph_del_mult
    "055.conf": [
        *MISSING_LIMITS,
        ("NET-008", 3),  # a bridge to mqtt.ammp.io:8883
        ("NET-011", 6),  # topic u/# out
        *[("SYNTAX-002", line) for line in (1, 5, 6, 12, 16, 18, 19, 26)],  # $NODE_ID, $SNAP
    ],
    # Line 15, `include_dir $INCLUDE_DIR`, is aimed at an empty directory like every include_dir.
    "056.conf": [
        *MISSING_LIMITS,
        ("PRIV-001", 3),  # user root
        ("SYNTAX-002", 6),  # persistence_location $MOSQUITTO_DIR
    ],
    "058.conf": [
        *[("SYNTAX-001", line) for line in (3, 12, 16)],  # Jinja `{% if %}`, else, endif
        *[("SYNTAX-002", line) for line in (3, 6, 7, 8, 12, 16, 22)],
    ],
    "061.conf": MISSING_LIMITS,  # like 047.conf with persistence on
    "067.conf": [("SYNTAX-001", 20)],  # allow_anonymous = false
    "073.conf": [("SYNTAX-001", 16)],  # store_clean_interval, removed in 2.0
    # A loopback anonymous listener, and TLS with certificates on 0.0.0.0:8883 (line 12).
    "076.conf": [*MISSING_LIMITS, ("NET-001", 12)],
    "080.conf": [*MISSING_LIMITS, ("NET-001", 1)],  # `listener 8883`, TLS 1.2
    "094.conf": [*MISSING_LIMITS, ("NET-001", 1)],  # `listener 2883`, TLS, no anonymous
}


def corpus_names() -> list[str]:
    return sorted(path.name for path in CORPUS.glob("*.conf")) if CORPUS.is_dir() else []


def copy_without_include_dirs(name: str, directory: Path) -> Path:
    """Copy corpus file `name` into `directory`, each include_dir aimed at an empty directory."""
    empty = directory / "empty.d"
    empty.mkdir()
    lines = (CORPUS / name).read_bytes().split(b"\n")
    for index, line in enumerate(lines):
        if line.lstrip(b" ").startswith(b"include_dir "):
            ending = b"\r" if line.endswith(b"\r") else b""
            lines[index] = b"include_dir " + bytes(empty) + ending
    copy = directory / name
    copy.write_bytes(b"\n".join(lines))
    return copy


def audit_json(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    code = main(["audit", "-c", str(config), "--format", "json", "--min-severity", "info"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


@pytest.mark.parametrize("name", corpus_names())
def test_corpus_file_audits_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code, document, errors = audit_json(copy_without_include_dirs(name, tmp_path), capsys)
    assert code in (0, 1)
    assert "Traceback" not in errors
    assert document["format_version"] == 1
    assert document["summary"]["findings"] == len(document["findings"])
    for skipped in document["skipped"]:
        assert "the check failed" not in skipped["reason"], skipped


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_template_has_syntax_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    _, document, _ = audit_json(copy_without_include_dirs(name, tmp_path), capsys)
    placeholders = [f for f in document["findings"] if f["id"] == "SYNTAX-002"]
    assert placeholders
    assert all("template placeholder" in finding["evidence"] for finding in placeholders)


def test_only_templates_have_placeholders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with_placeholders = set()
    for name in corpus_names():
        directory = tmp_path / name
        directory.mkdir()
        _, document, _ = audit_json(copy_without_include_dirs(name, directory), capsys)
        if any(finding["id"] == "SYNTAX-002" for finding in document["findings"]):
            with_placeholders.add(name)
    assert with_placeholders == TEMPLATES


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    copy = copy_without_include_dirs(name, tmp_path)
    _, document, _ = audit_json(copy, capsys)
    found = sorted(
        ((finding["id"], finding["line"]) for finding in document["findings"]),
        key=lambda item: (item[0], item[1] or 0),
    )
    assert found == sorted(EXPECTED[name], key=lambda item: (item[0], item[1] or 0))
    assert all(finding["path"] == str(copy) for finding in document["findings"])
