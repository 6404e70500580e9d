"""Fixtures for the data tests (builders live in ``datafixtures``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from datafixtures import CORPUS


@pytest.fixture(params=sorted(CORPUS))
def bad_dataset(request, tmp_path) -> tuple[Path, str, str]:
    """(dataset folder, expected message fragment, file the problem names) for each corpus entry."""
    build, message, names = CORPUS[request.param]
    root = tmp_path / request.param
    root.mkdir()
    build(root)
    return root, message, names
