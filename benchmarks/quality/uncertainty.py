"""Which method's uncertainty predicts its errors, for what it costs: every method on validation patients.

    .venv/bin/python benchmarks/quality/uncertainty.py --dataset lidc --train   # train every LIDC model (resumable)
    .venv/bin/python benchmarks/quality/uncertainty.py --dataset lidc           # train what is missing, then score
    .venv/bin/python benchmarks/quality/uncertainty.py --report                 # rebuild uncertainty.md and figures
    .venv/bin/python benchmarks/quality/uncertainty.py --dataset lidc --quick   # smoke check, tiny budget

In the spirit of ValUES (Kahl et al., ICLR 2024, arXiv:2401.08501): the same cases, the same training budget
(optimiser steps, batch, resolution) for every model, and each method's members drawn as ``predict`` draws them
(``inference.ensemble``, ``predict``'s member seeds). Methods: the deterministic UNet (no uncertainty: its members
agree), the UNet with test-time augmentation, a seed ensemble of UNets, the latent-variable baselines (Prob. UNet,
PHiSeg), Stochastic Segmentation Networks, the ambiguity paper's diffusion UNet and anchored diffusion. Each case
is scored with ``evaluation.case_metrics.case_metrics`` (accuracy, GED with several annotators, calibration, the
pixel AUROC/AUPRC of the uncertainty for the error pixels) and the cases together by failure detection (AURC and
the Spearman correlation of the case score with 1 - Dice). Cost: network passes per case and the measured seconds
per case on this machine. Models train under ``runs/bench-unc/``; results land in
``benchmarks/results/uncertainty/<dataset>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder's modules
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # common.py
import quality as Q
from common import RESULTS, command, machine, print_machine, run_main

from diffuseg.config import Config, EvalConfig
from diffuseg.evaluation import metrics as M
from diffuseg.evaluation.case_metrics import case_metrics, class_masks
from diffuseg.evaluation.references import REFERENCE_LABELS, reference_metrics
from diffuseg.evaluation.uncertainty_metrics import UncertaintyPool, uncertainty_results
from diffuseg.files import write_text_atomic
from diffuseg.inference.ensemble import prepare_network, sample_ensembles
from diffuseg.inference.models import load_models
from diffuseg.methods import make_draw, steps_per_member

OUT = RESULTS / "uncertainty"
SEEDS = (0, 1, 2)  # the UNet seed ensemble (and seed 0 is the UNet of the TTA and deterministic rows)


@dataclasses.dataclass(frozen=True)
class Run:
    """One trained model: its run folder name, preset and overrides."""

    name: str
    preset: str
    extra: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Budget:
    """What sets the cost: resolution and batch come from quality.py's ``long`` budget."""

    steps: int
    cases: int  # validation cases scored
    members: int  # K for the sampling methods
    channels: tuple[int, ...]
    probunet_filters: tuple[int, ...]


BUDGETS = {
    "lidc": Budget(steps=750, cases=64, members=16, channels=(16, 16, 32, 64), probunet_filters=(16, 32, 64, 96)),
    "ddti": Budget(steps=1200, cases=48, members=25, channels=(16, 16, 32, 64), probunet_filters=()),
    "acdc": Budget(steps=1200, cases=96, members=25, channels=(16, 16, 32, 64), probunet_filters=()),
    "quick": Budget(steps=2, cases=3, members=4, channels=(8, 8, 8, 8), probunet_filters=(8, 8, 8, 8)),
}
LR = ("train.lr=0.001", "train.decay_steps=0", "train.warmup_steps=150")  # the learning curves' LIDC schedule
RESIDUAL = ("anchored.form=residual", "anchored.seg_weighting=uniform")  # the anchored run as it was measured
LIGHT_HEAD = ("anchored.head_channels=[8,16,32,32]", "anchored.head_patch=1")  # the anchored runs' head
STAPLE = ("sample.fusion=staple",)  # the single-rater anchored runs' fusion, whatever their preset's


def lidc_runs(b: Budget) -> list[Run]:
    """The LIDC models, trained alike (lr 1e-3 constant after warm-up, 64 px, batch 8)."""
    ch = Q.list_option("model.options.channels", b.channels)
    unet = (ch, "data.augment=false", *LR)
    probunet = ("method=probunet", "model.name=probunet", Q.list_option("model.options.filters", b.probunet_filters))
    phiseg = ("model.options.n0=16", "model.options.resolution_levels=5", "model.options.latent_levels=4")
    return [
        *(Run(f"unc-lidc-unet-s{s}", "unet-lidc", (*unet, f"train.seed={s}")) for s in SEEDS),
        Run("unc-lidc-probunet", "lidc-central", (*probunet, *LR)),
        Run("unc-lidc-phiseg", "phiseg", (*phiseg, "data.augment=false", *LR)),
        Run("unc-lidc-diffusion", "lidc-central", (ch, *LR)),
        Run("unc-lidc-anchored", "anchored-lidc", (*unet, *LIGHT_HEAD, *RESIDUAL)),
        Run("unc-lidc-ssn", "ssn-lidc", unet),
    ]


def single_rater_runs(dataset: str, b: Budget) -> list[Run]:
    """DDTI or ACDC (one annotator): the UNet seeds, MedSegDiff-B with the paper's recipe (DDTI) or with the
    ambiguity paper's process trained aligned with sampling (the ACDC preset), and anchored diffusion (light head),
    with the learning curves' schedule (constant lr after 60 warm-up steps)."""
    ch = Q.list_option("model.options.channels", b.channels)
    unet = (ch, "train.decay_steps=0", "train.warmup_steps=60")
    base = "model.options.base_channels=16"
    fp32 = ("sample.precision=32",) if dataset == "acdc" else ()
    return [
        *(Run(f"unc-{dataset}-unet-s{s}", f"unet-{dataset}", (*unet, f"train.seed={s}")) for s in SEEDS),
        Run(f"unc-{dataset}-medsegdiff", f"medsegdiff-b-{dataset}", (base, *unet[1:])),
        Run(f"unc-{dataset}-anchored", f"anchored-{dataset}", (*unet, *LIGHT_HEAD, *STAPLE, *fp32)),
        Run(f"unc-{dataset}-ssn", f"ssn-{dataset}", unet),
    ]


RUNS = {
    "lidc": lidc_runs,
    "ddti": lambda b: single_rater_runs("ddti", b),
    "acdc": lambda b: single_rater_runs("acdc", b),
}


def run_config(dataset: str, b: Budget, run: Run, quick: bool) -> Config:
    """``run`` at budget ``b`` with quality.py's data and budget overrides (64 px, batch 8)."""
    qb = Q.BUDGETS["quick" if quick else "long"]
    name = f"{run.name}-quick" if quick else run.name
    extra = [*run.extra, f"train.ckpt_every={b.steps}"]
    data = {"lidc": Q.lidc_overrides, "ddti": Q.ddti_overrides, "acdc": Q.acdc_overrides}[dataset](qb)
    config = Q.make_config(qb, name, run.preset, b.steps, extra, data=data)
    return dataclasses.replace(
        config, train=dataclasses.replace(config.train, out_dir=str(Q.REPO / "runs" / "bench-unc" / name))
    )


def train_all(dataset: str, quick: bool, only: str = "") -> dict[str, Path]:
    """Train (or resume) every run of ``dataset`` (``only``: those whose name contains it); checkpoint per run."""
    b = BUDGETS["quick" if quick else dataset]
    ckpts = {}
    for run in (r for r in RUNS[dataset](b) if only in r.name):
        ckpt, minutes = Q.ensure_trained(run_config(dataset, b, run, quick))
        print(f"{run.name}: {ckpt} ({minutes:.1f} min now)", flush=True)
        ckpts[run.name] = ckpt
    return ckpts


@dataclasses.dataclass(frozen=True)
class Arm:
    """One method as it is scored: its label, the runs its members come from (several: a seed ensemble, member k
    from run k mod N) and its ``sample.*`` overrides."""

    label: str
    runs: tuple[str, ...]
    sample: tuple[tuple[str, Any], ...] = ()


FP32 = (("precision", "32"),)  # every method samples in fp32, so costs compare across methods
FEW_STEPS = (("sampler", "ddpm"), ("steps", 5), ("spacing", "quadratic"))  # MedSegDiff-B's 5-step DDPM grid


def arms(dataset: str, b: Budget) -> list[Arm]:
    """Every method scored on ``dataset``: members K = ``b.members`` for the sampling methods; the UNet alone (its
    members agree: no uncertainty), with 8 test-time views, and as a seed ensemble of its ``SEEDS``."""
    r = f"unc-{dataset}-"
    unets = tuple(f"{r}unet-s{s}" for s in SEEDS)
    k = (("samples", b.members), ("batch_size", b.members), *FP32)
    out = [
        Arm("UNet", unets[:1], (("samples", 1), ("batch_size", 1), *FP32)),
        Arm("UNet + TTA (8 views)", unets[:1], (("tta", True), ("samples", 8), ("batch_size", 8), *FP32)),
        Arm(f"UNet seed ensemble ({len(unets)})", unets, (("samples", len(unets)), ("batch_size", len(unets)), *FP32)),
    ]
    if dataset == "lidc":
        out += [Arm("Prob. UNet", (f"{r}probunet",), k), Arm("PHiSeg", (f"{r}phiseg",), k)]
        out += [Arm("diffusion (ambiguity paper)", (f"{r}diffusion",), k)]
    else:
        out += [Arm("MedSegDiff-B", (f"{r}medsegdiff",), (*k, *FEW_STEPS))]
    return [*out, Arm("SSN", (f"{r}ssn",), k), Arm("anchored diffusion", (f"{r}anchored",), k)]


def score_arm(arm: Arm, ckpts: dict[str, Path], cases: list) -> dict[str, Any]:
    """Draw ``arm``'s members for ``cases`` ((case id, image, masks (A, S, S))) as ``predict`` does, score each case
    (``case_metrics``), pool the pixels (``UncertaintyPool``) and rank the cases (failure detection)."""
    models = load_models([ckpts[name] for name in arm.runs])
    first = models[0].config
    cfg = dataclasses.replace(first.sample, **dict(arm.sample))
    scheme = first.data.scheme
    draws = []
    for m in models:
        config = dataclasses.replace(m.config, sample=cfg)
        draws.append(make_draw(config, prepare_network(m.net, cfg, "cpu"), m.process))
    images = [(cid, image) for cid, image, _ in cases]
    eval_cfg = EvalConfig(ged_samples=(4, 16))
    pool, rows = UncertaintyPool(scheme.names), []
    start = time.perf_counter()
    results = list(sample_ensembles(draws, images, cfg, scheme=scheme))
    seconds = time.perf_counter() - start
    for r, (cid, _, masks) in zip(results, cases):
        truth = (masks.bool() if scheme.binary else masks.long())[:, None]
        row = case_metrics(r.samples, r.fused, truth, scheme, eval_cfg)
        rows.append({"case": cid, **row})
        pool.add(*(class_masks(scheme, x) for x in (r.samples[:, 0], r.fused[0], truth[:, 0])))
    summary = {key: M.summarize([row.get(key, math.nan) for row in rows])["mean"] for key in rows[0] if key != "case"}
    passes = cfg.samples * steps_per_member(dataclasses.replace(first, sample=cfg))
    return {
        "label": arm.label,
        "runs": list(arm.runs),
        "sample": dict(arm.sample),
        "members": cfg.samples,
        "passes_per_case": passes,
        "seconds_per_case": seconds / len(cases),
        "summary": summary,
        "uncertainty": uncertainty_results(rows, pool, eval_cfg.calibration_bins),
        "cases": rows,
    }


def reference_rows(cases: list, scheme) -> dict[str, dict[str, Any]]:
    """The trivial masks on the same cases (``evaluation.references``): what marking nothing or everything scores,
    the floor every method's Dice and GED are read against."""
    rows = [reference_metrics((m.bool() if scheme.binary else m.long())[:, None], scheme) for _, _, m in cases]
    out = {}
    for key, label in REFERENCE_LABELS.items():
        values = [row[key] for row in rows]
        names = sorted({k for v in values for k in v})
        summary = {k: M.summarize([v.get(k, math.nan) for v in values])["mean"] for k in names}
        if "ged" in summary:  # every member is the reference mask: its GED does not depend on the member count
            summary["ged_16"] = summary["ged"]
        out[f"{label} (reference)"] = {"members": 0, "passes_per_case": 0, "seconds_per_case": None,
                                       "summary": summary, "uncertainty": {}, "cases": []}  # fmt: skip
    return out


def score_all(dataset: str, quick: bool, only: str = "") -> Path:
    """Train what is missing, score every arm of ``dataset`` on its validation cases and save the JSON (arms
    already in it are kept unless rescored)."""
    b = BUDGETS["quick" if quick else dataset]
    ckpts = train_all(dataset, quick)
    out = OUT / f"{dataset}{'-quick' if quick else ''}.json"
    saved = json.loads(out.read_text()) if out.exists() else {}
    first = next(iter(RUNS[dataset](b)))
    cases = Q.val_cases(run_config(dataset, b, first, quick), b.cases)
    scored = saved.get("arms", {})
    commands = saved.get("commands", [])
    commands.append(command())

    def save() -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        payload = {"dataset": dataset, "machine": machine(), "budget": dataclasses.asdict(b), "commands": commands,
                   "arms": scored}  # fmt: skip
        write_text_atomic(out, json.dumps(payload, indent=1, default=_number))

    scored |= reference_rows(cases, run_config(dataset, b, first, quick).data.scheme)
    save()
    for arm in arms(dataset, b):
        if only not in arm.label:
            continue
        result = score_arm(arm, ckpts, cases)
        scored[arm.label] = result
        print(dataset, arm.label, {k: result["summary"].get(k) for k in ("dice", "pixel_auroc", "ged_16")}, flush=True)
        save()
    return out


def _number(value: Any) -> Any:
    """JSON for numpy scalars; NaN stays NaN (``json`` writes it as ``NaN``)."""
    return float(value) if isinstance(value, np.generic) else str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(RUNS), action="append", default=[], help="datasets to run")
    parser.add_argument("--report", action="store_true", help="only rebuild uncertainty.md and its figures")
    parser.add_argument("--train", action="store_true", help="only train the models")
    parser.add_argument("--only", default="", help="only the runs (--train) or methods whose name contains this")
    parser.add_argument("--quick", action="store_true", help="tiny budget, results in <dataset>-quick.json")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 per job on a shared machine)")
    parser.add_argument("--data", type=Path, default=Q.DATA, help="folder holding lidc/, ddti/ and acdc/")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    Q.DATA = args.data
    info = machine()
    print_machine(info)
    for dataset in [] if args.report else args.dataset:
        if args.train:
            train_all(dataset, args.quick, args.only)
        else:
            score_all(dataset, args.quick, args.only)
    if not args.train:
        from uncertainty_report import write_report

        write_report(OUT, info)


if __name__ == "__main__":
    run_main(main)
