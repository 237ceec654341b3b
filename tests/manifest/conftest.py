"""The `workspace` fixture of the manifest tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from manifest_workspace import Workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)
