"""Each way a plugin's signature, manifest or path can be wrong, rejected by `run` before the
broker starts, with the exact message an admin would read."""

from __future__ import annotations

import dataclasses
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import Guard, stop_process, wait_for_port

from mosquitto_guard.manifest.model import parse_manifest, render_manifest
from mosquitto_guard.signing import MANIFEST_NAMESPACE
from mosquitto_guard.signing.keys import load_private_key, load_public_key


def rejected(result: subprocess.CompletedProcess[str]) -> str:
    """Return the single rejection line, asserting the launch failed with exit code 1."""
    assert result.returncode == 1, result.stderr
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("mosquitto-guard: rejected: ")
    ]
    assert len(lines) == 1, result.stderr
    return lines[0]


def key_id(guard: Guard, name: str) -> str:
    return load_public_key(Path(f"{guard.keys[name]}.pub")).key_id


@pytest.fixture
def signed(guard: Guard) -> tuple[Guard, Path, Path]:
    """A plugin signed by alice, its manifest, and a config that loads it."""
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    return guard, plugin, guard.config(f"plugin {plugin}")


def test_rejects_signature_by_untrusted_key(guard: Guard) -> None:
    guard.keygen("mallory")
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "mallory")
    line = rejected(guard.run(guard.config(f"plugin {plugin}")))
    manifest = guard.manifests / "good.toml"
    assert (
        f"{manifest}: signed by no trusted key, but the policy {guard.policy} requires 1; "
        f"ignored: signature good.toml.sig is by key {key_id(guard, 'mallory')}, which the "
        "policy does not trust"
    ) in line
    assert f"fix: mosquitto-guard sign --manifest {manifest} --key KEY" in line


def test_rejects_signature_by_revoked_key(guard: Guard) -> None:
    guard.keygen("bob")
    guard.write_policy(["alice"], revoked=[key_id(guard, "bob")])
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "bob")
    line = rejected(guard.run(guard.config(f"plugin {plugin}")))
    assert (
        f"signed by no trusted key, but the policy {guard.policy} requires 1; ignored: "
        f"signature good.toml.sig is by revoked key {key_id(guard, 'bob')}"
    ) in line


def test_rejects_expired_manifest(signed: tuple[Guard, Path, Path]) -> None:
    guard, _, config = signed
    manifest_path = guard.manifests / "good.toml"
    manifest = parse_manifest(manifest_path.read_bytes(), str(manifest_path))
    expired = dataclasses.replace(
        manifest,
        signed_at=datetime(2025, 1, 1, tzinfo=UTC),
        expires=datetime(2026, 1, 1, tzinfo=UTC),
    )
    data = render_manifest(expired)
    manifest_path.write_bytes(data)
    key = load_private_key(guard.keys["alice"])
    Path(f"{manifest_path}.sig").write_bytes(key.sign(data, MANIFEST_NAMESPACE))
    line = rejected(guard.run(config))
    assert f"{manifest_path}: manifest expired at 2026-01-01T00:00:00Z" in line
    assert f"signed by {key_id(guard, 'alice')}" in line


def test_rejects_manifest_for_different_bytes(signed: tuple[Guard, Path, Path]) -> None:
    guard, plugin, config = signed
    manifest = parse_manifest((guard.manifests / "good.toml").read_bytes(), "good.toml")
    guard.build("good.so", {"MARKER_TEXT": '"changed\\n"'})
    line = rejected(guard.run(config))
    import hashlib

    actual = hashlib.sha256(plugin.read_bytes()).hexdigest()
    assert (
        f"{plugin}: sha256 {actual} does not match manifest {guard.manifests / 'good.toml'} "
        f"(version 1, signed by {key_id(guard, 'alice')}), which expects sha256 "
        f"{manifest.file.sha256}"
    ) in line
    assert f"fix: if this build is genuine, sign it: mosquitto-guard sign {plugin}" in line


def test_rejects_version_lower_than_accepted(guard: Guard, processes: list) -> None:
    plugin = guard.build("good.so")
    old_bytes = plugin.read_bytes()
    guard.sign(plugin, "good", 1, "alice")
    old_manifest = (guard.manifests / "good.toml").read_bytes()
    old_signature = (guard.manifests / "good.toml.sig").read_bytes()
    guard.build("good.so", {"MARKER_TEXT": '"v2\\n"'})
    guard.sign(plugin, "good", 2, "alice")
    config = guard.config(f"plugin {plugin}")
    process = subprocess.Popen(
        guard.run_argv(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    processes.append(process)
    assert wait_for_port(guard.port, process)
    stop_process(process)
    # An attacker puts back version 1 with its genuine, still valid signature.
    plugin.write_bytes(old_bytes)
    (guard.manifests / "good-v1.toml").write_bytes(old_manifest)
    (guard.manifests / "good-v1.toml.sig").write_bytes(old_signature)
    line = rejected(guard.run(config))
    assert (
        "rollback rejected: plugin 'good' version 1 is older than version 2, which was "
        f"already accepted (state file {guard.root / 'state' / 'versions.json'})"
    ) in line
    assert "fix: install version 2 or later of good" in line


def test_rejects_signature_for_other_namespace(signed: tuple[Guard, Path, Path]) -> None:
    guard, _, config = signed
    manifest_path = guard.manifests / "good.toml"
    signature = Path(f"{manifest_path}.sig")
    signature.unlink()
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-Y",
            "sign",
            "-f",
            str(guard.keys["alice"]),
            "-n",
            "file",
            str(manifest_path),
        ],
        check=True,
        capture_output=True,
    )
    line = rejected(guard.run(config))
    assert (
        f"{signature}: signature by key {key_id(guard, 'alice')} has namespace 'file', "
        "expected 'mosquitto-guard-manifest'"
    ) in line


def test_rejects_threshold_not_met_and_accepts_when_met(guard: Guard) -> None:
    guard.keygen("bob")
    guard.keygen("carol")
    guard.write_policy(["alice", "bob", "carol"], threshold=2)
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    config = guard.config(f"plugin {plugin}")
    line = rejected(guard.run(config))
    assert (
        f"signed by 1 trusted key(s) (alice ({key_id(guard, 'alice')})), but the policy "
        f"{guard.policy} requires 2"
    ) in line
    from mosquitto_guard.cli import main

    assert (
        main(
            [
                "sign",
                "--manifest",
                str(guard.manifests / "good.toml"),
                "--key",
                str(guard.keys["bob"]),
            ]
        )
        == 0
    )
    verified = subprocess.run(
        [*guard.run_argv(None)[:3], "verify", "--policy", str(guard.policy), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stderr


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("truncated", "skipped {manifest}: TOML syntax error"),
        ("huge", "skipped {manifest}: manifest file is larger than the maximum of 65536 bytes"),
        ("utf16", "skipped {manifest}: manifest is not UTF-8"),
    ],
)
def test_rejects_damaged_manifest(
    signed: tuple[Guard, Path, Path], case: str, expected: str
) -> None:
    guard, plugin, config = signed
    manifest = guard.manifests / "good.toml"
    data = manifest.read_bytes()
    damaged = {
        "truncated": data[: len(data) // 2],
        "huge": data + b"#" * 70000,
        "utf16": data.decode().encode("utf-16"),
    }[case]
    manifest.write_bytes(damaged)
    line = rejected(guard.run(config))
    assert f"{plugin}: no manifest in {guard.manifests} for this plugin" in line
    assert expected.format(manifest=manifest) in line


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("truncated", "{signature}: invalid signature file: "),
        ("huge", "{signature}: signature file is larger than the maximum of 16384 bytes"),
        ("utf16", "{signature}: invalid signature file: "),
    ],
)
def test_rejects_damaged_signature(
    signed: tuple[Guard, Path, Path], case: str, expected: str
) -> None:
    guard, _, config = signed
    signature = guard.manifests / "good.toml.sig"
    data = signature.read_bytes()
    damaged = {
        "truncated": data[: len(data) // 2],
        "huge": data * 60,
        "utf16": data.decode().encode("utf-16"),
    }[case]
    signature.write_bytes(damaged)
    line = rejected(guard.run(config))
    assert expected.format(signature=signature) in line
