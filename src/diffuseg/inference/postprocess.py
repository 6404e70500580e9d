"""Relative-area post-processing of a set of predicted masks (the ambiguity paper, supplement 7.1, eq. 9-10).

For the masks ``Y = {y_1, ..., y_N}`` predicted for one image, let ``A_max`` be the largest area (foreground
pixel count) among them. A mask whose area is less than ``tau * A_max`` is replaced by the empty mask; the
others are kept unchanged. With ``tau = 0`` nothing changes; with ``tau = 1`` only the largest masks survive.
The paper's example: with ``A_max = 100`` and ``tau = 0.1``, masks of fewer than 10 pixels become empty.
"""

from __future__ import annotations

import torch


def relative_area_keep(masks: torch.Tensor, tau: float, set_dim: int = 0) -> torch.Tensor:
    """Which masks survive. ``masks`` has the set along ``set_dim``, batch axes before it and the mask's own
    axes after it, values in {0, 1}. Returns bool of shape ``masks.shape[: set_dim + 1]``, true where
    ``area >= tau * (largest area in the set)``."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"relative-area threshold must be in [0, 1], got {tau}")
    if not 0 <= set_dim < masks.dim() - 1:
        raise ValueError(f"set_dim {set_dim} leaves no mask axes in a tensor of shape {tuple(masks.shape)}")
    areas = (masks > 0.5).flatten(set_dim + 1).sum(-1)  # exact integer areas
    largest = areas.amax(-1, keepdim=True)
    return areas.double() >= tau * largest.double()


def relative_area(masks: torch.Tensor, tau: float, set_dim: int = 0) -> torch.Tensor:
    """Eq. 9-10: ``masks`` with the set along ``set_dim`` (``(N, 1, H, W)``: ``set_dim=0``; ``(B, N, H, W)``:
    ``set_dim=1``), each mask smaller than ``tau`` times the largest of its set replaced by zeros.
    Same shape and dtype; returns ``masks`` itself when ``tau == 0``."""
    keep = relative_area_keep(masks, tau, set_dim)
    if tau == 0.0:
        return masks
    shape = keep.shape + (1,) * (masks.dim() - keep.dim())
    return masks * keep.reshape(shape).to(masks.dtype)
