"""`mosquitto-guard keygen` and `mosquitto-guard sign`, run through `main` on compiled plugins."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mosquitto_guard.cli import main
from mosquitto_guard.errors import ManifestError
from mosquitto_guard.manifest.model import parse_manifest
from mosquitto_guard.manifest.verify import verify_manifest
from mosquitto_guard.policy.model import load_policy
from mosquitto_guard.signing import MANIFEST_NAMESPACE
from mosquitto_guard.signing.keys import PASSPHRASE_ENV, load_public_key

MARKER_SOURCE = Path(__file__).parent.parent / "plugins" / "marker.c"
LEGACY_SOURCE = """\
int mosquitto_auth_plugin_version(void) { return 4; }
int mosquitto_auth_plugin_init(void **user_data, void *opts, int count) { return 0; }
"""


@pytest.fixture(scope="module")
def plugins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A v5 plugin, a legacy-API plugin and a shared object that is no plugin."""
    directory = tmp_path_factory.mktemp("plugins")
    legacy_source = directory / "legacy.c"
    legacy_source.write_text(LEGACY_SOURCE)
    other_source = directory / "other.c"
    other_source.write_text("int helper(void) { return 1; }\n")
    built = {"marker": MARKER_SOURCE, "legacy": legacy_source, "other": other_source}
    result: dict[str, Path] = {}
    for name, source in built.items():
        output = directory / f"{name}.so"
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-O1", "-o", str(output), str(source)],
            check=True,
            capture_output=True,
        )
        result[name] = output
    return result


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A key pair of each kind, a manifest directory and a policy trusting both keys."""
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    (tmp_path / "manifests").mkdir()
    assert main(["keygen", "--no-passphrase", "--comment", "release", str(tmp_path / "ssh")]) == 0
    assert main(["keygen", "--type", "minisign", "--no-passphrase", str(tmp_path / "mini")]) == 0
    (tmp_path / "policy.toml").write_text(
        'format_version = 1\nthreshold = 2\nstate_dir = "state"\n'
        '[[keys]]\nname = "ssh"\nfile = "ssh.pub"\n'
        '[[keys]]\nname = "mini"\nfile = "mini.pub"\n'
    )
    return tmp_path


def sign_args(setup: Path, plugin: Path, *extra: str, key: str = "ssh") -> list[str]:
    return [
        "sign",
        str(plugin),
        "--key",
        str(setup / key),
        "--name",
        "marker",
        "--manifest-dir",
        str(setup / "manifests"),
        *extra,
    ]


def test_keygen_prints_public_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--no-passphrase", "--comment", "ops", str(tmp_path / "k")]) == 0

    output = capsys.readouterr()
    public_key = load_public_key(tmp_path / "k.pub")
    assert output.out == f"{public_key.text} ops\n"
    assert f"key id {public_key.key_id}" in output.err


def test_keygen_passphrase_file(tmp_path: Path) -> None:
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text("from a file\n")

    assert main(["keygen", "--passphrase-file", str(passphrase_file), str(tmp_path / "k")]) == 0
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-P", "from a file", "-f", str(tmp_path / "k")],
        capture_output=True,
    )
    assert derived.returncode == 0


def test_keygen_without_passphrase_source_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)

    assert main(["keygen", str(tmp_path / "k")]) == 2
    assert capsys.readouterr().err == (
        f"mosquitto-guard: error: no passphrase for new key {tmp_path / 'k'}; fix: set "
        "MOSQUITTO_GUARD_PASSPHRASE, or run the command in a terminal to be prompted\n"
    )
    assert not (tmp_path / "k").exists()


def test_sign_writes_manifest_and_signature(
    setup: Path, plugins: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = sign_args(
        setup,
        plugins["marker"],
        "--version",
        "1",
        "--option",
        "config_file",
        "--connect",
        "[::1]:1883",
        "--read",
        "/etc/mosquitto",
        "--write",
        "/var/lib/x",
    )
    before = datetime.now(UTC).replace(microsecond=0)
    assert main(args) == 0

    manifest_path = setup / "manifests" / "marker.toml"
    signature_path = setup / "manifests" / "marker.toml.sig"
    assert capsys.readouterr().out == f"{manifest_path}\n{signature_path}\n"
    manifest = parse_manifest(manifest_path.read_bytes(), str(manifest_path))
    assert manifest.file.name == "marker.so"
    assert manifest.file.size == plugins["marker"].stat().st_size
    assert manifest.plugin.api_version == 5
    assert manifest.plugin.mosquitto == ">=2.0"
    assert manifest.plugin.options == ("config_file",)
    assert manifest.permissions.connect == ("[::1]:1883",)
    assert manifest.permissions.read == ("/etc/mosquitto",)
    assert manifest.permissions.write == ("/var/lib/x",)
    assert manifest.expires - manifest.signed_at == timedelta(days=365)
    assert manifest.signed_at >= before


def test_signed_manifest_passes_ssh_keygen(setup: Path, plugins: dict[str, Path]) -> None:
    assert main(sign_args(setup, plugins["marker"], "--version", "1")) == 0
    manifest_path = setup / "manifests" / "marker.toml"
    allowed = setup / "allowed_signers"
    allowed.write_text(f"release {(setup / 'ssh.pub').read_text()}")

    result = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(allowed),
            "-I",
            "release",
            "-n",
            MANIFEST_NAMESPACE,
            "-s",
            f"{manifest_path}.sig",
        ],
        input=manifest_path.read_bytes(),
        capture_output=True,
    )
    assert result.returncode == 0


def test_minisign_key_signature_passes_minisign(setup: Path, plugins: dict[str, Path]) -> None:
    assert main(sign_args(setup, plugins["marker"], "--version", "1", key="mini")) == 0
    manifest_path = setup / "manifests" / "marker.toml"

    result = subprocess.run(
        ["minisign", "-V", "-p", str(setup / "mini.pub"), "-m", str(manifest_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0
    assert f"namespace:{MANIFEST_NAMESPACE}\tfile:marker.toml" in result.stdout


def test_cosign_meets_threshold(
    setup: Path, plugins: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(sign_args(setup, plugins["marker"], "--version", "1")) == 0
    manifest_path = setup / "manifests" / "marker.toml"
    original = manifest_path.read_bytes()
    policy = load_policy(setup / "policy.toml")
    with pytest.raises(ManifestError, match="requires 2"):
        verify_manifest(manifest_path, policy, datetime.now(UTC))
    capsys.readouterr()

    assert main(["sign", "--manifest", str(manifest_path), "--key", str(setup / "mini")]) == 0

    assert capsys.readouterr().out == f"{manifest_path}.minisig\n"
    assert manifest_path.read_bytes() == original
    verified = verify_manifest(manifest_path, policy, datetime.now(UTC))
    assert sorted(verified.signer_names) == ["mini", "ssh"]


def test_cosign_same_key_twice_is_noop(
    setup: Path, plugins: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(sign_args(setup, plugins["marker"], "--version", "1")) == 0
    manifest_path = setup / "manifests" / "marker.toml"
    capsys.readouterr()

    assert main(["sign", "--manifest", str(manifest_path), "--key", str(setup / "ssh")]) == 0
    assert "is already signed by key" in capsys.readouterr().err
    assert sorted(path.name for path in manifest_path.parent.iterdir()) == [
        "marker.toml",
        "marker.toml.sig",
    ]


def test_cosign_second_ssh_key_uses_label(setup: Path, plugins: dict[str, Path]) -> None:
    assert main(sign_args(setup, plugins["marker"], "--version", "1")) == 0
    assert main(["keygen", "--no-passphrase", str(setup / "ssh2")]) == 0
    manifest_path = setup / "manifests" / "marker.toml"

    args = ["sign", "--manifest", str(manifest_path), "--key", str(setup / "ssh2")]
    assert main([*args, "--label", "second"]) == 0
    assert (setup / "manifests" / "marker.toml.second.sig").exists()


def test_cosign_rejects_manifest_options(
    setup: Path, plugins: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(sign_args(setup, plugins["marker"], "--version", "1")) == 0
    manifest_path = setup / "manifests" / "marker.toml"
    capsys.readouterr()

    args = ["sign", "--manifest", str(manifest_path), "--key", str(setup / "mini")]
    assert main([*args, "--version", "2"]) == 2
    assert capsys.readouterr().err == (
        "mosquitto-guard: error: --manifest signs an existing manifest; --version does not apply\n"
    )


def test_resign_higher_version_removes_stale_signatures(
    setup: Path, plugins: dict[str, Path]
) -> None:
    assert main(sign_args(setup, plugins["marker"], "--version", "1")) == 0
    manifest_path = setup / "manifests" / "marker.toml"
    assert main(["sign", "--manifest", str(manifest_path), "--key", str(setup / "mini")]) == 0

    assert main(sign_args(setup, plugins["marker"], "--version", "2")) == 0
    assert not Path(f"{manifest_path}.minisig").exists()
    assert parse_manifest(manifest_path.read_bytes(), "m").version == 2


def test_resign_lower_version_rejected(
    setup: Path, plugins: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(sign_args(setup, plugins["marker"], "--version", "3")) == 0
    manifest_path = setup / "manifests" / "marker.toml"
    capsys.readouterr()

    assert main(sign_args(setup, plugins["legacy"], "--version", "3", "--api-version", "4")) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        f"mosquitto-guard: error: {manifest_path} already contains marker version 3 (sha256 "
    )
    assert error.endswith("a new build needs a higher version; fix: use --version 4\n")


def test_legacy_plugin_needs_api_version(
    setup: Path, plugins: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(sign_args(setup, plugins["legacy"], "--version", "1")) == 2
    assert capsys.readouterr().err == (
        f"mosquitto-guard: error: {plugins['legacy']} exports only mosquitto_auth_plugin_version "
        "(the legacy plugin API); fix: give its API version with --api-version 2, 3 or 4\n"
    )

    assert main(sign_args(setup, plugins["legacy"], "--version", "1", "--api-version", "4")) == 0
    manifest_path = setup / "manifests" / "marker.toml"
    manifest = parse_manifest(manifest_path.read_bytes(), "m")
    assert manifest.plugin.api_version == 4
    assert manifest.plugin.mosquitto == ">=1.6"


def test_non_plugin_rejected(
    setup: Path, plugins: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(sign_args(setup, plugins["other"], "--version", "1")) == 2
    assert capsys.readouterr().err == (
        f"mosquitto-guard: error: {plugins['other']} exports neither mosquitto_plugin_version "
        "nor mosquitto_auth_plugin_version: it is not a Mosquitto plugin\n"
    )


def test_non_elf_rejected(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text_file = setup / "notes.so"
    text_file.write_text("not an ELF file\n")

    assert main(sign_args(setup, text_file, "--version", "1")) == 2
    assert capsys.readouterr().err.startswith(
        f"mosquitto-guard: error: {text_file} is not a readable ELF shared object: "
    )


def test_expires_date_option(setup: Path, plugins: dict[str, Path]) -> None:
    assert (
        main(sign_args(setup, plugins["marker"], "--version", "1", "--expires", "2099-03-01")) == 0
    )
    manifest_path = setup / "manifests" / "marker.toml"

    manifest = parse_manifest(manifest_path.read_bytes(), "m")
    assert manifest.expires == datetime(2099, 3, 1, tzinfo=UTC)


def test_expires_in_past_rejected(
    setup: Path, plugins: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(sign_args(setup, plugins["marker"], "--version", "1", "--expires", "2001-01-01")) == 2
    )
    assert capsys.readouterr().err == (
        "mosquitto-guard: error: --expires 2001-01-01 is not in the future\n"
    )


def test_invalid_field_rejected(
    setup: Path, plugins: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = sign_args(setup, plugins["marker"], "--version", "1", "--connect", "broker")
    assert main(args) == 2
    assert capsys.readouterr().err == (
        "mosquitto-guard: error: manifest 'marker': permissions.connect: invalid endpoint "
        "'broker': expected host:port\n"
    )


def test_output_option(setup: Path, plugins: dict[str, Path]) -> None:
    output = setup / "elsewhere.toml"
    args = [
        "sign",
        str(plugins["marker"]),
        "--key",
        str(setup / "mini"),
        "--name",
        "marker",
        "--version",
        "1",
        "--output",
        str(output),
    ]
    assert main(args) == 0
    assert output.exists()
    assert Path(f"{output}.minisig").exists()
