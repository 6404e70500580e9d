"""Segmentation metrics on tensors: overlap, surface distance, distribution and calibration scores.

Masks are binarised on entry: boolean and integer tensors by ``!= 0``, floating tensors by ``> 0.5``.
Shapes are written ``(..., *S)`` where ``S`` is the spatial shape (``dims`` trailing dimensions, 2 or 3)
and ``...`` are batch dimensions that broadcast.

Empty-mask policy (the ambiguity paper, section 2): when the denominator of Dice or IoU is 0, i.e. both
masks are empty, the value is 1; hence the GED distance ``d = 1 - IoU`` of two empty masks is 0. Every
function below states what it does with empty masks; a value that is undefined is ``NaN`` (JSON ``null``),
and summaries leave NaN out and report how many were left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

Array = torch.Tensor | np.ndarray


def as_mask(x: Array) -> torch.Tensor:
    """Boolean tensor: ``x != 0`` for bool/integer input, ``x > 0.5`` for floating input."""
    t = torch.as_tensor(x)
    if t.dtype == torch.bool:
        return t
    if t.is_floating_point():
        return t > 0.5
    return t != 0


def _counts(pred: Array, gt: Array, dims: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p, g = as_mask(pred), as_mask(gt)
    p, g = torch.broadcast_tensors(p, g)
    axes = tuple(range(-dims, 0))
    tp = (p & g).sum(axes, dtype=torch.float64)
    return tp, p.sum(axes, dtype=torch.float64), g.sum(axes, dtype=torch.float64)


def dice(pred: Array, gt: Array, dims: int = 2) -> torch.Tensor:
    """Dice ``2|P∩G| / (|P|+|G|)`` over the last ``dims`` axes; shape ``(...)``, float64.

    Both masks empty: 1 (the ambiguity paper, section 2). One empty, the other not: 0.
    """
    tp, np_, ng = _counts(pred, gt, dims)
    den = np_ + ng
    return torch.where(den > 0, 2 * tp / den.clamp_min(1), torch.ones_like(den))


def iou(pred: Array, gt: Array, dims: int = 2) -> torch.Tensor:
    """IoU (Jaccard) ``|P∩G| / |P∪G|`` over the last ``dims`` axes; shape ``(...)``, float64.

    Both masks empty: 1 (the ambiguity paper, section 2). One empty, the other not: 0.
    """
    tp, np_, ng = _counts(pred, gt, dims)
    union = np_ + ng - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.ones_like(union))


def _intersections(a: Array, b: Array) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(|a_i ∩ b_j|, |a_i|, |b_j|)`` for ``a`` ``(N, *S)`` and ``b`` ``(M, *S)``: one matrix product."""
    fa = as_mask(a).reshape(len(a), -1).double()
    fb = fa if b is a else as_mask(b).reshape(len(b), -1).double()
    return fa @ fb.T, fa.sum(1), fb.sum(1)


def _iou_from(inter: torch.Tensor, na: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    union = na[:, None] + nb[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def _dice_from(inter: torch.Tensor, na: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    den = na[:, None] + nb[None, :]
    return torch.where(den > 0, 2 * inter / den.clamp_min(1), torch.ones_like(den))


def pairwise_iou(a: Array, b: Array) -> torch.Tensor:
    """IoU between every mask of ``a`` ``(N, *S)`` and every mask of ``b`` ``(M, *S)``: ``(N, M)`` float64.

    Two empty masks have IoU 1. Computed as one matrix product over flattened masks.
    """
    return _iou_from(*_intersections(a, b))


def pairwise_dice(a: Array, b: Array) -> torch.Tensor:
    """Dice between every mask of ``a`` ``(N, *S)`` and of ``b`` ``(M, *S)``: ``(N, M)``; both empty: 1."""
    return _dice_from(*_intersections(a, b))


def _mean_offdiag(d: torch.Tensor) -> float:
    """Mean of a square matrix without its diagonal; NaN for fewer than 2 rows."""
    n = d.shape[0]
    if n < 2:
        return math.nan
    return float((d.sum() - d.diagonal().sum()) / (n * (n - 1)))


class IoUSet:
    """The set metrics read off the IoU matrix ``iou`` ``(N + M, N + M)`` of ``n`` samples followed by ``m``
    annotations, with the distance ``d = 1 - IoU``. ``SampleSet`` fills it with the binary IoU (two empty
    masks: IoU 1); ``evaluation.class_metrics.ClassSampleSet`` with the mean IoU over classes."""

    n: int
    m: int
    iou: torch.Tensor

    def _blocks(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d = 1 - self.iou
        ys = slice(self.n, self.n + self.m)
        return d[rows, ys], d[rows, rows], d[ys, ys]

    def ged(self, unbiased: bool = True, rows: slice | None = None) -> float:
        """GED of the samples ``rows`` (default all) against the annotations; see ``ged``."""
        d_sy, d_ss, d_yy = self._blocks(rows or slice(0, self.n))
        if unbiased:
            return float(2 * d_sy.mean()) - _mean_offdiag(d_ss) - _mean_offdiag(d_yy)
        return float(2 * d_sy.mean() - d_ss.mean() - d_yy.mean())

    def ged_at(self, n: int, unbiased: bool = True) -> float:
        """Mean GED over the ``N // n`` disjoint groups of ``n`` consecutive samples; NaN when N < n."""
        groups = self.n // n
        if groups == 0:
            return math.nan
        return float(np.mean([self.ged(unbiased, slice(g * n, (g + 1) * n)) for g in range(groups)]))

    def diversity(self) -> float:
        """Mean ``1 - IoU`` over distinct sample pairs; see ``diversity``."""
        return _mean_offdiag(self._blocks(slice(0, self.n))[1])

    def hungarian_iou(self) -> float:
        """Hungarian-matched IoU; see ``hungarian_iou``."""
        size = math.lcm(self.n, self.m)
        iou_sy = self.iou[: self.n, self.n :]
        cost = 1 - iou_sy.repeat(size // self.n, size // self.m).numpy()
        rows, cols = linear_sum_assignment(cost)
        return float(1 - cost[rows, cols].mean())


class SampleSet(IoUSet):
    """N samples ``(N, *S)`` and M annotations ``(M, *S)`` with the intersection counts of every pair,
    from one matrix product; every set metric below is read off them.

    ``d = 1 - IoU`` throughout, and two empty masks are at distance 0 (IoU and Dice 1).
    """

    def __init__(self, samples: Array, annotations: Array):
        s, y = as_mask(samples), as_mask(annotations)
        if s.shape[1:] != y.shape[1:]:
            raise ValueError(f"samples {tuple(s.shape)} and annotations {tuple(y.shape)} differ in size")
        self.n, self.m = len(s), len(y)
        self.pixels = int(np.prod(s.shape[1:]))
        both = torch.cat([s, y]).reshape(self.n + self.m, -1)
        inter, sizes, _ = _intersections(both, both)
        self.inter, self.sizes = inter, sizes
        self.iou = _iou_from(inter, sizes, sizes)
        self.union_sensitivity = _union_sensitivity(s, y)

    def dice_sy(self) -> torch.Tensor:
        """Dice of every (sample, annotation) pair ``(N, M)``; Dice = 2 IoU / (1 + IoU), exact, empty pairs 1."""
        j = self.iou[: self.n, self.n :]
        return 2 * j / (1 + j)

    def difference_variances(self, rows: slice) -> torch.Tensor:
        """Pixel variance of ``a_i - a_j`` for the pairs ``i < j`` of ``rows``, a flat tensor:
        ``(|a_i| + |a_j| - 2|a_i ∩ a_j|) / P - ((|a_i| - |a_j|) / P)^2``."""
        sizes, inter, p = self.sizes[rows], self.inter[rows, rows], self.pixels
        var = (sizes[:, None] + sizes[None, :] - 2 * inter) / p - ((sizes[:, None] - sizes[None, :]) / p) ** 2
        i, j = torch.triu_indices(len(sizes), len(sizes), offset=1)
        return var[i, j]

    def collective_insight(self) -> dict[str, float]:
        """CI and its three parts; see ``collective_insight``."""
        sc = self.union_sensitivity
        dmax = float(self.dice_sy().max(0).values.mean())
        vs = self.difference_variances(slice(0, self.n))
        vy = self.difference_variances(slice(self.n, self.n + self.m))
        if len(vs) and len(vy):
            da = 1 - float((vy.max() - vs.max()).abs() + (vy.min() - vs.min()).abs()) / 2
        else:
            da = math.nan
        den = sc * dmax + dmax * da + sc * da
        ci = 3 * sc * dmax * da / den if den > 0 else (math.nan if math.isnan(da) else 0.0)
        return {"ci": ci, "combined_sensitivity": sc, "max_dice_matching": dmax, "diversity_agreement": da}


def _union_sensitivity(s: torch.Tensor, y: torch.Tensor) -> float:
    union_s, union_y = s.any(0), y.any(0)
    positives = int(union_y.sum())
    return float((union_s & union_y).sum() / positives) if positives else 1.0


def ged(samples: Array, annotations: Array, unbiased: bool = True) -> float:
    """Generalised energy distance with ``d = 1 - IoU`` (the ambiguity paper, section 2; Kohl et al. 2018).

    ``GED = 2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')]`` between ``samples`` ``(N, *S)`` and ``annotations``
    ``(M, *S)``, the expectations replaced by means over pairs:

    - ``unbiased=True``: the self terms average over ``i != j`` pairs only (a U-statistic). Its expectation
      does not depend on N or M; it can be negative, and it is NaN when N < 2 or M < 2.
    - ``unbiased=False``: the self terms average over all N² (M²) pairs, the ``i = j`` zeros included, as in
      the PHiSeg and Prob. U-Net code and the papers' tables. It is biased upwards at small N, which is
      why published GED falls from 4 to 16 samples. ``ged(S, S, unbiased=False) == 0`` exactly.

    Two empty masks are at distance 0.
    """
    return SampleSet(samples, annotations).ged(unbiased)


def ged_at(samples: Array, annotations: Array, n: int, unbiased: bool = True) -> float:
    """GED at ``n`` samples: the mean of ``ged`` over the ``len(samples) // n`` disjoint groups of ``n``
    consecutive samples (the first group alone when there are fewer than ``2n``). NaN when fewer than
    ``n`` samples exist. Averaging disjoint groups keeps the expectation of the ``n``-sample estimator and
    lowers its variance."""
    return SampleSet(samples, annotations).ged_at(n, unbiased)


def diversity(samples: Array) -> float:
    """Sample diversity: mean ``1 - IoU`` over the ``i != j`` pairs of ``samples`` ``(N, *S)``.

    Two empty samples are at distance 0. NaN for N < 2.
    """
    return _mean_offdiag(1 - pairwise_iou(samples, samples))


def hungarian_iou(samples: Array, annotations: Array) -> float:
    """Hungarian-matched IoU (Kohl et al. 2019, Hierarchical Prob. U-Net, section 4).

    Both sets are repeated to ``L = lcm(N, M)`` members, matched one to one by ``linear_sum_assignment``
    on the cost ``1 - IoU``, and the matched IoUs are averaged. Two empty masks have IoU 1.
    """
    return SampleSet(samples, annotations).hungarian_iou()


def majority(annotations: Array) -> torch.Tensor:
    """Majority mask of ``annotations`` ``(M, *S)``: a pixel is set when at least half mark it
    (``2 * votes >= M``; 2 of 4 LIDC readers suffice). Returns a boolean ``(*S)``."""
    a = as_mask(annotations)
    return 2 * a.sum(0) >= a.shape[0]


def fused_dice(fused: Array, annotations: Array) -> dict[str, float]:
    """Dice of the fused mask ``(*S)`` against each annotator ``(M, *S)`` and against their ``majority``.

    Returns ``{"dice_annotator_mean", "dice_annotator_min", "dice_annotator_max", "dice_majority"}``;
    both empty: 1.
    """
    f = as_mask(fused)
    a = as_mask(annotations)
    per = dice(f[None], a, dims=a.dim() - 1)
    return {
        "dice_annotator_mean": float(per.mean()),
        "dice_annotator_min": float(per.min()),
        "dice_annotator_max": float(per.max()),
        "dice_majority": float(dice(f, majority(a), dims=f.dim())),
    }


def collective_insight(samples: Array, annotations: Array) -> dict[str, float]:
    """Collective insight score CI and its parts (Rahman et al. 2023, "Ambiguous medical image
    segmentation using diffusion models", CVPR, section 4), for ``samples`` ``(N, *S)`` and ``annotations``
    ``(M, *S)``:

    - combined sensitivity ``S_c = TP / (TP + FN)`` of the union of the samples against the union of the
      annotations; 1 when the annotations' union is empty;
    - maximum Dice matching ``D_max``: for each annotation the best Dice over the samples, averaged
      (two empty masks: Dice 1);
    - diversity agreement ``D_a = 1 - (|V_max^Y - V_max^S| + |V_min^Y - V_min^S|) / 2`` where ``V^Y`` are
      the pixel variances of the differences ``y_i - y_j`` over the annotation pairs ``i != j`` and ``V^S``
      likewise for the samples (NaN when N < 2 or M < 2);
    - ``CI = 3 S_c D_max D_a / (S_c D_max + D_max D_a + S_c D_a)``, the harmonic mean of the three
      (0 when two of them are 0; NaN when ``D_a`` is).
    """
    return SampleSet(samples, annotations).collective_insight()


def ncc(samples: Array, annotations: Array, eps: float = 1e-8) -> float:
    """NCC between expected cross-entropy maps (Baumgartner et al. 2019, PHiSeg, section 4.1):

    ``S_NCC = E_{y ~ annotations}[ NCC( E_s[CE(s_bar, s)], E_s[CE(y, s)] ) ]`` where ``s_bar`` is the
    mean of the samples, ``CE(q, s) = -(q log(s + eps) + (1 - q) log(1 - s + eps))`` per pixel (binary
    PHiSeg code, ``eps = 1e-8``) and NCC is Pearson's correlation over pixels. ``samples`` ``(N, *S)``
    may be hard masks or probabilities in [0, 1]; ``annotations`` ``(M, *S)`` are binarised. An annotator
    whose map, or a sample map, is constant (e.g. every sample and annotation identical) gives an
    undefined correlation and is left out; NaN when none is left. Higher is better.
    """
    s = torch.as_tensor(samples).double().clamp(0, 1)
    y = as_mask(annotations).double()
    # E_s[CE(q, s)] is linear in q: -(q E_s[log(s + eps)] + (1 - q) E_s[log(1 - s + eps)])
    mean_log_p, mean_log_q = torch.log(s + eps).mean(0), torch.log(1 - s + eps).mean(0)

    def expected_ce(target: torch.Tensor) -> torch.Tensor:
        return -(target * mean_log_p + (1 - target) * mean_log_q)

    gamma = expected_ce(s.mean(0))
    values = [_pearson(gamma, expected_ce(y_j)) for y_j in y]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else math.nan


def calibration_bins(prob: Array, target: Array, bins: int = 10) -> torch.Tensor:
    """Per-bin sums for the expected calibration error: ``(bins, 3)`` float64 rows
    ``[pixel count, sum of prob, sum of target]``. Pixels are binned by ``prob`` into ``bins`` equal
    intervals ``[k/B, (k+1)/B)`` (1.0 falls into the last). Sums add up across cases (pooled ECE)."""
    p = torch.as_tensor(prob).double().flatten().clamp(0, 1)
    q = torch.as_tensor(target).double().flatten()
    idx = (p * bins).long().clamp_max(bins - 1)
    out = torch.zeros(bins, 3, dtype=torch.float64)
    out[:, 0].index_add_(0, idx, torch.ones_like(p))
    out[:, 1].index_add_(0, idx, p)
    out[:, 2].index_add_(0, idx, q)
    return out


def ece_from_bins(sums: torch.Tensor) -> float:
    """``ECE = sum_k n_k / n * |mean prob_k - mean target_k|`` from ``calibration_bins``; NaN if empty."""
    n = float(sums[:, 0].sum())
    if n == 0:
        return math.nan
    return float((sums[:, 1] - sums[:, 2]).abs().sum() / n)


def ece(samples: Array, annotations: Array, bins: int = 10) -> float:
    """Expected calibration error of the per-pixel sample frequency (mean of ``samples`` ``(N, *S)``,
    binarised) against the annotators' frequency (mean of ``annotations`` ``(M, *S)``), over all pixels in
    ``bins`` equal-width bins (``calibration_bins``); all masks empty gives 0. The equal-mass variant over the
    pixels some sample marks is ``uncertainty_metrics``' ``ece_marked``."""
    s, y = as_mask(samples), as_mask(annotations)
    return ece_from_bins(calibration_bins(s.double().mean(0), y.double().mean(0), bins))


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: the mask minus its erosion by the face-connected cross (as medpy and MONAI);
    voxels on the image border count as boundary."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def hd95(
    pred: Array,
    gt: Array,
    spacing: Sequence[float] | None = None,
    *,
    percentile: float = 95.0,
    pooled: bool = False,
    one_empty: str = "nan",
) -> float:
    """95th-percentile Hausdorff distance in millimetres between two 2D or 3D masks ``(*S)``.

    Surface distances come from Euclidean distance transforms (scipy) with the voxel ``spacing`` (mm per
    axis, default 1). ``pooled=False`` (default) is the BraTS and MONAI convention: the larger of the two
    directed 95th percentiles (pred -> gt and gt -> pred), as ``monai.metrics.compute_hausdorff_distance(
    ..., percentile=95)``. ``pooled=True`` is medpy's ``hd95``: the 95th percentile of both directions'
    distances together.

    Empty masks: both empty -> 0.0. Exactly one empty -> ``one_empty``: ``"nan"`` (default; the distance is
    undefined, as MONAI returns nan/inf and medpy raises; summaries count such cases) or ``"diagonal"``,
    the image diagonal in mm (the BraTS challenge's penalty, e.g. 373.13 for 240x240x155 at 1 mm).

    Args:
        pred: ``(*S)`` mask, 2D or 3D.
        gt: ``(*S)`` mask.
        spacing: mm per axis (default 1).
        percentile: the percentile of the surface distances (95).
        pooled: medpy's pooled percentile instead of the larger directed one.
        one_empty: ``"nan"`` or ``"diagonal"``, the value when exactly one mask is empty.
    """
    if one_empty not in ("nan", "diagonal"):
        raise ValueError(f"one_empty={one_empty!r} is not one of: nan, diagonal")
    p = as_mask(pred).cpu().numpy()
    g = as_mask(gt).cpu().numpy()
    if p.shape != g.shape:
        raise ValueError(f"hd95: shapes differ, {p.shape} vs {g.shape}")
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * p.ndim
    if len(spacing) != p.ndim:
        raise ValueError(f"hd95: spacing {spacing} has {len(spacing)} values for a {p.ndim}D mask")
    has_p, has_g = bool(p.any()), bool(g.any())
    if not has_p and not has_g:
        return 0.0
    if not (has_p and has_g):
        if one_empty == "nan":
            return math.nan
        return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(p.shape, spacing))))
    sp, sg = surface(p), surface(g)
    d_pg = ndimage.distance_transform_edt(~sg, sampling=spacing)[sp]
    d_gp = ndimage.distance_transform_edt(~sp, sampling=spacing)[sg]
    if pooled:
        return float(np.percentile(np.concatenate([d_pg, d_gp]), percentile))
    return float(max(np.percentile(d_pg, percentile), np.percentile(d_gp, percentile)))


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """``{"mean", "std", "median", "min", "max", "n", "n_undefined"}`` over the finite values (NaN left out
    and counted in ``n_undefined``); ``std`` is the sample standard deviation (0 for one value); the
    statistics are ``None`` when no value is defined."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    ok = arr[np.isfinite(arr)]
    out: dict[str, float | int | None] = {"n": int(ok.size), "n_undefined": int(len(values) - ok.size)}
    if ok.size == 0:
        return {"mean": None, "std": None, "median": None, "min": None, "max": None, **out}
    return {
        "mean": float(ok.mean()),
        "std": float(ok.std(ddof=1)) if ok.size > 1 else 0.0,
        "median": float(np.median(ok)),
        "min": float(ok.min()),
        "max": float(ok.max()),
        **out,
    }


class MetricAccumulator:
    """Collects one metric dict per case and summarises each metric over the cases.

    >>> acc = MetricAccumulator(); acc.add("a", {"dice": 1.0}); acc.add("b", {"dice": 0.5})
    >>> acc.summary()["dice"]["mean"]
    0.75
    """

    def __init__(self) -> None:
        self.cases: list[dict[str, float | str]] = []

    def add(self, case: str, values: Mapping[str, float]) -> None:
        self.cases.append({"case": case, **values})

    def metric_names(self) -> list[str]:
        names: dict[str, None] = {}
        for row in self.cases:
            names.update((k, None) for k, v in row.items() if k != "case" and isinstance(v, (int, float)))
        return list(names)

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        """Per metric: ``summarize`` over the cases that report it (a case without it counts as undefined)."""
        return {name: summarize([_finite_or_nan(row.get(name)) for row in self.cases]) for name in self.metric_names()}


def _finite_or_nan(v: object) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
