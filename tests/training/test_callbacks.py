"""Sampled validation draws a case's members as ``predict`` draws them: the same members, seed for seed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tinydata import make_lidc_like

from diffuseg.data.dataset import build_datasets
from diffuseg.inference.predict import predict
from diffuseg.methods import load_for_inference
from diffuseg.training.callbacks import SampledValidation
from diffuseg.training.module import module_class

CHECKPOINT = Path(__file__).resolve().parent / "before-classes" / "binary-d312457.ckpt"


def test_validation_members_are_the_members_predict_writes(tmp_path):
    """The validation cases' 3 members, drawn 2 cases per call, are the first 3 of the 5 members ``predict``
    writes for those cases (16 member rows per call): the members depend on (seed, case, member) only."""
    data = make_lidc_like(tmp_path / "data", patients=5, slices=2)
    config, net, _ = load_for_inference(CHECKPOINT)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(data)))
    _, val = build_datasets(config.data)
    module = module_class(config.method)(config)
    module.ema.load_state_dict(net.state_dict())
    validation = SampledValidation(val, every=1, cases=len(val), members=3, batch_size=2)
    drawn = {it["case_id"]: m for items, members in validation.draw(module) for it, m in zip(items, members)}
    assert len(drawn) == len(val) >= 2

    out = tmp_path / "pred"
    predict(CHECKPOINT, data, out, ["sample.samples=5"], save_samples=True, show_progress=False, cases=set(drawn))
    for case_id, members in drawn.items():
        written = sorted((out / "samples").glob(f"{case_id}_s*.png"))
        assert len(written) == 5
        first = np.stack([np.asarray(Image.open(p)) > 127 for p in written[:3]])
        assert members.shape == (3, 16, 16) and members.any()
        assert torch.equal(members.bool(), torch.from_numpy(first))
