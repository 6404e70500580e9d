"""Uncertainty maps of an ensemble: how much its ``K`` members disagree at each pixel.

``disagreement`` (the default of ``sample.uncertainty``): the share of the members whose label differs from the
fused mask's, in [0, 1] (0: every member says what the fused mask says; 0.5: half of them say otherwise); per
class c, the share of members whose class-c mask differs from the fused class-c mask. The other kinds read the
member frequency ``f`` (the fraction of members marking a pixel) without the fused mask: ``variance`` ``f (1 -
f)`` (the members' own Bernoulli variance, in [0, 0.25]) or ``entropy`` ``-f log2 f - (1 - f) log2 (1 - f)``
(bits, in [0, 1]); with several atoms their map is the normalised entropy of the members' label frequencies (in
[0, 1]), and per class the binary map of that class's member frequency.
"""

from __future__ import annotations

import math

import torch

from diffuseg.enums import Uncertainty
from diffuseg.inference.fusion.raters import label_frequencies
from diffuseg.labels import LabelScheme

LABEL_ENTROPY = "label_entropy"
"""What the map of ``variance`` or ``entropy`` holds with several atoms (``map_kind``)."""


def _bool(masks: torch.Tensor) -> torch.Tensor:
    return masks if masks.dtype == torch.bool else (masks > 0.5 if masks.is_floating_point() else masks != 0)


def _atoms(t: torch.Tensor) -> torch.Tensor:
    return t.round().long() if t.is_floating_point() else t.long()


def disagreement(members: torch.Tensor, fused: torch.Tensor, member_dim: int = 0) -> torch.Tensor:
    """The share of members that differ from the fused value: ``members`` with the ``K`` members at
    ``member_dim`` (atom maps, or bool class masks), ``fused`` the same shape without that axis -> that shape,
    float32 in multiples of ``1 / K``. One member that is its own fused mask gives 0 everywhere."""
    if members.dtype == torch.bool or fused.dtype == torch.bool:
        differs = _bool(members) != _bool(fused).unsqueeze(member_dim)
    else:
        differs = _atoms(members) != _atoms(fused).unsqueeze(member_dim)
    return differs.float().mean(member_dim)


def class_uncertainty(
    masks: torch.Tensor, kind: Uncertainty | str, member_dim: int = 0, *, fused: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-class maps of ``kind``. ``masks`` ``(K, C, *spatial)`` class masks (bool, or {0, 1}) with members at
    ``member_dim`` (``LabelScheme.class_masks`` of each member, or ``fusion.raters.one_hot`` for label maps) ->
    ``(C, *spatial)`` float32: ``disagreement`` with the fused class masks ``fused`` ``(C, *spatial)`` (in [0,
    1]), ``variance`` ``f (1 - f)`` of the member frequency ``f_c`` (in [0, 0.25]) or ``entropy`` ``-f log2 f -
    (1 - f) log2 (1 - f)`` (bits, in [0, 1]). One class ``(K, 1, H, W)`` is the binary map ``(1, H, W)``."""
    m = _bool(masks)
    kind = Uncertainty.parse(kind)
    if kind is Uncertainty.DISAGREEMENT:
        if fused is None:
            raise ValueError("class_uncertainty: 'disagreement' needs the fused class masks")
        return disagreement(m, _bool(fused), member_dim)
    f = m.float().mean(member_dim)
    if kind is Uncertainty.VARIANCE:
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


def uncertainty_map(
    masks: torch.Tensor,
    kind: Uncertainty | str,
    scheme: LabelScheme | None = None,
    fused: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ensemble's map: ``masks`` ``(K, 1, H, W)`` atom maps -> ``(1, H, W)`` float32.

    ``disagreement``: the share of members whose atom differs from the fused atom map ``fused`` ``(1, H, W)``
    (required for this kind), for one atom or several. Otherwise, one atom (binary, ``scheme=None``; masks in
    {0, 1}): ``class_uncertainty`` of ``kind`` of the one class; a ``scheme`` of L >= 2 atoms: the members'
    ``normalised_entropy`` (the per-class maps of ``kind`` are ``class_uncertainty``)."""
    if Uncertainty.parse(kind) is Uncertainty.DISAGREEMENT:
        if fused is None:
            raise ValueError("uncertainty_map: 'disagreement' needs the fused mask")
        return disagreement(masks, fused)
    if scheme is not None and scheme.atoms > 1:
        return normalised_entropy(masks[:, 0].long(), scheme.atoms)[None]
    return class_uncertainty(masks, kind)


def map_kind(kind: Uncertainty | str | None, binary: bool) -> str | None:
    """What a written uncertainty map holds: ``kind`` itself, except that with several atoms ``variance`` and
    ``entropy`` maps are the normalised label entropy (``"label_entropy"``); ``None`` when not recorded."""
    if kind is None:
        return None
    kind = Uncertainty.parse(kind)
    return str(kind) if binary or kind is Uncertainty.DISAGREEMENT else LABEL_ENTROPY
