"""The distinct columns of votes that both STAPLE variants iterate over."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from raterdata import binary_raters

from diffuseg.inference.fusion.raters import rater_patterns


@pytest.mark.parametrize("r", [1, 7, 30, 31, 64])
def test_rater_patterns_reconstruct_the_votes(r: int) -> None:
    votes = torch.from_numpy(binary_raters(np.random.default_rng(r), r, 24, 0.05)).reshape(r, -1) > 0
    patterns, counts, inverse = rater_patterns(votes)
    assert torch.equal(patterns[:, inverse], votes)
    assert counts.sum().item() == votes.shape[1]
    assert torch.unique(patterns, dim=1).shape[1] == patterns.shape[1]  # distinct
