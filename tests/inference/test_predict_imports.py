"""``diffuseg predict`` imports only what prediction needs: a whole run in a fresh process leaves no training,
plotting or logging package (Lightning, matplotlib, tensorboard) in ``sys.modules``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffuseg.presets import load_config

TINY = [
    "data.image_size=16",
    "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}",
    "sample.steps=2",
    "sample.samples=2",
]
NOT_FOR_PREDICT = ("lightning", "pytorch_lightning", "lightning_fabric", "matplotlib", "tensorboard", "torchmetrics")
RUN = """
import json, sys
from diffuseg.cli import main
code = main(sys.argv[1:])
print(json.dumps([code, sorted({name.split('.')[0] for name in sys.modules})]))
"""


def test_predict_runs_without_training_or_plotting_packages(tmp_path: Path) -> None:
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.training.module import DiffusionModule

    config = load_config("lidc-central", TINY)
    torch.manual_seed(0)
    ckpt = tmp_path / "last.ckpt"
    save_atomic({"state_dict": DiffusionModule(config).state_dict(), "diffuseg": metadata(config, 0, 0)}, ckpt)
    Image.fromarray(np.full((12, 14), 90, np.uint8)).save(tmp_path / "x.png")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", RUN, "predict", str(ckpt), str(tmp_path / "x.png"), str(out), "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=True)
    code, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert code == 0 and (out / "x.png").is_file()  # the run predicted, so its whole import path was taken
    assert "torch" in loaded and "diffuseg" in loaded  # the list is the run's modules
    assert sorted(set(loaded) & set(NOT_FOR_PREDICT)) == []
