"""More attacks on `mosquitto-guard run`: the OpenSSL config the broker reads, and manifests.

Each test starts the real broker through `run`. Code that must never load is compiled from
`tests/plugins/` with a constructor that leaves a mark. `process_marker.c` writes the pid and
the executable of the process that mapped it. A mark by `/usr/sbin/mosquitto` shows that a
broker process ran the code. The launched broker keeps the launcher's pid, so the pid
distinguishes it from any other broker process.

The OpenSSL tests replace `/etc/ssl/openssl.cnf` only inside a private mount namespace, with
a bind mount. The broker reads that file through `/usr/lib/ssl/openssl.cnf` as root, before
it reads its own config.

Each test asserts the safe outcome: no mark by a broker process, and no broker started where
the launch must be rejected.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
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


BROKER = "/usr/sbin/mosquitto"
OPENSSL_CONFIG = Path("/etc/ssl/openssl.cnf")


def broker_marks(mark: Path) -> list[int]:
    """Return the pids of the broker processes that mapped the marked library."""
    pids = []
    for line in mark.read_text().splitlines():
        pid, _, executable = line.partition(" ")
        if executable == BROKER:
            pids.append(int(pid))
    return pids


# The OpenSSL config, replaced inside a private mount namespace.


def with_openssl_config(config: Path, command: list[str]) -> list[str]:
    """Return `command` run in a mount namespace where `config` is the system OpenSSL config."""
    script = 'mount --bind "$1" "$2" || exit 97\nshift 2\nexec "$@"\n'
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        str(config),
        str(OPENSSL_CONFIG),
        *command,
    ]


def openssl_config_with_provider(module: Path) -> bytes:
    return (
        "openssl_conf = init\n"
        "[init]\n"
        "providers = provider_section\n"
        "[provider_section]\n"
        "default = default_section\n"
        "extra = extra_section\n"
        "[default_section]\n"
        "activate = 1\n"
        "[extra_section]\n"
        f"module = {module}\n"
        "activate = 1\n"
    ).encode()


def write_openssl_config(safe_dir: Path, content: bytes) -> Path:
    config = safe_dir / "openssl.cnf"
    config.write_bytes(content)
    probe = subprocess.run(with_openssl_config(config, ["true"]), capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace with bind mounts here: {probe.stderr!r}")
    return config


def test_unsigned_openssl_provider_is_rejected(guard: Guard, safe_dir: Path) -> None:
    mark = make_mark(safe_dir / "marks", "provider")
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    module = process_marker(guard.plugins / "extra.so", mark)
    config = write_openssl_config(safe_dir, openssl_config_with_provider(module))
    argv = with_openssl_config(config, guard.run_argv(guard.config(f"plugin {plugin}")))
    started, pid, stderr = launch(argv, guard.port)
    assert not started
    assert str(module) in stderr
    assert pid not in broker_marks(mark)


def test_version_probe_skips_openssl_modules(guard: Guard, safe_dir: Path) -> None:
    mark = make_mark(safe_dir / "marks", "provider")
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    module = process_marker(guard.plugins / "extra.so", mark)
    config = write_openssl_config(safe_dir, openssl_config_with_provider(module))
    argv = with_openssl_config(config, guard.run_argv(guard.config(f"plugin {plugin}")))
    started, _, stderr = launch(argv, guard.port)
    assert not started, stderr
    # The launch is rejected, but no broker process may have run the module on the way.
    assert broker_marks(mark) == []


def test_openssl_nul_line_is_rejected(guard: Guard, safe_dir: Path) -> None:
    mark = make_mark(safe_dir / "marks", "provider")
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    module = process_marker(guard.plugins / "extra.so", mark)
    content = openssl_config_with_provider(module) + b"\0\nthis line has no equal sign\n"
    config = write_openssl_config(safe_dir, content)
    argv = with_openssl_config(config, guard.run_argv(guard.config(f"plugin {plugin}")))
    started, pid, stderr = launch(argv, guard.port)
    assert pid not in broker_marks(mark), stderr
    assert not started


def test_openssl_nul_in_line_is_rejected(guard: Guard, safe_dir: Path) -> None:
    mark = make_mark(safe_dir / "marks", "provider")
    plugin = guard.build("good.so")
    guard.sign(plugin, "good", 1, "alice")
    module = process_marker(guard.plugins / "extra.so", mark)
    # OpenSSL reads "openssl_conf = init". The inventory reads "openssl_conf = in" and then
    # the line "it", which has no '=', so it decides that OpenSSL rejects the whole file.
    content = openssl_config_with_provider(module).replace(
        b"openssl_conf = init\n", b"openssl_conf = in\0ignored\nit\n"
    )
    config = write_openssl_config(safe_dir, content)
    argv = with_openssl_config(config, guard.run_argv(guard.config(f"plugin {plugin}")))
    started, pid, stderr = launch(argv, guard.port)
    assert pid not in broker_marks(mark), stderr
    assert not started


# Manifests and rollback state.


def test_changed_build_is_rejected(guard: Guard, safe_dir: Path) -> None:
    """A changed build beside a signed one has no manifest for its digest."""
    mark = make_mark(safe_dir / "marks", "changed")
    signed = guard.build("auth.so")
    guard.sign(signed, "auth", 1, "alice")
    changed = marked_build(guard, "auth-changed.so", mark)
    started, _, stderr = launch(guard.run_argv(guard.config(f"plugin {changed}")), guard.port)
    assert not started
    assert "no manifest" in stderr
    assert mark.read_text() == ""


def test_rollback_under_second_name_rejected(guard: Guard, safe_dir: Path) -> None:
    mark = make_mark(safe_dir / "marks", "old")
    old = marked_build(guard, "auth-1.so", mark, "old\n")
    new = guard.build("auth-2.so", {"MARKER_TEXT": c_string("new\n")})
    # The old build was once signed under two names, for example a package rename.
    guard.sign(old, "auth", 1, "alice")
    guard.sign(old, "auth-compat", 1, "alice")
    for path in list(guard.manifests.glob("auth.toml*")):
        path.rename(path.with_name(path.name.replace("auth.toml", "auth-old.toml")))
    guard.sign(new, "auth", 2, "alice")
    started, _, stderr = launch(guard.run_argv(guard.config(f"plugin {new}")), guard.port)
    assert started, stderr
    # Version 2 of auth is now recorded. The old build must stay rejected.
    started, _, stderr = launch(guard.run_argv(guard.config(f"plugin {old}")), guard.port)
    assert mark.read_text() == ""
    assert not started, stderr


def test_old_and_new_build_rejected(guard: Guard, safe_dir: Path) -> None:
    mark = make_mark(safe_dir / "marks", "old")
    old = marked_build(guard, "auth-1.so", mark, "old\n")
    new = guard.build("auth-2.so", {"MARKER_TEXT": c_string("new\n")})
    guard.sign(old, "auth", 1, "alice")
    for path in list(guard.manifests.glob("auth.toml*")):
        path.rename(path.with_name(path.name.replace("auth.toml", "auth-old.toml")))
    guard.sign(new, "auth", 2, "alice")
    # Old first: recording version 1 and then version 2 raises nothing. In the other order,
    # recording version 1 after version 2 fails and the launch stops.
    config = guard.config(f"plugin {old}", f"plugin {new}")
    started, _, stderr = launch(guard.run_argv(config), guard.port)
    assert mark.read_text() == ""
    assert not started, stderr


def test_second_listener_option_checked(guard: Guard, safe_dir: Path) -> None:
    """One file on two listeners: the options of each line are checked against the manifest."""
    mark = make_mark(safe_dir / "marks", "plugin")
    plugin = marked_build(guard, "auth.so", mark)
    guard.sign(plugin, "auth", 1, "alice", "--option", "known")
    other = guard.port + 1 if guard.port < 65535 else guard.port - 1
    config = guard.root / "listeners.conf"
    config.write_text(
        "per_listener_settings true\n"
        f"listener {guard.port} 127.0.0.1\n"
        "allow_anonymous true\n"
        f"plugin {plugin}\n"
        "plugin_opt_known 1\n"
        f"listener {other} 127.0.0.1\n"
        "allow_anonymous true\n"
        f"plugin {plugin}\n"
        "plugin_opt_secret 1\n"
    )
    started, _, stderr = launch(guard.run_argv(config), guard.port)
    assert not started
    assert "plugin_opt_secret" in stderr
    assert mark.read_text() == ""
