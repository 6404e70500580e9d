"""Sampled validation over several classes: label maps scored by the mean over classes of the per-class Dice
(binary exactly as before)."""

from __future__ import annotations

import math

import torch

from diffuseg.evaluation.metrics import ged, pairwise_dice
from diffuseg.labels import label_scheme
from diffuseg.training.callbacks import _scores

ACDC = [{"name": "RV", "values": [1]}, {"name": "Myo", "values": [2]}, {"name": "LV", "values": [3]}]


def _quadrants() -> torch.Tensor:
    a = torch.zeros(4, 4)
    a[:2, 2:], a[2:, :2], a[2:, 2:] = 1, 2, 3
    return a


def test_validation_scores_label_maps_per_class_by_hand():
    """Truth: quadrants 0/1/2/3. A sample equal to it scores 1; one whose LV quadrant is background scores
    (1 + 1 + 0) / 3; against two annotators (the truth, and the truth without Myo) each pair is averaged."""
    scheme = label_scheme(ACDC)
    truth = _quadrants()[None]
    no_lv = _quadrants()
    no_lv[2:, 2:] = 0
    assert _scores(truth.clone(), truth, scheme, 1) == (1.0, None)
    dice, distance = _scores(no_lv[None], truth, scheme, 1)
    assert math.isclose(dice, 2 / 3) and distance is None
    no_myo = _quadrants()
    no_myo[2:, :2] = 0
    both = torch.stack([_quadrants(), no_myo])  # annotator 2 has no Myo: sample's Myo scores 0 there
    samples = torch.stack([_quadrants(), no_lv])
    dice, distance = _scores(samples, both, scheme, 2)
    # pairs: (full, full) 1; (full, no_myo) 2/3; (no_lv, full) 2/3; (no_lv, no_myo): RV 1, Myo 0, LV 0 -> 1/3
    assert math.isclose(dice, (1 + 2 / 3 + 2 / 3 + 1 / 3) / 4)
    assert distance is not None and distance > 0


def test_validation_scores_binary_masks_as_before():
    g = torch.Generator().manual_seed(0)
    samples = (torch.rand(3, 8, 8, generator=g) > 0.5).float()
    truth = (torch.rand(2, 8, 8, generator=g) > 0.5).float()
    dice, distance = _scores(samples, truth, label_scheme(), 3)
    assert dice == float(pairwise_dice(samples, truth).mean())
    assert distance == ged(samples, truth, unbiased=False)
    assert _scores(samples[:1], truth[:1], label_scheme(), 1)[1] is None
