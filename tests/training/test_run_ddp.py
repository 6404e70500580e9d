"""DDP with no code change: two CPU processes (gloo) train, checkpoint once, and resume."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tinydata import tiny_overrides

from diffuseg.checkpoint import read_checkpoint


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    overrides = tiny_overrides(tiny_data, out, steps=4, ckpt_every=2)
    cmd = [sys.executable, "-m", "diffuseg.cli", "train", "lidc-central", *overrides, "train.batch_size=2"]
    cmd += ["train.accelerator=cpu", "train.val_every=2", "train.val_cases=2", "--devices", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=300)
    ckpt = read_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4
    assert ckpt["diffuseg"]["sampler_position"] == 4 * 2 * 2  # steps x batch per rank x ranks

    resumed = [*cmd[:5], *[o.replace("train.steps=4", "train.steps=6") for o in cmd[5:]], "--resume"]
    subprocess.run(resumed, check=True, capture_output=True, env=env, timeout=300)
    ckpt = read_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 6 and ckpt["diffuseg"]["sampler_position"] == 6 * 2 * 2
