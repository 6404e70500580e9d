"""Fixtures for training tests: a tiny 4-annotator dataset and a tiny diffusion config (16 px, 8 channels)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tinydata import make_lidc_like

from diffuseg.config import Config, load_config

TINY_NET = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}"


def tiny_overrides(data: Path, out: Path, steps: int = 6, ckpt_every: int = 3) -> list[str]:
    return [
        f"data.root={data}",
        f"train.out_dir={out}",
        "data.image_size=16",
        "data.augment=true",
        TINY_NET,
        f"train.steps={steps}",
        f"train.ckpt_every={ckpt_every}",
        "train.val_every=0",
        "train.log_every=1",
        "train.warmup_steps=2",
        "train.decay_steps=2",
        "train.batch_size=4",
        "sample.steps=2",
    ]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: CPU reductions split across threads can round differently from run to run on a
    loaded machine, and these tests compare runs bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
