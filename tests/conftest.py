"""Fixtures shared by every test folder."""

from __future__ import annotations

import lightning.pytorch  # noqa: F401  (its log handler binds the stderr of import: the session's, not a test's)
import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: CPU reductions split across threads can round differently from run to run on a
    loaded machine, and tests that compare runs bit for bit (or train in a subprocess beside them) need one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A binary diffusion checkpoint of a tiny UNet at 16 px, untrained (for runs that stop before sampling, or
    whose masks do not matter); shared by the command-line tests of a session."""
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.presets import load_config
    from diffuseg.training.module import DiffusionModule

    unet = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}"
    config = load_config("lidc-central", ["data.image_size=16", unet, "sample.steps=1", "sample.samples=1"])
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    save_atomic({"state_dict": DiffusionModule(config).state_dict(), "diffuseg": metadata(config, 0, 0)}, path)
    return path
