"""Attacks on `mosquitto-guard run` by someone who can write some files but is not root.

Each test starts the real broker through `run` and gives it code that should never load: a
plugin or library compiled from `tests/plugins/` whose ELF constructor leaves a mark, and
each test asserts that the broker never ran it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_ssh_private_key,
)
from support import (
    Guard,
    c_string,
    launch,
    make_mark,
    marked_build,
    process_marker,
)


@pytest.fixture(autouse=True)
def verification_only(request: pytest.FixtureRequest) -> None:
    """Launch without the sandbox, so that a missing mark proves the code never ran."""
    if "guard" in request.fixturenames:
        request.getfixturevalue("guard").sandbox = False


def attacker_dir(safe_dir: Path, name: str) -> Path:
    """Create a world-writable directory, which the attacker controls."""
    directory = safe_dir / name
    directory.mkdir()
    os.chmod(directory, 0o777)
    return directory


# The launcher's own environment.


def test_pythonpath_sitecustomize_is_rejected(guard: Guard, safe_dir: Path) -> None:
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    mark = make_mark(marks, "preload")
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    drop = attacker_dir(safe_dir, "drop")
    evil = process_marker(drop / "evil.so", mark)
    (drop / "sitecustomize.py").write_text(
        "import os\n"
        "_execve = os.execve\n"
        "def execve(path, argv, env):\n"
        "    env = dict(env)\n"
        f"    env['LD_PRELOAD'] = {str(evil)!r}\n"
        "    return _execve(path, argv, env)\n"
        "os.execve = execve\n"
    )
    inherited = os.environ.get("PYTHONPATH")
    search = str(drop) if not inherited else f"{drop}{os.pathsep}{inherited}"
    env = {**os.environ, "PYTHONPATH": search}
    started, pid, stderr = launch(
        guard.run_argv(guard.config(f"plugin {plugin}")), guard.port, env=env
    )
    assert f"{pid} /usr/sbin/mosquitto" not in mark.read_text().splitlines(), stderr
    assert not started


def test_ld_preload_never_reaches_broker(guard: Guard, safe_dir: Path) -> None:
    """A preload in the service environment stops the launch before the broker exists.

    The preloaded library does run inside the launcher: nothing in a process can act before
    its own preloads. The drop-in from `systemd-unit` unsets LD_PRELOAD for that reason.
    """
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    mark = make_mark(marks, "preload")
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    evil = process_marker(attacker_dir(safe_dir, "drop") / "evil.so", mark)
    env = {**os.environ, "LD_PRELOAD": str(evil)}
    started, _, stderr = launch(
        guard.run_argv(guard.config(f"plugin {plugin}")), guard.port, env=env
    )
    assert not started
    assert "LD_PRELOAD is set for mosquitto-guard itself" in stderr
    executables = [line.split(" ", 1)[1] for line in mark.read_text().splitlines()]
    assert "/usr/sbin/mosquitto" not in executables


def test_loader_variables_removed_for_broker(guard: Guard, safe_dir: Path) -> None:
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    mark = make_mark(marks, "preload")
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    drop = attacker_dir(safe_dir, "drop")
    evil = process_marker(drop / "evil.so", mark)
    # The launcher may read these variables itself, so only a mark left by the broker's pid
    # counts. No library the launcher needs is named evil.so.
    env = {
        **os.environ,
        "GCONV_PATH": str(drop),
        "OPENSSL_CONF": str(drop / "openssl.cnf"),
        "OPENSSL_MODULES": str(drop),
    }
    (drop / "openssl.cnf").write_text(
        "openssl_conf = init\n[init]\nproviders = prov\n[prov]\nevil = evil_section\n"
        f"[evil_section]\nmodule = {evil}\nactivate = 1\n"
    )
    started, pid, stderr = launch(
        guard.run_argv(guard.config(f"plugin {plugin}")), guard.port, env=env
    )
    assert started, stderr
    assert f"{pid} /usr/sbin/mosquitto" not in mark.read_text().splitlines()


# Plugin paths.


def test_dotdot_after_symlink_is_rejected(guard: Guard, safe_dir: Path) -> None:
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    mark = make_mark(marks, "outside")
    # The config names a path that, read as text, is the installed plugin good.so.
    installed = guard.build("good.so")
    guard.sign(installed, "good", 1, "alice")
    # A build signed by a trusted key but kept out of plugin_dirs, copied by the attacker into
    # a world-writable directory under the installed plugin's name.
    outside = marked_build(guard, "kept-out.so", mark)
    guard.sign(outside, "kept-out", 1, "alice")
    attack = attacker_dir(safe_dir, "attack")
    (attack / "a" / "b").mkdir(parents=True)
    target = attack / guard.plugins.relative_to(safe_dir)
    target.mkdir(parents=True)
    shutil.move(outside, target / installed.name)
    (attack / "link").symlink_to(attack / "a" / "b")
    # As text, attack/link/../.. is safe_dir; the kernel resolves link first, so it is attack.
    written = attack / "link" / ".." / ".." / guard.plugins.relative_to(safe_dir) / installed.name
    started, _, stderr = launch(guard.run_argv(guard.config(f"plugin {written}")), guard.port)
    assert mark.read_text() == ""
    assert not started, stderr


def test_symlinked_plugin_is_rejected(guard: Guard, safe_dir: Path) -> None:
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    mark = make_mark(marks, "evil")
    evil = marked_build(guard, "evil.so", mark, "evil\n")
    attack = attacker_dir(safe_dir, "attack")
    shutil.move(evil, attack / "evil.so")
    (attack / "link.so").symlink_to(attack / "evil.so")
    started, _, stderr = launch(
        guard.run_argv(guard.config(f"plugin {attack}/link.so")), guard.port
    )
    assert not started
    assert "rejected" in stderr
    assert mark.read_text() == ""


@pytest.mark.parametrize(
    "name",
    [".hidden.conf", "link.conf", "Z.conf", "\u00e9.conf"],
)
def test_include_dir_unsigned_plugin_rejected(guard: Guard, safe_dir: Path, name: str) -> None:
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    mark = make_mark(marks, "evil")
    evil = marked_build(guard, "evil.so", mark, "evil\n")
    include = attacker_dir(safe_dir, "conf.d")
    if name == "link.conf":
        elsewhere = attacker_dir(safe_dir, "elsewhere") / "plugin.txt"
        elsewhere.write_text(f"auth_plugin {evil} \t\n")
        (include / name).symlink_to(elsewhere)
    else:
        (include / name).write_text(f"auth_plugin {evil}\n")
    started, _, stderr = launch(guard.run_argv(guard.config(f"include_dir {include}")), guard.port)
    assert not started
    assert str(evil) in stderr
    assert mark.read_text() == ""


def test_unsigned_tls_engine_is_rejected(guard: Guard, safe_dir: Path) -> None:
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    mark = make_mark(marks, "evil")
    evil = marked_build(guard, "evil.so", mark, "evil\n")
    # An engine id with a slash but no ".so" is joined to ENGINESDIR without an extension.
    bare = evil.with_suffix("")
    shutil.copyfile(evil, bare)
    for value in (str(evil), "../../../../../.." + str(bare)):
        started, _, stderr = launch(guard.run_argv(guard.config(f"tls_engine {value}")), guard.port)
        assert not started, value
        assert "rejected" in stderr
    assert mark.read_text() == ""


def test_second_config_file_is_rejected(guard: Guard, safe_dir: Path) -> None:
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    mark = make_mark(marks, "evil")
    evil = marked_build(guard, "evil.so", mark, "evil\n")
    second = attacker_dir(safe_dir, "drop") / "more.conf"
    second.write_text(f"plugin {evil}\n")
    argv = guard.run_argv(guard.config(), broker_args=["--config-file", str(second)])
    started, _, stderr = launch(argv, guard.port)
    assert not started
    assert "config files" in stderr
    assert mark.read_text() == ""


# Manifests, keys and rollback state.


def _minisign_line_for_ssh_key(private_key: Path, key_id: bytes) -> tuple[str, object]:
    """Return a minisign public key line for the Ed25519 key in an SSH key file, and the key."""
    key = load_ssh_private_key(private_key.read_bytes(), None)
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(b"Ed" + key_id + raw).decode("ascii"), key


def _minisign_signature(key: object, key_id: bytes, message: bytes, file_name: str) -> bytes:
    """Return a prehashed minisign signature over `message`, made with an SSH Ed25519 key."""
    sign = key.sign  # type: ignore[attr-defined]
    signature = sign(hashlib.blake2b(message, digest_size=64).digest())
    trusted = f"namespace:mosquitto-guard-manifest\tfile:{file_name}"
    global_signature = sign(signature + trusted.encode())
    lines = [
        "untrusted comment: second signer",
        base64.b64encode(b"ED" + key_id + signature).decode("ascii"),
        f"trusted comment: {trusted}",
        base64.b64encode(global_signature).decode("ascii"),
    ]
    return ("\n".join(lines) + "\n").encode()


def test_threshold_one_key_two_forms(guard: Guard, safe_dir: Path) -> None:
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    mark = make_mark(marks, "solo")
    plugin = marked_build(guard, "solo.so", mark)
    guard.keygen("bob")
    guard.write_policy(["alice", "bob"], threshold=2)
    # The holder of alice's key hands in its minisign form as the key of a second signer.
    key_id = bytes.fromhex("0123456789abcdef")
    line, private = _minisign_line_for_ssh_key(guard.keys["alice"], key_id)
    (guard.keys["bob"].parent / "bob.pub").write_text(f"untrusted comment: bob\n{line}\n")
    guard.sign(plugin, "solo", 1, "alice")
    manifest = guard.manifests / "solo.toml"
    (guard.manifests / "solo.toml.bob.minisig").write_bytes(
        _minisign_signature(private, key_id, manifest.read_bytes(), manifest.name)
    )
    started, _, stderr = launch(guard.run_argv(guard.config(f"plugin {plugin}")), guard.port)
    assert mark.read_text() == ""
    assert not started, stderr


def test_threshold_one_key_two_labels(guard: Guard, safe_dir: Path) -> None:
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    mark = make_mark(marks, "solo")
    plugin = marked_build(guard, "solo.so", mark)
    guard.keygen("bob")
    guard.write_policy(["alice", "bob"], threshold=2)
    guard.sign(plugin, "solo", 1, "alice")
    manifest = guard.manifests / "solo.toml"
    shutil.copyfile(manifest.with_name("solo.toml.sig"), manifest.with_name("solo.toml.two.sig"))
    started, _, stderr = launch(guard.run_argv(guard.config(f"plugin {plugin}")), guard.port)
    assert not started
    assert "requires 2" in stderr
    assert mark.read_text() == ""


def test_rollback_through_writable_state_dir(guard: Guard, safe_dir: Path) -> None:
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    old_mark, new_mark = make_mark(marks, "old"), make_mark(marks, "new")
    old = marked_build(guard, "auth-1.so", old_mark)
    new = marked_build(guard, "auth-2.so", new_mark, "new\n")
    guard.sign(old, "auth", 1, "alice")
    saved = {path.name: path.read_bytes() for path in guard.manifests.glob("auth.toml*")}
    guard.sign(new, "auth", 2, "alice")
    state = guard.root / "state"
    started, _, stderr = launch(guard.run_argv(guard.config(f"plugin {new}")), guard.port)
    assert started, stderr
    for directory in (state, guard.manifests):
        os.chmod(directory, 0o777)
    # The attacker deletes the record of version 2, restores the manifest of version 1 from
    # a saved copy, then names version 1 in the config.
    for entry in state.iterdir():
        entry.unlink()
    for name, data in saved.items():
        (guard.manifests / name.replace("auth.toml", "auth-old.toml")).write_bytes(data)
    started, _, stderr = launch(guard.run_argv(guard.config(f"plugin {old}")), guard.port)
    assert old_mark.read_text() == ""
    assert not started, stderr
    assert f"state_dir {state}: directory is writable by group and others (mode 0777)" in stderr


def test_rollback_with_intact_state_is_rejected(guard: Guard, safe_dir: Path) -> None:
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    old_mark = make_mark(marks, "old")
    old = marked_build(guard, "auth-1.so", old_mark)
    new = guard.build("auth-2.so", {"MARKER_TEXT": c_string("new\n")})
    guard.sign(old, "auth", 1, "alice")
    for path in list(guard.manifests.glob("auth.toml*")):
        path.rename(path.with_name(path.name.replace("auth.toml", "auth-old.toml")))
    guard.sign(new, "auth", 2, "alice")
    started, _, stderr = launch(guard.run_argv(guard.config(f"plugin {new}")), guard.port)
    assert started, stderr
    started, _, stderr = launch(guard.run_argv(guard.config(f"plugin {old}")), guard.port)
    assert not started
    assert "rollback" in stderr
    assert old_mark.read_text() == ""


# /etc/ld.so.preload, replaced only inside a private mount namespace.


def _namespace_command(upper: Path, work: Path, preload: str, command: list[str]) -> list[str]:
    script = (
        'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc || exit 97\n'
        'printf "%s" "$3" > /etc/ld.so.preload\n'
        "shift 3\n"
        'exec "$@"\n'
    )
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        str(upper),
        str(work),
        preload,
        *command,
    ]


def _overlay_dirs(safe_dir: Path) -> tuple[Path, Path]:
    upper, work = safe_dir / "etc-upper", safe_dir / "etc-work"
    upper.mkdir()
    work.mkdir()
    probe = subprocess.run(
        _namespace_command(upper, work, "", ["true"]), capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace with overlayfs here: {probe.stderr!r}")
    for directory in (upper, work):
        shutil.rmtree(directory)
        directory.mkdir()
    return upper, work


def test_preload_hidden_as_comment_is_rejected(guard: Guard, safe_dir: Path) -> None:
    upper, work = _overlay_dirs(safe_dir)
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    mark = make_mark(marks, "preload")
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    hidden = safe_dir / "#"
    hidden.mkdir(mode=0o755)
    process_marker(hidden / "evil.so", mark)
    # After a long first comment the loader searches for '#' in too short a window, so the
    # second line stays the relative path "#/evil.so", resolved against the working directory.
    preload = "#" + "x" * 100 + "\n#/evil.so\n"
    argv = _namespace_command(
        upper, work, preload, guard.run_argv(guard.config(f"plugin {plugin}"))
    )
    started, pid, stderr = launch(argv, guard.port, cwd=safe_dir)
    # `run` also starts `mosquitto -h` to learn the version; the broker keeps the launcher's pid.
    assert f"{pid} /usr/sbin/mosquitto" not in mark.read_text().splitlines(), stderr
    assert not started


def test_preload_entry_is_rejected(guard: Guard, safe_dir: Path) -> None:
    upper, work = _overlay_dirs(safe_dir)
    marks = safe_dir / "marks"
    marks.mkdir(mode=0o755)
    mark = make_mark(marks, "preload")
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    evil = process_marker(safe_dir / "evil.so", mark)
    argv = _namespace_command(
        upper, work, f"{evil}\n", guard.run_argv(guard.config(f"plugin {plugin}"))
    )
    started, pid, stderr = launch(argv, guard.port, cwd=safe_dir)
    assert not started
    assert "ld.so.preload" in stderr
    assert f"{pid} /usr/sbin/mosquitto" not in mark.read_text().splitlines()
