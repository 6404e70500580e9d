"""Uncertainty maps of an ensemble: how much its ``K`` members disagree at each pixel.

One class (binary): the member frequency ``f`` (the fraction of members marking a pixel) gives ``variance``
``f (1 - f)`` (the members' own Bernoulli variance, in [0, 0.25]) or ``entropy`` ``-f log2 f - (1 - f) log2
(1 - f)`` (bits, in [0, 1]). Several atoms: the normalised entropy of the members' label frequencies (in
[0, 1]), and per class the binary map of that class's member frequency.
"""

from __future__ import annotations

import math

import torch

from diffuseg.enums import Uncertainty
from diffuseg.inference.fusion.raters import label_frequencies
from diffuseg.labels import LabelScheme


def class_uncertainty(masks: torch.Tensor, kind: Uncertainty | str, member_dim: int = 0) -> torch.Tensor:
    """Per-class maps: the binary uncertainty ``kind`` of each class's member frequency ``f_c``. ``masks``
    ``(K, C, *spatial)`` class masks (bool, or {0, 1}) with members at ``member_dim`` (``LabelScheme.
    class_masks`` of each member, or ``fusion.raters.one_hot`` for label maps) -> ``(C, *spatial)`` float32:
    ``variance`` ``f (1 - f)`` in [0, 0.25] or ``entropy`` ``-f log2 f - (1 - f) log2 (1 - f)`` in [0, 1]
    (bits). One class ``(K, 1, H, W)`` is the binary map ``(1, H, W)``."""
    m = masks if masks.dtype == torch.bool else (masks > 0.5 if masks.is_floating_point() else masks != 0)
    f = m.float().mean(member_dim)
    if Uncertainty.parse(kind) is Uncertainty.VARIANCE:
        return f * (1.0 - f)
    g = 1.0 - f
    return -(torch.xlogy(f, f) + torch.xlogy(g, g)) / math.log(2.0)


def normalised_entropy(atoms: torch.Tensor, labels: int, member_dim: int = 0) -> torch.Tensor:
    """``-sum_s f(s) log f(s) / log(L + 1)`` of the members' label frequencies ``f``: ``atoms`` with the ``K``
    members at ``member_dim`` (``(K, *spatial)`` or ``(K, 1, H, W)``: 0) -> the map without that axis, float32
    in [0, 1]: 0 where all members agree, 1 where the ``L + 1`` labels are equally frequent (which needs
    ``K >= L + 1``). At ``L = 1`` it is the binary entropy in bits (``Uncertainty.ENTROPY`` of
    ``uncertainty_map``)."""
    f = label_frequencies(atoms, labels, member_dim)
    return (-torch.xlogy(f, f).sum(member_dim) / math.log(labels + 1)).clamp(0.0, 1.0)


def uncertainty_map(masks: torch.Tensor, kind: Uncertainty | str, scheme: LabelScheme | None = None) -> torch.Tensor:
    """The ensemble's map: ``masks`` ``(K, 1, H, W)`` -> ``(1, H, W)`` float32.

    One atom (binary, ``scheme=None``; masks in {0, 1}): ``class_uncertainty`` of ``kind`` of the one class.
    A ``scheme`` of L >= 2 atoms: ``masks`` are atom maps and the map is their ``normalised_entropy`` whatever
    ``kind``; the per-class maps of ``kind`` are ``class_uncertainty``."""
    if scheme is not None and scheme.atoms > 1:
        return normalised_entropy(masks[:, 0].long(), scheme.atoms)[None]
    return class_uncertainty(masks, kind)
