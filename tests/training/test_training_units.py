"""Sampled validation draws members as predict does."""

from __future__ import annotations

import pytest
import torch

from diffuseg.presets import load_config


@pytest.mark.parametrize(("micro_batch", "rows_per_pass"), [(0, [2, 2]), (1, [1, 1, 1, 1])])
def test_sampled_validation_splits_members_as_predict_does(monkeypatch, micro_batch: int, rows_per_pass: list):
    """Validation draws with ``sample.micro_batch`` as predict does: 2 images x 1 member, 2 DDPM steps ->
    one per-member pass of 2 rows per network call, or one pass per row with micro_batch=1."""
    from diffuseg.nets.medsegdiff import MedSegDiff
    from diffuseg.training.callbacks import SampledValidation
    from diffuseg.training.module import module_class

    overrides = ["data.image_size=32", "model.options.base_channels=4", "sample.sampler=ddpm", "sample.steps=2"]
    config = load_config("medsegdiff-s-ddti", [*overrides, f"sample.micro_batch={micro_batch}"])
    module = module_class(config.method)(config)
    items = [
        {"case_id": f"c{i}", "image": torch.randn(1, 32, 32), "masks": (torch.rand(1, 32, 32) > 0.5).float()}
        for i in range(2)
    ]
    rows = []
    member_stages = MedSegDiff._member_stages

    def counted(self, x_t, *args):
        rows.append(len(x_t))
        return member_stages(self, x_t, *args)

    monkeypatch.setattr(MedSegDiff, "_member_stages", counted)
    scores = SampledValidation(items, every=1, cases=2).evaluate(module)
    assert rows == rows_per_pass
    assert 0 <= scores["dice"] <= 1
