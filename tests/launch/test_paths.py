"""Ownership checks on the paths of loaded code and of the trust anchors."""

from __future__ import annotations

import os
from pathlib import Path

from mosquitto_guard.launch.paths import check_directory, check_path, is_inside
from mosquitto_guard.launch.runner import _preload_problems


def test_check_path_accepts_root_owned_file(safe_dir: Path) -> None:
    plugin = safe_dir / "p.so"
    plugin.write_bytes(b"x")
    assert check_path(plugin, allow_symlinks=False) == []


def test_check_path_rejects_dotdot_for_plugins(safe_dir: Path) -> None:
    (safe_dir / "a").mkdir(mode=0o755)
    plugin = safe_dir / "p.so"
    plugin.write_bytes(b"x")
    [problem] = check_path(safe_dir / "a" / ".." / "p.so", allow_symlinks=False)
    assert problem.reason == "contains '..'"
    assert problem.fix == f"name the real path {plugin} instead"


def test_check_path_follows_dotdot_after_symlink(safe_dir: Path) -> None:
    writable = safe_dir / "writable"
    writable.mkdir()
    os.chmod(writable, 0o777)
    (writable / "inner").mkdir(mode=0o755)
    (writable / "lib.so").write_bytes(b"x")
    link = safe_dir / "link"
    link.symlink_to(writable / "inner")
    # As text this is safe_dir/lib.so; the kernel resolves it to writable/lib.so.
    problems = check_path(link / ".." / "lib.so", allow_symlinks=True)
    assert [problem.component for problem in problems] == [writable]


def test_check_directory_rejects_writable_state_dir(safe_dir: Path) -> None:
    state = safe_dir / "state"
    state.mkdir()
    os.chmod(state, 0o775)
    [problem] = check_directory(state)
    assert problem.component == state
    assert problem.reason == "directory is writable by group (mode 0775)"


def test_check_directory_judges_missing_dir_by_parent(safe_dir: Path) -> None:
    assert check_directory(safe_dir / "not-yet" / "state") == []
    os.chmod(safe_dir, 0o777)
    [problem] = check_directory(safe_dir / "not-yet")
    assert problem.component == safe_dir


def test_is_inside_compares_components() -> None:
    assert is_inside(Path("/usr/lib/x/p.so"), [Path("/usr/lib/x")])
    assert not is_inside(Path("/usr/lib/xy/p.so"), [Path("/usr/lib/x")])


def test_preload_file_with_only_comments_is_rejected(tmp_path: Path) -> None:
    preload = tmp_path / "ld.so.preload"
    assert _preload_problems(preload) == []
    preload.write_text("  \n\n")
    assert _preload_problems(preload) == []
    preload.write_text("#" + "x" * 100 + "\n#/evil.so\n")
    [problem] = _preload_problems(preload)
    assert problem.startswith(f"{preload}: is not empty")
