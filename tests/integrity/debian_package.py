"""Throwaway Debian packages, installed into the host's dpkg database for real and purged."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def build_deb(
    work: Path,
    name: str,
    files: dict[Path, bytes],
    *,
    version: str = "1.0",
    conffiles: tuple[Path, ...] = (),
) -> Path:
    """Build a package `name` that installs `files` (absolute path -> content)."""
    root = work / f"{name}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    for target, content in files.items():
        installed = root / target.relative_to("/")
        installed.parent.mkdir(parents=True, exist_ok=True)
        installed.write_bytes(content)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: mosquitto-guard tests <tests@localhost>\n"
        "Description: integrity test package\n"
    )
    if conffiles:
        (root / "DEBIAN" / "conffiles").write_text("".join(f"{path}\n" for path in conffiles))
    output = work / f"{name}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(output)],
        check=True,
        capture_output=True,
    )
    return output


def install(deb: Path) -> None:
    subprocess.run(["dpkg", "-i", str(deb)], check=True, capture_output=True)


@contextmanager
def package_name(prefix: str) -> Iterator[str]:
    """Yield a fresh package name; purge the package and remove /opt/NAME afterwards."""
    if os.geteuid() != 0 or shutil.which("dpkg-deb") is None:
        pytest.skip("installs a package: needs root and dpkg-deb")
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        subprocess.run(["dpkg", "--purge", name], capture_output=True, check=False)
        shutil.rmtree(Path("/opt") / name, ignore_errors=True)
