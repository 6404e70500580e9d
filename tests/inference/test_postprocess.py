"""Relative-area post-processing (ambiguity paper, supplement 7.1) on masks whose areas are known by hand."""

from __future__ import annotations

import pytest
import torch

from diffuseg.inference.postprocess import relative_area, relative_area_keep


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
