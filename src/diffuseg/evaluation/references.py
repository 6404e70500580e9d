"""Reference points for the headline: what two trivial predictions score on the same cases.

``empty`` marks no pixel; ``all_foreground`` marks every pixel. With several classes each class is scored on its
own masks, so a class's ``all_foreground`` reference is the map that marks every pixel as that class, and the
mean over classes is the mean of those C maps' scores (there is no single label map that is every class at once).
Both are scored with the functions and the empty-mask policy of the predictions (``metrics.dice``, ``metrics.iou``:
two empty masks score 1), so a model's Dice can be read against them: on data where lesions fill much of the
image, marking everything scores well; on data with many empty slices, marking nothing does.

With several annotators the references also get ``ged`` (unbiased, ``metrics.SampleSet``) with the reference as
every member: its member-member term is 0, so it is ``2 E d(R, Y) - E d(Y, Y')``. With several classes that
``ged`` is the one over classes (``class_metrics.class_set_metrics``) for ``empty``; ``all_foreground`` has only
the per-class values, since no single label map marks every class.

Letters: A annotators, C classes, ``S`` the spatial shape (2D, or 3D for a volume).
"""

from __future__ import annotations

from typing import Any

import torch

from diffuseg.evaluation import class_metrics as CM
from diffuseg.evaluation import metrics as M
from diffuseg.evaluation.case_metrics import class_masks
from diffuseg.labels import LabelScheme

REFERENCES = ("empty", "all_foreground")
"""The reference masks, in the order the report names them."""

REFERENCE_LABELS = {"empty": "empty mask", "all_foreground": "all-foreground mask"}


def reference_metrics(
    annotations: torch.Tensor, scheme: LabelScheme, valid: torch.Tensor | None = None
) -> dict[str, dict[str, float]]:
    """``{reference: metric row}`` of one case (or volume): ``dice``, ``iou`` (and ``ged`` with A >= 2) of each
    reference mask against the annotators, mean over the annotators; with several classes ``"<metric>/<class>"``
    and their mean, as ``case_metrics.case_metrics`` writes them.

    Args:
        annotations: ``(A, 1, *S)`` atom maps of the A >= 1 annotators.
        scheme: the label scheme of the atoms.
        valid: ``(*S)`` bool, the pixels that count (nnU-Net's ignore label left out, the annotations background
            there: ``case_metrics.without_ignored``); the reference masks mark nothing elsewhere. ``None``: all.
    """
    dims = annotations.dim() - 2
    y = class_masks(scheme, torch.as_tensor(annotations)[:, 0], dims)  # (A, C, *S)
    several = y.shape[0] > 1
    out = {}
    for name, fill in zip(REFERENCES, (False, True)):
        mask = torch.full(y.shape[2:], fill) if valid is None or not fill else valid.bool().clone()
        per = {c: _scores(mask, y[:, k], dims, several) for k, c in enumerate(scheme.names)}
        row = CM.combine_classes(per)
        if several and len(scheme.names) > 1:
            if fill:
                del row["ged"]
            else:
                empty = torch.zeros((2, *y.shape[1:]), dtype=torch.bool)
                row["ged"] = CM.class_set_metrics(empty, y, ())["ged"]
        out[name] = row
    return out


def _scores(mask: torch.Tensor, annotations: torch.Tensor, dims: int, ged: bool) -> dict[str, float]:
    """One class: ``mask`` ``(*S)`` against ``annotations`` ``(A, *S)``, both bool."""
    row = {
        "dice": float(M.dice(mask[None], annotations, dims).mean()),
        "iou": float(M.iou(mask[None], annotations, dims).mean()),
    }
    if ged:
        row["ged"] = M.SampleSet(torch.stack([mask, mask]), annotations).ged(unbiased=True)
    return row


class ReferenceAccumulator:
    """One ``metrics.MetricAccumulator`` per reference mask, for the cases and for the volumes."""

    def __init__(self) -> None:
        self.cases = {name: M.MetricAccumulator() for name in REFERENCES}
        self.volumes = {name: M.MetricAccumulator() for name in REFERENCES}

    def add(
        self,
        case: str,
        annotations: torch.Tensor,
        scheme: LabelScheme,
        volume: bool = False,
        valid: torch.Tensor | None = None,
    ) -> None:
        """Score the references of one case (``volume``: one volume) with ``annotations`` ``(A, 1, *S)`` over the
        ``valid`` pixels (``reference_metrics``)."""
        target = self.volumes if volume else self.cases
        for name, row in reference_metrics(annotations, scheme, valid).items():
            target[name].add(case, row)

    def rows(self, name: str, volume: bool = False) -> list[dict]:
        return (self.volumes if volume else self.cases)[name].cases

    def results(self, keep: set[str] | None = None) -> dict[str, Any]:
        """``{reference: {"summary": ..., "volume_summary": ...}}`` as ``results.json["references"]`` holds
        them, over every case and volume, or only those whose id is in ``keep``."""
        return {
            name: {
                "summary": summarize_rows(self.cases[name].cases, keep),
                "volume_summary": summarize_rows(self.volumes[name].cases, keep),
            }
            for name in REFERENCES
        }


def summarize_rows(rows: list[dict], keep: set[str] | None = None) -> dict[str, dict]:
    """``metrics.MetricAccumulator.summary`` of the metric ``rows`` (``{"case": id, metric: value}``) whose id
    is in ``keep`` (all when ``keep`` is None)."""
    acc = M.MetricAccumulator()
    for row in rows:
        if keep is None or row["case"] in keep:
            acc.add(row["case"], {k: v for k, v in row.items() if k != "case"})
    return acc.summary()
