"""Expected changes: a newly signed plugin and a package upgrade raise no alert; the rest do."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from baseline_setup import Setup
from debian_package import build_deb, install, package_name
from support import c_string


def build_plugin(setup: Setup, text: str) -> Path:
    mark = setup.root / "mark"
    return setup.guard.build(
        "auth.so", {"MARKER_FILE": c_string(str(mark)), "MARKER_TEXT": c_string(text)}
    )


@pytest.fixture
def plugin_setup(setup: Setup) -> Setup:
    plugin = build_plugin(setup, "one\n")
    setup.guard.sign(plugin, "auth", 1, "alice")
    with setup.config.open("a") as handle:
        handle.write(f"plugin {plugin}\n")
    return setup


def sign_after_baseline() -> None:
    """Wait for the next whole second: manifests record signed_at in whole seconds, and a
    manifest explains a change only when it was signed after the baseline was written."""
    time.sleep(1.01 - time.time() % 1)


def test_plugin_with_newly_signed_manifest_is_expected(
    plugin_setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = plugin_setup
    assert setup.write_baseline() == 0
    sign_after_baseline()
    plugin = build_plugin(setup, "two\n")
    setup.guard.sign(plugin, "auth", 2, "alice")
    code, document = setup.check(capsys)
    assert code == 0, document
    [expected] = document["expected"]
    assert expected["path"] == str(plugin)
    assert "auth version 2" in expected["explanation"]
    assert "alice" in expected["explanation"]
    assert "sha256" in expected["changes"]


def test_unsigned_plugin_replacement_is_an_alert(
    plugin_setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = plugin_setup
    assert setup.write_baseline() == 0
    plugin = build_plugin(setup, "evil\n")
    code, document = setup.check(capsys)
    assert code == 4
    assert [item["path"] for item in document["changed"]] == [str(plugin)]
    assert document["expected"] == []


def test_older_signed_plugin_is_alert(
    plugin_setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = plugin_setup
    old = build_plugin(setup, "one\n").read_bytes()
    plugin = build_plugin(setup, "two\n")
    setup.guard.sign(plugin, "auth", 2, "alice")
    assert setup.write_baseline() == 0
    plugin.write_bytes(old)  # version 1: signed, but older than the baseline's version 2
    code, document = setup.check(capsys)
    assert code == 4, document
    assert document["changed"][0]["path"] == str(plugin)


def test_signed_plugin_with_new_mode_is_an_alert(
    plugin_setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = plugin_setup
    assert setup.write_baseline() == 0
    sign_after_baseline()
    plugin = build_plugin(setup, "two\n")
    setup.guard.sign(plugin, "auth", 2, "alice")
    os.chmod(plugin, 0o777)
    code, document = setup.check(capsys)
    assert code == 4
    assert document["changed"][0]["changes"]["mode"]["new"] == "0777"


@pytest.fixture
def package() -> Iterator[tuple[str, Path]]:
    with package_name("mosquitto-guard-test") as name:
        yield name, Path("/opt") / name / "lib" / "helper.so"


def test_package_upgrade_explained_by_dpkg_is_expected(
    setup: Setup, package: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, target = package
    install(build_deb(tmp_path, name, {target: b"version one\n"}))
    with setup.guard.policy.open("a") as handle:
        handle.write(f'\n[integrity]\npaths = ["{target}"]\n')
    assert setup.write_baseline() == 0
    install(build_deb(tmp_path, name, {target: b"version two, longer\n"}, version="2.0"))
    code, document = setup.check(capsys)
    assert code == 0, document
    [expected] = document["expected"]
    assert expected["path"] == str(target)
    assert f"package {name}" in expected["explanation"]

    # The same file edited by hand after the upgrade: dpkg's checksum no longer explains it.
    target.write_bytes(b"version two, patched by hand\n")
    code, document = setup.check(capsys)
    assert code == 4
    assert [item["path"] for item in document["changed"]] == [str(target)]
