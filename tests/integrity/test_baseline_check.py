"""`mosquitto-guard baseline` and `check`: a signed baseline, then tampering on real files."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
from baseline_setup import Setup, changes_of

from mosquitto_guard.cli import main
from mosquitto_guard.integrity.baseline import write_signed
from mosquitto_guard.signing import MANIFEST_NAMESPACE
from mosquitto_guard.signing.keys import load_private_key


def test_check_ignores_ctime_alone(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup.write_baseline() == 0
    config_before = os.stat(setup.config).st_ctime_ns
    os.utime(setup.config)
    assert os.stat(setup.config).st_ctime_ns != config_before
    code, document = setup.check(capsys)
    assert code == 0, document


def test_check_clean_after_baseline(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup.write_baseline() == 0
    assert setup.baseline.exists()
    assert setup.baseline.with_name("baseline.json.sig").exists()
    code, document = setup.check(capsys)
    assert code == 0
    assert document["status"] == "clean"
    assert document["added"] == []
    assert document["removed"] == []
    assert document["changed"] == []


def test_baseline_is_deterministic_but_for_time(setup: Setup) -> None:
    assert setup.write_baseline() == 0
    first = json.loads(setup.baseline.read_bytes())
    assert setup.write_baseline() == 0
    second = json.loads(setup.baseline.read_bytes())
    assert first.pop("created") < second.pop("created")
    assert first == second
    assert first["format_version"] == 1
    assert list(first["files"]) == sorted(first["files"])


def test_check_reports_config_edit(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup.write_baseline() == 0
    before = setup.config.read_bytes()
    after = before.replace(b"persistence false", b"persistence true")
    assert after != before
    setup.config.write_bytes(after)
    code, document = setup.check(capsys)
    assert code == 4
    changes = changes_of(document, setup.config)
    assert changes["sha256"] == {
        "old": hashlib.sha256(before).hexdigest(),
        "new": hashlib.sha256(after).hexdigest(),
    }
    assert changes["size"] == {"old": len(before), "new": len(after)}
    assert document["added"] == []
    assert document["removed"] == []


def test_check_reports_include_dir_addition(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup.write_baseline() == 0
    added = setup.root / "conf.d" / "zz-extra.conf"
    added.write_text("max_inflight_messages 10\n")
    code, document = setup.check(capsys)
    assert code == 1
    assert [entry["path"] for entry in document["added"]] == [str(added)]
    reasons = document["added"][0]["reasons"]
    assert reasons[0] == "included config file"
    assert reasons[1].startswith("include_dir (")


def test_check_reports_skipped_include_file(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    # The broker reads only *.conf from include_dir, but a file parked there is still news.
    assert setup.write_baseline() == 0
    parked = setup.root / "conf.d" / "payload.so"
    parked.write_bytes(b"\x7fELF")
    code, document = setup.check(capsys)
    assert code == 1
    assert [entry["path"] for entry in document["added"]] == [str(parked)]
    assert document["added"][0]["reasons"][0].startswith("include_dir (")


def test_check_reports_removed_password_file(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup.write_baseline() == 0
    (setup.root / "passwd").unlink()
    code, document = setup.check(capsys)
    assert code == 2
    assert [entry["path"] for entry in document["removed"]] == [str(setup.root / "passwd")]
    assert document["changed"] == []


def test_check_reports_mode_change(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    acl = setup.root / "acl"
    os.chmod(acl, 0o600)
    assert setup.write_baseline() == 0
    os.chmod(acl, 0o666)
    code, document = setup.check(capsys)
    assert code == 4
    assert changes_of(document, acl) == {"mode": {"old": "0600", "new": "0666"}}


def test_check_reports_tls_key_symlink_swap(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup.write_baseline() == 0
    key = setup.root / "tls" / "key.pem"
    key.unlink()
    key.symlink_to("key-b.pem")
    code, document = setup.check(capsys)
    assert code == 4
    changes = changes_of(document, key)
    assert changes["link_target"] == {"old": "key-a.pem", "new": "key-b.pem"}
    target_digests = changes["target.sha256"]
    assert target_digests["old"] == hashlib.sha256(b"key-a.pem contents\n").hexdigest()
    assert target_digests["new"] == hashlib.sha256(b"key-b.pem contents\n").hexdigest()


def test_check_text_lists_old_and_new(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup.write_baseline() == 0
    os.chmod(setup.root / "dynsec.json", 0o640)
    capsys.readouterr()
    code = main(["check", *setup.target_args(), "--baseline", str(setup.baseline)])
    out = capsys.readouterr().out
    assert code == 4
    assert f"changed: {setup.root / 'dynsec.json'} (dynamic security config (" in out
    assert "  mode: '0644' -> '0640'\n" in out


def test_check_rejects_edited_baseline(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup.write_baseline() == 0
    data = bytearray(setup.baseline.read_bytes())
    position = data.index(b'"size": ') + len(b'"size": ')
    data[position] = ord("9") if data[position] != ord("9") else ord("8")
    setup.baseline.write_bytes(bytes(data))
    code, document = setup.check(capsys)
    assert code == 8
    assert document["status"] == "baseline_invalid"
    assert "does not verify" in document["error"]
    # The invalid baseline is left for inspection, never replaced.
    assert setup.baseline.read_bytes() == bytes(data)


def test_check_rejects_untrusted_signer(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup.write_baseline() == 0
    setup.guard.keygen("mallory")
    data = setup.baseline.read_bytes()
    write_signed(setup.baseline, data, load_private_key(setup.guard.keys["mallory"]))
    code, document = setup.check(capsys)
    assert code == 8
    assert "which the policy does not trust" in document["error"]


def test_baseline_rejects_untrusted_key(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup.write_baseline() == 0
    before = setup.baseline.read_bytes()
    setup.guard.keygen("mallory")
    capsys.readouterr()
    assert setup.write_baseline("mallory") == 1
    assert "is not trusted by the policy" in capsys.readouterr().err
    assert setup.baseline.read_bytes() == before
    assert setup.check(capsys)[0] == 0


def test_baseline_again_keeps_recorded_targets(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup.write_baseline() == 0
    first = json.loads(setup.baseline.read_bytes())
    # No -c and no --unit: the targets come from the baseline being replaced.
    argv = [
        "baseline",
        "--policy",
        str(setup.guard.policy),
        "--key",
        str(setup.guard.keys["alice"]),
    ]
    assert main([*argv, "--output", str(setup.baseline)]) == 0
    second = json.loads(setup.baseline.read_bytes())
    assert second["targets"] == first["targets"]
    assert set(second["files"]) == set(first["files"])


def test_check_resolves_relative_paths_from_recorded_directory(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (setup.root / "relative.acl").write_text("topic read #\n")
    with setup.config.open("a") as handle:
        handle.write("psk_file relative.acl\n")
    monkeypatch.chdir(setup.root)
    assert setup.write_baseline() == 0
    monkeypatch.chdir("/")
    code, document = setup.check(capsys)
    assert code == 0, document
    (setup.root / "relative.acl").write_text("topic readwrite #\n")
    code, document = setup.check(capsys)
    assert code == 4
    assert str(setup.root / "relative.acl") in [item["path"] for item in document["changed"]]


def test_check_with_rejected_config_still_compares(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup.write_baseline() == 0
    (setup.root / "conf.d" / "bad.conf").write_text("no_such_option 1\n")
    (setup.root / "acl").write_text("topic readwrite secret/#\n")
    code, document = setup.check(capsys)
    assert code == 4 | 16, document
    assert document["status"] == "incomplete"
    assert "bad.conf" in document["error"]
    assert str(setup.root / "acl") in [item["path"] for item in document["changed"]]


def test_check_rejects_manifest_namespace(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup.write_baseline() == 0
    key = load_private_key(setup.guard.keys["alice"])
    signature = key.sign(setup.baseline.read_bytes(), MANIFEST_NAMESPACE)
    setup.baseline.with_name("baseline.json.sig").write_bytes(signature)
    code, document = setup.check(capsys)
    assert code == 8
    assert "namespace 'mosquitto-guard-manifest'" in document["error"]


def test_check_rejects_missing_signature(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup.write_baseline() == 0
    setup.baseline.with_name("baseline.json.sig").unlink()
    code, document = setup.check(capsys)
    assert code == 8
    assert "no signature found" in document["error"]


def test_check_without_baseline_fails(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    code, document = setup.check(capsys)
    assert code == 16
    assert document["status"] == "check_failed"
    assert "baseline not found" in document["error"]
    assert "mosquitto-guard baseline --policy" in document["error"]


def test_check_accepts_minisign_baseline(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    setup.guard.keygen("bob", kind="minisign")
    setup.guard.write_policy(["alice", "bob"])
    assert setup.write_baseline("alice") == 0
    assert setup.write_baseline("bob") == 0
    assert setup.baseline.with_name("baseline.json.minisig").exists()
    # The SSH signature signed the replaced bytes, so it is removed.
    assert not setup.baseline.with_name("baseline.json.sig").exists()
    code, document = setup.check(capsys)
    assert code == 0
    assert document["status"] == "clean"


def test_baseline_file_mode(setup: Setup) -> None:
    assert setup.write_baseline() == 0
    assert stat.S_IMODE(setup.baseline.stat().st_mode) == 0o644
