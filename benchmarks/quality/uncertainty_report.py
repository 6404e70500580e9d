"""``uncertainty.md`` and its figures from the JSON of ``benchmarks/quality/uncertainty.py``: per dataset a table of
accuracy, calibration, pixel-level and case-level error detection and cost for every method, and a figure of
error detection against cost."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # common.py
from common import RESULTS, _pyplot, command, markdown_table, save_figure, write_markdown

PAGE = RESULTS / "uncertainty.md"
COLUMNS = (  # (header, where, key): where is "summary" (mean over cases) or a path into the "uncertainty" block
    ("Dice", "summary", "dice"),
    ("GED@16", "summary", "ged_16"),
    ("HM-IoU", "summary", "hungarian_iou"),
    ("ECE (all px)", "summary", "ece"),
    ("ECE marked (pooled)", "calibration", "ece_marked"),
    ("pixel AUROC (pooled)", "pixel", "auroc"),
    ("pixel AUPRC (pooled)", "pixel", "auprc"),
    ("error rate", "pixel", "error_rate"),
    ("AURC", "failure", "aurc"),
    ("E-AURC", "failure", "e_aurc"),
    ("AURC random", "failure", "aurc_random"),
    ("Spearman", "failure", "spearman"),
)
"""The table's metrics; GED and HM-IoU only where there are several annotators (LIDC)."""


def value(arm: dict[str, Any], where: str, key: str) -> Any:
    """One cell: a mean over cases (``summary``) or a pooled / across-case number of the uncertainty block."""
    if where == "summary":
        return arm["summary"].get(key)
    return (arm.get("uncertainty") or {}).get(where, {}).get(key)


def dataset_section(payload: dict[str, Any], figure: Path) -> str:
    """The markdown of one dataset: budget line, table, figure."""
    arms = payload["arms"]
    columns = [c for c in COLUMNS if any(value(a, *c[1:]) is not None for a in arms.values())]
    headers = ["method", "K", "passes / case", "s / case", *(c[0] for c in columns)]
    rows = [
        [label, a["members"], a["passes_per_case"], a["seconds_per_case"], *(value(a, *c[1:]) for c in columns)]
        for label, a in arms.items()
    ]
    b, m = payload["budget"], payload["machine"]
    head = (
        f"{max(len(a['cases']) for a in arms.values())} validation cases; every model {b['steps']} optimiser steps at "
        f"64 px, batch 8; scored on {m.get('cpu', '?')} with {m.get('torch threads', '?')} torch thread(s), fp32 "
        "(seconds per case were measured "
        "while other jobs shared the machine: compare them within this table only).\n\n"
    )
    commands = "".join(f"    {c}\n" for c in payload.get("commands", []))
    if commands:
        head += f"Scored by (in this order; each run keeps the methods it did not score):\n\n{commands}\n"
    return head + markdown_table(headers, rows) + f"\n![{payload['dataset']}]({figure.name})\n"


def cost_figure(payload: dict[str, Any], path: Path) -> Path:
    """Dice (with the empty mask's as a line), pixel AUROC and E-AURC (lower is better) against seconds per case,
    one point per method: an uncertainty that finds the errors of a poor mask is worth less than it looks."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    refs = {
        k.replace(" (reference)", ""): a["summary"].get("dice") for k, a in payload["arms"].items() if not a["members"]
    }
    dices = [a["summary"]["dice"] for a in payload["arms"].values() if a["members"]]
    near = {k: v for k, v in refs.items() if v is not None and min(dices) - 0.05 <= v <= max(dices) + 0.05}
    for (name, v), style in zip(near.items(), ("--", ":")):
        axes[0].axhline(v, color="grey", linestyle=style, label=name)
    far = ", ".join(f"{k} {v:.3f}" for k, v in refs.items() if k not in near and v is not None)
    if near:
        axes[0].legend(fontsize=8)
    if far:
        axes[0].set_title(f"references off the axis: {far}", fontsize=8)
    panels = (
        ("summary", "dice", "Dice of the fused mask"),
        ("pixel", "auroc", "pixel AUROC of the uncertainty for errors"),
        ("failure", "e_aurc", "E-AURC (lower: better)"),
    )
    for ax, (where, key, label) in zip(axes, panels):
        for name, arm in payload["arms"].items():
            y = value(arm, where, key)
            if y is None or arm["seconds_per_case"] is None:
                continue
            ax.scatter(arm["seconds_per_case"], y, s=40)
            ax.annotate(name, (arm["seconds_per_case"], y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        threads = payload["machine"].get("torch threads", "?")
        ax.set(xlabel=f"seconds per case ({threads} CPU thread(s), fp32)", ylabel=label)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{payload['dataset']}: does the uncertainty find the errors, and at what cost?")
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(out: Path, info: dict[str, str]) -> Path:
    """Rebuild ``uncertainty.md`` from every ``<dataset>.json`` in ``out`` (quick runs left out)."""
    sections = []
    for path in sorted(p for p in out.glob("*.json") if not p.stem.endswith("-quick")):
        payload = json.loads(path.read_text())
        figure = cost_figure(payload, RESULTS / f"uncertainty-{payload['dataset']}.png")
        sections.append((payload["dataset"].upper(), dataset_section(payload, figure)))
    intro = (
        "Page rebuilt by `" + command() + "`. Definitions: docs/evaluation.md (pixel AUROC/AUPRC of the members' "
        "disagreement for the error pixels against the annotators' majority; AURC of the case uncertainty against "
        "1 - Dice; ECE over the pixels some member marks, equal-mass bins)."
    )
    return write_markdown(PAGE, "Uncertainty: which method's uncertainty predicts its errors", info,
                          [("How this was made", intro), *sections])  # fmt: skip
