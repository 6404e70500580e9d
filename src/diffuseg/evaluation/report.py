"""``diffuseg report``: an HTML page with the summary table, per-case distributions and case figures.

``write_report(source)`` takes a ``results.json`` written by ``evaluate`` (or a folder holding one) and
writes ``report/index.html`` beside it with PNG figures (``evaluation.figures``) under ``report/figures/``: a
headline (model, checkpoint and step, sampling settings, the main metrics; ``evaluation.headline``), the
main and the other metrics' summary tables, the distribution of each metric over the cases, whether the
uncertainty predicts the errors (``uncertainty_report``), and for a few
chosen cases (best, quartiles, worst by GED where it is defined, else by Dice) the image, each annotator's
mask, the fused mask, the uncertainty map with its colour bar, and the samples. With several classes (the
``classes`` of ``results.json``) it adds a legend of the class colours and per-class tables. The case figures reopen the
prediction and ground-truth folders named in ``results.json``; when those are gone the page says so and
keeps the rest.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from diffuseg.data.formats import open_dataset
from diffuseg.errors import UserError
from diffuseg.evaluation.evaluate import RESULTS_NAME
from diffuseg.evaluation.figures import case_figure, class_colour, distribution_figure
from diffuseg.evaluation.headline import headline, main_metrics, primary_metric, run_info
from diffuseg.evaluation.uncertainty_report import check_uncertainty, uncertainty_link, uncertainty_section
from diffuseg.files import write_text_atomic
from diffuseg.inference.outputs import find_predictions
from diffuseg.labels import LabelScheme, label_scheme

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
    "ece_marked": "the same over the pixels some sample marks, equal-mass bins; lower is better",
    "pixel_auroc": "AUROC of the members' disagreement for the pixels where the fused mask is wrong (0.5 = chance)",
    "pixel_auprc": "average precision of the same (a random ranking scores pixel_error_rate)",
    "pixel_error_rate": "share of pixels where the fused mask differs from the annotators' majority",
    "case_uncertainty": "mean disagreement over the pixels any member or the fused mask marks",
    "slices": "slices in the volume",
}


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
    if (path / RESULTS_NAME).is_file():
        return path / RESULTS_NAME
    found = sorted(path.glob(f"*/{RESULTS_NAME}"))
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
    check_results(results, path)
    return results


def _is_number(value: Any) -> bool:
    """A JSON number or ``null`` (an undefined metric); ``true``/``false`` are not numbers."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_results(results: dict[str, Any], path: Path) -> None:
    """``UserError`` naming ``path`` and the first entry of the wrong type (a string where a number belongs, a
    list where a table belongs, ...), so that an edited or foreign ``results.json`` is one error line."""

    def refuse(where: str, value: Any, expected: str) -> None:
        raise UserError(
            f"{path}: {where} is {json.dumps(value)[:60]}, where {expected} belongs; not a results.json as "
            "`diffuseg evaluate` writes it (rerun evaluate)"
        )

    for key in ("cases", "volumes"):
        rows = results.get(key, [])
        if not isinstance(rows, list):
            refuse(key, rows, "a list of rows")
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("case"), str):
                refuse(f"{key}[{i}]", row, 'a row {"case": "<id>", <metric>: <number>, ...}')
            for name, value in row.items():
                if name != "case" and not _is_number(value):
                    refuse(f"{key}[{i}] ({row['case']}) {name}", value, "a number")
    for key in ("summary", "volume_summary"):
        table = results.get(key, {})
        if not isinstance(table, dict):
            refuse(key, table, "a table {metric: {mean, std, ...}}")
        for name, stats in table.items():
            if not isinstance(stats, dict):
                refuse(f"{key}.{name}", stats, "{mean, std, median, min, max, n, n_undefined}")
            for stat, value in stats.items():
                counts = stat in ("n", "n_undefined")
                if not _is_number(value) or (counts and not isinstance(value, int)):
                    refuse(f"{key}.{name}.{stat}", value, "a count" if counts else "a number")
    _check_calibration(results.get("calibration", {}), refuse)
    check_uncertainty(results.get("uncertainty", {}), refuse)
    missing = results.get("missing", {})
    if not isinstance(missing, dict) or not all(
        isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in missing.values()
    ):
        refuse("missing", missing, '{"predictions": [<id>, ...], "ground_truth": [...]}')
    for key in ("pred", "gt", "layout", "spacing_unit"):
        if key in results and not isinstance(results[key], str):
            refuse(key, results[key], "a string")
    for key in ("annotators", "calibration_bins", "hd_percentile"):
        if key in results and not _is_number(results[key]):
            refuse(key, results[key], "a number")
    sizes = results.get("ged_sizes", [])
    if not isinstance(sizes, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in sizes):
        refuse("ged_sizes", sizes, "a list of sample counts")


def _check_calibration(calibration: Any, refuse) -> None:
    """``calibration``: ``{name: {"ece": number, "bins": [[count, sum p, sum q], ...]}}``."""
    if not isinstance(calibration, dict):
        refuse("calibration", calibration, '{name: {"ece", "bins"}}')
    for name, entry in calibration.items():
        if not isinstance(entry, dict):
            refuse(f"calibration.{name}", entry, '{"ece": <number>, "bins": [[count, sum p, sum q], ...]}')
        if not _is_number(entry.get("ece")):
            refuse(f"calibration.{name}.ece", entry.get("ece"), "a number")
        bins = entry.get("bins")
        rows_ok = isinstance(bins, list) and all(isinstance(b, list) and len(b) == 3 for b in bins)
        if not rows_ok or not all(_is_number(v) and v is not None for b in bins for v in b):
            refuse(f"calibration.{name}.bins", bins, "rows [count, sum p, sum q] of numbers")


def write_report(
    source: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    cases: Sequence[str] | None = None,
    max_cases: int = 5,
    max_samples: int = 8,
) -> Path:
    """Write the HTML report for ``source``; returns the page's path.

    Args:
        source: a ``results.json``, or a folder holding one (``find_results``).
        out: the report folder (default ``report/`` beside results.json) or an ``.html`` path.
        cases: the cases to draw, by id; by default best, quartiles and worst by the primary metric.
        max_cases: how many cases are chosen by default.
        max_samples: the most samples drawn per case.
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
    names = list(scheme.names)
    parts = [_title(), headline(results, run), uncertainty_link(results)]
    if not scheme.binary:  # legend and per-class tables; the summary tables without "<m>/<class>"
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
    dist = distribution_figure(results["cases"], figures / "distributions.png")
    if dist is not None:
        parts.append(
            f'<h2>Per-case distributions</h2>\n<img class="wide" src="figures/{dist.name}" alt="distributions">'
        )
    parts.append(uncertainty_section(results, chosen, figures, scheme))
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


def _case_section(
    results: dict,
    chosen: list[str],
    primary: str,
    figures: Path,
    max_samples: int,
    uncertainty: str | None,
    scheme: LabelScheme,
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
            if not scheme.binary
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
            case_figure(reader.load(index[case_id]), files, plane, max_samples, path, uncertainty, scheme)
        except UserError as err:
            blocks.append(f"<p class='muted'>{html.escape(case_id)}: {html.escape(str(err))}</p>")
            continue
        row = rows.get(case_id, {})
        shown = ("dice", "iou", "hd95", "ged", "ged_biased", "diversity", *(f"dice/{n}" for n in scheme.names))
        stats = ", ".join(f"{m} {_fmt(row.get(m))}" for m in shown if m in row)
        blocks.append(
            f"<h3>{html.escape(case_id)}</h3>\n<p class='stats'>{html.escape(stats)}</p>\n"
            f'<img class="case" src="figures/{path.name}" alt="{html.escape(case_id)}">'
        )
    return "\n".join(blocks)


# The per-class metrics the class table shows first, in this order (then any other per-class metric).
CLASS_METRICS = ("dice", "iou", "hd95", "ged", "ged_biased", "sample_dice", "diversity", "pixel_auroc", "ece_marked")
_LOWER_BETTER = ("hd95", "ged", "ece", "diversity")


def scheme_of(results: dict[str, Any]) -> LabelScheme:
    """The classes ``results.json`` was scored with (binary: no ``classes`` key)."""
    classes = results.get("classes")
    return label_scheme(classes, where=f"{results.get('pred', RESULTS_NAME)}: classes") if classes else LabelScheme()


def legend_html(names: tuple[str, ...] | list[str], regions: bool = False) -> str:
    """One swatch per class, in its colour (hex code as the title), as the overlays draw it."""
    items = "".join(
        f"<span class='class-item'><span class='swatch' style='background:{class_colour(k)}' "
        f"title='{class_colour(k)}'></span>{html.escape(name)}</span>"
        for k, name in enumerate(names)
    )
    kind = "regions (overlapping; scored on the region masks)" if regions else "classes"
    return f"<div class='legend'><b>{kind}:</b> {items}</div>"


def class_table(summary: dict, names: list[str], title: str) -> str:
    """Rows: the classes and their mean; columns: the per-class metrics (mean ± std over the cases, n)."""
    bases = [m for m in CLASS_METRICS if any(f"{m}/{n}" in summary for n in names)]
    bases += sorted({k.split("/", 1)[0] for k in summary if "/" in k} - set(bases))
    if not bases:
        return ""
    head = "<tr><th>class</th>" + "".join(f"<th>{html.escape(b)}{_arrow(b)}</th>" for b in bases) + "</tr>"
    rows = []
    for k, name in enumerate([*names, None]):
        label = (
            "<i>mean over classes</i>"
            if name is None
            else f"<span class='swatch' style='background:{class_colour(k)}'></span>{html.escape(name)}"
        )
        cells = "".join(
            f"<td class='num'>{_cell(summary.get(b if name is None else f'{b}/{name}'))}</td>" for b in bases
        )
        rows.append(f"<tr><td class='name'>{label}</td>{cells}</tr>")
    return (
        f"<h2>{html.escape(title)}</h2>\n<div class='scroll'><table class='summary'>{head}\n"
        + "\n".join(rows)
        + ("</table></div>")
    )


def _arrow(base: str) -> str:
    return " &darr;" if base.startswith(_LOWER_BETTER) else ""


def _cell(s: dict | None) -> str:
    if not isinstance(s, dict) or s.get("mean") is None:
        return "–"
    return f"{s['mean']:.4f} &plusmn; {s['std']:.4f} <span class='muted'>(n={s['n']})</span>"


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
