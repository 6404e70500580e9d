"""``diffuseg report``: an HTML page with the summary table, per-case distributions and case figures.

``write_report(source)`` takes a ``results.json`` written by ``evaluate`` (or a folder holding one) and
writes ``report/index.html`` beside it with PNG figures (matplotlib, Agg) under ``report/figures/``: a
headline (model, checkpoint and step, sampling settings, the main metrics; ``evaluation.headline``), the
main and the other metrics' summary tables, the distribution of each metric over the cases, and for a few
chosen cases (best, quartiles, worst by GED where it is defined, else by Dice) the image, each annotator's
mask, the fused mask, the uncertainty map with its colour bar, and the samples. The case figures reopen the
prediction and ground-truth folders named in ``results.json``; when those are gone the page says so and
keeps the rest.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from diffuseg.data.formats import open_dataset
from diffuseg.data.formats.files import HDF5_SUFFIXES, read_file, suffix_of
from diffuseg.errors import UserError
from diffuseg.evaluation.evaluate import PredictionFiles, _plane, _read_mask, find_predictions
from diffuseg.evaluation.headline import (
    LABEL_ENTROPY,
    UNCERTAINTY_SCALE,
    headline,
    main_metrics,
    primary_metric,
    run_info,
)
from diffuseg.evaluation.labelmaps import read_label_map
from diffuseg.evaluation.report_classes import (
    class_table,
    figure_legend,
    legend_html,
    overlay_classes,
    overlay_mask,
    scheme_of,
)
from diffuseg.files import atomic_path, write_text_atomic
from diffuseg.labels import LabelScheme

# What each metric means, for the summary table (higher is better unless said otherwise).
METRIC_HELP: dict[str, str] = {
    "dice": "Dice of the fused mask, mean over annotators; both empty = 1",
    "iou": "IoU of the fused mask, mean over annotators; both empty = 1",
    "hd95": "95th-percentile Hausdorff distance, mean over annotators (mm or pixels); lower is better; "
    "undefined when exactly one mask is empty",
    "dice_annotator_mean": "Dice of the fused mask against each annotator, mean",
    "dice_annotator_min": "worst annotator's Dice",
    "dice_annotator_max": "best annotator's Dice",
    "dice_majority": "Dice against the majority (at least half) of the annotators",
    "iou_majority": "IoU against the majority mask",
    "hd95_majority": "HD95 against the majority mask; lower is better",
    "samples": "number of samples",
    "sample_dice": "mean Dice over all (sample, annotator) pairs: the ambiguity paper's 'dice'",
    "ged": "GED, d = 1 - IoU, unbiased (i != j pairs), all samples; lower is better",
    "ged_biased": "GED with the i = j pairs (as published), all samples; lower is better",
    "diversity": "mean 1 - IoU between distinct samples",
    "hungarian_iou": "Hungarian-matched IoU between samples and annotators",
    "ci": "collective insight (Rahman et al. 2023): harmonic mean of the next three",
    "combined_sensitivity": "sensitivity of the samples' union against the annotators' union",
    "max_dice_matching": "per annotator the best sample's Dice, mean",
    "diversity_agreement": "agreement of the spread of samples and annotators",
    "ncc": "NCC of expected cross-entropy maps (PHiSeg)",
    "ece": "calibration error of the sample frequency vs annotator frequency, all pixels; lower is better",
    "ece_foreground": "the same over pixels any sample or annotator marks; lower is better",
    "slices": "slices in the volume",
}
_ANNOTATOR_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
_PRED_COLOUR = "#d62728"
_DISTRIBUTION_ORDER = (
    "dice",
    "iou",
    "hd95",
    "ged",
    "ged_biased",
    "ged_16",
    "ged_biased_16",
    "sample_dice",
    "diversity",
    "hungarian_iou",
    "ci",
    "ncc",
    "ece",
    "dice_majority",
)


def save_figure(fig, path: str | os.PathLike) -> None:
    """``fig.savefig`` through ``atomic_path`` (temp file with the umask's mode, then rename); the format is
    taken from ``path``'s ending."""
    path = Path(path)
    with atomic_path(path, suffix=f".tmp{path.suffix}") as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or None)


def metric_help(name: str) -> str:
    if "/" in name:
        base, cls = name.split("/", 1)
        return f"{metric_help(base)} (class {cls})".lstrip()
    if name in METRIC_HELP:
        return METRIC_HELP[name]
    for prefix in ("ged_biased_", "ged_"):
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            base = METRIC_HELP[prefix[:-1]].split(", all samples")[0]
            return f"{base}, at {name[len(prefix) :]} samples (mean of disjoint groups)"
    return ""


def find_results(source: str | os.PathLike) -> Path:
    """``source`` itself when a file, else ``source/results.json`` or the one ``source/*/results.json``."""
    path = Path(source)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"{path}: no such results.json or run folder")
    if (path / "results.json").is_file():
        return path / "results.json"
    found = sorted(path.glob("*/results.json"))
    if len(found) == 1:
        return found[0]
    if found:
        listing = ", ".join(str(p) for p in found[:4])
        raise UserError(f"{path}: several results.json ({listing}); name one")
    raise UserError(f"{path}: no results.json here; run `diffuseg evaluate PRED GT` first")


def load_results(path: Path) -> dict[str, Any]:
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable results.json ({err})") from None
    if not isinstance(results, dict) or not isinstance(results.get("cases"), list) or "summary" not in results:
        raise UserError(f"{path}: not a results.json written by `diffuseg evaluate` (no cases/summary)")
    return results


def write_report(
    source: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    cases: Sequence[str] | None = None,
    max_cases: int = 5,
    max_samples: int = 8,
) -> Path:
    """Write the HTML report for ``source`` (results.json or a folder with one); returns the page's path.

    ``out`` is the report folder (default ``report/`` beside results.json) or an ``.html`` path.
    ``cases`` picks the case figures by id; by default best, quartiles and worst by the primary metric.
    """
    results_path = find_results(source)
    results = load_results(results_path)
    page = Path(out) if out is not None else results_path.parent / "report"
    if page.suffix.lower() not in (".html", ".htm"):
        page = page / "index.html"
    figures = page.parent / "figures"
    try:
        figures.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{figures}: cannot create the report folder ({err.strerror or err})") from None

    summary = results["summary"]
    primary = primary_metric(summary)
    chosen = list(cases) if cases else choose_cases(results["cases"], primary, max_cases)
    run = run_info(results)
    main = main_metrics(summary)
    scheme = scheme_of(results)
    names = list(scheme.names) if scheme is not None else []
    parts = [_title(), headline(results, run)]
    if scheme is not None:  # several classes: legend and per-class tables; the summary tables without "<m>/<class>"
        note = "<p class='muted'>Dice, IoU, HD95 and the other metrics below are means over the classes; GED, "
        note += "diversity and Hungarian IoU use d = 1 - mean IoU over the classes present in either mask.</p>"
        parts += [legend_html(names, bool(results.get("regions"))), note]
        parts.append(class_table(results.get("volume_summary") or {}, names, "Per class over volumes (3D)"))
        parts.append(class_table(summary, names, "Per class over cases"))
    per_class = {k for k in summary if "/" in k}
    parts += [
        _summary_table({k: summary[k] for k in main}, "Main metrics over cases"),
        _summary_table(
            {k: v for k, v in summary.items() if k not in main and k not in per_class}, "Other metrics over cases"
        ),
        _header(results, results_path),
    ]
    if results.get("volume_summary"):
        volume = {k: v for k, v in results["volume_summary"].items() if "/" not in k}
        parts.append(_summary_table(volume, "Summary over volumes (3D)"))
    dist = _distribution_figure(results["cases"], figures / "distributions.png")
    if dist is not None:
        parts.append(
            f'<h2>Per-case distributions</h2>\n<img class="wide" src="figures/{dist.name}" alt="distributions">'
        )
    cal = _calibration_figure(results.get("calibration") or {}, figures / "calibration.png")
    if cal is not None:
        parts.append(
            "<h2>Calibration</h2>\n<p class='muted'>Per-pixel sample frequency against the annotators' frequency, "
            "pooled over every case; the diagonal is perfect calibration.</p>\n"
            f'<img class="half" src="figures/{cal.name}" alt="calibration">'
        )
    parts.append(_case_section(results, chosen, primary, figures, max_samples, run.uncertainty, scheme))
    parts.append(_case_table(results["cases"]))
    write_text_atomic(page, _page("\n".join(parts)))
    return page


def choose_cases(rows: list[dict], metric: str, count: int) -> list[str]:
    """Best, quartile and worst cases by ``metric`` (lower is better for GED and HD95), up to ``count``."""
    scored = [r for r in rows if isinstance(r.get(metric), (int, float))]
    if not scored:
        return [r["case"] for r in rows[:count]]
    lower_better = metric.startswith(("ged", "hd95", "ece"))
    scored.sort(key=lambda r: r[metric], reverse=not lower_better)
    picks = np.linspace(0, len(scored) - 1, num=min(count, len(scored))).round().astype(int)
    return list(dict.fromkeys(scored[i]["case"] for i in picks))


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return html.escape(str(v))


def _title() -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"<h1>diffuseg evaluation report</h1>\n<p class='muted'>written {when}</p>"


def _header(results: dict, path: Path) -> str:
    missing = results.get("missing", {})
    items = [
        ("predictions", results.get("pred", "?")),
        (
            "ground truth",
            f"{results.get('gt', '?')} (layout {results.get('layout', '?')}, "
            f"{results.get('annotators', '?')} annotator(s))",
        ),
        ("cases scored", str(len(results["cases"]))),
        ("without a prediction", str(len(missing.get("predictions", [])))),
        ("without ground truth", str(len(missing.get("ground_truth", [])))),
        ("distances in", results.get("spacing_unit", "?")),
        ("results", str(path)),
    ]
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items)
    return f"<h2>Data</h2>\n<table class='meta'>{rows}</table>"


def _summary_table(summary: dict, title: str) -> str:
    if not summary:
        return ""
    names = ("metric", "mean", "std", "median", "min", "max", "n", "undefined", "meaning")
    head = "<tr>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>"
    body = []
    for name, s in summary.items():
        cells = "".join(f"<td class='num'>{_fmt(s.get(k))}</td>" for k in ("mean", "std", "median", "min", "max", "n"))
        undefined = s.get("n_undefined", 0)
        body.append(
            f"<tr><td class='name'>{html.escape(name)}</td>{cells}<td class='num'>{undefined}</td>"
            f"<td class='help'>{html.escape(metric_help(name))}</td></tr>"
        )
    return f"<h2>{html.escape(title)}</h2>\n<table class='summary'>{head}\n" + "\n".join(body) + "</table>"


def _distribution_figure(rows: list[dict], path: Path) -> Path | None:
    """One small panel per metric: a histogram of its per-case values with the mean marked."""
    names = [n for n in _DISTRIBUTION_ORDER if any(isinstance(r.get(n), (int, float)) for r in rows)]
    if not names:
        return None
    cols = min(4, len(names))
    nrows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.6 * cols, 2.6 * nrows), dpi=110, layout="constrained")
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, cols, i + 1)
        values = np.array([r[name] for r in rows if isinstance(r.get(name), (int, float))], dtype=float)
        lo, hi = float(values.min()), float(values.max())
        if hi - lo < 1e-9:  # one value: a single bar around it
            lo, hi = lo - 0.5, hi + 0.5
        bins = min(30, max(5, len(values) // 3))
        ax.hist(values, bins=bins, range=(lo, hi), color="#4c72b0", edgecolor="white")
        ax.axvline(values.mean(), color=_PRED_COLOUR, linewidth=1.5)
        ax.set_title(f"{name}  (mean {values.mean():.3f}, n={len(values)})", fontsize=9)
        ax.tick_params(labelsize=8)
    save_figure(fig, path)
    return path


def _calibration_figure(calibration: dict, path: Path) -> Path | None:
    """Reliability diagram (mean annotator frequency per bin of sample frequency) and pixels per bin."""
    curves = {k: np.asarray(v["bins"], dtype=float) for k, v in calibration.items() if v.get("ece") is not None}
    if not curves:
        return None
    fig = Figure(figsize=(9.0, 3.6), dpi=110, layout="constrained")
    rel, cnt = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    rel.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1)
    for (name, sums), colour in zip(curves.items(), ("#4c72b0", _PRED_COLOUR)):
        used = sums[:, 0] > 0
        mean_p, mean_q = sums[used, 1] / sums[used, 0], sums[used, 2] / sums[used, 0]
        ece = calibration[name]["ece"]
        rel.plot(mean_p, mean_q, marker="o", color=colour, label=f"{name} pixels (ECE {ece:.3f})")
        edges = np.linspace(0, 1, len(sums) + 1)
        cnt.bar(edges[:-1], sums[:, 0], width=1 / len(sums), align="edge", alpha=0.5, color=colour, label=name)
    rel.set(xlabel="sample frequency", ylabel="annotator frequency", xlim=(0, 1), ylim=(0, 1))
    rel.legend(fontsize=8)
    cnt.set(xlabel="sample frequency", ylabel="pixels", yscale="log")
    cnt.legend(fontsize=8)
    save_figure(fig, path)
    return path


def _case_section(
    results: dict,
    chosen: list[str],
    primary: str,
    figures: Path,
    max_samples: int,
    uncertainty: str | None,
    scheme: LabelScheme | None = None,
) -> str:
    if not chosen:
        return ""
    try:
        predictions = find_predictions(results["pred"])
        classes = results.get("classes") or ()
        reader = open_dataset(results["gt"], results.get("layout", "auto"), classes=classes)
    except (UserError, KeyError) as err:
        return f"<h2>Cases</h2>\n<p class='muted'>Case figures left out: {html.escape(str(err))}</p>"
    index = {e.case_id: i for i, e in enumerate(reader.entries)}
    rows = {r["case"]: r for r in results["cases"]}
    blocks = [
        f"<h2>Cases</h2>\n<p class='muted'>Chosen by {html.escape(primary)}: best, quartiles, worst. "
        + (
            "Each class in its colour (legend above); "
            if scheme is not None
            else "Outlines: annotators in blue/green/purple/orange, prediction in red; "
        )
        + "each view is cropped around the marked pixels.</p>"
    ]
    for k, case_id in enumerate(chosen):
        if case_id not in index:
            blocks.append(f"<p class='muted'>{html.escape(case_id)}: not in the ground truth</p>")
            continue
        entry = reader.entries[index[case_id]]
        files = predictions.get(case_id) or predictions.get(entry.volume_id or "")
        if files is None:
            blocks.append(f"<p class='muted'>{html.escape(case_id)}: no prediction</p>")
            continue
        sliced = case_id not in predictions
        path = figures / f"case_{k:02d}.png"
        try:
            plane = entry.slice_index if sliced else None
            _case_figure(reader.load(index[case_id]), files, plane, max_samples, path, uncertainty, scheme)
        except UserError as err:
            blocks.append(f"<p class='muted'>{html.escape(case_id)}: {html.escape(str(err))}</p>")
            continue
        row = rows.get(case_id, {})
        shown = ("dice", "iou", "hd95", "ged", "ged_biased", "diversity")
        if scheme is not None:
            shown += tuple(f"dice/{n}" for n in scheme.names)
        stats = ", ".join(f"{m} {_fmt(row.get(m))}" for m in shown if m in row)
        blocks.append(
            f"<h3>{html.escape(case_id)}</h3>\n<p class='stats'>{html.escape(stats)}</p>\n"
            f'<img class="case" src="figures/{path.name}" alt="{html.escape(case_id)}">'
        )
    return "\n".join(blocks)


def _case_figure(
    case,
    files: PredictionFiles,
    slice_index: int | None,
    max_samples: int,
    path: Path,
    kind: str | None = None,
    scheme: LabelScheme | None = None,
) -> None:
    """Image | each annotator | fused | uncertainty (with its colour bar) on the first row, the samples after
    them when all fit in one row of 8, else on the rows below; each overlaid on the image. ``kind`` is the
    prediction's ``sample.uncertainty`` (None: not recorded). With several classes (``scheme``) the masks are
    label maps, every class drawn in its colour, with the legend below."""
    image = case.image[0].numpy() if case.image.shape[0] == 1 else case.image.mean(0).numpy()
    if scheme is None:
        masks = case.masks.numpy().astype(bool)
        fused = _plane(_read_mask(files.fused), files.fused, slice_index)
        every_sample = [_plane(_read_mask(p), p, slice_index) for p in files.samples]
    else:
        masks = case.masks.numpy()
        fused = _plane(read_label_map(files.fused, scheme), files.fused, slice_index)
        every_sample = [_plane(read_label_map(p, scheme), p, slice_index) for p in files.samples]
    uncertainty = _uncertainty(files, slice_index, every_sample if scheme is None else [])
    if files.uncertainty is None:
        kind = "variance"  # computed here from the samples
    elif scheme is not None:
        kind = LABEL_ENTROPY  # the written map of a multi-class prediction
    box = _crop_box([m != 0 for m in (*masks, fused, *every_sample)], image.shape)
    image, masks, fused = image[box], masks[(slice(None), *box)], fused[box]
    samples = [m[box] for m in every_sample[:max_samples]]
    first: list[tuple[str, np.ndarray | None, str | None]] = [("image", None, None)]
    first += [(f"annotator {i + 1}", m, _ANNOTATOR_COLOURS[i % len(_ANNOTATOR_COLOURS)]) for i, m in enumerate(masks)]
    first.append(("fused", fused, _PRED_COLOUR))
    after = [(f"sample {i + 1}", s, _PRED_COLOUR) for i, s in enumerate(samples)]
    slots = len(first) + (uncertainty is not None)
    one_row = slots + len(after) <= 8
    cols = slots + len(after) if one_row else max(slots, min(len(after), 8))
    sample_rows = 0 if one_row else math.ceil(len(after) / cols)
    bar = 0.35 * (uncertainty is not None)
    fig = Figure(figsize=(2.0 * cols, 2.15 * (1 + sample_rows) + bar), dpi=100, layout="constrained")
    # the samples' rows in a subfigure of their own, so the colour bar does not resize their columns
    top, rest = (fig, None) if one_row else fig.subfigures(2, 1, height_ratios=[2.15 + bar, 2.15 * sample_rows])
    placed = [(top, 1, i, panel) for i, panel in enumerate(first)]
    placed += [(top, 1, slots + i, p) if one_row else (rest, sample_rows, i, p) for i, p in enumerate(after)]
    for where, rows, slot, (title, mask, colour) in placed:
        ax = where.add_subplot(rows, cols, slot + 1)
        ax.imshow(image, cmap="gray", interpolation="nearest")
        if mask is not None and mask.shape == image.shape and scheme is not None:
            overlay_classes(ax, mask, scheme)
        elif mask is not None and mask.shape == image.shape:
            overlay_mask(ax, mask, colour)
            if title == "fused":
                for m, c in zip(masks, _ANNOTATOR_COLOURS):
                    ax.contour(m.astype(float), levels=[0.5], colors=[c], linewidths=0.8)
        _tidy(ax, title if mask is None or mask.any() else f"{title} (empty)")
    if uncertainty is not None:
        _uncertainty_panel(top.add_subplot(1, cols, len(first) + 1), top, image, uncertainty[box], kind)
    if scheme is not None:
        figure_legend(fig, scheme)
    save_figure(fig, path)


def _uncertainty_panel(ax, fig, image: np.ndarray, uncertainty: np.ndarray, kind: str | None) -> None:
    """The uncertainty map over the image with a colour bar over its full range (what it is, in its units)."""
    _, label, top = UNCERTAINTY_SCALE.get(kind or "", ("", "kind not recorded (no config.yaml)", 0.0))
    top = top or max(float(uncertainty.max()), 1e-6)
    ax.imshow(image, cmap="gray", interpolation="nearest")
    shown = np.ma.masked_where(uncertainty <= 0, uncertainty)
    im = ax.imshow(shown, cmap="inferno", alpha=0.85, vmin=0, vmax=top, interpolation="nearest")
    _tidy(ax, f"uncertainty (max {float(uncertainty.max()):.2f})")
    bar = fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.07, pad=0.03, ticks=[0, top / 2, top])
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=7)


def _crop_box(masks: list[np.ndarray], shape: tuple[int, ...], min_size: int = 48) -> tuple[slice, slice]:
    """A square window around everything any mask marks, with a margin, so small lesions are visible;
    the whole image when nothing is marked or the window would cover most of it."""
    whole = (slice(0, shape[0]), slice(0, shape[1]))
    marked = np.zeros(shape, bool)
    for m in masks:
        if m.shape == shape:
            marked |= m
    if not marked.any():
        return whole
    rows, cols = np.nonzero(marked)
    side = max(min_size, int(1.6 * max(np.ptp(rows) + 1, np.ptp(cols) + 1)))
    if side >= 0.75 * min(shape):
        return whole
    centre = ((rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2)
    starts = [int(np.clip(c - side // 2, 0, n - side)) for c, n in zip(centre, shape)]
    return slice(starts[0], starts[0] + side), slice(starts[1], starts[1] + side)


def _tidy(ax, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _uncertainty(files: PredictionFiles, slice_index: int | None, samples: list[np.ndarray]) -> np.ndarray | None:
    """The saved uncertainty map (uint8 scaled to [0, 1]); else the samples' variance p(1 - p)."""
    if files.uncertainty is not None and suffix_of(files.uncertainty) in HDF5_SUFFIXES:  # dataset "uncertainty"
        return _plane(_hdf5_uncertainty(files.uncertainty), files.uncertainty, slice_index).astype(np.float64)
    if files.uncertainty is not None:
        data = read_file(files.uncertainty)
        array = data.array
        if array.ndim == 3 and data.affine is not None and slice_index is None and array.shape[2] == 1:
            array = array[:, :, 0]
        array = _plane(array, files.uncertainty, slice_index).astype(np.float64)
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(data.array.dtype, 1.0)
        return array / scale  # 8- and 16-bit PNGs hold round(u * 255) or round(u * 65535)
    if len(samples) > 1:
        p = np.mean(samples, axis=0)
        return p * (1 - p)
    return None


def _hdf5_uncertainty(path: Path) -> np.ndarray:
    """The dataset ``uncertainty`` (float in [0, 1]) of an HDF5 uncertainty map as ``predict`` writes it."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f["uncertainty"][()], dtype=np.float64)
    except (OSError, KeyError) as err:
        raise UserError(f"{path}: no readable dataset 'uncertainty' ({err})") from None


def _case_table(rows: list[dict], limit: int = 500) -> str:
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "\n".join(
        "<tr>"
        + "".join(f"<td class='{'name' if c == 'case' else 'num'}'>{_fmt(r.get(c))}</td>" for c in columns)
        + "</tr>"
        for r in rows[:limit]
    )
    more = f" (first {limit} of {len(rows)}; all in results.csv)" if len(rows) > limit else ""
    return (
        f"<details><summary>Every case{more}</summary>\n<div class='scroll'><table class='cases'>"
        f"<tr>{head}</tr>\n{body}</table></div></details>"
    )


def _page(body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>diffuseg evaluation report</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto; max-width: 1400px;
       padding: 0 24px; color: #1d1d1f; background: #fff; font-size: 15px; line-height: 1.45; }}
h1 {{ font-size: 26px; margin-bottom: 2px; }} h2 {{ font-size: 20px; margin-top: 32px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }} h3 {{ font-size: 16px; margin: 20px 0 2px; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 4px 10px; border-bottom: 1px solid #eee; text-align: left; }}
table.summary th {{ background: #f3f4f6; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.name {{ font-family: ui-monospace, Menlo, Consolas, monospace; font-weight: 600; }}
td.help {{ color: #555; font-size: 13px; }} table.meta th {{ color: #555; font-weight: 600; }}
.muted {{ color: #666; }}
.stats {{ font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; margin: 0 0 6px; }}
img.wide, img.case {{ max-width: 100%; border: 1px solid #e5e5e5; }} img.half {{ max-width: 70%; }}
section.headline {{ margin: 14px 0 8px; }} p.run {{ margin: 4px 0; }}
code {{ font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; background: #f5f5f7; padding: 0 3px; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0 4px; }}
.card {{ border: 1px solid #ddd; border-radius: 8px; padding: 10px 16px; min-width: 170px; background: #fafafa; }}
.card .label {{ color: #555; font-weight: 600; }} .card .value {{ font-size: 30px; font-weight: 700;
     font-variant-numeric: tabular-nums; }} .card .sub {{ color: #666; font-size: 12px; }}
.scroll {{ overflow-x: auto; }} .legend {{ margin: 10px 0; }} .class-item {{ margin-right: 14px; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 5px;
     vertical-align: -1px; }} table.cases td {{ font-size: 12px; padding: 2px 6px; }}
</style></head><body>
{body}
</body></html>
"""
