"""verify_manifest, find_manifest and check_against_manifest on real keys and files."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest
from manifest_workspace import NOW, PLUGIN_BYTES, PLUGIN_SHA256, Workspace

from mosquitto_guard.errors import HostError, ManifestError, SignatureError
from mosquitto_guard.manifest.verify import (
    VerifiedManifest,
    check_against_manifest,
    find_manifest,
    record_accepted,
    verify_manifest,
)
from mosquitto_guard.policy.state import VersionState
from mosquitto_guard.signing import MANIFEST_NAMESPACE
from mosquitto_guard.signing.keys import KeyKind

OTHER_SHA256 = "0" * 64


def fix_cosign(manifest: Path) -> str:
    return f"fix: mosquitto-guard sign --manifest {manifest} --key KEY"


# Interoperability: manifests signed by the standard tools.


def test_ssh_keygen_signed_manifest_verifies(workspace: Workspace) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workspace.keys_dir / "ops")],
        check=True,
    )
    policy = workspace.policy(["ops"])
    manifest = workspace.manifest()
    subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "sign",
            "-f",
            str(workspace.keys_dir / "ops"),
            "-n",
            MANIFEST_NAMESPACE,
            str(manifest),
        ],
        check=True,
        capture_output=True,
    )

    verified = verify_manifest(manifest, policy, NOW)
    assert verified.signer_names == ("ops",)
    assert verified.key_ids == (policy.keys[0].key_id,)


def test_minisign_signed_manifest_verifies(workspace: Workspace) -> None:
    secret = workspace.keys_dir / "ops.key"
    subprocess.run(
        ["minisign", "-G", "-W", "-s", str(secret), "-p", str(workspace.keys_dir / "ops.pub")],
        check=True,
        capture_output=True,
    )
    policy = workspace.policy(["ops"])
    manifest = workspace.manifest()
    subprocess.run(
        [
            "minisign",
            "-S",
            "-s",
            str(secret),
            "-m",
            str(manifest),
            "-t",
            f"namespace:{MANIFEST_NAMESPACE} file:{manifest.name}",
        ],
        check=True,
        capture_output=True,
    )

    verified = verify_manifest(manifest, policy, NOW)
    assert verified.signers == (f"ops ({policy.keys[0].key_id})",)


@pytest.mark.parametrize("kind", ["ssh", "minisign"])
def test_signed_manifest_verifies(workspace: Workspace, kind: KeyKind) -> None:
    workspace.key("release", kind)
    policy = workspace.policy(["release"])
    manifest = workspace.manifest()
    signature = workspace.sign(manifest, "release")

    verified = verify_manifest(manifest, policy, NOW)
    assert verified.manifest.name == "marker"
    assert verified.signer_details[0].signature_path == signature
    assert verified.state_dir == workspace.state_dir


# Rejections, each with its own message.


def test_untrusted_key_rejected(workspace: Workspace) -> None:
    workspace.key("release")
    stranger = workspace.key("stranger")
    policy = workspace.policy(["release"])
    manifest = workspace.manifest()
    workspace.sign(manifest, "stranger")

    with pytest.raises(ManifestError) as raised:
        verify_manifest(manifest, policy, NOW)
    assert str(raised.value) == (
        f"{manifest}: signed by no trusted key, but the policy {policy.path} requires 1; "
        f"ignored: signature marker.toml.sig is by key {stranger.key_id}, which the policy "
        f"does not trust; {fix_cosign(manifest)}"
    )


def test_revoked_key_rejected_with_warning(
    workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    workspace.key("release")
    old = workspace.key("old")
    policy = workspace.policy(["release"], revoked=["old"])
    manifest = workspace.manifest()
    workspace.sign(manifest, "old")

    with caplog.at_level(logging.WARNING), pytest.raises(ManifestError) as raised:
        verify_manifest(manifest, policy, NOW)
    assert str(raised.value) == (
        f"{manifest}: signed by no trusted key, but the policy {policy.path} requires 1; "
        f"ignored: signature marker.toml.sig is by revoked key {old.key_id}; "
        f"{fix_cosign(manifest)}"
    )
    assert f"is by revoked key {old.key_id}" in caplog.text


def test_revoked_signature_ignored_when_threshold_met(workspace: Workspace) -> None:
    workspace.key("release")
    workspace.key("old")
    policy = workspace.policy(["release"], revoked=["old"])
    manifest = workspace.manifest()
    workspace.sign(manifest, "release")
    workspace.sign(manifest, "old", label="old")

    assert verify_manifest(manifest, policy, NOW).signer_names == ("release",)


def test_other_namespace_rejected(workspace: Workspace) -> None:
    release = workspace.key("release")
    policy = workspace.policy(["release"])
    manifest = workspace.manifest()
    signature = workspace.sign(manifest, "release", namespace="file")

    with pytest.raises(SignatureError) as raised:
        verify_manifest(manifest, policy, NOW)
    assert str(raised.value) == (
        f"{signature}: signature by key {release.key_id} has namespace 'file', expected "
        f"'mosquitto-guard-manifest'; fix: remove {signature}, then: "
        f"mosquitto-guard sign --manifest {manifest} --key KEY"
    )


def test_changed_manifest_rejected(workspace: Workspace) -> None:
    release = workspace.key("release")
    policy = workspace.policy(["release"])
    manifest = workspace.manifest()
    signature = workspace.sign(manifest, "release")
    manifest.write_bytes(manifest.read_bytes().replace(b"\nversion = 1", b"\nversion = 9"))

    with pytest.raises(SignatureError) as raised:
        verify_manifest(manifest, policy, NOW)
    assert str(raised.value) == (
        f"{signature}: signature by key {release.key_id} (release) does not verify: signature "
        f"by key {release.key_id} does not match the signed bytes; the manifest changed after "
        f"it was signed; fix: remove {signature}, then: "
        f"mosquitto-guard sign --manifest {manifest} --key KEY"
    )


def test_expired_manifest_rejected(workspace: Workspace) -> None:
    release = workspace.key("release")
    policy = workspace.policy(["release"])
    manifest = workspace.manifest()
    workspace.sign(manifest, "release")

    later = NOW.replace(year=2031, month=1, day=1)
    with pytest.raises(ManifestError) as raised:
        verify_manifest(manifest, policy, later)
    assert str(raised.value) == (
        f"{manifest}: manifest expired at 2031-01-01T00:00:00Z (now 2031-01-01T00:00:00Z); "
        f"signed by {release.key_id}; fix: mosquitto-guard sign PATH/marker.so --key KEY "
        f"--name marker --version 1 --manifest-dir {workspace.manifest_dir}"
    )


def test_unsigned_manifest_rejected(workspace: Workspace) -> None:
    workspace.key("release")
    policy = workspace.policy(["release"])
    manifest = workspace.manifest()

    with pytest.raises(ManifestError) as raised:
        verify_manifest(manifest, policy, NOW)
    assert str(raised.value) == (
        f"{manifest}: no signature file found (expected marker.toml.sig or "
        f"marker.toml.minisig); {fix_cosign(manifest)}"
    )


def test_unrelated_file_names_ignored(
    workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    workspace.key("release")
    policy = workspace.policy(["release"])
    manifest = workspace.manifest()
    workspace.sign(manifest, "release")
    stray = manifest.with_name("marker.toml.bak")
    stray.write_text("old copy")

    with caplog.at_level(logging.WARNING):
        verify_manifest(manifest, policy, NOW)
    assert f"ignoring {stray}" in caplog.text


# Thresholds.


def test_threshold_two_of_three_met(workspace: Workspace) -> None:
    for name in ("alice", "bob", "carol"):
        workspace.key(name, "minisign" if name == "carol" else "ssh")
    policy = workspace.policy(["alice", "bob", "carol"], threshold=2)
    manifest = workspace.manifest()
    workspace.sign(manifest, "alice")
    workspace.sign(manifest, "carol")

    verified = verify_manifest(manifest, policy, NOW)
    assert sorted(verified.signer_names) == ["alice", "carol"]


def test_threshold_two_of_three_not_met(workspace: Workspace) -> None:
    alice = workspace.key("alice")
    workspace.key("bob")
    workspace.key("carol")
    policy = workspace.policy(["alice", "bob", "carol"], threshold=2)
    manifest = workspace.manifest()
    workspace.sign(manifest, "alice")

    with pytest.raises(ManifestError) as raised:
        verify_manifest(manifest, policy, NOW)
    assert str(raised.value) == (
        f"{manifest}: signed by 1 trusted key(s) (alice ({alice.key_id})), but the policy "
        f"{policy.path} requires 2; {fix_cosign(manifest)}"
    )


def test_same_key_twice_counts_once(workspace: Workspace) -> None:
    workspace.key("alice")
    workspace.key("bob")
    policy = workspace.policy(["alice", "bob"], threshold=2)
    manifest = workspace.manifest()
    workspace.sign(manifest, "alice")
    workspace.sign(manifest, "alice", label="again")

    with pytest.raises(ManifestError) as raised:
        verify_manifest(manifest, policy, NOW)
    assert "signed by 1 trusted key(s)" in str(raised.value)


# Hostile manifest and signature files.


HOSTILE_SIGNATURE_FILES = {
    "truncated": (
        lambda valid: valid[: len(valid) // 2],
        "invalid signature file: SSH signature does not end with -----END SSH SIGNATURE-----",
    ),
    "huge": (
        lambda valid: valid * 80,
        "signature file is larger than the maximum of 16384 bytes",
    ),
    "utf-16": (
        lambda valid: valid.decode().encode("utf-16"),
        "invalid signature file: SSH signature contains NUL bytes",
    ),
    "nul byte": (
        lambda valid: valid[:40] + b"\x00" + valid[40:],
        "invalid signature file: SSH signature contains NUL bytes",
    ),
    "empty": (
        lambda valid: b"",
        "invalid signature file: SSH signature does not start with -----BEGIN SSH SIGNATURE-----",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SIGNATURE_FILES))
def test_hostile_signature_file_rejected(workspace: Workspace, case: str) -> None:
    workspace.key("release")
    policy = workspace.policy(["release"])
    manifest = workspace.manifest()
    signature = workspace.sign(manifest, "release")
    mutate, problem = HOSTILE_SIGNATURE_FILES[case]
    signature.write_bytes(mutate(signature.read_bytes()))

    with pytest.raises(SignatureError) as raised:
        verify_manifest(manifest, policy, NOW)
    if case == "huge":
        fix = f"replace {signature} with the file the signer produced"
    else:
        fix = f"remove {signature}, then: mosquitto-guard sign --manifest {manifest} --key KEY"
    assert str(raised.value) == f"{signature}: {problem}; fix: {fix}"


def test_hostile_minisign_file_rejected(workspace: Workspace) -> None:
    workspace.key("release", "minisign")
    policy = workspace.policy(["release"])
    manifest = workspace.manifest()
    signature = workspace.sign(manifest, "release")
    signature.write_bytes(signature.read_bytes().decode().encode("utf-16-le"))

    with pytest.raises(SignatureError) as raised:
        verify_manifest(manifest, policy, NOW)
    assert str(raised.value).startswith(
        f"{signature}: invalid signature file: minisign signature contains NUL bytes"
    )


HOSTILE_MANIFEST_FILES = {
    "huge": (
        lambda valid: valid + b"#" * 70_000,
        "manifest file is larger than the maximum of 65536 bytes",
    ),
    "utf-16": (
        lambda valid: valid.decode().encode("utf-16"),
        "manifest is not UTF-8 (it starts with a UTF-16 byte order mark)",
    ),
    "nul byte": (
        lambda valid: valid.replace(b"\n", b"\n\x00", 1),
        "manifest contains NUL bytes",
    ),
    "truncated": (
        lambda valid: valid[:30],
        "TOML syntax error: Unterminated string (at end of document)",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MANIFEST_FILES))
def test_hostile_manifest_file_rejected(workspace: Workspace, case: str) -> None:
    workspace.key("release")
    policy = workspace.policy(["release"])
    manifest = workspace.manifest()
    workspace.sign(manifest, "release")
    mutate, problem = HOSTILE_MANIFEST_FILES[case]
    manifest.write_bytes(mutate(manifest.read_bytes()))

    with pytest.raises(ManifestError) as raised:
        verify_manifest(manifest, policy, NOW)
    assert str(raised.value).startswith(f"{manifest}: {problem}")


# find_manifest.


def test_find_picks_highest_valid_version(workspace: Workspace) -> None:
    workspace.key("release")
    policy = workspace.policy(["release"])
    for version in (1, 3, 2):
        path = workspace.manifest(version=version, stem=f"marker-{version}")
        workspace.sign(path, "release")

    verified = find_manifest(workspace.plugin, PLUGIN_SHA256, policy, NOW)
    assert verified.manifest.version == 3


def test_find_skips_invalid_higher_version(workspace: Workspace) -> None:
    workspace.key("release")
    workspace.key("stranger")
    policy = workspace.policy(["release"])
    workspace.sign(workspace.manifest(version=1, stem="marker-1"), "release")
    workspace.sign(workspace.manifest(version=2, stem="marker-2"), "stranger")

    assert find_manifest(workspace.plugin, PLUGIN_SHA256, policy, NOW).manifest.version == 1


def test_find_reports_digest_mismatch(workspace: Workspace) -> None:
    release = workspace.key("release")
    policy = workspace.policy(["release"])
    manifest = workspace.manifest(sha256=OTHER_SHA256)
    workspace.sign(manifest, "release")

    with pytest.raises(ManifestError) as raised:
        find_manifest(workspace.plugin, PLUGIN_SHA256, policy, NOW)
    assert str(raised.value) == (
        f"{workspace.plugin}: sha256 {PLUGIN_SHA256} does not match manifest {manifest} "
        f"(version 1, signed by {release.key_id}), which expects sha256 {OTHER_SHA256}; "
        f"fix: if this build is genuine, sign it: mosquitto-guard sign {workspace.plugin} "
        f"--key KEY --name marker --version 2 --manifest-dir {workspace.manifest_dir}"
    )


def test_find_reports_missing_manifest(workspace: Workspace) -> None:
    workspace.key("release")
    policy = workspace.policy(["release"])

    with pytest.raises(ManifestError) as raised:
        find_manifest(workspace.plugin, PLUGIN_SHA256, policy, NOW)
    assert str(raised.value) == (
        f"{workspace.plugin}: no manifest in {workspace.manifest_dir} for this plugin "
        f"(sha256 {PLUGIN_SHA256}); fix: mosquitto-guard sign {workspace.plugin} --key KEY "
        f"--name NAME --version 1 --manifest-dir {workspace.manifest_dir}"
    )


def test_find_reports_verification_error(workspace: Workspace) -> None:
    workspace.key("release")
    policy = workspace.policy(["release"])
    manifest = workspace.manifest()

    with pytest.raises(ManifestError) as raised:
        find_manifest(workspace.plugin, PLUGIN_SHA256, policy, NOW)
    assert str(raised.value).startswith(f"{manifest}: no signature file found")


def test_find_skips_unreadable_manifest(
    workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    workspace.key("release")
    policy = workspace.policy(["release"])
    workspace.sign(workspace.manifest(), "release")
    broken = workspace.manifest_dir / "broken.toml"
    broken.write_bytes(b"\xff\xfe")

    with caplog.at_level(logging.WARNING):
        verified = find_manifest(workspace.plugin, PLUGIN_SHA256, policy, NOW)
    assert verified.manifest.name == "marker"
    assert f"skipping unreadable manifest: {broken}" in caplog.text


def test_find_without_manifest_dir_is_host_error(workspace: Workspace) -> None:
    workspace.key("release")
    policy = workspace.policy(["release"])
    workspace.manifest_dir.rmdir()

    with pytest.raises(HostError) as raised:
        find_manifest(workspace.plugin, PLUGIN_SHA256, policy, NOW)
    assert str(raised.value).startswith(f"manifest directory {workspace.manifest_dir} not found")


# check_against_manifest.


@pytest.fixture
def verified_marker(workspace: Workspace) -> VerifiedManifest:
    workspace.key("release")
    policy = workspace.policy(["release"])
    workspace.sign(workspace.manifest(version=2), "release")
    return find_manifest(workspace.plugin, PLUGIN_SHA256, policy, NOW)


def test_check_accepts_matching_plugin(
    workspace: Workspace, verified_marker: VerifiedManifest
) -> None:
    check_against_manifest(
        verified_marker,
        workspace.plugin,
        PLUGIN_SHA256,
        len(PLUGIN_BYTES),
        (2, 0, 11),
        ["config_file"],
    )


def test_check_rejects_wrong_size(workspace: Workspace, verified_marker: VerifiedManifest) -> None:
    with pytest.raises(ManifestError) as raised:
        check_against_manifest(verified_marker, workspace.plugin, PLUGIN_SHA256, 5, "2.0.11", [])
    assert str(raised.value).startswith(
        f"{workspace.plugin}: manifest {verified_marker.path} expects {len(PLUGIN_BYTES)} bytes, "
        "the file has 5"
    )


def test_check_rejects_wrong_digest(
    workspace: Workspace, verified_marker: VerifiedManifest
) -> None:
    with pytest.raises(ManifestError) as raised:
        check_against_manifest(
            verified_marker, workspace.plugin, OTHER_SHA256, len(PLUGIN_BYTES), "2.0.11", []
        )
    assert str(raised.value).startswith(
        f"{workspace.plugin}: manifest {verified_marker.path} expects sha256 {PLUGIN_SHA256}, "
        f"the file has {OTHER_SHA256}"
    )


def test_check_rejects_broker_version(
    workspace: Workspace, verified_marker: VerifiedManifest
) -> None:
    with pytest.raises(ManifestError) as raised:
        check_against_manifest(
            verified_marker, workspace.plugin, PLUGIN_SHA256, len(PLUGIN_BYTES), (2, 2, 0), []
        )
    assert str(raised.value) == (
        f"{workspace.plugin}: manifest {verified_marker.path} accepts Mosquitto >=2.0,<2.2, but "
        "the broker is 2.2.0; fix: install a plugin build for Mosquitto 2.2.0 and sign it"
    )


def test_check_rejects_unknown_option(
    workspace: Workspace, verified_marker: VerifiedManifest
) -> None:
    with pytest.raises(ManifestError) as raised:
        check_against_manifest(
            verified_marker,
            workspace.plugin,
            PLUGIN_SHA256,
            len(PLUGIN_BYTES),
            "2.0.11",
            ["config_file", "debug"],
        )
    assert str(raised.value).startswith(
        f"{workspace.plugin}: manifest {verified_marker.path} does not accept option "
        "plugin_opt_debug (accepted: config_file)"
    )


def test_check_rejects_lower_version(
    workspace: Workspace, verified_marker: VerifiedManifest
) -> None:
    VersionState(workspace.state_dir).record("marker", 3, OTHER_SHA256)

    with pytest.raises(ManifestError) as raised:
        check_against_manifest(
            verified_marker, workspace.plugin, PLUGIN_SHA256, len(PLUGIN_BYTES), "2.0.11", []
        )
    assert str(raised.value).startswith(
        "rollback rejected: plugin 'marker' version 2 is older than version 3"
    )


def test_check_rejects_same_version_other_digest(
    workspace: Workspace, verified_marker: VerifiedManifest
) -> None:
    VersionState(workspace.state_dir).record("marker", 2, OTHER_SHA256)

    with pytest.raises(ManifestError) as raised:
        check_against_manifest(
            verified_marker, workspace.plugin, PLUGIN_SHA256, len(PLUGIN_BYTES), "2.0.11", []
        )
    assert str(raised.value).startswith(
        f"plugin 'marker' version 2 has sha256 {PLUGIN_SHA256}, but version 2 was accepted "
        f"with sha256 {OTHER_SHA256}"
    )


def test_record_accepted_then_older_rejected(
    workspace: Workspace, verified_marker: VerifiedManifest
) -> None:
    record_accepted(verified_marker, PLUGIN_SHA256)
    state = VersionState(workspace.state_dir)

    state.check("marker", 2, PLUGIN_SHA256)
    with pytest.raises(ManifestError):
        state.check("marker", 1, PLUGIN_SHA256)
