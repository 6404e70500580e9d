"""The report's "Is the uncertainty useful?" section, from ``results.json["uncertainty"]``
(``uncertainty_metrics.uncertainty_results``): does the members' disagreement point at the wrong pixels, does
it tell which cases failed, is the share of members marking a pixel the share of annotators who do; each number
with a one-line plain reading, the risk-coverage curve and reliability diagram (``uncertainty_figures``), and
per shown case the error pixels beside the disagreement map."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffuseg.data.formats import open_dataset
from diffuseg.errors import UserError
from diffuseg.evaluation.figures import viewer_view
from diffuseg.evaluation.metrics import majority
from diffuseg.evaluation.uncertainty_figures import error_figure, usefulness_figure
from diffuseg.inference.outputs import find_predictions, read_mask
from diffuseg.inference.uncertainty import disagreement
from diffuseg.labels import LabelScheme

TITLE = "Is the uncertainty useful?"
_BLOCKS = ("pixel", "failure", "calibration")
_CURVE = ("coverage", "risk", "optimal")


def check_uncertainty(block: Any, refuse: Callable[[str, Any, str], None]) -> None:
    """``refuse(where, value, expected)`` at the first entry of ``results.json["uncertainty"]`` of the wrong type."""
    if not isinstance(block, dict):
        refuse("uncertainty", block, '{"reference", "pixel", "failure", "calibration"}')
    if not block:
        return
    for key in _BLOCKS:
        entry = block.get(key)
        if not isinstance(entry, dict):
            refuse(f"uncertainty.{key}", entry, "a table of numbers")
        for name, value in entry.items():
            if name in ("score", "risk"):
                continue
            if name == "bins":
                if not isinstance(value, list) or not all(_numbers(b) and len(b) == 3 for b in value):
                    refuse(f"uncertainty.{key}.bins", value, "rows [pixels, sum p, sum q] of numbers")
            elif name == "curve":
                if not isinstance(value, dict) or not all(_numbers(value.get(k)) for k in _CURVE):
                    refuse(f"uncertainty.{key}.curve", value, '{"coverage", "risk", "optimal"}: lists of numbers')
            elif not _number(value):
                refuse(f"uncertainty.{key}.{name}", value, "a number")


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _numbers(values: Any) -> bool:
    """A list of numbers, none of them null."""
    return isinstance(values, list) and all(v is not None and _number(v) for v in values)


def _f(value: Any, digits: int = 3) -> str:
    return "undefined" if value is None else f"{value:.{digits}f}"


def _pixel_reading(pixel: dict) -> str:
    auroc, auprc, rate = pixel["auroc"], pixel["auprc"], pixel["error_rate"]
    if auroc is None:
        return "No pixel-level reading: the fused masks have no error pixel, or no correct one, against the majority."
    text = (
        f"<b>Pixels:</b> AUROC {_f(auroc)}: in {100 * auroc:.0f} of 100 random pairs of a wrong and a right pixel, "
        f"the wrong one is the more uncertain (50 is chance, 100 perfect). AUPRC {_f(auprc)} against "
        f"{_f(rate)} for a random ranking (the share of wrong pixels, {pixel['error_pixels']:,} of "
        f"{pixel['pixels']:,})."
    )
    return text


def _case_reading(failure: dict) -> str:
    n, rho = failure["cases"], failure["spearman"]
    aurc, best, rand = failure["aurc"], failure["aurc_optimal"], failure["aurc_random"]
    if not n:
        return "<b>Cases:</b> no case has both an uncertainty score and a Dice."
    text = (
        f"<b>Cases:</b> Spearman {_f(rho, 2)} between a case's uncertainty (the mean disagreement over the pixels "
        f"any member or the fused mask marks) and its 1 - Dice over {n} cases (0: the score does not tell which "
        f"cases failed; 1: it ranks them perfectly). AURC {_f(aurc)}, against {_f(best)} for the best possible "
        f"order and {_f(rand)} for a random one (lower is better)"
    )
    if None not in (aurc, best, rand) and rand - best > 1e-12:
        share = (rand - aurc) / (rand - best)
        text += (
            f": ranking cases by this uncertainty closes {100 * share:.0f} % of the gap from random to best"
            if share >= 0
            else ": ranking cases by this uncertainty is worse than a random order"
        )
    curve = failure["curve"]
    if len(curve["coverage"]) >= 4:
        half = int(np.searchsorted(curve["coverage"], 0.5))
        text += (
            f". Keeping the least uncertain half of the cases, their mean 1 - Dice is {_f(curve['risk'][half])} "
            f"against {_f(curve['risk'][-1])} over all"
        )
    return text + "."


def _calibration_reading(cal: dict) -> str:
    text = (
        f"<b>Calibration:</b> ECE {_f(cal['ece_marked'])} over the {cal['marked_pixels']:,} pixels some member "
        "marks: on average the share of members marking a pixel is off by that much from the share of annotators "
        "who mark it (0 is perfect; equal-mass bins, so each point of the diagram holds as many pixels)."
    )
    if cal["unmarked_annotator_share"] is not None:
        text += (
            f" Where no member marks a pixel ({cal['unmarked_pixels']:,} pixels), the annotators mark "
            f"{100 * cal['unmarked_annotator_share']:.2f} % of them."
        )
    return text


def _class_table(block: dict, names: Sequence[str]) -> str:
    pixel, failure, cal = block["pixel"], block["failure"], block["calibration"]
    head = ("class", "pixel AUROC", "pixel AUPRC (random)", "AURC (optimal, random) &darr;", "Spearman", "ECE &darr;")
    rows = []
    for name in names:
        fail = [_f(failure.get(f"{k}/{name}")) for k in ("aurc", "aurc_optimal", "aurc_random")]
        cells = (
            _f(pixel.get(f"auroc/{name}")),
            f"{_f(pixel.get(f'auprc/{name}'))} ({_f(pixel.get(f'error_rate/{name}'))})",
            f"{fail[0]} ({fail[1]}, {fail[2]})",
            _f(failure.get(f"spearman/{name}"), 2),
            _f(cal.get(f"ece_marked/{name}")),
        )
        cells_html = "".join(f"<td class='num'>{c}</td>" for c in cells)
        rows.append(f"<tr><td class='name'>{html.escape(name)}</td>{cells_html}</tr>")
    header = "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
    return f"<table class='summary'>{header}\n" + "\n".join(rows) + "</table>"


def uncertainty_link(results: dict) -> str:
    """A link to the section from the top of the page (empty without the section)."""
    if not results.get("uncertainty"):
        return ""
    return f"<p class='run'><a href='#uncertainty'>{TITLE}</a> (pixel AUROC, failed cases, calibration)</p>"


def uncertainty_section(results: dict, chosen: Sequence[str], figures: Path, scheme: LabelScheme) -> str:
    """The section's HTML (empty without an ``uncertainty`` block, i.e. without samples); figures under
    ``figures``; error-vs-uncertainty panels for the ``chosen`` cases."""
    block = results.get("uncertainty") or {}
    if not block:
        return ""
    path = usefulness_figure(block, figures / "uncertainty.png")
    parts = [
        f"<h2 id='uncertainty'>{TITLE}</h2>",
        "<p class='muted'>The uncertainty scored here is the share of the members that disagree with the fused mask "
        "at a pixel (0 to 1), recomputed from the saved samples whatever map was written; a pixel is wrong where the "
        f"fused mask differs from the annotators' {html.escape(block['reference'])} (marked by at least half of "
        "them). Pooled over every pixel of every case"
        + ("; with several classes over every (pixel, class) pair, per class in the table" if not scheme.binary else "")
        + ".</p>",
        f"<p>{_pixel_reading(block['pixel'])}</p>",
        f"<p>{_case_reading(block['failure'])}</p>",
        f"<p>{_calibration_reading(block['calibration'])}</p>",
        f'<img class="wide" src="figures/{path.name}" alt="risk-coverage and reliability">',
    ]
    if not scheme.binary:
        parts.append(_class_table(block, scheme.names))
    parts.append(_case_panels(results, chosen, figures, scheme))
    return "\n".join(parts)


def _case_panels(results: dict, chosen: Sequence[str], figures: Path, scheme: LabelScheme) -> str:
    """Per chosen case with samples: its error pixels beside its disagreement map."""
    try:
        predictions = find_predictions(results["pred"])
        reader = open_dataset(results["gt"], results.get("layout", "auto"), classes=results.get("classes") or ())
    except (UserError, KeyError) as err:
        return f"<p class='muted'>Error-vs-uncertainty panels left out: {html.escape(str(err))}</p>"
    index = {e.case_id: i for i, e in enumerate(reader.entries)}
    rows = {r["case"]: r for r in results["cases"]}
    items = []
    for k, case_id in enumerate(chosen):
        entry = reader.entries[index[case_id]] if case_id in index else None
        files = None if entry is None else predictions.get(case_id) or predictions.get(entry.volume_id or "")
        if files is None or not files.samples:
            continue
        plane = None if case_id in predictions else entry.slice_index
        try:
            case = reader.load(index[case_id])
            fused = read_mask(files.fused, scheme, plane)
            members = np.stack([read_mask(p, scheme, plane) for p in files.samples])
        except UserError as err:
            items.append(f"<p class='muted'>{html.escape(case_id)}: {html.escape(str(err))}</p>")
            continue
        error, u = _error_and_disagreement(scheme, fused, members, case.masks.numpy())
        image = case.image[0].numpy() if case.image.shape[0] == 1 else case.image.mean(0).numpy()
        view = viewer_view(case.geometry.affine)  # NIfTI planes as a viewer shows them, as the case figures
        path = error_figure(view(image), view(error), view(u), figures / f"uncertainty_case_{k:02d}.png")
        row = rows.get(case_id, {})
        stats = ", ".join(f"{m} {_f(row.get(m))}" for m in ("dice", "pixel_auroc", "case_uncertainty") if m in row)
        items.append(
            f"<figure class='unc'><img src='figures/{path.name}' alt='{html.escape(case_id)}'>"
            f"<figcaption><b>{html.escape(case_id)}</b><br>{html.escape(stats)}</figcaption></figure>"
        )
    if not items:
        return ""
    return (
        "<h3 id='uncertainty-cases'>Errors and uncertainty in the cases shown below</h3>\n"
        "<p class='muted'>Left: the pixels where the fused mask differs from the annotators' majority (any class). "
        "Right: the share of members whose label differs "
        "from the fused mask's, errors outlined in cyan. Useful uncertainty is bright where the outlines are.</p>\n"
        "<div style='display:flex;flex-wrap:wrap;gap:14px'>" + "\n".join(items) + "</div>"
    )


def _error_and_disagreement(
    scheme: LabelScheme, fused: np.ndarray, members: np.ndarray, annotations: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Atom maps ``fused`` ``(H, W)``, ``members`` ``(K, H, W)``, ``annotations`` ``(A, H, W)`` -> the pixels
    where some class's fused mask differs from that class's annotator majority, and the share of members whose
    label differs from the fused label, both ``(H, W)``."""
    f = scheme.class_masks(torch.from_numpy(fused.astype(np.int64)))  # (C, H, W)
    y = scheme.class_masks(torch.from_numpy(annotations.astype(np.int64)))  # (A, C, H, W)
    error = (f != majority(y)).any(0)
    u = disagreement(torch.from_numpy(members.astype(np.int64)), torch.from_numpy(fused.astype(np.int64)))
    return error.numpy(), u.numpy()
