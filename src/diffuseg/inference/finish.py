"""Finishing an ensemble: the ``K`` members of one case -> post-processed members, the fused mask, its
probability and the uncertainty maps.

One path for one class or several, on the sampling device: relative-area post-processing per class
(``sample.relative_area``, supplement 7.1 of the ambiguity paper: ``postprocess.relative_area_members``), then
fusion (``sample.fusion``: ``fusion.fuse``, which takes the binary algorithms for one atom and the label-map
ones for several), then the uncertainty (``uncertainty.uncertainty_map``: the ``sample.uncertainty`` kind, by
default the share of members that disagree with the fused mask, plus one map per class for several atoms).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from diffuseg.config import SampleConfig
from diffuseg.inference.fusion import fuse
from diffuseg.inference.postprocess import relative_area_members
from diffuseg.inference.uncertainty import class_uncertainty, uncertainty_map
from diffuseg.labels import LabelScheme


@dataclass(frozen=True)
class Members:
    """The ``K`` members of one case as drawn, on the drawing device: ``masks`` ``(K, 1, H, W)`` float atom maps
    (binary {0, 1}), ``soft`` ``(K, channels, H, W)`` the per-channel soft maps (``methods.Draw``)."""

    case_id: str
    masks: Tensor
    soft: Tensor


@dataclass(frozen=True)
class EnsembleResult:
    """One case, all float32 on the CPU. ``samples`` ``(K, 1, H, W)``: the members after post-processing, atom
    maps (binary {0, 1}); ``soft`` ``(K, channels, H, W)``: their channel maps; ``fused`` ``(1, H, W)``: the fused atom
    map; ``probability``: the fusion's consensus probability, ``(1, H, W)`` for one atom (the foreground's),
    ``(L + 1, H, W)`` for L >= 2 atoms (one per atom); ``uncertainty`` ``(1, H, W)``: ``uncertainty_map``;
    ``class_uncertainty`` ``(classes, H, W)``: one map per class for L >= 2 atoms, ``None`` for one atom."""

    case_id: str
    samples: Tensor
    soft: Tensor
    fused: Tensor
    probability: Tensor
    uncertainty: Tensor
    class_uncertainty: Tensor | None = None


def mean_input(soft: Tensor, scheme: LabelScheme) -> Tensor | None:
    """The members' soft maps ``(K, channels, H, W)`` as ``fuse``'s ``mean`` reads them (a batch of one case): one
    atom, the foreground channel ``(1, K, H, W)``; one channel per atom (exclusive classes of one label value
    each, C = L + 1), all of them ``(1, K, L + 1, H, W)``; otherwise (regions, a class of several values)
    ``None``, so that the one-hot label maps are averaged."""
    if scheme.atoms == 1:
        return soft[None, :, 0]
    if scheme.exclusive and soft.shape[1] == scheme.atoms + 1:
        return soft[None]
    return None


def finish(members: Members, cfg: SampleConfig, scheme: LabelScheme | None = None) -> EnsembleResult:
    """Post-process, fuse and measure the uncertainty of one case's ``members`` on their device; results on the
    CPU. ``scheme``: the label scheme the members are drawn in (``None``: binary)."""
    scheme = LabelScheme() if scheme is None else scheme
    atoms, soft = members.masks[:, 0].long(), members.soft  # (K, H, W), (K, channels, H, W)
    if cfg.relative_area > 0:
        atoms, soft, masks = relative_area_members(atoms, soft, scheme, cfg.relative_area)
    else:
        masks = scheme.class_masks(atoms)
    labels = scheme.atoms
    fused, probability = fuse(
        cfg.fusion, atoms[None], soft=mean_input(soft, scheme), threshold=cfg.threshold, labels=labels
    )
    fused_masks = None if labels == 1 else scheme.class_masks(fused.long())[0]  # (C, H, W)
    return EnsembleResult(
        case_id=members.case_id,
        samples=atoms[:, None].float().cpu(),
        soft=soft.cpu(),
        fused=fused.float().cpu(),
        probability=probability.reshape(-1, *atoms.shape[1:]).cpu(),  # (1, H, W) or (L + 1, H, W)
        uncertainty=uncertainty_map(atoms[:, None], cfg.uncertainty, scheme, fused).cpu(),
        class_uncertainty=None if labels == 1 else class_uncertainty(masks, cfg.uncertainty, fused=fused_masks).cpu(),
    )
