"""Build ``learning-curve.md`` and its plots from the finished points of ``learning_curve.py`` (JSON files)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import line_plot, markdown_table, write_markdown

# (key in a point, column / axis label, as percent?) per task
METRICS = {
    "ddti": (("dice", "Dice %", True), ("iou", "IoU %", True), ("hd95", "HD95 (px at 64 px)", False)),
    "lidc": (("ged_biased_16", "GED@16", False), ("dice", "Dice (fused vs annotators)", False),
             ("hungarian_iou", "HM-IoU", False), ("diversity", "diversity", False)),
}  # fmt: skip


def _metrics(task: str):
    return METRICS["lidc" if task.startswith("lidc") else "ddti"]


def _value(point: Mapping[str, Any], key: str, percent: bool) -> float:
    v = float(point.get(key, float("nan")))
    return 100 * v if percent else v


def task_section(task: str, data: Mapping[str, Any], out: Path) -> str:
    metrics = _metrics(task)
    headers = ["model", "steps", "images seen", "train min (cumulative)", *(m[1] for m in metrics), "eval min"]
    rows, series = [], {}
    for label, curve in data["curves"].items():
        points = sorted(curve["points"].values(), key=lambda p: p["steps"])
        cost = curve.get("relative_step_cost")
        shown = label if cost is None else f"{label} (step cost x{cost:.2f})"
        for p in points:
            rows.append([shown, p["steps"], p["images"], p["train_min"], *(_value(p, k, pc) for k, _, pc in metrics),
                         p["eval_min"]])  # fmt: skip
        key, _, percent = metrics[0]
        compute = [p["steps"] * (cost or 1.0) for p in points]
        series[shown] = (compute, [_value(p, key, percent) for p in points])
    body = markdown_table(headers, rows, digits=3)
    ylabel = metrics[0][1]
    figure = line_plot(out.parent / f"learning-curve-{task}.png", series, xlabel="training compute (paper-recipe "
                       "steps of batch 8; a recipe's steps x its step cost)", ylabel=ylabel,
                       title=f"{task}: validation {ylabel} against training", logx=True)  # fmt: skip
    body += f"\n![{task}]({figure.name})\n"
    if task.startswith("lidc"):
        dice = {label: (c, [_value(p, "dice", False) for p in sorted(cv["points"].values(), key=lambda p: p["steps"])])
                for (label, (c, _)), cv in zip(series.items(), data["curves"].values())}  # fmt: skip
        figure = line_plot(out.parent / f"learning-curve-{task}-dice.png", dice, xlabel="training steps (batch 8)",
                           ylabel="Dice", title=f"{task}: validation Dice against training", logx=True)  # fmt: skip
        body += f"\n![{task} Dice]({figure.name})\n"
    return body


def write_report(out: Path, info: Mapping[str, str]) -> Path | None:
    """``out``.md from every ``out/*.json``; None when nothing has finished yet."""
    files = sorted(out.glob("*.json")) if out.exists() else []
    if not files:
        return None
    sections = []
    for f in files:
        data = json.loads(f.read_text())
        sections.append((f"{f.stem}", task_section(f.stem, data, out)))
    path = out.parent / f"{out.name}.md"
    return write_markdown(path, "Learning curves (issue 14)", info, sections)
