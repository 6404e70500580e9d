"""Build ``learning-curve.md`` and its plots from the finished points of ``learning_curve.py`` (JSON files).

One section per dataset gathers the curves of its tasks (e.g. ``ddti``, ``ddti-recipes``, ``ddti-combo``): a
table of every point and plots of the validation scores against training compute, counted in optimiser steps
of the task's reference model (steps x ``relative_step_cost``), so that curves at equal x had equal compute.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import line_plot, markdown_table, write_markdown

# (key in a point, label, as percent?) per dataset; the first ones are plotted
METRICS = {
    "acdc": (("dice", "mean 3D Dice %", True), ("dice/RV", "RV %", True), ("dice/Myo", "Myo %", True),
             ("dice/LV", "LV %", True)),
    "ddti": (("dice", "Dice %", True), ("iou", "IoU %", True), ("hd95", "HD95 (px at 64 px)", False),
             ("dice_one_step", "one-step Dice %", True)),
    "lidc": (("ged_biased_16", "GED@16", False), ("dice", "Dice", False), ("hungarian_iou", "HM-IoU", False),
             ("diversity", "diversity", False)),
}  # fmt: skip
METRICS["ddti-anchored"] = METRICS["ddti"]
METRICS["acdc-anchored"] = METRICS["acdc"]
METRICS["lidc-anchored"] = METRICS["lidc"]
PLOTTED = {
    "acdc": ("dice",),
    "ddti": ("dice",),
    "ddti-anchored": ("dice",),
    "lidc-anchored": ("ged_biased_16", "dice"),
    "acdc-anchored": ("dice",),
    "lidc": ("ged_biased_16", "dice"),
}
REFERENCE = {
    "acdc": "MedSegDiff-B with the ambiguity paper's process",
    "ddti": "MedSegDiff-B, papers' recipe",
    "ddti-anchored": "the deterministic UNet",
    "acdc-anchored": "the deterministic UNet",
    "lidc-anchored": "the deterministic UNet",
    "lidc": "the ambiguity paper's diffusion UNet",
}


def _value(point: Mapping[str, Any], key: str, percent: bool) -> float:
    v = point.get(key)
    v = float("nan") if v is None else float(v)
    return 100 * v if percent else v


def dataset_section(dataset: str, curves: Mapping[str, Mapping[str, Any]], out: Path, suffix: str = "") -> str:
    metrics = METRICS[dataset]
    headers = ["model", "step cost", "steps", "compute (ref. steps)", "images seen", "train min (cumulative)",
               *(m[1] for m in metrics), "eval min"]  # fmt: skip
    rows, points_of = [], {}
    for label, curve in curves.items():
        points = sorted(curve["points"].values(), key=lambda p: p["steps"])
        cost = curve.get("relative_step_cost")
        points_of[label] = (points, cost or 1.0)
        for p in points:
            rows.append([label, cost, p["steps"], p["steps"] * (cost or 1.0), p["images"], p["train_min"],
                         *(_value(p, k, pc) for k, _, pc in metrics), p["eval_min"]])  # fmt: skip
    body = markdown_table(headers, rows, digits=3)
    body += (
        f"\nStep cost: seconds per training step relative to {REFERENCE[dataset]}, timed one step of each in turn "
        "(empty: not timed; taken as 1). Train minutes are wall-clock on a machine shared with the other curves' "
        "jobs, so they are not comparable between rows; compute is.\n"
    )
    for key in PLOTTED[dataset]:
        _, ylabel, percent = next(m for m in metrics if m[0] == key)
        series = {
            label: ([p["steps"] * cost for p in pts], [_value(p, key, percent) for p in pts])
            for label, (pts, cost) in points_of.items()
            if pts
        }
        figure = line_plot(out.parent / f"{out.name}-{dataset}-{key}{suffix}.png", series, ylabel=ylabel,
                           xlabel=f"training compute (steps of {REFERENCE[dataset]}, batch 8)",
                           title=f"{dataset.upper()} validation {ylabel} against training compute")  # fmt: skip
        body += f"\n![{dataset} {key}]({figure.name})\n"
    return body


def _machines(by_task: Mapping[str, str]) -> str:
    """Which machine each task of a section ran on (the page's header is the machine that built the page)."""
    return "".join(f"Task `{task}` ran on: {where}.\n" for task, where in sorted(by_task.items())) + "\n"


def write_report(out: Path, info: Mapping[str, str], quick: bool = False) -> Path | None:
    """``out``.md from every ``out/*.json`` (``--quick``: ``out/*-quick.json`` to ``out``-quick.md); None when
    nothing has finished yet."""
    files = [f for f in sorted(out.glob("*.json")) if f.stem.endswith("-quick") == quick] if out.exists() else []
    if not files:
        return None
    machines: dict[str, dict[str, str]] = {}
    by_dataset: dict[str, dict[str, Any]] = {}
    for f in files:
        task = f.stem.removesuffix("-quick")  # tasks are named <dataset>[-<what>][-quick]
        dataset = task if task in METRICS else task.split("-")[0]  # a task with metrics of its own: its section
        saved = json.loads(f.read_text())
        by_dataset.setdefault(dataset, {}).update(saved["curves"])
        machines.setdefault(dataset, {})[task] = saved.get("machine", "not recorded")
    suffix = "-quick" if quick else ""
    sections = [
        (name.upper(), _machines(machines[name]) + dataset_section(name, c, out, suffix))
        for name, c in sorted(by_dataset.items())
    ]
    path = out.parent / f"{out.name}{suffix}.md"
    return write_markdown(path, "Learning curves", info, sections)
