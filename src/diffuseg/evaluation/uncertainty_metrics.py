"""How well the ensemble's uncertainty predicts its errors: error pixels, failed cases, calibration.

Per case and class, from the K members' masks ``s`` ``(K, *S)``, the fused mask ``f`` ``(*S)`` and the A annotators'
masks ``y`` ``(A, *S)`` (bool; one class's masks, ``labels.LabelScheme.class_masks``):

- **reference and errors**: the reference is the annotators' majority (``metrics.majority``: marked by at least
  half of them; with one annotator, that annotator), the reference of ``dice_majority``; an error pixel is one
  where ``f`` differs from it.
- **pixel uncertainty** ``u``: the share of the members whose mask differs from ``f``
  (``inference.uncertainty.disagreement``), in multiples of ``1 / K``. It is computed here from members and fused
  mask, so it does not depend on which map ``predict`` wrote (``sample.uncertainty``).
- ``pixel_auroc``: the probability that a random error pixel has a higher ``u`` than a random correct pixel, ties
  counting one half (the Mann-Whitney statistic; ``sklearn.metrics.roc_auc_score``). 0.5 is chance, and a
  constant ``u`` (one member, or members that all agree) gives exactly 0.5 by that tie rule. Undefined (NaN, left
  out of the means and counted) when the case has no error pixel (fused mask = reference, e.g. both empty) or no
  correct pixel.
- ``pixel_auprc``: average precision of ``u`` for error pixels, ``sum_t (R_t - R_{t-1}) P_t`` over the distinct
  values ``t`` of ``u`` from the highest (``sklearn.metrics.average_precision_score``); a random ranking scores
  ``pixel_error_rate``, the share of error pixels. Undefined without error pixels.
- ``case_uncertainty``: the mean of ``u`` over the union of the members' and the fused mask, the pixels where
  some member or the fused mask sees the structure. Outside it every member agrees with the fused mask on
  background (``u = 0``), so the mean over the whole image would shrink with the field of view and the lesion's
  size; over the union it is the share of contested pixels where the model sees something. Empty union (no member
  marks anything): 0, every member agrees that nothing is there, and a confident miss is a failure this score
  cannot flag (it stays in the failure-detection numbers below).
- ``ece_marked``: the calibration of the member frequency ``p`` (the fused soft estimate: the share of members
  marking a pixel) against the annotators' share ``q``, over the pixels some member marks (``p > 0``), in
  ``bins`` equal-mass bins (``FrequencyTable``): ``sum_b (n_b / n) |mean p_b - mean q_b|`` (Guo et al. 2017,
  ICML; adaptive bins: Nixon et al. 2019, "Measuring calibration in deep learning", CVPR workshops). Selecting
  pixels by ``p`` alone keeps ``E[q | p] = p`` for a calibrated model, so it lies on the diagonal; selecting by
  what the annotators mark (the pixels any member *or annotator* marks) would put the missed pixels, ``p = 0``
  and ``q > 0``, in the first bin alone, a reliability curve starting near (0, 1) whatever the model. NaN when no
  member marks any pixel; the all-pixel ``ece`` (``metrics.ece``) covers the missed pixels.

Across cases (``failure_detection``), the score ``case_uncertainty`` against the risk ``1 - dice``: the
risk-coverage curve (Geifman & El-Yaniv 2017, "Selective classification for deep neural networks", NeurIPS; as
Jaeger et al. 2023, "A call to reflect on evaluation practices for failure detection in image classification",
ICLR, and ValUES, Kahl et al. 2024, ICLR, arXiv:2401.08501, apply it to segmentation), its area ``aurc``, the
optimal ``aurc_optimal`` (cases ranked by their true risk) and random ``aurc_random`` (the mean risk) references,
``e_aurc = aurc - aurc_optimal``, and Spearman's rank correlation of score and risk.

Pooled over every pixel of every case (``UncertaintyPool``): the exact counts per value of ``u`` (error or not)
and per value of ``p`` (pixels and sum of ``q``), a few hundred numbers whatever the data's size. With several
classes the pooled numbers pool every (pixel, class) pair and each class has its own (``"<metric>/<class>"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffuseg.evaluation.metrics import majority
from diffuseg.inference.uncertainty import disagreement

REFERENCE = "majority"
"""The reference the error pixels are taken against (``metrics.majority`` of the annotators)."""

SCORE, RISK = "case_uncertainty", "dice"
"""Failure detection ranks cases by ``SCORE`` against the risk ``1 - RISK``."""


def _tally(values: np.ndarray, *weights: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct ``values`` ``(G,)`` ascending and, for each ``weights`` array (as long as ``values``), its
    sums over the entries of each distinct value ``(G,)`` float64: how the tables below are made and merged."""
    distinct, inverse = np.unique(values, return_inverse=True)
    return distinct, [np.bincount(inverse, weights=w, minlength=len(distinct)) for w in weights]


@dataclass(frozen=True)
class ScoreCounts:
    """Pixels per distinct score: ``values`` ``(G,)`` ascending, ``positives`` and ``negatives`` ``(G,)`` int64 (error
    and correct pixels). Adding two merges them exactly, so pooled AUROC/AUPRC are those of all pixels at once."""

    values: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray

    @classmethod
    def of(cls, scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> ScoreCounts:
        """From per-pixel ``scores`` and bool ``labels`` (True: error) of any one shape."""
        lab = np.asarray(labels, dtype=bool).ravel()
        values, (pos, neg) = _tally(np.asarray(scores, dtype=np.float64).ravel(), lab, ~lab)
        return cls(values, pos.astype(np.int64), neg.astype(np.int64))

    @classmethod
    def empty(cls) -> ScoreCounts:
        return cls(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))

    def __add__(self, other: ScoreCounts) -> ScoreCounts:
        pairs = ((self.values, other.values), (self.positives, other.positives), (self.negatives, other.negatives))
        values, (pos, neg) = _tally(*map(np.concatenate, pairs))
        return ScoreCounts(values, pos.astype(np.int64), neg.astype(np.int64))

    def auroc(self) -> float:
        """``P(u_error > u_correct) + P(u_error = u_correct) / 2``; NaN without errors or without correct pixels."""
        p, n = float(self.positives.sum()), float(self.negatives.sum())
        if p == 0 or n == 0:
            return math.nan
        below = np.cumsum(self.negatives) - self.negatives  # correct pixels with a lower score
        return float((self.positives * (below + 0.5 * self.negatives)).sum() / (p * n))

    def auprc(self) -> float:
        """Average precision: thresholds at the distinct scores from the highest; NaN without errors."""
        p = float(self.positives.sum())
        if p == 0:
            return math.nan
        pos, neg = self.positives[::-1], self.negatives[::-1]
        tp, fp = np.cumsum(pos), np.cumsum(neg)
        return float((pos / p * tp / np.maximum(tp + fp, 1)).sum())

    def pixels(self) -> tuple[int, int]:
        """``(pixels, error pixels)``."""
        return int(self.positives.sum() + self.negatives.sum()), int(self.positives.sum())


@dataclass(frozen=True)
class FrequencyTable:
    """Pixels per distinct predicted frequency: ``values`` ``(G,)`` ascending, ``counts`` ``(G,)`` int64 and
    ``targets`` ``(G,)`` float64, the sum of the annotators' share over those pixels. Adds exactly across cases."""

    values: np.ndarray
    counts: np.ndarray
    targets: np.ndarray

    @classmethod
    def of(cls, prob: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> FrequencyTable:
        p = np.asarray(prob, dtype=np.float64).ravel()
        values, (counts, targets) = _tally(p, np.ones_like(p), np.asarray(target, dtype=np.float64).ravel())
        return cls(values, counts.astype(np.int64), targets)

    @classmethod
    def empty(cls) -> FrequencyTable:
        return cls(np.zeros(0), np.zeros(0, np.int64), np.zeros(0))

    def __add__(self, other: FrequencyTable) -> FrequencyTable:
        pairs = ((self.values, other.values), (self.counts, other.counts), (self.targets, other.targets))
        values, (counts, targets) = _tally(*map(np.concatenate, pairs))
        return FrequencyTable(values, counts.astype(np.int64), targets)

    def marked(self) -> FrequencyTable:
        """The pixels with a frequency above 0 (some member marks them)."""
        keep = self.values > 0
        return FrequencyTable(self.values[keep], self.counts[keep], self.targets[keep])

    def equal_mass_bins(self, bins: int) -> np.ndarray:
        """``(bins, 3)`` rows ``[pixels, sum of p, sum of q]``: the pixels sorted by ``p`` cut into ``bins`` parts of
        ``n / bins`` pixels each, so no bin is empty (``(0, 3)`` when there is no pixel). Pixels of one ``p``
        that straddle a cut are split in proportion, each part with their mean ``q``: the bins do not depend on
        the order of tied pixels, and where ``mean q = p`` at every ``p`` every bin lies on the diagonal."""
        n = int(self.counts.sum())
        if n == 0:
            return np.zeros((0, 3))
        hi = np.cumsum(self.counts).astype(np.float64)
        lo = hi - self.counts
        edges = n * np.arange(bins + 1) / bins
        overlap = np.clip(np.minimum(hi[:, None], edges[None, 1:]) - np.maximum(lo[:, None], edges[None, :-1]), 0, None)
        mean_q = self.targets / np.maximum(self.counts, 1)
        return np.stack([overlap.sum(0), self.values @ overlap, mean_q @ overlap], axis=1)

    def ece(self, bins: int) -> float:
        """``sum_b (n_b / n) |mean p_b - mean q_b|`` over ``equal_mass_bins``; NaN without pixels."""
        sums = self.equal_mass_bins(bins)
        n = float(self.counts.sum())
        return float(np.abs(sums[:, 1] - sums[:, 2]).sum() / n) if n > 0 else math.nan


def case_score(u: torch.Tensor, samples: torch.Tensor, fused: torch.Tensor) -> float:
    """``case_uncertainty``: mean ``u`` ``(*S)`` over the union of ``samples`` ``(K, *S)`` and ``fused`` ``(*S)``
    (bool); 0 when the union is empty."""
    union = samples.any(0) | fused
    return float(u[union].double().mean()) if bool(union.any()) else 0.0


def _parts(
    samples: torch.Tensor, fused: torch.Tensor, annotations: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``u``, the error pixels, the member frequency ``p`` and the annotators' share ``q``, each ``(*S)``."""
    u = disagreement(samples, fused)
    error = fused != majority(annotations)
    return u, error, samples.double().mean(0), annotations.double().mean(0)


def case_uncertainty_metrics(
    samples: torch.Tensor, fused: torch.Tensor, annotations: torch.Tensor, bins: int
) -> dict[str, float]:
    """One class of one case: ``pixel_auroc``, ``pixel_auprc``, ``pixel_error_rate``, ``case_uncertainty`` and
    ``ece_marked`` (module docstring). ``samples`` ``(K, *S)``, ``fused`` ``(*S)``, ``annotations`` ``(A, *S)``,
    bool; ``bins``: equal-mass calibration bins."""
    u, error, p, q = _parts(samples, fused, annotations)
    counts = ScoreCounts.of(u, error)
    return {
        "pixel_auroc": counts.auroc(),
        "pixel_auprc": counts.auprc(),
        "pixel_error_rate": float(error.double().mean()),
        "case_uncertainty": case_score(u, samples, fused),
        "ece_marked": FrequencyTable.of(p, q).marked().ece(bins),
    }


class UncertaintyPool:
    """The pixel counts of every case so far, per class and over every (pixel, class) pair: ``ScoreCounts`` of
    ``u`` for the error pixels and the ``FrequencyTable`` of ``p`` against ``q`` (all pixels; ``marked`` for the
    calibration). ``names``: the class names (one: binary, no per-class entries)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.errors = {name: ScoreCounts.empty() for name in self.names}
        self.frequencies = {name: FrequencyTable.empty() for name in self.names}
        self.cases = 0

    def add(self, samples: torch.Tensor, fused: torch.Tensor, annotations: torch.Tensor) -> None:
        """One case: ``samples`` ``(K, C, *S)``, ``fused`` ``(C, *S)``, ``annotations`` ``(A, C, *S)`` bool class
        masks, C = ``len(names)``."""
        for c, name in enumerate(self.names):
            u, error, p, q = _parts(samples[:, c], fused[c], annotations[:, c])
            self.errors[name] += ScoreCounts.of(u, error)
            self.frequencies[name] += FrequencyTable.of(p, q)
        self.cases += 1

    def summary(self, bins: int) -> dict[str, dict[str, Any]]:
        """``{"pixel": {...}, "calibration": {...}}``: the pooled ``auroc``, ``auprc``, ``error_rate``, ``pixels``,
        ``error_pixels``; ``ece_marked``, ``marked_pixels``, ``unmarked_pixels``, ``unmarked_annotator_share``
        (the annotators' share where no member marks a pixel) and the equal-mass ``bins`` (rows ``[pixels, sum
        p, sum q]``) of the marked pixels. With several classes: these over every (pixel, class) pair and
        ``"<key>/<class>"`` per class (``bins`` over the pairs only)."""
        pooled_errors = sum(self.errors.values(), ScoreCounts.empty())
        pooled_freq = sum(self.frequencies.values(), FrequencyTable.empty())
        pixel, calibration = _pixel_entry(pooled_errors), _calibration_entry(pooled_freq, bins)
        calibration["bins"] = pooled_freq.marked().equal_mass_bins(bins).tolist()
        if len(self.names) > 1:
            for name in self.names:
                pixel |= {f"{k}/{name}": v for k, v in _pixel_entry(self.errors[name]).items()}
                calibration |= {f"{k}/{name}": v for k, v in _calibration_entry(self.frequencies[name], bins).items()}
        return {"pixel": pixel, "calibration": calibration}


def _pixel_entry(counts: ScoreCounts) -> dict[str, float | int]:
    pixels, errors = counts.pixels()
    return {
        "auroc": counts.auroc(),
        "auprc": counts.auprc(),
        "error_rate": errors / pixels if pixels else math.nan,
        "pixels": pixels,
        "error_pixels": errors,
    }


def _calibration_entry(table: FrequencyTable, bins: int) -> dict[str, float | int]:
    marked = table.marked()
    unmarked = int(table.counts.sum() - marked.counts.sum())
    share = float(table.targets.sum() - marked.targets.sum()) / unmarked if unmarked else math.nan
    return {
        "ece_marked": marked.ece(bins),
        "marked_pixels": int(marked.counts.sum()),
        "unmarked_pixels": unmarked,
        "unmarked_annotator_share": share,
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their mean rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    start = np.cumsum(counts) - counts
    return (start + (counts + 1) / 2)[inverse]


def spearman(scores: Sequence[float], risks: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's of the tie-averaged ranks); NaN for fewer than 2 values or a
    constant side (a constant score ranks nothing)."""
    x, y = np.asarray(scores, dtype=np.float64), np.asarray(risks, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    rx, ry = _ranks(x) - (len(x) + 1) / 2, _ranks(y) - (len(y) + 1) / 2
    return float(rx @ ry / math.sqrt(float(rx @ rx) * float(ry @ ry)))


def selective_risks(scores: Sequence[float], risks: Sequence[float]) -> np.ndarray:
    """The risk-coverage curve at coverage ``k / n``, ``k = 1..n``: the mean risk of the ``k`` cases of lowest
    score, ``(n,)``. Cases of equal score enter together: within a tie group the value is its expectation over
    the orders of the group, ``(R + t m) / (j + t)`` after ``j`` cases of total risk ``R``, ``t`` of the group's
    cases and ``m`` its mean risk, so a constant score gives the mean risk at every coverage."""
    s, r = np.asarray(scores, dtype=np.float64), np.asarray(risks, dtype=np.float64)
    values, inverse = np.unique(s, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(values))
    means = np.bincount(inverse, weights=r, minlength=len(values)) / sizes
    out, done, total = [], 0, 0.0
    for size, mean in zip(sizes, means):
        t = np.arange(1, size + 1)
        out.append((total + t * mean) / (done + t))
        done, total = done + size, total + size * mean
    return np.concatenate(out) if out else np.zeros(0)


def failure_detection(scores: Sequence[float], risks: Sequence[float]) -> dict[str, Any]:
    """How well ``scores`` (higher: less sure) rank cases by ``risks``, over the cases where both are finite:
    ``cases``, ``aurc`` (the mean of ``selective_risks``, the area under the step curve), ``aurc_optimal``
    (cases ranked by their own risk), ``aurc_random`` (the mean risk, the expected AURC of a random ranking),
    ``e_aurc`` (``aurc - aurc_optimal``), ``spearman``, and ``curve``: ``coverage``, ``risk`` and ``optimal``
    (lists of n). NaN without cases."""
    s, r = np.asarray(scores, dtype=np.float64), np.asarray(risks, dtype=np.float64)
    keep = np.isfinite(s) & np.isfinite(r)
    s, r = s[keep], r[keep]
    n = len(s)
    curve, optimal = selective_risks(s, r), np.cumsum(np.sort(r)) / np.arange(1, n + 1)
    aurc = float(curve.mean()) if n else math.nan
    best = float(optimal.mean()) if n else math.nan
    return {
        "cases": n,
        "aurc": aurc,
        "aurc_optimal": best,
        "aurc_random": float(r.mean()) if n else math.nan,
        "e_aurc": aurc - best,
        "spearman": spearman(s, r),
        "curve": {
            "coverage": (np.arange(1, n + 1) / n).tolist(),
            "risk": curve.tolist(),
            "optimal": optimal.tolist(),
        },
    }


def case_failure_detection(rows: Sequence[dict], names: Sequence[str]) -> dict[str, Any]:
    """``failure_detection`` of ``case_uncertainty`` against ``1 - dice`` over the ``rows`` that hold both
    (``results.json``'s cases), and with several ``names`` per class (``"<key>/<class>"``; the curve of the
    means over classes only)."""

    def column(suffix: str) -> tuple[list[float], list[float]]:
        pairs = [(row.get(SCORE + suffix), row.get(RISK + suffix)) for row in rows]
        pairs = [(s, r) for s, r in pairs if isinstance(s, (int, float)) and isinstance(r, (int, float))]
        return [s for s, _ in pairs], [1.0 - r for _, r in pairs]

    out = {"score": SCORE, "risk": f"1 - {RISK}", **failure_detection(*column(""))}
    if len(names) > 1:
        for name in names:
            entry = failure_detection(*column(f"/{name}"))
            out |= {f"{k}/{name}": v for k, v in entry.items() if k != "curve"}
    return out


def uncertainty_results(rows: Sequence[dict], pool: UncertaintyPool, bins: int) -> dict[str, Any]:
    """``results.json["uncertainty"]``: the reference, the pooled pixel and calibration numbers
    (``UncertaintyPool.summary``) and the case-level ``failure`` detection; ``{}`` when no case had members.
    NaN values are ``None`` (JSON ``null``)."""
    if pool.cases == 0:
        return {}
    out = {"reference": REFERENCE, **pool.summary(bins), "failure": case_failure_detection(rows, pool.names)}
    return _json(out)


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _num(value: Any, digits: int = 3) -> str:
    return "undefined" if value is None else f"{value:.{digits}f}"


def uncertainty_lines(block: dict[str, Any]) -> list[str]:
    """The ``uncertainty`` block of ``results.json`` as plain-text lines for the summary ``evaluate`` prints."""
    if not block:
        return []
    pixel, failure, cal = block["pixel"], block["failure"], block["calibration"]
    return [
        f"\nuncertainty: the members' disagreement with the fused mask; errors against the annotators' {REFERENCE}",
        f"  error pixels (pooled, {pixel['error_pixels']} of {pixel['pixels']}): AUROC {_num(pixel['auroc'])}, "
        f"AUPRC {_num(pixel['auprc'])} (random: {_num(pixel['error_rate'])})",
        f"  failed cases ({failure['cases']}, {SCORE} vs {failure['risk']}): AURC {_num(failure['aurc'])} "
        f"(optimal {_num(failure['aurc_optimal'])}, random {_num(failure['aurc_random'])}), "
        f"Spearman {_num(failure['spearman'])}",
        f"  calibration over the {cal['marked_pixels']} pixels some member marks (equal-mass bins): "
        f"ECE {_num(cal['ece_marked'])}",
    ]
