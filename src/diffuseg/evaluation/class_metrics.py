"""Metrics for several classes: per-class overlap and surface distance, their mean over classes, and the
sample-based metrics with a distance over classes.

Inputs are class-mask stacks ``(..., C, *S)`` bool (or {0, 1}): one mask per class, as
``labels.LabelScheme.class_masks(atoms)`` gives them; exclusive classes do not overlap, overlapping
regions (BraTS whole tumour / tumour core / enhancing tumour) do, and region metrics are these per-class
metrics on the region masks. ``C`` counts foreground classes only: background is not scored. Masks are
binarised as in ``evaluation.metrics`` (``as_mask``). With ``C = 1`` every function gives exactly its binary
counterpart in ``evaluation.metrics`` (tested).

Empty-mask policy, per class, as the binary metrics: Dice and IoU of two empty class masks are 1, of one empty
and one not 0; HD95 of two empty masks is 0 and of exactly one empty mask ``one_empty`` (NaN by default, or the
image diagonal). The mean over classes leaves NaN classes out (MONAI's ``do_metric_reduction`` "mean") and is
NaN only when every class is; the per-class values keep the NaN, so a missed class stays visible.

Sample-based metrics (GED, diversity, Hungarian-matched IoU) use ``d(x, y) = 1 - mIoU(x, y)``. ``mIoU`` is, by
default (``average="present"``), the mean IoU over the classes present in either
``x`` or ``y``; when no class is present in either, ``d = 0`` (two empty masks are identical).
``average="all"`` is what the CCDM code computes (Zbinden et al. 2023, "Stochastic segmentation with
conditional categorical diffusion models", ICCV; ``batched_distance`` in
github.com/LarsDoorenbos/ccdm-stochastic-segmentation, evaluation/evaluate_lidc_uncertainty.py): the mean over
all C foreground classes, a class absent from both counting as IoU 1. With one class both are the binary
``1 - IoU`` with its empty-mask policy; with several, "all" gives smaller distances when classes are absent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from diffuseg.enums import ClassAverage
from diffuseg.evaluation import metrics as M
from diffuseg.evaluation.metrics import Array, IoUSet, as_mask

SET_METRICS = ("ged", "ged_biased", "diversity", "hungarian_iou")
"""Keys of ``case_metrics.case_metrics`` (and ``ged_<n>``, ``ged_biased_<n>``) that ``class_set_metrics`` gives
with the distance over classes, instead of a mean of per-class values."""

COUNTS = ("samples",)
"""Keys that count something shared by every class: ``combine_classes`` keeps them as they are."""


def _stack(x: Array, name: str) -> torch.Tensor:
    t = as_mask(x)
    if t.dim() < 3:
        raise ValueError(f"{name}: expected class masks (..., C, *S), got shape {tuple(t.shape)}")
    return t


def class_dice(pred: Array, gt: Array, dims: int = 2) -> torch.Tensor:
    """Dice per class: ``pred``, ``gt`` ``(..., C, *S)`` -> ``(..., C)`` float64 (``metrics.dice`` with the
    class axis as a batch axis). Both empty: 1; one empty: 0. ``dims``: 2, or 3 for a volume."""
    return M.dice(_stack(pred, "pred"), _stack(gt, "gt"), dims)


def class_iou(pred: Array, gt: Array, dims: int = 2) -> torch.Tensor:
    """IoU per class ``(..., C)`` float64, as ``class_dice``. Both empty: 1; one empty: 0."""
    return M.iou(_stack(pred, "pred"), _stack(gt, "gt"), dims)


def class_hd95(
    pred: Array,
    gt: Array,
    spacing: Sequence[float] | None = None,
    *,
    percentile: float = 95.0,
    pooled: bool = False,
    one_empty: str = "nan",
) -> torch.Tensor:
    """``metrics.hd95`` per class -> ``(C,)`` float64. Both empty: 0; exactly one empty: ``one_empty``.

    Args:
        pred: ``(C, *S)`` class masks, ``S`` 2D or 3D (a whole volume).
        gt: ``(C, *S)`` class masks.
        spacing: mm per spatial axis (default 1).
        percentile: the percentile of the surface distances.
        pooled: both directions' distances together (medpy), else the larger directed percentile (MONAI).
        one_empty: ``"nan"``, or ``"diagonal"``: the image diagonal in mm.
    """
    p, g = _stack(pred, "pred"), _stack(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"class_hd95: shapes differ, {tuple(p.shape)} vs {tuple(g.shape)}")
    values = [
        M.hd95(p[k], g[k], spacing, percentile=percentile, pooled=pooled, one_empty=one_empty) for k in range(len(p))
    ]
    return torch.tensor(values, dtype=torch.float64)


def class_mean(values: Array) -> torch.Tensor:
    """Mean over the last axis (classes) leaving NaN out; NaN where every class is NaN. ``(..., C) -> (...)``."""
    v = torch.as_tensor(values, dtype=torch.float64)
    ok = ~torch.isnan(v)
    count = ok.sum(-1)
    total = torch.where(ok, v, torch.zeros_like(v)).sum(-1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


def pairwise_mean_iou(a: Array, b: Array, average: ClassAverage | str = ClassAverage.PRESENT) -> torch.Tensor:
    """``mIoU`` for every pair of ``a`` ``(N, C, *S)`` and ``b`` ``(M, C, *S)``: ``(N, M)`` float64. ``present``:
    over the classes present in either mask, 1 when none is; ``all``: over all C classes, a class absent from
    both counting 1 (the CCDM code). One matrix product per class."""
    average = ClassAverage.parse(average)
    fa, fb = _stack(a, "a"), _stack(b, "b")
    if fa.shape[1:] != fb.shape[1:]:
        raise ValueError(f"class masks {tuple(fa.shape)} and {tuple(fb.shape)} differ in classes or size")
    fa = fa.reshape(fa.shape[0], fa.shape[1], -1).transpose(0, 1).double()  # (C, N, P)
    fb = fb.reshape(fb.shape[0], fb.shape[1], -1).transpose(0, 1).double()
    inter = torch.bmm(fa, fb.transpose(1, 2))  # (C, N, M)
    union = fa.sum(-1)[:, :, None] + fb.sum(-1)[:, None, :] - inter
    present = union > 0
    if average is ClassAverage.ALL:
        return torch.where(present, inter / union.clamp_min(1), torch.ones_like(union)).mean(0)
    iou = torch.where(present, inter / union.clamp_min(1), torch.zeros_like(union)).sum(0)
    count = present.sum(0)
    return torch.where(count > 0, iou / count.clamp_min(1), torch.ones_like(iou))


class ClassSampleSet(IoUSet):
    """K samples ``(K, C, *S)`` and A annotations ``(A, C, *S)`` with the mean IoU of every pair
    (``pairwise_mean_iou``); ``ged``, ``ged_at``, ``diversity`` and ``hungarian_iou`` are those of
    ``metrics.SampleSet`` with ``d = 1 - mIoU`` (``average``: see ``pairwise_mean_iou``)."""

    def __init__(self, samples: Array, annotations: Array, average: ClassAverage | str = ClassAverage.PRESENT):
        s, y = _stack(samples, "samples"), _stack(annotations, "annotations")
        if s.shape[1:] != y.shape[1:]:
            raise ValueError(f"samples {tuple(s.shape)} and annotations {tuple(y.shape)} differ in classes or size")
        self.n, self.m = len(s), len(y)
        both = torch.cat([s, y])
        self.iou = pairwise_mean_iou(both, both, average)


def class_ged(
    samples: Array, annotations: Array, unbiased: bool = True, average: ClassAverage | str = ClassAverage.PRESENT
) -> float:
    """GED (``metrics.ged``, both estimators) with ``d = 1 - mIoU`` (``average``: see ``pairwise_mean_iou``)."""
    return ClassSampleSet(samples, annotations, average).ged(unbiased)


def class_diversity(samples: Array, average: ClassAverage | str = ClassAverage.PRESENT) -> float:
    """Mean ``1 - mIoU`` over the ``i != j`` pairs of ``samples`` ``(K, C, *S)``; NaN for K < 2."""
    return ClassSampleSet(samples, samples[:1], average).diversity()


def class_hungarian_iou(
    samples: Array, annotations: Array, average: ClassAverage | str = ClassAverage.PRESENT
) -> float:
    """Hungarian-matched mIoU (``metrics.hungarian_iou`` with ``pairwise_mean_iou``)."""
    return ClassSampleSet(samples, annotations, average).hungarian_iou()


def class_set_metrics(
    samples: Array,
    annotations: Array,
    ged_sizes: Sequence[int] = (4, 16),
    average: ClassAverage | str = ClassAverage.PRESENT,
) -> dict[str, float]:
    """The ``SET_METRICS`` of one case with the distance over classes: ``ged``, ``ged_biased``, ``ged_<n>`` and
    ``ged_biased_<n>`` for each ``n`` in ``ged_sizes`` that the N samples allow, ``diversity``,
    ``hungarian_iou``. ``samples`` ``(K, C, *S)``, ``annotations`` ``(A, C, *S)``; keys as
    ``case_metrics.case_metrics``, so that with ``C = 1`` the values are exactly its own."""
    sets = ClassSampleSet(samples, annotations, average)
    out = {"ged": sets.ged(unbiased=True), "ged_biased": sets.ged(unbiased=False)}
    for n in ged_sizes:
        if sets.n >= n:
            out[f"ged_{n}"] = sets.ged_at(n, unbiased=True)
            out[f"ged_biased_{n}"] = sets.ged_at(n, unbiased=False)
    out["diversity"] = sets.diversity()
    out["hungarian_iou"] = sets.hungarian_iou()
    return out


def class_ece(samples: Array, annotations: Array, bins: int = 10) -> torch.Tensor:
    """``metrics.ece`` per class: the members' frequency of class ``k`` per pixel against the annotators'
    frequency of class ``k``, over all pixels. ``samples`` ``(K, C, *S)``, ``annotations`` ``(A, C, *S)`` ->
    ``(C,)`` float64; a class nobody marks has ECE 0."""
    s, y = _stack(samples, "samples"), _stack(annotations, "annotations")
    values = [M.ece(s[:, k], y[:, k], bins) for k in range(s.shape[1])]
    return torch.tensor(values, dtype=torch.float64)


def class_calibration_bins(samples: Array, annotations: Array, bins: int = 10) -> torch.Tensor:
    """Per-class ``metrics.calibration_bins`` ``(C, bins, 3)`` over all pixels, to pool over cases
    (``metrics.ece_from_bins`` of ``sums[k]``, ``case_metrics.add_calibration``)."""
    s, y = _stack(samples, "samples"), _stack(annotations, "annotations")
    freq = [(s[:, k].double().mean(0), y[:, k].double().mean(0)) for k in range(s.shape[1])]
    return torch.stack([M.calibration_bins(p, q, bins) for p, q in freq])


def combine_classes(per_class: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """One case's metrics per class (``{class name: metrics of that class's masks}``, as ``case_metrics``
    scores each class) -> one flat dict: ``"<metric>/<class>"`` for every class and metric, and
    ``"<metric>"`` the mean over the classes (``class_mean``: NaN classes left out); ``COUNTS`` keys are kept
    as they are. With one class the dict is returned unchanged (no per-class keys): the binary results.
    Pair it with ``class_set_metrics``, whose values replace the means of the ``SET_METRICS``."""
    if not per_class:
        raise ValueError("combine_classes: no classes")
    if len(per_class) == 1:
        return dict(next(iter(per_class.values())))
    names: dict[str, None] = {}
    for values in per_class.values():
        names.update(dict.fromkeys(values))
    out: dict[str, float] = {}
    for metric in names:
        column = [values.get(metric, math.nan) for values in per_class.values()]
        if metric in COUNTS:
            out[metric] = column[0]
            continue
        out[metric] = float(class_mean(np.asarray(column, dtype=np.float64)))
    for name, values in per_class.items():
        out |= {f"{metric}/{name}": v for metric, v in values.items() if metric not in COUNTS}
    return out
