"""``diffuseg evaluate PRED GT``: score a prediction folder against a dataset and write ``results.json``.

PRED is a prediction folder (``inference.outputs``: what ``diffuseg predict`` writes, or the looser layouts
``find_predictions`` accepts). A 3D prediction ``<volume>.<ext>`` stands for every 2D slice of that volume in
GT. GT is any layout ``data.formats.open_dataset`` reads, with one or several annotators, or a folder of label
files alone (nnU-Net's ``labelsTs``; ``data.formats.open_ground_truth``). Cases are matched by id; those missing
on either side are listed and left out. A folder whose prediction manifests (``inference.manifest``) say the run
is unfinished is refused. Each case is scored by
``case_metrics.case_metrics``; volumes whose slices were all scored are scored again in 3D.

``results.json`` (see docs/evaluation.md): ``{"cases": [{"case", "dice", "iou", "hd95", "ged", ...}],
"summary": {metric: {"mean", "std", "median", "min", "max", "n", "n_undefined"}}, "volumes": [...],
"volume_summary": {...}, "calibration": {...}, "uncertainty": {...}, "references": {...}, "missing": {...}, "pred",
"gt", "layout", "spacing_unit", ...}`` (``uncertainty``: ``uncertainty_metrics.uncertainty_results``, pooled over
the cases), plus ``results.csv`` with one row per case and nnU-Net's ``summary.json`` (``nnunet_summary``: Dice,
IoU and counts per prediction file and label). All are written atomically, beside each other. ``references``:
what the empty and the all-foreground mask score on the same cases and volumes (``evaluation.references``). When
the dataset has groups (BUSI's class folders), ``groups`` holds per-group summaries and ``results_groups.csv``
their rows (``evaluation.groups``).

The classes (``scheme_classes``): ``--classes``, else ``PRED/config.yaml``'s ``data.classes``, else those the
dataset declares; none means binary. With declared classes, predictions and ground truth are label maps in
the dataset's own values, rows hold ``"<metric>/<class>"`` too, and ``results.json`` also holds ``classes``
(the scheme), ``class_names`` and ``regions`` (True when the classes overlap: the per-class metrics are
region metrics).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffuseg.config import EvalConfig
from diffuseg.data.formats import open_ground_truth
from diffuseg.data.transforms import single_thread
from diffuseg.errors import DatasetError, UserError
from diffuseg.evaluation import metrics as M
from diffuseg.evaluation.case_metrics import (
    add_calibration,
    calibration_sums,
    case_metrics,
    class_masks,
    without_ignored,
)
from diffuseg.evaluation.groups import GROUPS_CSV, group_of_cases, group_results, groups_csv
from diffuseg.evaluation.nnunet_summary import SUMMARY_NAME, SummaryCounts, write_summary
from diffuseg.evaluation.references import REFERENCE_LABELS, ReferenceAccumulator
from diffuseg.evaluation.uncertainty_metrics import UncertaintyPool, uncertainty_lines, uncertainty_results
from diffuseg.files import write_text_atomic
from diffuseg.inference.outputs import CONFIG_NAME, PredictionFiles, find_predictions, plane, read_mask
from diffuseg.labels import ClassSpec, LabelScheme, label_scheme

RESULTS_NAME = "results.json"


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


class _PredVolumes:
    """The last few decoded prediction files, so the slices of one predicted volume (its fused mask and
    every sample) decode each file once. ``read``: path -> atom map (``outputs.read_mask`` of the scheme)."""

    def __init__(self, read: Callable[[Path], np.ndarray], size: int = 2) -> None:
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


@dataclass
class _Volume:
    spacing: tuple[float, ...] | None  # in-plane, then through-plane (the slices stacked last)
    # z -> (fused, annotations, the pixels that count or None: all; ``case_metrics.without_ignored``)
    slices: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = field(default_factory=dict)


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
    """Score PRED against GT, write ``results.json``, and ``results.csv`` and ``summary.json`` beside it, print a
    summary table (unless ``quiet``), and return the results dict.

    Args:
        pred: the prediction folder.
        gt: the ground truth, any layout ``data.formats.open_dataset`` reads, or a folder of label files.
        out: where ``results.json`` goes (default ``PRED/results.json``); ``results.csv`` beside it.
        layout: the ground truth's layout (``auto``: detected).
        eval_config: GED sample counts, HD percentile, calibration bins (default ``EvalConfig()``).
        quiet: print nothing.
        cases: score only these ground-truth case ids (``data.splits.split_cases``, ``--split``), so cases
            outside them are not listed as missing.
        classes: the classes to read with (``scheme_classes``; default ``PRED/config.yaml``'s).
    """
    from diffuseg.data.splits import select_cases

    cfg = eval_config or EvalConfig()
    check_complete(Path(pred))
    predictions = find_predictions(pred)
    declared, foreground = scheme_classes(pred, classes)
    reader = select_cases(open_ground_truth(gt, layout, foreground, declared), cases, str(gt))
    if reader.problems:  # a ground-truth file left out (unreadable, linked from outside, ...) is no silent skip
        raise DatasetError(str(gt), reader.problems)
    scheme: LabelScheme = reader.scheme
    matched, missing_pred, missing_gt = _match(predictions, reader, pred, gt)

    acc = M.MetricAccumulator()
    nnunet = SummaryCounts(scheme)
    references = ReferenceAccumulator()
    case_groups: dict[str, str] = {}  # case id -> its dataset group (BUSI's class folder), when it has one
    volume_groups: dict[str, str] = {}
    calibration = calibration_sums(scheme, cfg.calibration_bins)
    pool = UncertaintyPool(scheme.names)
    volumes: dict[str, _Volume] = {}
    cache = _PredVolumes(partial(read_mask, scheme=scheme), size=2 + max(len(f.samples) for f in predictions.values()))
    spacing_known = False
    problems: list[str] = []  # every unreadable, non-binary or wrongly sized prediction, reported at once
    with single_thread():  # many small tensor ops: one thread is faster than two
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
            spacing = case.geometry.plane_spacing()  # the slice's own two axes
            spacing_known |= spacing is not None
            members = None if samples is None else torch.from_numpy(samples)[:, None]  # (K, 1, H, W)
            masks, fused_t, members, valid = without_ignored(scheme, case.masks, torch.from_numpy(fused), members)
            fused = fused_t.numpy()
            values = case_metrics(members, fused_t[None], masks[:, None], scheme, cfg, spacing)
            if members is not None:
                add_calibration(calibration, scheme, members[:, 0], masks, cfg.calibration_bins)
                pool.add(*(class_masks(scheme, x) for x in (members[:, 0], fused_t, masks)))
            acc.add(case.case_id, values)
            references.add(case.case_id, masks[:, None], scheme, valid=valid)
            _add_counts(nnunet, predictions, case, entry.volume_id, fused, masks[0].numpy(), valid)
            if case.geometry.category:
                case_groups[case.case_id] = case.geometry.category
            if entry.volume_id is not None and entry.slice_index is not None:
                vol = volumes.setdefault(entry.volume_id, _Volume(case.geometry.volume_spacing()))
                vol.slices[entry.slice_index] = (fused, masks.numpy(), None if valid is None else valid.numpy())
                if case.geometry.category:
                    volume_groups[entry.volume_id] = case.geometry.category
        if problems:
            raise DatasetError(str(pred), problems)
        volume_rows = _volume_metrics(volumes, scheme, cfg, references)

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
        "uncertainty": uncertainty_results(acc.cases, pool, cfg.calibration_bins),
        "references": references.results(),
        "missing": {"predictions": missing_pred, "ground_truth": sorted(set(missing_gt))},
        "pred": str(Path(pred).resolve()),
        "gt": str(Path(gt).resolve()),
        "layout": getattr(reader, "layout", layout),
        "annotators": reader.annotators,
        "spacing_unit": "mm" if spacing_known else "pixel",
        "ged_sizes": list(cfg.ged_samples),
        "calibration_bins": cfg.calibration_bins,
        "hd_percentile": cfg.hd95_percentile,
    }
    if not scheme.binary:
        results |= {
            "classes": scheme.to_dict()["classes"],
            "class_names": list(scheme.names),
            "regions": not scheme.exclusive,
        }
    if case_groups:
        results["groups"] = group_results(case_groups, volume_groups, results["cases"], results["volumes"], references)
    target = Path(out) if out is not None else Path(pred) / RESULTS_NAME
    write_results(results, target)
    write_summary(nnunet, target.parent / SUMMARY_NAME)
    if not quiet:
        print(format_summary(results, target))
    return results


def _match(predictions: dict[str, PredictionFiles], reader, pred, gt) -> tuple[list, list[str], list[str]]:
    """The ground-truth entries with a prediction (``(index, entry)``), the case ids without one, and the
    predictions without ground truth. ``UserError`` when nothing matches or the ground truth has no masks."""
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
    return matched, missing_pred, sorted(set(predictions) - gt_ids - volume_ids)


def _load_prediction(
    predictions: dict[str, PredictionFiles], case, volume_id: str | None, slice_index: int | None, cache: _PredVolumes
) -> tuple[np.ndarray, np.ndarray | None]:
    """The fused mask ``(H, W)`` and members ``(K, H, W)`` (or None) of ``case``, atom maps, sliced out of a
    predicted volume when the prediction is one; sizes checked against the ground truth."""
    sliced = case.case_id not in predictions
    files = predictions[volume_id] if sliced else predictions[case.case_id]
    z = slice_index if sliced else None
    fused = plane(cache.get(files.fused), files.fused, z)
    _check_size(files.fused, fused.shape, case)
    if not files.samples:
        return fused, None
    samples = []
    for p in files.samples:
        samples.append(plane(cache.get(p) if sliced else cache.read(p), p, z))
        _check_size(p, samples[-1].shape, case)
    return fused, np.stack(samples)


def _add_counts(
    counts: SummaryCounts, predictions: dict[str, PredictionFiles], case, volume_id, fused, truth, valid
) -> None:
    """Add a scored 2D item (``fused`` against annotator 0's ``truth``, over ``valid`` pixels or all when None) to
    nnU-Net's summary counts, under its prediction file's name."""
    name = case.case_id if case.case_id in predictions else volume_id
    reference = case.geometry.mask_sources[0][0] if case.geometry.mask_sources else ""
    keep = np.ones(fused.shape, dtype=bool) if valid is None else valid.numpy()
    counts.add(name, str(predictions[name].fused), reference, fused, truth, keep)


def _check_size(path: Path, shape: tuple[int, ...], case) -> None:
    want = tuple(case.masks.shape[1:])
    if tuple(shape) != want:
        source = case.geometry.sources[0] if case.geometry.sources else case.case_id
        raise UserError(
            f"{path}: size {'x'.join(map(str, shape))} differs from the ground truth's "
            f"{'x'.join(map(str, want))} ({source})"
        )


def _volume_metrics(
    volumes: dict[str, _Volume], scheme: LabelScheme, cfg: EvalConfig, references: ReferenceAccumulator
) -> list[dict[str, float | str]]:
    """The 3D metrics (mm, with the volume's spacing) of each volume whose slices were all scored, per class
    and their mean for several classes (ACDC reports these); the reference masks of those volumes go to
    ``references``."""
    rows: list[dict[str, float | str]] = []
    for vid, vol in sorted(volumes.items()):
        zs = sorted(vol.slices)
        if zs != list(range(zs[0], zs[0] + len(zs))):
            continue  # gaps: a 3D surface distance over missing slices would be wrong
        fused = torch.from_numpy(np.stack([vol.slices[z][0] for z in zs], axis=-1))
        a = min(vol.slices[z][1].shape[0] for z in zs)
        masks = torch.from_numpy(np.stack([vol.slices[z][1][:a] for z in zs], axis=-1))
        spacing = vol.spacing[:3] if vol.spacing and len(vol.spacing) >= 3 else None
        values = case_metrics(None, fused[None], masks[:, None], scheme, cfg, spacing)
        rows.append({"case": vid, "slices": len(zs), **values})
        valid = None
        if any(vol.slices[z][2] is not None for z in zs):
            planes = [vol.slices[z][2] for z in zs]
            valid = torch.from_numpy(np.stack([np.ones(fused.shape[:2], bool) if v is None else v for v in planes], -1))
        references.add(vid, masks[:, None], scheme, volume=True, valid=valid)
    return rows


def scheme_classes(pred: str | os.PathLike, classes: Sequence | str | None) -> tuple[tuple, tuple[int, ...]]:
    """The ``(classes, foreground)`` to read PRED and GT with: ``classes`` when given (``ClassSpec``s, mappings, or
    the ``--classes`` text ``parse_classes`` reads), else ``data.classes`` and ``data.foreground`` of
    ``PRED/config.yaml`` (the resolved config ``predict`` writes), else ``((), ())``: binary, unless the dataset
    declares classes itself (nnU-Net ``dataset.json``, SSL4MIS label values). ``UserError`` when ``classes``
    contradict those of ``PRED/config.yaml`` (the predictions' label values would be scored under other names)."""
    path = Path(pred) / CONFIG_NAME
    own = _config_classes(path) if path.is_file() else None
    if not classes:
        return own or ((), ())
    given = parse_classes(classes) if isinstance(classes, str) else tuple(classes)
    if own is not None:
        given_scheme, own_scheme = label_scheme(given, (), "--classes"), label_scheme(*own, where=str(path))
        if not given_scheme.same_classes(own_scheme):
            raise UserError(
                f"--classes {_describe_scheme(given_scheme)} contradicts the classes the predictions were made with "
                f"({path}: {_describe_scheme(own_scheme)}); leave --classes out or make it match"
            )
    return given, ()


def _config_classes(path: Path) -> tuple[tuple, tuple[int, ...]]:
    """``data.classes`` and ``data.foreground`` of a prediction folder's ``config.yaml``."""
    import yaml

    try:
        data = (yaml.safe_load(path.read_text()) or {}).get("data") or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError) as err:
        raise UserError(f"{path}: unreadable config ({err}); pass the classes with --classes") from None
    found = data.get("classes") or ()
    foreground = data.get("foreground") or ()
    if not isinstance(found, (list, tuple)) or not isinstance(foreground, (list, tuple)):
        raise UserError(f"{path}: data.classes and data.foreground must be lists; pass the classes with --classes")
    try:
        return tuple(found), tuple(int(v) for v in foreground)
    except (TypeError, ValueError):
        raise UserError(f"{path}: data.foreground must be label values; pass the classes with --classes") from None


def _describe_scheme(scheme: LabelScheme) -> str:
    """``RV=1,Myo=2,LV=3`` (as ``--classes`` takes them), or ``binary`` with its foreground values."""
    if scheme.binary:
        return f"binary (foreground {'+'.join(map(str, scheme.foreground))})" if scheme.foreground else "binary"
    return ",".join(
        f"{c.name}={'+'.join(map(str, c.values))}" + (f":{c.label}" if c.label else "") for c in scheme.classes
    )


def parse_classes(text: str) -> tuple[ClassSpec, ...]:
    """``--classes`` text -> class specs: ``NAME=V[+V...][:LABEL]`` separated by commas, e.g. ``RV=1,Myo=2,LV=3``
    or the BraTS regions ``WT=1+2+4,TC=1+4,ET=4`` (``LABEL``: the value written for a region whose own value is
    ambiguous; ``labels.label_scheme`` checks them)."""
    specs = []
    for item in (t.strip() for t in text.split(",")):
        name, sep, rest = item.partition("=")
        values, colon, label = rest.partition(":")
        try:
            numbers = tuple(int(v) for v in values.split("+"))
            written = int(label) if colon else None
        except ValueError:
            numbers = ()
        if not sep or not name.strip() or not numbers:
            raise UserError(
                f"--classes: {item!r} is not NAME=V[+V...][:LABEL] (e.g. RV=1,Myo=2,LV=3 or WT=1+2+4,TC=1+4,ET=4)"
            )
        specs.append(ClassSpec(name.strip(), numbers, written))
    return tuple(specs)


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _json_row(row: dict) -> dict:
    return {k: _finite(v) for k, v in row.items()}


def _few(ids, n: int = 3) -> str:
    items = sorted(ids)[:n]
    return ", ".join(items) + (", ..." if len(ids) > n else "")


def write_results(results: dict[str, Any], path: Path) -> None:
    """``results.json`` at ``path`` and ``results.csv`` beside it (with a ``group`` column when the cases have
    groups, and then ``results_groups.csv`` too: ``groups.groups_csv``), each written atomically."""
    write_text_atomic(path, json.dumps(results, indent=1, allow_nan=False) + "\n")
    group_of = group_of_cases(results)
    columns: dict[str, None] = {"case": None, "group": None} if group_of else {}
    for row in results["cases"]:
        columns.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in results["cases"]:
        cells = {k: ("" if v is None else v) for k, v in row.items()}
        writer.writerow(cells | ({"group": group_of.get(row["case"], "")} if group_of else {}))
    write_text_atomic(path.with_suffix(".csv"), buf.getvalue())
    if group_of:
        write_text_atomic(path.with_name(GROUPS_CSV), groups_csv(results))


def _reference_lines(results: dict[str, Any]) -> list[str]:
    """What the reference masks score on the main overlap metrics, per case and per volume."""
    lines = []
    for key, where in (("summary", "per case"), ("volume_summary", "per volume")):
        for name, label in REFERENCE_LABELS.items():
            table = results.get("references", {}).get(name, {}).get(key) or {}
            shown = [
                f"{m} {table[m]['mean']:.4f}"
                for m in ("dice", "iou", "ged")
                if table.get(m, {}).get("mean") is not None
            ]
            if shown:
                lines.append(f"reference, the {label} {where}: {', '.join(shown)}")
    return ["", *lines] if lines else []


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
    lines += _reference_lines(results)
    for name, cal in results.get("calibration", {}).items():
        if cal["ece"] is not None:
            lines.append(f"pooled ECE over every case's pixels ({name}): {cal['ece']:.4f}")
    lines += uncertainty_lines(results.get("uncertainty") or {})
    if path is not None:
        also = f", {path.with_name(GROUPS_CSV)}" if results.get("groups") else ""
        lines.append(f"\nwrote {path}, {path.with_suffix('.csv')}{also} and {path.parent / SUMMARY_NAME} (nnU-Net's)")
    return "\n".join(lines)
