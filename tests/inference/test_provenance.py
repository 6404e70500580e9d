"""``OUTPUT/prediction.json``: predict records the checkpoint, its step and the network it ran."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffuseg.inference.predict import predict
from diffuseg.inference.provenance import PROVENANCE_NAME, read_provenance
from diffuseg.presets import load_config

TINY = [
    "data.image_size=16",
    "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}",
    "sample.steps=1",
    "sample.samples=1",
    "train.out_dir=runs/tiny",
]


@pytest.mark.usefixtures("one_thread")
def test_predict_records_checkpoint_step_and_network(tmp_path: Path) -> None:
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.training.module import DiffusionModule

    config = load_config("lidc-central", TINY)
    torch.manual_seed(0)
    module = DiffusionModule(config)
    ckpt = tmp_path / "run" / "last.ckpt"
    save_atomic({"state_dict": module.state_dict(), "diffuseg": metadata(config, 7, 0)}, ckpt)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "a.png")
    predict(ckpt, [tmp_path / "a.png"], tmp_path / "out")
    record = json.loads((tmp_path / "out" / PROVENANCE_NAME).read_text())
    assert record["checkpoint"] == str(ckpt.resolve()) and record["step"] == 7
    assert record["network"] == config.model.name and record["run_folder"] == "runs/tiny"
    assert record["parameters"] == sum(p.numel() for p in module.ema.parameters())
    assert read_provenance(tmp_path / "out") == record
    assert read_provenance(tmp_path) == {}  # a folder without one
