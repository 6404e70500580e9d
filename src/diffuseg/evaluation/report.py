"""``diffuseg report``: an HTML page with the summary table, per-case distributions and case figures.

``write_report(source)`` takes a ``results.json`` written by ``evaluate`` (or a folder holding one,
``results_file``) and writes ``report/index.html`` beside it with PNG figures (``evaluation.figures``) under
``report/figures/``: a headline (model, checkpoint and step, sampling settings, the main metrics at the headline
level with the reference masks' scores and, with ``baseline``, the paired differences; ``evaluation.headline``,
``evaluation.compare``), the per-group table when the dataset has groups, the main and the other metrics' summary
tables, the distribution of each metric over the cases, whether the uncertainty predicts the errors
(``uncertainty_report``), and for a few chosen cases (best, quartiles, worst by GED where it is defined, else by
Dice) the image, each annotator's mask, the fused mask, the uncertainty map with its colour bar, and the samples.
With several classes (the ``classes`` of ``results.json``) it adds a legend of the class colours and per-class
tables (``evaluation.tables``). The case figures reopen the prediction and ground-truth folders named in
``results.json``; when those are gone the page says so and keeps the rest.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from diffuseg.data.formats import open_dataset
from diffuseg.errors import UserError
from diffuseg.evaluation.compare import compare_runs, load_baseline
from diffuseg.evaluation.evaluate import RESULTS_NAME
from diffuseg.evaluation.figures import case_figure, distribution_figure
from diffuseg.evaluation.groups import group_of_cases
from diffuseg.evaluation.headline import (
    SUMMARY_KEYS,
    headline,
    headline_level,
    lower_is_better,
    main_metrics,
    primary_metric,
    run_info,
)
from diffuseg.evaluation.results_file import find_results, load_results
from diffuseg.evaluation.tables import (
    case_table,
    class_table,
    comparison_table,
    fmt,
    group_table,
    legend_html,
    other_class_table,
)
from diffuseg.evaluation.uncertainty_report import uncertainty_link, uncertainty_section
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


def write_report(
    source: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    baseline: str | os.PathLike | None = None,
    cases: Sequence[str] | None = None,
    max_cases: int = 5,
    max_samples: int = 8,
) -> Path:
    """Write the HTML report for ``source``; returns the page's path.

    Args:
        source: a ``results.json``, or a folder holding one (``find_results``).
        out: the report folder (default ``report/`` beside results.json) or an ``.html`` path.
        baseline: another method's ``results.json``, or its prediction or run folder, on the same cases: the
            paired differences with bootstrap CIs (``compare``); ``UserError`` when the cases differ.
        cases: the cases to draw, by id; by default best, quartiles and worst by the primary metric.
        max_cases: how many cases are chosen by default.
        max_samples: the most samples drawn per case.
    """
    results_path = find_results(source)
    results = load_results(results_path)
    page = Path(out) if out is not None else results_path.parent / "report"
    if page.suffix.lower() not in (".html", ".htm"):
        page = page / "index.html"
    comparison, baseline_name = [], None
    if baseline is not None:
        other, baseline_path = load_baseline(baseline, results, page.parent)
        comparison = compare_runs(results, other, str(baseline_path))
        baseline_name = _baseline_name(other, baseline_path, results.get("gt"))
    figures = page.parent / "figures"
    try:
        figures.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{figures}: cannot create the report folder ({err.strerror or err})") from None

    summary = results["summary"]
    primary = primary_metric(summary)
    chosen = list(cases) if cases else choose_cases(results["cases"], primary, max_cases)
    run = run_info(results)
    level = headline_level(results)
    scheme = scheme_of(results)
    names = list(scheme.names)
    parts = [_title(), headline(results, run, comparison), uncertainty_link(results)]
    if baseline_name is not None:
        parts.append(comparison_table(comparison, baseline_name, level))
    level_summary = results.get(SUMMARY_KEYS[level]) or {}
    parts.append(group_table(results, level, main_metrics(level_summary)))
    if not scheme.binary:  # legend and per-class tables; the summary tables without "<m>/<class>"
        note = "<p class='muted'>Dice, IoU, HD95 and the other metrics below are means over the classes; GED, "
        note += "diversity and Hungarian IoU use d = 1 - mean IoU over the classes present in either mask.</p>"
        parts += [legend_html(names, bool(results.get("regions"))), note]
        refs = results.get("references") or {}
        for key, title in (("volume_summary", "Per class over volumes (3D)"), ("summary", "Per class over cases")):
            references = {r: (refs.get(r) or {}).get(key) for r in refs}
            parts.append(class_table(results.get(key) or {}, names, title, references))
        parts.append(other_class_table(summary, names, "Other per-class metrics over cases"))
    if results.get("volume_summary"):
        volume = {k: v for k, v in results["volume_summary"].items() if "/" not in k}
        parts.append(_summary_table(volume, "Summary over volumes (3D)"))
    main = main_metrics(summary)
    over = "slices" if level == "volume" else "cases"
    parts += [
        _summary_table({k: summary[k] for k in main}, f"Main metrics over {over}"),
        _summary_table(
            {k: v for k, v in summary.items() if k not in main and "/" not in k}, f"Other metrics over {over}"
        ),
        _header(results, results_path),
    ]
    dist = distribution_figure(results["cases"], figures / "distributions.png")
    if dist is not None:
        parts.append(
            f'<h2>Per-case distributions</h2>\n<img class="wide" src="figures/{dist.name}" alt="distributions">'
        )
    parts.append(uncertainty_section(results, chosen, figures, scheme))
    parts.append(_case_section(results, chosen, primary, figures, max_samples, run.uncertainty, scheme))
    parts.append(case_table(results["cases"], names, group_of_cases(results)))
    write_text_atomic(page, _page("\n".join(parts)))
    return page


def _baseline_name(other: dict, path: Path, gt: str | None) -> str:
    """HTML: the baseline's model (from its prediction folder's records, where kept), predictions and results, and
    its ground truth where it is not ``gt``, this run's (the same case ids read from another folder)."""
    run = run_info(other)
    network = run.provenance.get("network") or (run.config.model.name if run.config is not None else None)
    model = f"<b>{html.escape(str(network))}</b>" if network else "model not recorded"
    model += f" ({html.escape(str(run.config.method))})" if run.config is not None else ""
    pred, results = html.escape(str(other.get("pred", "?"))), html.escape(str(path))
    other_gt = other.get("gt")
    elsewhere = f", scored against <code>{html.escape(str(other_gt))}</code>" if other_gt and other_gt != gt else ""
    return f"{model}, predictions <code>{pred}</code>, results <code>{results}</code>{elsewhere}"


def choose_cases(rows: list[dict], metric: str, count: int) -> list[str]:
    """Best, quartile and worst cases by ``metric`` (lower is better for GED and HD95), up to ``count``."""
    scored = [r for r in rows if isinstance(r.get(metric), (int, float))]
    if not scored:
        return [r["case"] for r in rows[:count]]
    scored.sort(key=lambda r: r[metric], reverse=not lower_is_better(metric))
    picks = np.linspace(0, len(scored) - 1, num=min(count, len(scored))).round().astype(int)
    return list(dict.fromkeys(scored[i]["case"] for i in picks))


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
        cells = "".join(f"<td class='num'>{fmt(s.get(k))}</td>" for k in ("mean", "std", "median", "min", "max", "n"))
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
    groups = group_of_cases(results)
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
        stats = ", ".join(f"{m} {fmt(row[m])}" for m in shown if row.get(m) is not None)
        group = f" <span class='muted'>(group {html.escape(groups[case_id])})</span>" if case_id in groups else ""
        blocks.append(
            f"<h3>{html.escape(case_id)}{group}</h3>\n<p class='stats'>{html.escape(stats)}</p>\n"
            f'<img class="case" src="figures/{path.name}" alt="{html.escape(case_id)}">'
        )
    return "\n".join(blocks)


def scheme_of(results: dict[str, Any]) -> LabelScheme:
    """The classes ``results.json`` was scored with (binary: no ``classes`` key)."""
    classes = results.get("classes")
    return label_scheme(classes, where=f"{results.get('pred', RESULTS_NAME)}: classes") if classes else LabelScheme()


def _page(body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>diffuseg evaluation report</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto; max-width: 1400px;
       padding: 0 24px; color: #1d1d1f; background: #fff; font-size: 15px; line-height: 1.45; }}
h1 {{ font-size: 26px; margin-bottom: 2px; }} h2 {{ font-size: 20px; margin-top: 32px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }} h3 {{ font-size: 16px; margin: 20px 0 2px; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 4px 10px; border-bottom: 1px solid #eee; text-align: left; }}
table.summary th {{ background: #f3f4f6; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }} td small {{ color: #666; }}
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
     font-variant-numeric: tabular-nums; }} .card .sub, .card .ref {{ color: #666; font-size: 12px; }}
.card .ref {{ margin-top: 3px; }} .card.lead {{ border: 2px solid #2563eb; background: #f5f8ff; }}
.card .warn {{ color: #b42318; font-size: 12px; font-weight: 600; }}
p.level {{ margin: 14px 0 0; font-weight: 600; }} .cards.small .value {{ font-size: 20px; }}
.legend {{ margin: 10px 0; }} .class-item {{ margin-right: 14px; white-space: nowrap; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 5px;
     vertical-align: -1px; }} table.cases td, table.cases th {{ font-size: 12px; padding: 2px 6px; }}
</style></head><body>
{body}
</body></html>
"""
