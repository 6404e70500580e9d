"""``fuse`` dispatches on the number of atoms: the binary algorithms for one, the label-map ones for several."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from raterdata import label_raters

from diffuseg.inference.fusion import fuse
from diffuseg.inference.fusion.label_staple import label_staple
from diffuseg.inference.fusion.raters import label_frequencies
from diffuseg.inference.fusion.staple import staple
from diffuseg.inference.fusion.votes import mean_threshold, plurality_vote


def test_fuse_mean_uses_soft_when_given() -> None:
    masks = torch.tensor([[[[1.0]], [[0.0]]]])
    soft = torch.tensor([[[[0.6]], [[0.2]]]])
    assert fuse("mean", masks, soft=soft)[0].item() == 0.0
    assert fuse("mean", masks)[0].item() == 1.0
    fused, prob = fuse("staple", masks.expand(1, 2, 3, 3).contiguous())
    assert fused.shape == prob.shape == (1, 3, 3)
    with pytest.raises(ValueError, match="staple"):
        fuse("average", masks)


def test_fuse_dispatches_on_labels() -> None:
    a = torch.from_numpy(label_raters(np.random.default_rng(3), 5, 16, 3, 0.1))[None]
    fused, prob = fuse("staple", a, labels=3)
    assert fused.dtype == torch.int64 and prob.shape == (1, 4, 16, 16) and prob.dtype == torch.float32
    assert torch.equal(fused, label_staple(a, 3).labels())
    assert torch.equal(fuse("vote", a, labels=3)[0], plurality_vote(a, 3)[0])
    assert torch.equal(fuse("mean", a, labels=3)[1], label_frequencies(a, 3))
    binary = (a > 0).float()
    assert torch.equal(fuse("mean", binary)[0], mean_threshold(binary)[0])  # default labels=1: unchanged
    assert torch.equal(fuse("staple", binary)[0], staple(binary).mask().float())
