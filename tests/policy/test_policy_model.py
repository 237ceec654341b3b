"""The trust policy file: a complete valid policy, and a named dataset of rejected ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mosquitto_guard.errors import PolicyError
from mosquitto_guard.policy.model import load_policy
from mosquitto_guard.signing.keys import PublicKey, generate_keypair


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, PublicKey]:
    """Two SSH keys and one minisign key, with their .pub files under keys/."""
    (tmp_path / "keys").mkdir()
    return {
        "release": generate_keypair("ssh", tmp_path / "keys" / "release", comment="release"),
        "ops": generate_keypair("minisign", tmp_path / "keys" / "ops", comment=""),
        "old": generate_keypair("ssh", tmp_path / "keys" / "old", comment="old"),
    }


def write_policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_complete_policy_loads(tmp_path: Path, keys: dict[str, PublicKey]) -> None:
    path = write_policy(
        tmp_path,
        f"""\
format_version = 1
threshold = 2
plugin_dirs = ["/usr/lib/mosquitto-guard/plugins", "plugins"]
manifest_dir = "manifests"
state_dir = "/var/lib/mosquitto-guard"
revoked = ["{keys["old"].key_id}", "0123456789abcdef"]

[[keys]]
name = "release"
key = "{keys["release"].text} release@example.org"

[[keys]]
name = "ops"
file = "keys/ops.pub"

[run]
permissive = true
""",
    )
    policy = load_policy(path)

    assert policy.threshold == 2
    assert [trusted.name for trusted in policy.keys] == ["release", "ops"]
    assert policy.keys[0].key == keys["release"]
    assert policy.keys[1].key == keys["ops"]
    assert policy.revoked == {keys["old"].key_id, "0123456789ABCDEF"}
    assert policy.plugin_dirs == (
        Path("/usr/lib/mosquitto-guard/plugins"),
        tmp_path / "plugins",
    )
    assert policy.manifest_dir == tmp_path / "manifests"
    assert policy.state_dir == Path("/var/lib/mosquitto-guard")
    assert policy.permissive is True
    assert policy.trusted_key(keys["ops"].key_id) is policy.keys[1]
    assert policy.is_revoked(keys["old"].key_id)


def test_minimal_policy_defaults(tmp_path: Path, keys: dict[str, PublicKey]) -> None:
    path = write_policy(
        tmp_path,
        f'format_version = 1\n[[keys]]\nname = "release"\nkey = "{keys["release"].text}"\n',
    )
    policy = load_policy(path)

    assert policy.threshold == 1
    assert policy.plugin_dirs == ()
    assert policy.manifest_dir == tmp_path / "manifests"
    assert policy.state_dir == Path("/var/lib/mosquitto-guard")
    assert policy.permissive is False


def release_key(keys: dict[str, PublicKey]) -> str:
    return f'[[keys]]\nname = "release"\nkey = "{keys["release"].text}"\n'


HOSTILE_POLICIES = {
    "syntax error": (
        lambda keys: "format_version = = 1\n",
        "TOML syntax error: Invalid value (at line 1, column 18)",
    ),
    "missing format_version": (
        lambda keys: release_key(keys),
        "format_version: missing; add format_version = 1",
    ),
    "format_version 2": (
        lambda keys: "format_version = 2\n" + release_key(keys),
        "format_version: unsupported version 2, expected 1",
    ),
    "unknown field": (
        lambda keys: "format_version = 1\nallow_all = true\n" + release_key(keys),
        "allow_all: unknown field",
    ),
    "no keys": (
        lambda keys: "format_version = 1\n",
        "keys: no trusted keys: a policy without keys would accept nothing; fix: add a [[keys]] "
        "entry with the public key that signs your manifests",
    ),
    "keys not tables": (
        lambda keys: 'format_version = 1\nkeys = ["x"]\n',
        "keys: must be an array of tables ([[keys]])",
    ),
    "threshold zero": (
        lambda keys: "format_version = 1\nthreshold = 0\n" + release_key(keys),
        "threshold: must be at least 1, not 0",
    ),
    "threshold as string": (
        lambda keys: 'format_version = 1\nthreshold = "1"\n' + release_key(keys),
        "threshold: must be an integer, not '1'",
    ),
    "threshold above key count": (
        lambda keys: "format_version = 1\nthreshold = 2\n" + release_key(keys),
        "threshold: 2 signatures required, but only 1 trusted key(s) are listed; fix: add "
        "[[keys]] entries or lower the threshold",
    ),
    "revoked key also trusted": (
        lambda keys: (
            f'format_version = 1\nrevoked = ["{keys["release"].key_id}"]\n' + release_key(keys)
        ),
        "keys[0]: key 'release' ({release}) is also listed in revoked; fix: remove it from "
        "[[keys]] or from revoked",
    ),
    "revoked by public key line": (
        lambda keys: (
            f'format_version = 1\nrevoked = ["{keys["release"].text}"]\n' + release_key(keys)
        ),
        "keys[0]: key 'release' ({release}) is also listed in revoked; fix: remove it from "
        "[[keys]] or from revoked",
    ),
    "invalid revoked entry": (
        lambda keys: 'format_version = 1\nrevoked = ["nonsense"]\n' + release_key(keys),
        "revoked[0]: 'nonsense' is neither a key id (SHA256:... or up to 16 hex digits) nor a "
        "valid public key: minisign public key is 6 bytes long, expected 42",
    ),
    "duplicate key name": (
        lambda keys: (
            "format_version = 1\n"
            + release_key(keys)
            + '[[keys]]\nname = "release"\nfile = "keys/ops.pub"\n'
        ),
        "keys[1].name: duplicate key name 'release'",
    ),
    "same key under two names": (
        lambda keys: (
            "format_version = 1\n"
            + release_key(keys)
            + '[[keys]]\nname = "again"\nfile = "keys/release.pub"\n'
        ),
        "keys[1]: key {release} is already listed as 'release'",
    ),
    "key and file both given": (
        lambda keys: 'format_version = 1\n[[keys]]\nname = "x"\nkey = "a"\nfile = "b"\n',
        "keys[0]: key 'x' needs exactly one of 'key' or 'file'",
    ),
    "key without name": (
        lambda keys: f'format_version = 1\n[[keys]]\nkey = "{keys["release"].text}"\n',
        "keys[0].name: missing",
    ),
    "unknown key field": (
        lambda keys: 'format_version = 1\n[[keys]]\nname = "x"\nweight = 2\n',
        "keys[0].weight: unknown field",
    ),
    "invalid key line": (
        lambda keys: 'format_version = 1\n[[keys]]\nname = "x"\nkey = "ssh-ed25519 AAAA"\n',
        "keys[0]: key 'x': SSH public key is truncated",
    ),
    "missing key file": (
        lambda keys: 'format_version = 1\n[[keys]]\nname = "x"\nfile = "keys/absent.pub"\n',
        "keys[0].file: key file {root}/keys/absent.pub not found",
    ),
    "plugin_dirs not a list": (
        lambda keys: 'format_version = 1\nplugin_dirs = "/usr/lib"\n' + release_key(keys),
        "plugin_dirs: must be an array of paths",
    ),
    "permissive not boolean": (
        lambda keys: "format_version = 1\n" + release_key(keys) + '[run]\npermissive = "no"\n',
        "run.permissive: must be true or false, not 'no'",
    ),
    "unknown run field": (
        lambda keys: "format_version = 1\n" + release_key(keys) + "[run]\nskip = true\n",
        "run.skip: unknown field",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_POLICIES))
def test_hostile_policy_rejected(tmp_path: Path, keys: dict[str, PublicKey], case: str) -> None:
    build, problem = HOSTILE_POLICIES[case]
    path = write_policy(tmp_path, build(keys))

    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    expected = problem.format(release=keys["release"].key_id, root=tmp_path)
    assert str(raised.value) == f"{path}: {expected}"


def test_group_writable_policy_rejected(tmp_path: Path, keys: dict[str, PublicKey]) -> None:
    path = write_policy(tmp_path, "format_version = 1\n" + release_key(keys))
    os.chmod(path, 0o664)

    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert str(raised.value) == (
        f"{path}: policy file is writable by group or others (mode 0664); fix: chmod go-w {path}"
    )


def test_world_writable_key_file_rejected(tmp_path: Path, keys: dict[str, PublicKey]) -> None:
    key_file = tmp_path / "keys" / "ops.pub"
    os.chmod(key_file, 0o666)
    path = write_policy(
        tmp_path, 'format_version = 1\n[[keys]]\nname = "ops"\nfile = "keys/ops.pub"\n'
    )

    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert str(raised.value) == (
        f"{path}: keys[0].file: {key_file}: key file is writable by group or others (mode 0666); "
        f"fix: chmod go-w {key_file}"
    )


def test_missing_policy_rejected(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as raised:
        load_policy(tmp_path / "absent.toml")
    assert str(raised.value) == (
        f"policy file {tmp_path / 'absent.toml'} not found; fix: write one as described in "
        "docs/policy.md, or give its path with --policy"
    )


def test_non_utf8_policy_rejected(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes("format_version = 1\n".encode("utf-16"))

    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert str(raised.value) == f"{path}: policy file is not UTF-8 (invalid byte at offset 0)"


def test_documented_example_loads(tmp_path: Path) -> None:
    document = (Path(__file__).parents[2] / "docs" / "policy.md").read_text()
    example = document.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "keys").mkdir()
    generate_keypair("ssh", tmp_path / "keys" / "security-team", comment="")
    path = write_policy(tmp_path, example)

    policy = load_policy(path)
    assert [trusted.name for trusted in policy.keys] == ["release", "security-team", "ops"]
    assert policy.threshold == 2
    assert len(policy.revoked) == 2


def test_short_minisign_revoked_id_padded(tmp_path: Path, keys: dict[str, PublicKey]) -> None:
    path = write_policy(
        tmp_path, 'format_version = 1\nrevoked = ["d3cd35ff6fffbb"]\n' + release_key(keys)
    )

    assert load_policy(path).revoked == {"00D3CD35FF6FFFBB"}
