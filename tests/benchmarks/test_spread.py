"""The spread diagnostic (``benchmarks/quality/spread.py``) follows the sampler without changing it: one estimate
per network call, the last one the drawn masks, and the anchored trunk's |mu|."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "quality"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
import spread as S
from tinydata import make_lidc_like, tiny_overrides

from diffuseg.diffusion.process import masks_to_x0
from diffuseg.methods import class_probabilities, load_for_inference, make_draw
from diffuseg.presets import load_config
from diffuseg.training.run import train

TINY_ANCHORED = [  # the trunk a tiny UNet (no time embedding), a tiny head
    "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1}",
    "anchored.head_channels=[8, 16]",
    "anchored.head_time_dim=16",
]


@pytest.mark.parametrize("preset", ["lidc-central", "anchored-lidc"])
def test_the_trace_is_the_draw(preset, tmp_path, one_thread):
    data = make_lidc_like(tmp_path / "data")
    extra = TINY_ANCHORED if preset.startswith("anchored") else []
    run = train(load_config(preset, [*tiny_overrides(data, tmp_path / "run", 2, 2), "sample.steps=3", *extra]))
    ckpt = run / "checkpoints" / "last.ckpt"
    image = torch.randn(1, 1, 16, 16)

    estimates, mu = S.traced_draw(ckpt)(image)

    config, net, process = load_for_inference(ckpt)
    net.eval()
    generators = [torch.Generator().manual_seed(k) for k in range(S.MEMBERS)]
    with torch.no_grad():
        drawn = make_draw(config, net, process)(image, S.MEMBERS, generators)
    assert len(estimates) == 3 and all(e.shape == (S.MEMBERS, 16, 16) for e in estimates)
    assert torch.equal((estimates[-1] > 0).float(), drawn.mask[:, 0])  # the last call gives the members' masks
    if preset.startswith("anchored"):
        with torch.no_grad():
            want = masks_to_x0(class_probabilities(net(image), config.data.scheme))[0, 0].abs()
        torch.testing.assert_close(mu, want)
    else:
        assert mu is None
