"""``diffuseg evaluate PRED GT``: score a prediction folder against a dataset and write ``results.json``.

PRED is what ``diffuseg predict`` writes: the fused mask ``<case>.<ext>`` per case, optionally an
uncertainty map ``<case>_uncertainty.<ext>`` and the samples under ``samples/`` (``samples/<case>/*`` or
``samples/<case>_<k>.<ext>``). A 3D NIfTI prediction ``<volume>.nii.gz`` stands for every 2D slice of that
volume in GT. GT is any layout ``data.formats.open_dataset`` reads, with one or several annotators.
Cases are matched by id; those missing on either side are listed and left out. A folder whose prediction
manifests (``inference.manifest``) say the run is unfinished is refused.

``results.json`` (see docs/evaluation.md): ``{"cases": [{"case", "dice", "iou", "hd95", "ged", ...}],
"summary": {metric: {"mean", "std", "median", "min", "max", "n", "n_undefined"}}, "volumes": [...],
"volume_summary": {...}, "missing": {...}, "pred", "gt", "layout", "spacing_unit"}``, plus ``results.csv``
with one row per case. Both are written atomically.

Several classes (``data.classes``: ``--classes``, else ``PRED/config.yaml``, else the classes the dataset
declares): predictions and ground truth are label maps in the dataset's own values, scored per class
(``evaluation.class_metrics``): ``"<metric>/<class>"`` for every class and ``"<metric>"`` their mean over the
classes (NaN classes left out); GED, diversity and Hungarian IoU use ``d = 1 - mean IoU over the classes present
in either mask``; calibration is pooled per class. ``results.json`` then also holds ``classes`` (the scheme),
``class_names`` and ``regions`` (True when the classes overlap: the per-class metrics are region metrics).
Binary runs give exactly the keys and values they always did.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffuseg.config import EvalConfig
from diffuseg.data.formats import open_dataset
from diffuseg.data.formats.files import (
    HDF5_SUFFIXES,
    LOSSY_SUFFIXES,
    is_image_file,
    label_values,
    natural_key,
    read_file,
    stem_of,
    suffix_of,
)
from diffuseg.data.transforms import single_thread
from diffuseg.errors import DatasetError, UserError
from diffuseg.evaluation import class_metrics as CM
from diffuseg.evaluation import metrics as M
from diffuseg.evaluation.labelmaps import (
    add_class_calibration,
    class_masks,
    read_label_map,
    scheme_classes,
)
from diffuseg.files import write_text_atomic
from diffuseg.labels import LabelScheme

UNCERTAINTY_SUFFIX = "_uncertainty"
_SAMPLE_INDEX = re.compile(r"^(.*?)[_-](?:sample|s)?[_-]?(\d+)$")


@dataclass
class PredictionFiles:
    """The files of one predicted case: fused mask, uncertainty map (optional) and samples (maybe none)."""

    fused: Path
    uncertainty: Path | None = None
    samples: list[Path] = field(default_factory=list)


def find_predictions(pred_dir: str | os.PathLike) -> dict[str, PredictionFiles]:
    """Index a prediction folder by case id (the fused mask's stem). ``UserError`` when it has none."""
    root = Path(pred_dir)
    if not root.is_dir():
        raise UserError(f"{root}: prediction folder not found")
    top = sorted(p for p in root.iterdir() if _is_prediction_file(p))
    found = {stem_of(p): PredictionFiles(p) for p in top if not stem_of(p).endswith(UNCERTAINTY_SUFFIX)}
    if not found:
        raise UserError(f"{root}: no predicted masks here (expected <case>.png, <case>.nii.gz, ... as predict writes)")
    for p in top:
        stem = stem_of(p)
        if stem.endswith(UNCERTAINTY_SUFFIX) and stem[: -len(UNCERTAINTY_SUFFIX)] in found:
            found[stem[: -len(UNCERTAINTY_SUFFIX)]].uncertainty = p
    samples_dir = root / "samples"
    if samples_dir.is_dir():
        for p in sorted(samples_dir.rglob("*"), key=lambda q: natural_key(str(q))):
            if not _is_prediction_file(p):
                continue
            case = _sample_case(p, samples_dir, found)
            if case is None:
                raise UserError(f"{p}: sample of no predicted case (expected samples/<case>/... or <case>_<k>)")
            found[case].samples.append(p)
    return found


def _is_prediction_file(path: Path) -> bool:
    """An image file, or an HDF5 file (``predict`` writes HDF5 for SSL4MIS input)."""
    return is_image_file(path) or (path.is_file() and suffix_of(path) in HDF5_SUFFIXES)


def check_complete(pred_dir: Path) -> None:
    """``UserError`` when ``pred_dir``'s prediction manifests say the run is unfinished (a folder without
    manifests, e.g. predictions from elsewhere, passes)."""
    from diffuseg.inference.manifest import completeness

    state = completeness(pred_dir)
    if state is not None and state[0] < state[1]:
        raise UserError(
            f"{pred_dir}: the prediction run is incomplete ({state[0]} of {state[1]} cases done, see its "
            "manifest*.json); rerun the same predict command (every part of it) to finish it, then evaluate"
        )


def _sample_case(path: Path, samples_dir: Path, known: dict[str, PredictionFiles]) -> str | None:
    rel = path.relative_to(samples_dir)
    if len(rel.parts) > 1 and rel.parts[0] in known:
        return rel.parts[0]
    stem = stem_of(path)
    candidates = [c for c in known if stem.startswith(c) and re.fullmatch(r"[_.-].*", stem[len(c) :])]
    if candidates:
        return max(candidates, key=len)
    m = _SAMPLE_INDEX.match(stem)
    return m.group(1) if m and m.group(1) in known else None


def _read_mask(path: Path) -> np.ndarray:
    data = read_file(path, as_mask=True)
    array = data.array
    if array.ndim == 3 and array.shape[2] == 1 and data.affine is not None:
        array = array[:, :, 0]
    if suffix_of(path) in LOSSY_SUFFIXES:  # JPEG is never exactly binary: threshold at half, as the readers do
        return array >= (128 if array.dtype == np.uint8 else 0.5)
    nonzero = [v for v in label_values(array) if v != 0]
    if len(nonzero) > 1 or (array.dtype.kind == "f" and nonzero and nonzero != [1]):
        shown = ", ".join(f"{v:g}" for v in nonzero[:5]) + (", ..." if len(nonzero) > 5 else "")
        raise UserError(
            f"{path}: predicted mask is not binary (non-zero values {shown}); evaluate scores 0/1 masks "
            "as `diffuseg predict` writes them, not probability or label maps"
        )
    return array != 0


class _PredVolumes:
    """The last few decoded prediction files, so the slices of one predicted volume (its fused mask and
    every sample) decode each file once. ``read``: path -> array (``_read_mask``, or ``labelmaps.read_label_map``)."""

    def __init__(self, size: int = 2, read=_read_mask) -> None:
        self.size = size
        self.read = read
        self.items: OrderedDict[Path, np.ndarray] = OrderedDict()

    def get(self, path: Path) -> np.ndarray:
        if path in self.items:
            self.items.move_to_end(path)
            return self.items[path]
        self.items[path] = self.read(path)
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return self.items[path]


def case_metrics(
    fused: torch.Tensor,
    annotations: torch.Tensor,
    samples: torch.Tensor | None = None,
    spacing: Sequence[float] | None = None,
    ged_sizes: Sequence[int] = (4, 16),
    bins: int = 10,
    percentile: float = 95.0,
) -> dict[str, float]:
    """Every metric that applies to one 2D (or 3D) case.

    ``fused`` ``(*S)``, ``annotations`` ``(K, *S)`` with K >= 1, ``samples`` ``(N, *S)`` or None. With one
    annotator ``dice``/``iou``/``hd95`` compare the fused mask with it; with several they are means over
    the annotators (each as the reference; NaN HD95s left out) and ``*_majority`` compare with the
    majority mask. The distribution metrics (GED, diversity, HM-IoU, CI, NCC, ECE) need samples.
    """
    dims = fused.dim()
    k = annotations.shape[0]
    out: dict[str, float] = {}
    per_dice = M.dice(fused[None], annotations, dims)
    out["dice"] = float(per_dice.mean())
    out["iou"] = float(M.iou(fused[None], annotations, dims).mean())
    hds = [M.hd95(fused, a, spacing, percentile=percentile) for a in annotations]
    finite = [h for h in hds if not math.isnan(h)]
    out["hd95"] = float(np.mean(finite)) if finite else math.nan
    if k > 1:
        majority = M.majority(annotations)
        out |= M.fused_dice(fused, annotations)
        del out["dice_annotator_mean"]  # the same number as "dice"
        out["iou_majority"] = float(M.iou(fused, majority, dims))
        out["hd95_majority"] = M.hd95(fused, majority, spacing, percentile=percentile)
    if samples is None or len(samples) == 0:
        return out
    sets = M.SampleSet(samples, annotations)
    out["samples"] = len(samples)
    out["sample_dice"] = float(sets.dice_sy().mean())
    out["ged"] = sets.ged(unbiased=True)
    out["ged_biased"] = sets.ged(unbiased=False)
    for n in ged_sizes:
        if len(samples) >= n:
            out[f"ged_{n}"] = sets.ged_at(n, unbiased=True)
            out[f"ged_biased_{n}"] = sets.ged_at(n, unbiased=False)
    out["diversity"] = sets.diversity()
    out["hungarian_iou"] = sets.hungarian_iou()
    out |= sets.collective_insight()
    out["ncc"] = M.ncc(samples, annotations)
    out["ece"] = M.ece(samples, annotations, bins)
    out["ece_foreground"] = M.ece(samples, annotations, bins, foreground_only=True)
    return out


def class_case_metrics(
    scheme: LabelScheme,
    fused: torch.Tensor,
    annotations: torch.Tensor,
    samples: torch.Tensor | None = None,
    spacing: Sequence[float] | None = None,
    ged_sizes: Sequence[int] = (4, 16),
    bins: int = 10,
    percentile: float = 95.0,
) -> dict[str, float]:
    """``case_metrics`` of every class of ``scheme``, for one 2D (or 3D) case of atom maps: ``fused`` ``(*S)``,
    ``annotations`` ``(A, *S)``, ``samples`` ``(N, *S)`` or None.

    Returns ``"<metric>/<class>"`` per class and ``"<metric>"`` the mean over the classes (``class_metrics.
    combine_classes``: NaN classes left out); with samples, GED (all sizes), diversity and Hungarian IoU are
    those of ``class_metrics.class_set_metrics``: ``d = 1 - mean IoU over the classes present in either mask``.
    Overlapping regions are scored on their region masks (region metrics). One class: exactly ``case_metrics``.
    """
    dims = fused.dim()
    fused_cm = class_masks(scheme, fused, dims)  # (K, *S)
    ann_cm = class_masks(scheme, annotations, dims)  # (A, K, *S)
    s_cm = None if samples is None or len(samples) == 0 else class_masks(scheme, samples, dims)
    per = {
        name: case_metrics(
            fused_cm[k], ann_cm[:, k], None if s_cm is None else s_cm[:, k], spacing, ged_sizes, bins, percentile
        )
        for k, name in enumerate(scheme.names)
    }
    row = CM.combine_classes(per)
    if s_cm is not None and len(scheme.names) > 1:
        row |= CM.class_set_metrics(s_cm, ann_cm, ged_sizes)
    return row


@dataclass
class _Volume:
    spacing: tuple[float, ...] | None
    slices: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # z -> (fused, masks)


def evaluate(
    pred: str | os.PathLike,
    gt: str | os.PathLike,
    out: str | os.PathLike | None = None,
    layout: str = "auto",
    *,
    eval_config: EvalConfig | None = None,
    quiet: bool = False,
    cases: Collection[str] | None = None,
    classes: Sequence | str | None = None,
) -> dict[str, Any]:
    """Score PRED against GT, write ``results.json`` (default ``PRED/results.json``) and ``results.csv``
    beside it, print a summary table, and return the results dict.

    ``eval_config`` (default ``EvalConfig()``) sets the GED sample counts, the HD percentile and the
    calibration bins. ``cases``: score only these ground-truth case ids (``data.splits.split_cases``,
    ``--split``), so cases outside them are not listed as missing. ``classes``: see ``scheme_classes``
    (default: ``PRED/config.yaml``'s ``data.classes``)."""
    from diffuseg.data.splits import select_cases

    cfg = eval_config or EvalConfig()
    ged_sizes, bins, percentile = cfg.ged_samples, cfg.calibration_bins, cfg.hd95_percentile
    check_complete(Path(pred))
    predictions = find_predictions(pred)
    declared, foreground = scheme_classes(pred, classes)
    reader = select_cases(open_dataset(gt, layout, foreground, declared), cases, str(gt))
    scheme: LabelScheme = reader.scheme
    if len(reader) == 0:
        raise UserError(f"{gt}: no ground-truth cases found")
    gt_ids = {e.case_id for e in reader.entries}
    volume_ids = {e.volume_id for e in reader.entries if e.volume_id}
    matched = [(i, e) for i, e in enumerate(reader.entries) if e.case_id in predictions or e.volume_id in predictions]
    if not matched:
        raise UserError(
            f"no case of {pred} matches one of {gt}: predictions are named e.g. {_few(predictions)}, "
            f"ground-truth cases e.g. {_few(gt_ids)}"
        )
    if not any(e.masks for _, e in matched):
        raise UserError(f"{gt}: the ground truth has no masks (an unlabelled image folder?)")
    missing_pred = sorted(
        e.case_id for e in reader.entries if e.case_id not in predictions and e.volume_id not in predictions
    )
    missing_gt = sorted(set(predictions) - gt_ids - volume_ids)

    acc = M.MetricAccumulator()
    names = scheme.names
    calibration = {
        "all": torch.zeros(bins, 3, dtype=torch.float64),
        "foreground": torch.zeros(bins, 3, dtype=torch.float64),
    }
    if not scheme.binary:
        calibration |= {
            f"{kind}/{n}": torch.zeros(bins, 3, dtype=torch.float64) for kind in ("all", "foreground") for n in names
        }
    volumes: dict[str, _Volume] = {}
    read = _read_mask if scheme.binary else (lambda path: read_label_map(path, scheme))
    cache = _PredVolumes(size=2 + max(len(f.samples) for f in predictions.values()), read=read)
    spacing_known = False
    problems: list[str] = []  # every unreadable, non-binary or wrongly sized prediction, reported at once
    with single_thread():  # many small tensor ops: one thread is several times faster than two
        for index, entry in matched:
            case = reader.load(index)
            if case.annotators == 0:
                missing_gt.append(case.case_id)
                continue
            try:
                fused, samples = _load_prediction(predictions, case, entry.volume_id, entry.slice_index, cache)
            except UserError as err:
                problems.append(str(err))
                continue
            if problems:  # the run fails anyway: only check the remaining files
                continue
            spacing = case.geometry.spacing[:2] if case.geometry.spacing else None
            spacing_known |= spacing is not None
            sample_t = None if samples is None else torch.from_numpy(samples)
            if scheme.binary:
                masks = case.masks.bool()
                values = case_metrics(torch.from_numpy(fused), masks, sample_t, spacing, ged_sizes, bins, percentile)
                if sample_t is not None:
                    _add_calibration(calibration, sample_t, masks, bins)
            else:
                masks = case.masks
                fused_t = torch.from_numpy(fused)
                values = class_case_metrics(scheme, fused_t, masks, sample_t, spacing, ged_sizes, bins, percentile)
                if sample_t is not None:
                    add_class_calibration(calibration, scheme, sample_t, masks, bins)
            acc.add(case.case_id, values)
            if entry.volume_id is not None and entry.slice_index is not None:
                vol = volumes.setdefault(entry.volume_id, _Volume(case.geometry.spacing))
                vol.slices[entry.slice_index] = (fused, masks.numpy())
        if problems:
            raise DatasetError(str(pred), problems)
        volume_rows = _volume_metrics(volumes, percentile, scheme)

    missing_gt = sorted(set(missing_gt))
    vol_acc = M.MetricAccumulator()
    for row in volume_rows:
        vol_acc.add(row["case"], {k: v for k, v in row.items() if k != "case"})
    results: dict[str, Any] = {
        "cases": [_json_row(r) for r in acc.cases],
        "summary": acc.summary(),
        "volumes": [_json_row(r) for r in vol_acc.cases],
        "volume_summary": vol_acc.summary(),
        "calibration": {
            name: {"ece": _finite(M.ece_from_bins(sums)), "bins": sums.tolist()} for name, sums in calibration.items()
        }
        if any(sums[:, 0].sum() > 0 for sums in calibration.values())
        else {},
        "missing": {"predictions": missing_pred, "ground_truth": missing_gt},
        "pred": str(Path(pred).resolve()),
        "gt": str(Path(gt).resolve()),
        "layout": getattr(reader, "layout", layout),
        "annotators": reader.annotators,
        "spacing_unit": "mm" if spacing_known else "pixel",
        "ged_sizes": list(ged_sizes),
        "calibration_bins": bins,
        "hd_percentile": percentile,
    }
    if not scheme.binary:
        results |= {"classes": scheme.to_dict()["classes"], "class_names": list(names), "regions": not scheme.exclusive}
    target = Path(out) if out is not None else Path(pred) / "results.json"
    write_results(results, target)
    if not quiet:
        print(format_summary(results, target))
    return results


def _add_calibration(sums: dict[str, torch.Tensor], samples: torch.Tensor, masks: torch.Tensor, bins: int) -> None:
    """Pool the calibration bins of one case (sample frequency vs annotator frequency), all pixels and
    the pixels any sample or annotator marks."""
    s, y = M.as_mask(samples), M.as_mask(masks)
    p, q = s.double().mean(0), y.double().mean(0)
    sums["all"] += M.calibration_bins(p, q, bins)
    keep = s.any(0) | y.any(0)
    sums["foreground"] += M.calibration_bins(p[keep], q[keep], bins)


def _load_prediction(
    predictions: dict[str, PredictionFiles], case, volume_id: str | None, slice_index: int | None, cache: _PredVolumes
) -> tuple[np.ndarray, np.ndarray | None]:
    """The fused mask ``(H, W)`` and samples ``(N, H, W)`` (or None) of ``case``, sliced out of a predicted
    volume when the prediction is one; sizes checked against the ground truth."""
    sliced = case.case_id not in predictions
    files = predictions[volume_id] if sliced else predictions[case.case_id]
    z = slice_index if sliced else None
    fused = _plane(cache.get(files.fused), files.fused, z)
    _check_size(files.fused, fused.shape, case)
    if not files.samples:
        return fused, None
    samples = []
    for p in files.samples:
        samples.append(_plane(cache.get(p) if sliced else cache.read(p), p, z))
        _check_size(p, samples[-1].shape, case)
    return fused, np.stack(samples)


def _plane(array: np.ndarray, path: Path, slice_index: int | None) -> np.ndarray:
    """Slice ``slice_index`` of a predicted volume: along the first axis for HDF5 (D,H,W), else the last (NIfTI)."""
    if slice_index is None:
        return array
    axis = 0 if suffix_of(path) in HDF5_SUFFIXES else 2
    if array.ndim != 3 or slice_index >= array.shape[axis]:
        raise UserError(f"{path}: has no slice {slice_index} (shape {'x'.join(map(str, array.shape))})")
    return np.ascontiguousarray(np.take(array, slice_index, axis=axis))


def _check_size(path: Path, shape: tuple[int, ...], case) -> None:
    want = tuple(case.masks.shape[1:])
    if tuple(shape) != want:
        source = case.geometry.sources[0] if case.geometry.sources else case.case_id
        raise UserError(
            f"{path}: size {'x'.join(map(str, shape))} differs from the ground truth's "
            f"{'x'.join(map(str, want))} ({source})"
        )


def _volume_metrics(
    volumes: dict[str, _Volume], percentile: float, scheme: LabelScheme | None = None
) -> list[dict[str, float | str]]:
    """3D Dice, IoU and HD95 (mm, with the volume's spacing) per volume whose slices were all scored; per class
    and their mean over classes (``class_case_metrics``) for a non-binary ``scheme`` (ACDC reports these)."""
    rows: list[dict[str, float | str]] = []
    for vid, vol in sorted(volumes.items()):
        zs = sorted(vol.slices)
        if zs != list(range(zs[0], zs[0] + len(zs))):
            continue  # gaps: a 3D surface distance over missing slices would be wrong
        fused = torch.from_numpy(np.stack([vol.slices[z][0] for z in zs], axis=-1))
        k = min(vol.slices[z][1].shape[0] for z in zs)
        masks = torch.from_numpy(np.stack([vol.slices[z][1][:k] for z in zs], axis=-1))
        spacing = vol.spacing[:3] if vol.spacing and len(vol.spacing) >= 3 else None
        if scheme is None or scheme.binary:
            values = case_metrics(fused, masks, None, spacing, percentile=percentile)
        else:
            values = class_case_metrics(scheme, fused, masks, None, spacing, percentile=percentile)
        rows.append({"case": vid, "slices": len(zs), **values})
    return rows


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _json_row(row: dict) -> dict:
    return {k: _finite(v) for k, v in row.items()}


def _few(ids, n: int = 3) -> str:
    items = sorted(ids)[:n]
    return ", ".join(items) + (", ..." if len(ids) > n else "")


def write_results(results: dict[str, Any], path: Path) -> None:
    """``results.json`` at ``path`` and ``results.csv`` beside it, each written atomically."""
    write_text_atomic(path, json.dumps(results, indent=1, allow_nan=False) + "\n")
    columns: dict[str, None] = {}
    for row in results["cases"]:
        columns.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in results["cases"]:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    write_text_atomic(path.with_suffix(".csv"), buf.getvalue())


def format_summary(results: dict[str, Any], path: Path | None = None) -> str:
    """A plain-text table: one line per metric with mean, std, median and how many cases defined it."""
    lines = [f"{len(results['cases'])} case(s) scored"]
    missing = results["missing"]
    for side, label in (("predictions", "without a prediction"), ("ground_truth", "without ground truth")):
        if missing[side]:
            lines.append(f"{len(missing[side])} case(s) {label}: {_few(missing[side], 5)}")
    for title, summary in (("per case", results["summary"]), ("per volume (3D)", results["volume_summary"])):
        if not summary:
            continue
        lines.append(f"\n{title:<22}{'mean':>9}{'std':>9}{'median':>9}{'n':>7}{'undef.':>8}")
        for name, s in summary.items():
            if s["mean"] is None:
                lines.append(f"{name:<22}{'-':>9}{'-':>9}{'-':>9}{s['n']:>7}{s['n_undefined']:>8}")
            else:
                lines.append(
                    f"{name:<22}{s['mean']:>9.4f}{s['std']:>9.4f}{s['median']:>9.4f}{s['n']:>7}{s['n_undefined']:>8}"
                )
    for name, cal in results.get("calibration", {}).items():
        if cal["ece"] is not None:
            lines.append(f"pooled ECE over every case's pixels ({name}): {cal['ece']:.4f}")
    if path is not None:
        lines.append(f"\nwrote {path} and {path.with_suffix('.csv')}")
    return "\n".join(lines)
