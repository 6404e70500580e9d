"""nnU-Net's ``summary.json``, which ``evaluate`` writes beside ``results.json`` (the structure of nnU-Net v2's
``nnunetv2.evaluation.evaluate_predictions.compute_metrics_on_folder``; Isensee et al., Nature Methods 2021).

``{"metric_per_case": [{"metrics": {KEY: {"Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref"}},
"prediction_file", "reference_file"}], "mean": {KEY: {metric: mean}}, "foreground_mean": {metric: mean}}``.

One entry per prediction file: a 2D case, or a volume whose slices were scored (counts summed over them). KEY is
nnU-Net's name of a label or region: a class of one label value V is ``"V"``, a class of several values (a
region) the tuple ``"(1, 2, 3)"``; a binary mask is ``"1"`` (or its ``data.foreground`` values). Counts compare the
fused mask with the reference, annotator 0 (nnU-Net has one), over the pixels the reference does not mark
``ignore``. Dice = 2 TP / (2 TP + FP + FN) and IoU = TP / (TP + FP + FN) are NaN when both masks are empty;
``mean`` is per KEY the mean over the cases that define it (``nanmean``), ``foreground_mean`` the mean of those
means over the keys. NaN is written as nnU-Net writes it (``NaN``, which Python's ``json`` reads back).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffuseg.files import write_text_atomic
from diffuseg.labels import LabelScheme

SUMMARY_NAME = "summary.json"
METRICS = ("Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref")


def label_keys(scheme: LabelScheme) -> list[str]:
    """nnU-Net's key of each class of ``scheme`` (module docstring), in class order."""
    groups = [c.values for c in scheme.classes] if scheme.classes else [scheme.foreground or (1,)]
    return [str(v[0]) if len(v) == 1 else str(tuple(v)) for v in groups]


@dataclass
class _File:
    prediction: str
    reference: str
    counts: np.ndarray  # (C, 4) int64: TP, FP, FN, TN per class


class SummaryCounts:
    """Confusion counts per prediction file and class, accumulated slice by slice (``add``)."""

    def __init__(self, scheme: LabelScheme) -> None:
        self.scheme = scheme
        self.keys = label_keys(scheme)
        self.files: dict[str, _File] = {}

    def add(
        self, name: str, prediction: str, reference: str, fused: np.ndarray, truth: np.ndarray, valid: np.ndarray
    ) -> None:
        """Add one 2D item of the file ``name``.

        Args:
            name: the prediction's name (case or volume id); items of one name are summed.
            prediction: the prediction file; reference: the reference label file.
            fused: (H, W) the fused atom map; truth: (H, W) the reference's atom map.
            valid: (H, W) bool, the pixels counted (False where the reference is ``ignore``).
        """
        p = self.scheme.class_masks(torch.as_tensor(np.asarray(fused)).long()).numpy() & valid
        r = self.scheme.class_masks(torch.as_tensor(np.asarray(truth)).long()).numpy() & valid
        counts = np.stack(
            [(p & r).sum((1, 2)), (p & ~r).sum((1, 2)), (~p & r).sum((1, 2)), (~p & ~r & valid).sum((1, 2))], axis=1
        ).astype(np.int64)
        entry = self.files.setdefault(name, _File(prediction, reference, np.zeros_like(counts)))
        entry.counts += counts

    def summary(self) -> dict[str, Any]:
        """The ``summary.json`` content (module docstring)."""
        per_case = []
        for _, f in sorted(self.files.items()):
            metrics = {key: _metrics(*(int(v) for v in row)) for key, row in zip(self.keys, f.counts)}
            per_case.append({"metrics": metrics, "prediction_file": f.prediction, "reference_file": f.reference})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the mean of a metric no case defines is NaN
            mean = {
                key: {m: float(np.nanmean([c["metrics"][key][m] for c in per_case])) for m in METRICS}
                for key in self.keys
            }
            foreground = {m: float(np.mean([mean[k][m] for k in self.keys])) for m in METRICS}
        return {"metric_per_case": per_case, "mean": mean, "foreground_mean": foreground}


def _metrics(tp: int, fp: int, fn: int, tn: int) -> dict[str, float | int]:
    union = tp + fp + fn
    return {
        "Dice": 2 * tp / (2 * tp + fp + fn) if union else float("nan"),
        "IoU": tp / union if union else float("nan"),
        "FP": fp,
        "TP": tp,
        "FN": fn,
        "TN": tn,
        "n_pred": tp + fp,
        "n_ref": tp + fn,
    }


def write_summary(counts: SummaryCounts, path: Path) -> Path:
    """Write ``counts.summary()`` to ``path`` atomically; returns ``path``."""
    write_text_atomic(path, json.dumps(counts.summary(), indent=1) + "\n")
    return path
