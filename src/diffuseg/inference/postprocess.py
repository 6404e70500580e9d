"""Relative-area post-processing of a set of predicted masks (the ambiguity paper, supplement 7.1, eq. 9-10).

For the masks ``Y = {y_1, ..., y_N}`` predicted for one image, let ``A_max`` be the largest area (foreground
pixel count) among them. A mask whose area is less than ``tau * A_max`` is replaced by the empty mask; the
others are kept unchanged. With ``tau = 0`` nothing changes; with ``tau = 1`` only the largest masks survive.
The paper's example: with ``A_max = 100`` and ``tau = 0.1``, masks of fewer than 10 pixels become empty.
For several classes the rule is applied to each class on its own (``relative_area_labels`` for label maps,
``relative_area_classes`` for class-mask stacks, ``relative_area_members`` for an ensemble's label maps and soft
maps under a label scheme).
"""

from __future__ import annotations

import torch

from diffuseg.labels import LabelScheme


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


def relative_area_keep_labels(atoms: torch.Tensor, tau: float, labels: int, set_dim: int = 0) -> torch.Tensor:
    """Eq. 9-10 per class for label maps: which (member, label) pairs survive. ``atoms`` holds atoms
    ``0..labels`` with the set along ``set_dim`` (``(N, *S)`` or ``(N, 1, H, W)``: 0). Label ``l`` of member
    ``n`` survives when its area is at least ``tau`` times the largest area of label ``l`` in the set.
    Returns bool ``atoms.shape[: set_dim + 1] + (labels,)``, column ``l - 1`` for label ``l``."""
    if labels < 1:
        raise ValueError(f"labels (L, the number of foreground atoms) must be >= 1, got {labels}")
    if atoms.is_floating_point():
        raise ValueError(f"expected integer label maps, got {atoms.dtype}")
    hot = torch.stack([atoms == label for label in range(1, labels + 1)])  # (L, ..., N, ...): labels lead
    return relative_area_keep(hot, tau, set_dim + 1).movedim(0, -1)


def relative_area_labels(atoms: torch.Tensor, tau: float, labels: int, set_dim: int = 0) -> torch.Tensor:
    """Eq. 9-10 per class: in each member, every label whose area is below ``tau`` times the largest area of
    that label in the set becomes background (0); the other pixels are unchanged. Same shape and dtype; returns
    ``atoms`` itself when ``tau == 0``. With ``labels == 1`` this is ``relative_area``."""
    keep = relative_area_keep_labels(atoms, tau, labels, set_dim)
    if tau == 0.0:
        return atoms
    shape = keep.shape[:-1] + (1,) * (atoms.dim() - keep.dim() + 1) + (labels,)
    drop = ~keep.reshape(shape)  # (..., N, 1, ..., 1, L)
    index = (atoms.long() - 1).clamp_min(0).unsqueeze(-1)
    dropped = torch.gather(drop.expand(*atoms.shape, labels), -1, index).squeeze(-1) & (atoms > 0)
    return atoms.masked_fill(dropped, 0)


def relative_area_classes(masks: torch.Tensor, tau: float, set_dim: int = 0) -> torch.Tensor:
    """Eq. 9-10 per class for class-mask stacks (overlapping regions included): ``masks`` ``(N, K, *S)`` with
    the set along ``set_dim`` and the class axis right after it; class mask ``k`` of member ``n`` is emptied
    when its area is below ``tau`` times the largest class-``k`` area in the set. Same shape and dtype."""
    moved = masks.movedim(set_dim + 1, 0)  # classes lead, then the batch axes and the set
    return relative_area(moved, tau, set_dim + 1).movedim(0, set_dim + 1)


def relative_area_members(
    atoms: torch.Tensor, soft: torch.Tensor, scheme: LabelScheme, tau: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 9-10 for each class of ``scheme`` on its own, over the ``K`` members of one case: ``atoms`` ``(K, H, W)``
    int label maps and ``soft`` ``(K, channels, H, W)`` -> (atoms, soft, class masks ``(K, classes, H, W)`` bool) after
    dropping, in each member, every class whose area is below ``tau`` times the largest area of that class among
    the members (one class for binary).

    The dropped class's pixels become background (exclusive classes) or the label map is repainted from the kept
    region masks in declaration order (regions, as ``LabelScheme.decode`` paints). Soft maps with a background
    channel (one more than the classes) move the dropped class's mass to it, so each member's soft map stays a
    distribution; soft maps of one channel per class (binary, regions) lose the dropped class's channel."""
    masks = scheme.class_masks(atoms)  # (K, classes, H, W)
    keep = relative_area_keep(masks.movedim(1, 0), tau, set_dim=1).T  # (K, classes)
    masks = masks & keep[:, :, None, None]
    drop = (~keep).to(soft.dtype)[:, :, None, None]
    if soft.shape[1] == len(scheme.names) + 1:
        moved = (soft[:, 1:] * drop).sum(1)
        soft = torch.cat([soft[:, :1] + moved[:, None], soft[:, 1:] * (1 - drop)], dim=1)
    else:
        soft = soft * (1 - drop)
    if scheme.exclusive:
        return torch.where(masks.any(1), atoms, torch.zeros_like(atoms)), soft, masks
    repainted = torch.zeros_like(atoms)
    for k, value in enumerate(scheme.painted):
        atom = torch.full_like(atoms, scheme.values.index(value) + 1)
        repainted = torch.where(masks[:, k], atom, repainted)
    return repainted, soft, scheme.class_masks(repainted)
