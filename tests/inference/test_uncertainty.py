"""Uncertainty maps by hand: member-frequency variance and entropy, normalised label entropy, per-class maps, and
their reductions to the binary map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffuseg.inference.fusion.raters import one_hot
from diffuseg.inference.uncertainty import class_uncertainty, normalised_entropy, uncertainty_map


def test_uncertainty_by_hand() -> None:
    # 4 members over 1x3 pixels: frequencies 0, 1/4, 1/2
    masks = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0], [0, 0, 0]], dtype=torch.float32).view(4, 1, 1, 3)
    var = uncertainty_map(masks, "variance")
    torch.testing.assert_close(var, torch.tensor([[[0.0, 3 / 16, 1 / 4]]]))
    ent = uncertainty_map(masks, "entropy")
    h = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    torch.testing.assert_close(ent, torch.tensor([[[0.0, h, 1.0]]]))


def test_normalised_entropy_extremes_and_binary_reduction() -> None:
    agree = torch.full((5, 4, 4), 2)
    assert torch.equal(normalised_entropy(agree, 3), torch.zeros(4, 4))
    uniform = torch.arange(4).repeat(2).view(8, 1, 1).expand(8, 3, 3)  # each of labels 0..3 twice
    torch.testing.assert_close(normalised_entropy(uniform, 3), torch.ones(3, 3))
    half = torch.tensor([0, 1, 2, 2]).view(4, 1)  # f = (1/4, 1/4, 1/2, 0)
    want = -(2 * 0.25 * np.log(0.25) + 0.5 * np.log(0.5)) / np.log(4)
    assert normalised_entropy(half, 3).item() == pytest.approx(want, rel=1e-6)
    masks = (torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).long()
    torch.testing.assert_close(normalised_entropy(masks, 1)[None, 0], uncertainty_map(masks.float(), "entropy"))


def test_class_uncertainty_per_class_and_binary_reduction() -> None:
    masks = (torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    for kind in ("variance", "entropy"):
        assert torch.equal(class_uncertainty(masks, kind), uncertainty_map(masks, kind))
    a = torch.tensor([[1, 1], [1, 2], [1, 0], [1, 2]])  # (K = 4 members, 2 pixels), labels 0..2
    var = class_uncertainty(one_hot(a, 2, 1), "variance")  # (3 classes, 2 pixels)
    assert var.tolist() == [[0.0, 0.1875], [0.0, 0.1875], [0.0, 0.25]]
    assert class_uncertainty(one_hot(a, 2, 1), "entropy")[2].tolist() == [0.0, 1.0]
