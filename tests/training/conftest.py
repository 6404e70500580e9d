"""Fixtures for training tests: a tiny 4-annotator dataset and a tiny diffusion config (16 px, 8 channels)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tinydata import make_lidc_like, tiny_overrides

from diffuseg.config import Config
from diffuseg.presets import load_config


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every training test runs on one thread (see ``tests/conftest.py``)."""


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lidc_like(tmp_path_factory.mktemp("tiny-lidc"))


@pytest.fixture
def tiny_config(tiny_data: Path, tmp_path: Path) -> Callable[..., Config]:
    """``tiny_config(name="run", steps=6, ckpt_every=3, *overrides)`` -> a Config writing to tmp_path/name."""

    def make(*extra: str, name: str = "run", steps: int = 6, ckpt_every: int = 3) -> Config:
        overrides = tiny_overrides(tiny_data, tmp_path / name, steps, ckpt_every) + list(extra)
        return load_config("lidc-central", overrides)

    return make
