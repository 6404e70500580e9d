"""Build ``learning-curve.md`` and its plots from the finished points of ``learning_curve.py`` (JSON files).

One section per dataset gathers the curves of its tasks (e.g. ``ddti``, ``ddti-recipes``, ``ddti-combo``): a
table of every point and plots of the validation scores against training compute, counted in optimiser steps
of the task's reference model (steps x ``relative_step_cost``), so that curves at equal x had equal compute.

A task with runs of several training seeds (``<task>-seed<N>.json`` beside ``<task>.json``, the presets' seed) gets
a section of its own: each point's score (``STUDIES``: DDTI Dice, LIDC GED@16) as mean +- sd over the seeds, and the
paired per-patient difference of each model against the study's baseline (the mean of a patient's images, then the
mean over patients) with its 95 % bootstrap interval over patients, per seed and for the patients' means over the
seeds.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from common import line_plot, markdown_table, paired, write_markdown

from diffuseg.config import TrainConfig
from diffuseg.data.formats.paired import patient_of
from diffuseg.evaluation.metrics import summarize

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


SEED_FILE = re.compile(r"(?P<task>.+)-seed(?P<seed>\d+)")


class Study(NamedTuple):
    """What a seed study compares: a point's ``key`` (shown in percent?) and the model the others are paired with."""

    key: str
    name: str
    percent: bool
    baseline: str


DICE_STUDY = Study("dice", "Dice", True, "deterministic UNet")
STUDIES = {"lidc-anchored": Study("ged_biased_16", "GED@16", False, "diffusion (ambiguity paper)")}  # else Dice


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


# --------------------------------------------------------------------------------------------- seeds
def task_and_seed(stem: str) -> tuple[str, int | None]:
    """``("ddti-anchored", 2)`` for the result file ``ddti-anchored-seed2``; ``(stem, None)`` for a task's own."""
    m = SEED_FILE.fullmatch(stem)
    return (m["task"], int(m["seed"])) if m else (stem, None)


def seed_table(by_seed: Mapping[int, Mapping[str, Any]], study: Study = DICE_STUDY) -> list[list[Any]]:
    """One row per (model, steps) scored with two seeds or more: the model, its step cost (mean over the seeds),
    the steps, each seed's score, their mean and sample sd over the seeds.

    Args:
        by_seed: training seed -> the curves of that seed (``label -> {"points": {steps: point}, ...}``).
        study: the point's metric (``study.key``, in percent when ``study.percent``) and the baseline, listed first.
    """
    values: dict[tuple[str, int], dict[int, float]] = defaultdict(dict)
    costs: dict[str, list[float]] = defaultdict(list)
    for seed, curves in sorted(by_seed.items()):
        for label, curve in curves.items():
            costs[label].append(curve.get("relative_step_cost") or 1.0)
            for p in curve["points"].values():
                values[label, p["steps"]][seed] = _value(p, study.key, study.percent)
    rows = []
    for (label, steps), vals in values.items():
        if len(vals) > 1:
            stats = summarize(list(vals.values()))
            by = ", ".join(f"{s}: {v:.{1 if study.percent else 3}f}" for s, v in sorted(vals.items()))
            rows.append([label, float(np.mean(costs[label])), steps, by, stats["mean"], stats["std"]])
    return sorted(rows, key=lambda r: (r[0] != study.baseline, r[0], r[2]))


def patient_means(per_case: Mapping[str, list], key: str = "dice") -> dict[str, float]:
    """The mean ``key`` of each patient's images (``per_case``: the point's case ids, their patients where the
    reader named them, else ``patient_of`` the case id, and their scores)."""
    by_patient: dict[str, list[float]] = defaultdict(list)
    patients = per_case.get("patient") or [patient_of(case) for case in per_case["case"]]
    for patient, v in zip(patients, per_case[key]):
        by_patient[patient].append(v)
    return {p: float(np.nanmean(vs)) for p, vs in by_patient.items()}


def paired_table(by_seed: Mapping[int, Mapping[str, Any]], study: Study = DICE_STUDY) -> list[list[Any]]:
    """Each model against ``study.baseline`` at each steps both were scored with per-case scores: per seed, and
    (with two seeds or more) for each patient's mean over the seeds; rows: model, steps, seeds, patients, the mean
    per-patient difference (in points when ``study.percent``) [95 % bootstrap CI over patients] and, for the
    seeds' row, the sd of the per-seed differences."""
    diffs: dict[tuple[str, int], dict[int, tuple[dict, dict]]] = defaultdict(dict)
    key, scale, digits = study.key, 100.0 if study.percent else 1.0, 2 if study.percent else 3
    for seed, curves in sorted(by_seed.items()):
        base = curves.get(study.baseline, {"points": {}})["points"]
        for label, curve in curves.items():
            for steps, p in curve["points"].items():
                b = base.get(steps)
                if label != study.baseline and b and "per_case" in p and "per_case" in b:
                    diffs[label, p["steps"]][seed] = (
                        patient_means(p["per_case"], key),
                        patient_means(b["per_case"], key),
                    )
    rows = []
    for (label, steps), seeds in sorted(diffs.items()):
        for seed, (model, base) in seeds.items():
            pats = sorted(model.keys() & base.keys())
            a, b = np.array([model[q] for q in pats]), np.array([base[q] for q in pats])
            rows.append([label, steps, str(seed), len(pats), paired(a, b, scale=scale, digits=digits), None])
        if len(seeds) > 1:
            pats = sorted(set.intersection(*(set(m) & set(b) for m, b in seeds.values())))
            a = np.array([[m[q] for q in pats] for m, _ in seeds.values()]).mean(0)
            b = np.array([[bb[q] for q in pats] for _, bb in seeds.values()]).mean(0)
            per_seed = [scale * np.mean([m[q] - bb[q] for q in pats]) for m, bb in seeds.values()]
            rows.append([label, steps, "mean of " + ", ".join(map(str, seeds)), len(pats),
                         paired(a, b, scale=scale, digits=digits), summarize(per_seed)["std"]])  # fmt: skip
    return rows


def seed_section(task: str, by_seed: Mapping[int, Mapping[str, Any]], out: Path, suffix: str = "") -> str:
    """The seed study of ``task`` (``STUDIES``): mean +- sd over seeds, the paired per-patient differences, a plot."""
    study = STUDIES.get(task, DICE_STUDY)
    name, base = (f"{study.name} %", "points") if study.percent else (study.name, "difference")
    rows = seed_table(by_seed, study)
    body = markdown_table(["model", "step cost", "steps", f"{name} by seed", f"mean {name}", "sd (over seeds)"], rows)
    body += "\n" + markdown_table(["model", "steps", "seed", "patients",
                                   f"{study.name} minus the {study.baseline}'s, {base} [95 % CI]", "sd over seeds"],
                                  paired_table(by_seed, study))  # fmt: skip
    body += (
        f"\nTraining seeds {', '.join(map(str, sorted(by_seed)))} (`train.seed`; the validation patients are the "
        f"same). sd: the sample standard deviation over seeds. Paired difference: each validation patient's mean "
        f"{study.name} over its images, the model's minus the {study.baseline}'s, averaged over patients; 95 % "
        f"percentile bootstrap over patients (10,000 draws). The row 'mean of ...' pairs each patient's {study.name} "
        "averaged over the seeds: its interval covers the sampling of patients, not of seeds (their spread is the last "
        "column); patients with several images weigh as much as the others, so it differs slightly from the "
        "difference of the image means above.\n"
    )
    scored = {seed: sorted({p["steps"] for c in curves.values() for p in c["points"].values()})
              for seed, curves in sorted(by_seed.items())}  # fmt: skip
    body += (
        "\nSteps scored by seed: "
        + "; ".join(f"{s}: {', '.join(map(str, st))}" for s, st in scored.items())
        + f" (the task's own seed runs every point; another seed N runs `learning_curve.py --task {task} --seed N "
        "--max-steps S`, S its last step).\n"
    )
    series, errors = {}, {}
    for label, cost, steps, _, mean, sd in rows:
        xs, ys = series.setdefault(label, ([], []))
        xs.append(steps * cost), ys.append(mean)
        errors.setdefault(label, []).append(sd)
    figure = line_plot(out.parent / f"{out.name}-{task}-seeds-{study.key}{suffix}.png", series, errors=errors,
                       ylabel=f"{name} (mean +- sd over seeds)",
                       xlabel=f"training compute (steps of {REFERENCE[task]})",
                       title=f"{task}: validation {study.name} over training seeds")  # fmt: skip
    return body + f"\n![{task} seeds]({figure.name})\n"


def write_report(out: Path, info: Mapping[str, str], quick: bool = False) -> Path | None:
    """``out``.md from every ``out/*.json`` (``--quick``: ``out/*-quick.json`` to ``out``-quick.md); None when
    nothing has finished yet."""
    files = [f for f in sorted(out.glob("*.json")) if f.stem.endswith("-quick") == quick] if out.exists() else []
    if not files:
        return None
    machines: dict[str, dict[str, str]] = {}
    by_dataset: dict[str, dict[str, Any]] = {}
    own: dict[str, tuple[int, dict[str, Any], str]] = {}  # task -> (its seed, its curves, its machine)
    seeded: dict[str, dict[int, Any]] = {}  # task -> seed -> the curves of its seed study
    for f in files:
        task, seed = task_and_seed(f.stem.removesuffix("-quick"))  # <dataset>[-<what>][-seed<N>][-quick]
        saved = json.loads(f.read_text())
        if seed is not None:
            seeded.setdefault(task, {})[seed] = saved["curves"]
            machines.setdefault(f"{task} seeds", {})[f"{task}, seed {seed}"] = saved.get("machine", "not recorded")
            continue
        where = saved.get("machine", "not recorded")
        own[task] = (saved.get("seed", TrainConfig.seed), saved["curves"], where)
        dataset = task if task in METRICS else task.split("-")[0]  # a task with metrics of its own: its section
        by_dataset.setdefault(dataset, {}).update(saved["curves"])
        machines.setdefault(dataset, {})[task] = where
    suffix = "-quick" if quick else ""
    sections = [
        (name.upper(), _machines(machines[name]) + dataset_section(name, c, out, suffix))
        for name, c in sorted(by_dataset.items())
    ]
    for task, by_seed in sorted(seeded.items()):
        study = {label for curves in by_seed.values() for label in curves}  # the models trained with other seeds
        if task in own:
            seed, curves, where = own[task]
            by_seed = {seed: {k: v for k, v in curves.items() if k in study}, **by_seed}
            machines[f"{task} seeds"][f"{task}, seed {seed}"] = where
        body = _machines(machines[f"{task} seeds"]) + seed_section(task, by_seed, out, suffix)
        sections.append((f"{task.upper()}, TRAINING SEEDS", body))
    path = out.parent / f"{out.name}{suffix}.md"
    return write_markdown(path, "Learning curves", info, sections)
