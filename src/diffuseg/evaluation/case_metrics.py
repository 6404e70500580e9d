"""Score one case in memory: its members and fused mask against its annotators, for one class or several.

``case_metrics`` is the one entry point: ``evaluate`` calls it on what it reads from a prediction folder, and
anything that draws members in memory (sampled validation, the quality benchmarks) can call it on an
``inference.ensemble.EnsembleResult`` directly. Binary is the one-class case: every class is scored on its
own masks (``labels.LabelScheme.class_masks``; overlapping regions on their region masks), and the classes'
rows are combined by ``class_metrics.combine_classes``, which returns the one class's row as it is.

Letters: K members, A annotators, C classes; ``S`` the spatial shape (2D, or 3D for a volume).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from diffuseg.config import EvalConfig
from diffuseg.evaluation import class_metrics as CM
from diffuseg.evaluation import metrics as M
from diffuseg.evaluation.uncertainty_metrics import case_uncertainty_metrics
from diffuseg.labels import LabelScheme


def class_masks(scheme: LabelScheme, atoms: torch.Tensor, dims: int = 2) -> torch.Tensor:
    """``scheme.class_masks`` for atom maps of any spatial rank: ``(..., *S)`` with ``dims`` spatial axes (2, or 3
    for a volume) -> ``(..., C, *S)`` bool."""
    lead, spatial = atoms.shape[: atoms.dim() - dims], atoms.shape[atoms.dim() - dims :]
    flat = scheme.class_masks(atoms.reshape(*lead, 1, -1))  # (..., C, 1, P)
    return flat.reshape(*lead, len(scheme.names), *spatial)


def without_ignored(
    scheme: LabelScheme, annotations: torch.Tensor, *maps: torch.Tensor | None
) -> tuple[torch.Tensor | None, ...]:
    """Leave nnU-Net's ignore label out of the scores: the pixels any annotator marks ``ignore``
    (``scheme.ignore_atom``) set to background in the annotations and in every map, so that overlap metrics (Dice,
    IoU, GED, HD95's surfaces) do not see them; pixel-pooled ones (ECE over all pixels, NCC) count them as agreed
    background.

    Args:
        scheme: the label scheme of the atom maps.
        annotations: ``(A, *S)`` atom maps of the annotators.
        maps: atom maps ``(..., *S)`` (the fused mask, the members), or ``None``.

    Returns ``(annotations, *maps, valid)``: ``valid`` ``(*S)`` bool, the pixels that count, or ``None`` when none
    is ignored (then everything is returned as it came).
    """
    valid = scheme.valid(annotations)
    if valid is None:
        return (annotations, *maps, None)
    keep = valid.all(0)
    out = [annotations.masked_fill(~keep, 0), *(None if m is None else m.masked_fill(~keep, 0) for m in maps)]
    return (*out, keep)


def case_metrics(
    members: torch.Tensor | None,
    fused: torch.Tensor,
    annotations: torch.Tensor,
    scheme: LabelScheme,
    config: EvalConfig | None = None,
    spacing: Sequence[float] | None = None,
) -> dict[str, float]:
    """Every metric that applies to one case: the metric row ``evaluate`` writes to ``results.json``.

    Per class: ``dice``, ``iou`` and ``hd95`` of the fused mask against each annotator, averaged over the
    annotators (NaN HD95s left out); with several annotators also ``dice_annotator_min``/``_max`` and the
    ``*_majority`` scores against the majority mask (``metrics.majority``). With members: ``samples`` (K),
    ``sample_dice``, GED (both estimators, all members and ``ged_<n>`` for each ``n`` of
    ``config.ged_samples``), ``diversity``, ``hungarian_iou``, the collective insight and its parts, ``ncc``,
    ``ece``, and how well the members' disagreement predicts the errors: ``pixel_auroc``, ``pixel_auprc``,
    ``pixel_error_rate``, ``case_uncertainty`` and ``ece_marked`` (``uncertainty_metrics``). One class: these
    keys. Several: ``"<metric>/<class>"`` for every class and ``"<metric>"`` their mean (NaN classes left out),
    except that GED, diversity and Hungarian IoU use ``d = 1 - mean IoU over the classes present in either mask``
    (``class_metrics.class_set_metrics``).

    Args:
        members: ``(K, 1, *S)`` atom maps of the K ensemble members, or ``None`` (or K = 0) for none.
        fused: ``(1, *S)`` atom map of the fused mask.
        annotations: ``(A, 1, *S)`` atom maps of the A >= 1 annotators.
        scheme: the label scheme the atoms belong to (``labels.LabelScheme()`` for binary).
        config: GED sample counts, HD percentile and calibration bins (default ``EvalConfig()``).
        spacing: voxel size per spatial axis (mm) for HD95; ``None``: 1 per axis (pixels).
    """
    cfg = config or EvalConfig()
    fused, annotations = torch.as_tensor(fused), torch.as_tensor(annotations)
    members = None if members is None or len(members) == 0 else torch.as_tensor(members)
    _check_shapes(members, fused, annotations)
    dims = fused.dim() - 1
    f = class_masks(scheme, fused[0], dims)  # (C, *S)
    y = class_masks(scheme, annotations[:, 0], dims)  # (A, C, *S)
    s = None if members is None else class_masks(scheme, members[:, 0], dims)  # (K, C, *S)
    per = {
        name: _mask_metrics(f[c], y[:, c], None if s is None else s[:, c], spacing, cfg)
        for c, name in enumerate(scheme.names)
    }
    row = CM.combine_classes(per)
    if s is not None and len(scheme.names) > 1:
        row |= CM.class_set_metrics(s, y, cfg.ged_samples)
    return row


def _check_shapes(members: torch.Tensor | None, fused: torch.Tensor, annotations: torch.Tensor) -> None:
    """``ValueError`` unless fused is ``(1, *S)``, annotations ``(A, 1, *S)`` with A >= 1 and members
    ``(K, 1, *S)``, ``S`` 2D or 3D."""

    def stack_of(t: torch.Tensor) -> bool:
        return t.dim() == fused.dim() + 1 and len(t) >= 1 and t.shape[1:] == fused.shape

    ok = fused.dim() in (3, 4) and fused.shape[0] == 1 and stack_of(annotations)
    if not ok or (members is not None and not stack_of(members)):
        shapes = f"fused {tuple(fused.shape)}, annotations {tuple(annotations.shape)}"
        shapes += f", members {tuple(members.shape)}" if members is not None else ""
        raise ValueError(f"case_metrics: expected fused (1, *S), annotations (A, 1, *S), members (K, 1, *S); {shapes}")


def _mask_metrics(
    fused: torch.Tensor,
    annotations: torch.Tensor,
    samples: torch.Tensor | None,
    spacing: Sequence[float] | None,
    cfg: EvalConfig,
) -> dict[str, float]:
    """The metrics of one class's masks: ``fused`` ``(*S)``, ``annotations`` ``(A, *S)``, ``samples``
    ``(K, *S)`` or None, all bool."""
    dims = fused.dim()
    out: dict[str, float] = {}
    out["dice"] = float(M.dice(fused[None], annotations, dims).mean())
    out["iou"] = float(M.iou(fused[None], annotations, dims).mean())
    hds = [M.hd95(fused, a, spacing, percentile=cfg.hd95_percentile) for a in annotations]
    finite = [h for h in hds if not math.isnan(h)]
    out["hd95"] = float(np.mean(finite)) if finite else math.nan
    if annotations.shape[0] > 1:
        majority = M.majority(annotations)
        out |= M.fused_dice(fused, annotations)
        del out["dice_annotator_mean"]  # the same number as "dice"
        out["iou_majority"] = float(M.iou(fused, majority, dims))
        out["hd95_majority"] = M.hd95(fused, majority, spacing, percentile=cfg.hd95_percentile)
    if samples is None:
        return out
    sets = M.SampleSet(samples, annotations)
    out["samples"] = len(samples)
    out["sample_dice"] = float(sets.dice_sy().mean())
    out["ged"] = sets.ged(unbiased=True)
    out["ged_biased"] = sets.ged(unbiased=False)
    for n in cfg.ged_samples:
        if len(samples) >= n:
            out[f"ged_{n}"] = sets.ged_at(n, unbiased=True)
            out[f"ged_biased_{n}"] = sets.ged_at(n, unbiased=False)
    out["diversity"] = sets.diversity()
    out["hungarian_iou"] = sets.hungarian_iou()
    out |= sets.collective_insight()
    out["ncc"] = M.ncc(samples, annotations)
    out["ece"] = M.ece(samples, annotations, cfg.calibration_bins)
    out |= case_uncertainty_metrics(samples, fused, annotations, cfg.calibration_bins)
    return out


def calibration_sums(scheme: LabelScheme, bins: int) -> dict[str, torch.Tensor]:
    """Empty pooled calibration sums ``(bins, 3)`` (``metrics.calibration_bins``) for ``add_calibration``: ``all``,
    and with declared classes also ``all/<class>``."""
    names = ["all"] if scheme.binary else ["all", *(f"all/{n}" for n in scheme.names)]
    return {name: torch.zeros(bins, 3, dtype=torch.float64) for name in names}


def add_calibration(
    sums: dict[str, torch.Tensor], scheme: LabelScheme, members: torch.Tensor, annotations: torch.Tensor, bins: int
) -> None:
    """Pool one case into ``sums``: per class c, the bins of the members' frequency of c against the annotators'
    over all pixels (``class_metrics.class_calibration_bins``, ``all/<c>``); ``all`` pools every (pixel, class)
    pair.

    Args:
        sums: the pooled sums so far (``calibration_sums``), added to in place.
        scheme: the label scheme (binary: ``all`` only).
        members: ``(K, *S)`` atom maps.
        annotations: ``(A, *S)`` atom maps.
        bins: calibration bins.
    """
    dims = annotations.dim() - 1
    per = CM.class_calibration_bins(class_masks(scheme, members, dims), class_masks(scheme, annotations, dims), bins)
    if not scheme.binary:
        for c, name in enumerate(scheme.names):
            sums[f"all/{name}"] += per[c]
    sums["all"] += per.sum(0)
