"""Fusion by counting: majority vote and mean-and-threshold of binary masks, plurality vote and argmax of the mean
one-hot (or of the members' soft maps) of label maps.

Batched over cases: ``(B, R, *spatial)`` with ``R`` raters (ensemble members or annotators) per case; they run
on the input's device. At ``L = 1`` the label-map functions give what the binary ones give, ties aside (see each
docstring).
"""

from __future__ import annotations

import torch

from diffuseg.inference.fusion.raters import check_atoms, check_masks, first_argmax, label_frequencies


def mean_threshold(masks: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over raters, then ``mean >= threshold``; ``masks`` ``(B, R, *spatial)`` in [0, 1], binary or soft.

    Returns ``(fused (B, *spatial) float {0, 1}, mean (B, *spatial) float)``.
    """
    check_masks(masks)
    mean = masks.float().mean(1)
    return (mean >= threshold).float(), mean


def majority_vote(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Strict majority: foreground where more than half of the ``R`` raters say so (a tie is background).

    ``masks`` ``(B, R, *spatial)`` in {0, 1}. Returns ``(fused (B, *spatial) float {0, 1}, vote fraction)``.
    """
    check_masks(masks)
    votes = (masks > 0.5).sum(1)
    r = masks.shape[1]
    return (2 * votes > r).float(), votes.float() / r


def plurality_vote(atoms: torch.Tensor, labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The label most raters give: ``atoms`` ``(B, R, *spatial)`` -> ``(fused (B, *spatial) int64, label
    frequencies (B, L + 1, *spatial) float32)``. A tie goes to the lowest tied label, so background wins every
    tie it is part of; at ``L = 1`` this is ``majority_vote`` (strict majority, a tie is background)."""
    freq = label_frequencies(atoms, labels, 1)
    return first_argmax(freq, 1), freq


def mean_argmax(
    atoms: torch.Tensor, labels: int, soft: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax of the mean one-hot (or of the mean ``soft``): ``(fused (B, *spatial) int64, mean (B, L + 1,
    *spatial) float32)``, ties to the lowest label.

    ``soft`` ``(B, R, L + 1, *spatial)``: per-member probabilities over the atoms (exclusive classes: the
    network's softmax channels, channel 0 = background); without it the members' one-hot label maps are
    averaged, which makes this the plurality vote. Overlapping regions have no probability per atom: decode
    their mean soft channels with ``LabelScheme.decode`` instead."""
    if soft is None:
        return plurality_vote(atoms, labels)
    check_atoms(atoms, labels)
    if soft.shape[:2] != atoms.shape[:2] or soft.shape[2] != labels + 1 or soft.shape[3:] != atoms.shape[2:]:
        raise ValueError(
            f"soft {tuple(soft.shape)} does not match label maps {tuple(atoms.shape)} with {labels + 1} labels "
            "(expected (B, R, L + 1, *spatial))"
        )
    mean = soft.float().mean(1)
    return first_argmax(mean, 1), mean
