"""Uncertainty maps by hand: disagreement with the fused mask, member-frequency variance and entropy, normalised
label entropy, per-class maps, and their reductions to the binary map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffuseg.inference.fusion.raters import one_hot
from diffuseg.inference.uncertainty import (
    LABEL_ENTROPY,
    class_uncertainty,
    disagreement,
    map_kind,
    normalised_entropy,
    uncertainty_map,
)
from diffuseg.labels import label_scheme


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


def test_disagreement_by_hand() -> None:
    """4 members over 1x3 pixels (frequencies 0, 1/4, 1/2) against the fused mask 0, 0, 1: the members that
    differ are 0, 1 and 2 of 4; against the fused mask 1, 1, 0 the complements."""
    masks = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0], [0, 0, 0]], dtype=torch.float32).view(4, 1, 1, 3)
    fused = torch.tensor([[[0.0, 0.0, 1.0]]])
    torch.testing.assert_close(uncertainty_map(masks, "disagreement", fused=fused), torch.tensor([[[0.0, 0.25, 0.5]]]))
    flipped = uncertainty_map(masks, "disagreement", fused=1 - fused)
    torch.testing.assert_close(flipped, torch.tensor([[[1.0, 0.75, 0.5]]]))
    with pytest.raises(ValueError, match="fused"):
        uncertainty_map(masks, "disagreement")


def test_disagreement_of_labels_and_per_class() -> None:
    """Label maps: pixel 0 the members say 1, 1, 2, 0 against the fused 1 (2 of 4 differ); pixel 1 all say 2 as
    the fused map does. Per class: RV (1) differs in 2 members at pixel 0, Myo (2) in 1, LV (3) in none."""
    scheme = label_scheme([{"name": n, "values": [v]} for n, v in (("RV", 1), ("Myo", 2), ("LV", 3))])
    atoms = torch.tensor([[1, 2], [1, 2], [2, 2], [0, 2]]).view(4, 1, 1, 2).float()
    fused = torch.tensor([[[1.0, 2.0]]])
    torch.testing.assert_close(uncertainty_map(atoms, "disagreement", scheme, fused), torch.tensor([[[0.5, 0.0]]]))
    per_class = class_uncertainty(scheme.class_masks(atoms[:, 0]), "disagreement", fused=scheme.class_masks(fused)[0])
    torch.testing.assert_close(per_class[:, 0, 0], torch.tensor([0.5, 0.25, 0.0]))
    assert not per_class[:, 0, 1].any()
    one = torch.tensor([[1, 0, 1]]).view(1, 1, 1, 3)  # one member is its own fused mask: no disagreement
    assert not disagreement(one, one[0]).any()


def test_map_kind() -> None:
    assert map_kind("disagreement", binary=False) == "disagreement"
    assert map_kind("variance", binary=True) == "variance"
    assert map_kind("entropy", binary=False) == LABEL_ENTROPY
    assert map_kind(None, binary=True) is None
