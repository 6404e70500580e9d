"""Relative-area post-processing (ambiguity paper, supplement 7.1) on masks whose areas are known by hand."""

from __future__ import annotations

import pytest
import torch

from diffuseg.inference.postprocess import (
    relative_area,
    relative_area_classes,
    relative_area_keep,
    relative_area_keep_labels,
    relative_area_labels,
    relative_area_members,
)
from diffuseg.labels import label_scheme

BRATS = [{"name": "WT", "values": [1, 2, 4]}, {"name": "TC", "values": [1, 4]}, {"name": "ET", "values": [4]}]


def _set(areas: list[int], size: int = 16) -> torch.Tensor:
    """(N, 1, size, size) masks whose foreground is the first ``area`` pixels in raster order."""
    out = torch.zeros(len(areas), 1, size * size)
    for i, a in enumerate(areas):
        out[i, 0, :a] = 1
    return out.reshape(len(areas), 1, size, size)


def test_paper_example() -> None:
    # largest area 100, tau 0.1: masks of fewer than 10 pixels become empty, 10 and more are kept
    masks = _set([100, 9, 10, 0, 55])
    out = relative_area(masks, 0.1)
    assert out.flatten(1).sum(1).tolist() == [100, 0, 10, 0, 55]
    assert torch.equal(out[2], masks[2])


def test_no_effect_at_zero() -> None:
    masks = _set([3, 1, 200])
    assert relative_area(masks, 0.0) is masks
    assert relative_area_keep(masks, 0.0).all()


def test_one_keeps_only_the_largest() -> None:
    assert relative_area_keep(_set([7, 8, 8, 2]), 1.0).tolist() == [False, True, True, False]


def test_all_empty_stays_empty() -> None:
    masks = _set([0, 0])
    assert torch.equal(relative_area(masks, 0.5), masks)


def test_batched_sets_are_independent() -> None:
    a = _set([40, 10])[:, 0]  # (2, H, W)
    b = _set([12, 10])[:, 0]
    out = relative_area(torch.stack([a, b]), 0.5, set_dim=1)  # (B=2, N=2, H, W)
    assert out.flatten(2).sum(-1).tolist() == [[40, 0], [12, 10]]


def test_rejects_bad_tau_and_axis() -> None:
    with pytest.raises(ValueError, match="0, 1"):
        relative_area(_set([1]), 1.5)
    with pytest.raises(ValueError, match="set_dim"):
        relative_area(torch.zeros(4), 0.5)


def test_relative_area_per_label_by_hand() -> None:
    a = torch.zeros(3, 4, 4, dtype=torch.long)  # label 1 areas 8, 1, 4; label 2 areas 2, 4, 0
    a[0, :2], a[1, 0, 0], a[2, 3] = 1, 1, 1
    a[0, 2, :2], a[1, 2] = 2, 2
    keep = relative_area_keep_labels(a, 0.5, 2)
    assert keep.tolist() == [[True, True], [False, True], [True, False]]
    out = relative_area_labels(a, 0.5, 2)
    assert [(out[n] == 1).sum().item() for n in range(3)] == [8, 0, 4]
    assert [(out[n] == 2).sum().item() for n in range(3)] == [2, 4, 0]  # 2 >= 0.5 * 4: kept
    assert torch.equal(out[1] == 0, (a[1] == 0) | (a[1] == 1))  # the dropped label became background
    assert relative_area_labels(a, 0.0, 2) is a
    batched = relative_area_labels(torch.stack([a, a.flip(0)]), 0.5, 2, set_dim=1)
    assert torch.equal(batched[0], out) and torch.equal(batched[1], out.flip(0))


def test_relative_area_per_class_reduces_to_binary() -> None:
    g = torch.Generator().manual_seed(3)
    masks = (torch.rand(6, 1, 8, 8, generator=g) > torch.rand(6, 1, 1, 1, generator=g)).float()
    assert torch.equal(relative_area_classes(masks, 0.4), relative_area(masks, 0.4))
    assert torch.equal(relative_area_labels(masks[:, 0].long(), 0.4, 1).float(), relative_area(masks[:, 0], 0.4))
    stack = torch.cat([masks, 1 - masks], 1)  # two overlapping-free classes: each class on its own
    out = relative_area_classes(stack, 0.4)
    assert torch.equal(out[:, 1:], relative_area(stack[:, 1:], 0.4))


def test_relative_area_for_regions_repaints_in_order():
    """BraTS regions: atoms 1, 2, 3 are label values 1 (TC only), 2 (WT only), 4 (ET). Member 1's ET (one pixel)
    is dropped at tau = 0.5 (1 < 0.5 * 4): that pixel stays in WT and TC, so it is painted TC's value 1 (atom 1)."""
    scheme = label_scheme(BRATS)
    a = torch.zeros(2, 4, 4, dtype=torch.long)
    a[0, :2, :2] = 3  # ET, area 4 (also WT and TC)
    a[1, 0, 0] = 3  # ET, area 1
    a[1, 1, 1] = 1  # TC (and WT): member 1's TC has area 2 and survives, its WT area 3
    a[1, 3, 3] = 2  # WT only
    out, soft, _ = relative_area_members(a, torch.ones(2, 3, 4, 4), scheme, 0.5)
    assert torch.equal(out[0], a[0])
    assert int(out[1, 0, 0]) == 1 and int(out[1, 1, 1]) == 1 and int(out[1, 3, 3]) == 2
    assert int((out[1] > 0).sum()) == 3
    assert torch.equal(soft[1, 2], torch.zeros(4, 4)) and torch.equal(soft[1, :2], torch.ones(2, 4, 4))
