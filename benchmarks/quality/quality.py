"""The papers' tables at a scale this machine can afford, on real data.

    .venv/bin/python benchmarks/quality/quality.py --quick                    # smoke check: every part, tiny budget
    .venv/bin/python benchmarks/quality/quality.py --queue lidc  # LIDC: empty floor, main comparison, Fig. 6
    .venv/bin/python benchmarks/quality/quality.py --queue table3             # LIDC: Table 3 (12 small models)
    .venv/bin/python benchmarks/quality/quality.py --queue ddti               # DDTI: Tables 2, 4, 5 and the UNet
    .venv/bin/python benchmarks/quality/quality.py --budget long --queue acdc # ACDC: per-class 3D Dice vs the UNet
    .venv/bin/python benchmarks/quality/quality.py --report                   # rebuild quality.md from finished parts
    .venv/bin/python benchmarks/quality/quality.py --budget long --queue ddti # 3-4x the training -> quality-long.md

Each part trains through ``diffuseg.training.run.train`` (a run folder under ``runs/bench-<budget>/``, reused
when its checkpoint is already at the target step), draws ensembles as ``predict`` draws them
(``inference.ensemble``: the checkpoint's own family, ``methods.make_draw``, and ``predict``'s member seeds),
and scores with ``evaluation.case_metrics.case_metrics`` on the validation patients only (LIDC:
``val_patients.txt``; DDTI: a seeded 20 % of patients, the patient being the number before the first ``_``;
ACDC: the dataset's ``val.list`` volumes, per class). Results land in ``benchmarks/results/quality/<part>.json``
as each part finishes, and ``quality.md`` (with plots) is rebuilt from every finished part.

The budget (``BUDGETS``) is stated in the report: resolution, training steps and images seen, network widths,
evaluation cases, members and sampler steps, and the CPU minutes each part took.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder's modules
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # common.py
from common import RESULTS, machine, print_machine, run_main

from diffuseg.checkpoint import LAST, read_checkpoint
from diffuseg.config import Config, EvalConfig
from diffuseg.errors import UserError
from diffuseg.evaluation import metrics as M
from diffuseg.evaluation.case_metrics import case_metrics
from diffuseg.files import write_text_atomic
from diffuseg.inference.ensemble import draw_members, prepare_network, sample_ensembles
from diffuseg.inference.fusion import fuse
from diffuseg.labels import LabelScheme
from diffuseg.methods import Draw, load_for_inference, make_draw
from diffuseg.presets import load_config
from diffuseg.training.run import train
from diffuseg.training.stream import build_datasets

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".." / "shared" / "data"
OUT = RESULTS / "quality"


@dataclasses.dataclass(frozen=True)
class Budget:
    """Everything that sets the cost of a run of this script."""

    name: str
    size: int  # px, both datasets
    batch: int
    main_steps: int  # LIDC main comparison
    ddti_train_steps: int  # DDTI models
    table3_steps: int  # LIDC prediction type x weighting
    lidc_channels: tuple[int, ...]  # diffusion-unet and unet widths (paper: 32, 32, 64, 128)
    probunet_filters: tuple[int, ...]  # Prob. UNet widths (paper: 32, 64, 128, 192)
    lidc_lrs: tuple[float, ...]  # the LIDC models also trained at these learning rates (the presets: 1e-4)
    medsegdiff_base: int  # MedSegDiff-B base width (ours at full size: 32)
    lidc_cases: int  # validation slices scored in the main comparison
    table3_cases: int
    fig6_cases: int
    fig6_steps: tuple[int, ...]
    ddti_cases: int  # validation images for Tables 2 and 5 (Table 4 uses half of them)
    samples: int  # LIDC samples per slice (GED at 4 and 16)
    members: int  # DDTI ensemble (Table 5)
    table2_members: int
    ddti_sampler: str  # sampler of Tables 2 and 5
    ddti_steps: int  # its steps
    table4: tuple[tuple[str, int, str], ...]  # (sampler, steps, spacing)
    table4_members: int
    fast: tuple[tuple[str, int, str], ...]  # 25-member ensembles against the first (the 100-step reference)
    acdc_train_steps: int  # ACDC models (as the DDTI models of the budget)
    acdc_volumes: int  # ACDC validation volumes scored (val.list has 20)


BUDGET_FIELDS = tuple(f.name for f in dataclasses.fields(Budget))
L, Q = "linear", "quadratic"  # sampling grids (``sample.spacing``)
BUDGETS = {
    "full": Budget(
        name="full", size=64, batch=8, main_steps=500, ddti_train_steps=300, table3_steps=150,
        lidc_channels=(16, 16, 32, 64), probunet_filters=(16, 32, 64, 96), lidc_lrs=(), medsegdiff_base=16,
        lidc_cases=64, table3_cases=32, fig6_cases=32, fig6_steps=(2, 5, 10, 25),
        ddti_cases=48, samples=16, members=25, table2_members=5, ddti_sampler="ddim", ddti_steps=10,
        table4=(("ddpm", 100, L), ("ddpm", 10, L), ("ddpm", 25, L), ("ddim", 100, L), ("ddim", 10, L),
                ("ddim", 25, L), ("dpm_solver", 10, L), ("dpm_solver", 20, L)),
        table4_members=4,
        fast=(("ddpm", 100, L), ("ddpm", 10, L), ("ddpm", 5, L), ("ddpm", 5, Q)),
        acdc_train_steps=300, acdc_volumes=20,
    ),
    # 3-4x the training of "full" (LIDC 1,500 steps, Table 3 600, DDTI 1,200), Tables 2 and 5 with the paper's
    # DDPM sampler, Table 4 with 5-step samplers and the quadratic grid
    "long": Budget(
        name="long", size=64, batch=8, main_steps=1500, ddti_train_steps=1200, table3_steps=600,
        lidc_channels=(16, 16, 32, 64), probunet_filters=(16, 32, 64, 96), lidc_lrs=(1e-3,),
        medsegdiff_base=16, lidc_cases=64, table3_cases=32, fig6_cases=32, fig6_steps=(2, 5, 10, 25),
        ddti_cases=48, samples=16, members=25, table2_members=5, ddti_sampler="ddpm", ddti_steps=10,
        table4=(("ddpm", 100, L), ("ddpm", 10, L), ("ddpm", 25, L), ("ddim", 100, L), ("ddim", 5, L),
                ("ddim", 10, L), ("ddim", 25, L), ("dpm_solver", 5, L), ("dpm_solver", 10, L),
                ("dpm_solver", 20, L), ("ddpm", 5, L), ("ddpm", 4, Q), ("ddpm", 5, Q), ("ddpm", 10, Q),
                ("ddim", 5, Q), ("dpm_solver", 5, Q)),
        table4_members=4,
        fast=(("ddpm", 100, L), ("ddpm", 10, L), ("ddpm", 5, L), ("ddpm", 5, Q), ("ddpm", 4, Q)),
        acdc_train_steps=1200, acdc_volumes=20,
    ),
    "quick": Budget(
        name="quick", size=32, batch=2, main_steps=2, ddti_train_steps=2, table3_steps=1,
        lidc_channels=(8, 8, 8, 8), probunet_filters=(8, 8, 8, 8), lidc_lrs=(1e-3,), medsegdiff_base=8,
        lidc_cases=3, table3_cases=2, fig6_cases=2, fig6_steps=(1, 2),
        ddti_cases=3, samples=4, members=5, table2_members=2, ddti_sampler="ddpm", ddti_steps=2,
        table4=(("ddpm", 3, L), ("ddim", 2, L), ("dpm_solver", 2, Q)), table4_members=2,
        fast=(("ddpm", 3, L), ("ddpm", 2, Q)),
        acdc_train_steps=2, acdc_volumes=1,
    ),
}  # fmt: skip


# --------------------------------------------------------------------------------------------- configs
def lidc_overrides(b: Budget) -> list[str]:
    root = DATA / "lidc"
    return [
        f"data.root={root}",
        "data.layout=lidc",
        f"data.train_patients={root / 'train_patients.txt'}",
        f"data.val_patients={root / 'val_patients.txt'}",
    ]


def ddti_overrides(b: Budget) -> list[str]:
    return [f"data.root={DATA / 'ddti'}", "data.val_fraction=0.2", "data.split_seed=0"]


def budget_overrides(b: Budget, name: str, steps: int) -> list[str]:
    return [
        f"data.image_size={b.size}",
        f"data.cache_dir={REPO / 'runs' / 'bench-cache'}",
        f"train.out_dir={REPO / 'runs' / f'bench-{b.name}' / name}",
        f"train.steps={steps}",
        f"train.batch_size={b.batch}",
        f"train.warmup_steps={max(1, steps // 10)}",
        f"train.decay_steps={steps // 4}",
        f"train.ckpt_every={max(1, steps // 4)}",
        "train.val_every=0",
        f"train.log_every={max(1, min(50, steps))}",
        "train.precision=32-true",
        "train.accelerator=cpu",
        "train.devices=1",
    ]


def acdc_overrides(b: Budget) -> list[str]:
    """The SSL4MIS ACDC release; train.list / val.list give the split (by patient)."""
    return [f"data.root={DATA / 'acdc'}", "data.layout=ssl4mis"]


def make_config(
    b: Budget, name: str, preset: str, steps: int, extra: list[str], data: list[str] | None = None
) -> Config:
    """``preset`` at budget ``b``; ``data``: the dataset's overrides (default: LIDC or DDTI by the preset's name)."""
    if data is None:
        data = lidc_overrides(b) if "lidc" in preset else ddti_overrides(b)
    return load_config(preset, [*data, *budget_overrides(b, name, steps), *extra])


def list_option(key: str, values: tuple[int, ...]) -> str:
    return f"{key}=[{','.join(str(v) for v in values)}]"


# --------------------------------------------------------------------------------------------- train
def ensure_trained(config: Config) -> tuple[Path, float]:
    """Train ``config`` unless its checkpoint is already at ``train.steps``; (checkpoint, minutes spent)."""
    ckpt = Path(config.train.out_dir) / "checkpoints" / LAST
    start = time.perf_counter()
    if ckpt.exists():
        step = int(read_checkpoint(ckpt)["diffuseg"]["global_step"])
        if step < config.train.steps:
            train(config, resume=True)
    else:
        train(config)
    return ckpt, (time.perf_counter() - start) / 60


def val_items(config: Config, n: int) -> list[dict]:
    """``n`` validation items evenly spaced over the validation split (``data.dataset`` items, with their
    ``case_id`` and ``patient_id``)."""
    _, val = build_datasets(config, Path(config.train.out_dir))
    idx = np.unique(np.linspace(0, len(val) - 1, min(n, len(val))).round().astype(int))
    return [val[int(i)] for i in idx]


def as_case(item: dict) -> tuple[str, torch.Tensor, torch.Tensor]:
    """A validation item as a case: (case id, image, masks (K, S, S))."""
    return item["case_id"], item["image"], item["masks"]


def val_cases(config: Config, n: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``n`` validation items evenly spaced over the validation split, as cases (``as_case``)."""
    return [as_case(it) for it in val_items(config, n)]


def load_draw(ckpt: Path, **sample: Any) -> tuple[Config, Draw]:
    """The checkpoint's config with ``sample`` overrides, and its member-drawing function on the CPU
    (``methods.make_draw``, the network prepared as ``predict`` prepares it)."""
    config, net, process = load_for_inference(ckpt)
    config = dataclasses.replace(config, sample=dataclasses.replace(config.sample, **sample))
    return config, make_draw(config, prepare_network(net, config.sample, "cpu"), process)


def ensembles(ckpt: Path, cases, **sample: Any) -> list[Any]:
    """One ``EnsembleResult`` per case, drawn and finished as ``predict`` does (``inference.ensemble.
    sample_ensembles``, ``predict``'s member seeds) with the checkpoint's family and ``sample`` overrides;
    ``samples`` members per case, by default as many whole cases per call as fit in 64 rows."""
    config, draw = load_draw(ckpt, **sample)
    if "batch_size" not in sample:
        n = config.sample.samples
        config = dataclasses.replace(config, sample=dataclasses.replace(config.sample, batch_size=max(n, 64 // n * n)))
    images = [(cid, image) for cid, image, _ in cases]
    return list(sample_ensembles(draw, images, config.sample, scheme=config.data.scheme))


def case_scores(results, cases, ged_sizes=(4, 16)) -> list[dict[str, float]]:
    """``case_metrics`` of each case, in the order of ``cases``."""
    return [
        case_metrics(r.samples, r.fused, masks.bool()[:, None], LabelScheme(), EvalConfig(ged_samples=tuple(ged_sizes)))
        for r, (_, _, masks) in zip(results, cases)
    ]


def score(results, cases, ged_sizes=(4, 16)) -> dict[str, float]:
    """Mean of ``case_metrics`` over cases (NaNs left out), plus how many cases were scored."""
    return mean_scores(case_scores(results, cases, ged_sizes))


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric of ``case_scores`` rows (NaNs left out), plus how many cases were scored."""
    keys = sorted({k for row in rows for k in row})
    out = {k: M.summarize([row.get(k, math.nan) for row in rows])["mean"] for k in keys}
    out["cases"] = len(rows)
    return out


def save_part(name: str, payload: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    write_text_atomic(OUT / f"{name}.json", json.dumps(payload, indent=1, default=float))
    print(f"saved {OUT / f'{name}.json'}", flush=True)


# --------------------------------------------------------------------------------------------- LIDC
def lidc_models(b: Budget) -> dict[str, Config]:
    """The diffusion model and the baselines with the diffusion model's optimiser settings (lr 1e-4), then all
    three again at each of ``b.lidc_lrs`` (rows "..., lr X"): a model that has not converged at this budget would
    make the comparison say little, and each model gets the same chances."""
    ch = list_option("model.options.channels", b.lidc_channels)
    probunet = ["method=probunet", "model.name=probunet", list_option("model.options.filters", b.probunet_filters)]
    models = {}
    for lr in (None, *b.lidc_lrs):
        suffix, run, extra = ("", "", []) if lr is None else (f", lr {lr:g}", f"-lr{lr:g}", [f"train.lr={lr}"])
        models[f"diffusion (ambiguity paper){suffix}"] = make_config(
            b, f"lidc-diffusion{run}", "lidc-central", b.main_steps, [ch, *extra]
        )
        models[f"Prob. UNet (AA){suffix}"] = make_config(
            b, f"lidc-probunet{run}", "lidc-central", b.main_steps, [*probunet, *extra]
        )
        models[f"deterministic UNet{suffix}"] = make_config(
            b, f"lidc-unet{run}", "unet-lidc", b.main_steps, [ch, "data.augment=false", *extra]
        )
    return models


def lidc_main(b: Budget) -> None:
    models = lidc_models(b)
    rows = {}
    for label, config in models.items():
        ckpt, train_min = ensure_trained(config)
        cases = val_cases(config, b.lidc_cases)
        start = time.perf_counter()
        results = ensembles(ckpt, cases, samples=b.samples)
        rows[label] = score(results, cases) | {"train_min": train_min, "eval_min": (time.perf_counter() - start) / 60}
        rows[label]["params"] = sum(p.numel() for p in load_for_inference(ckpt)[1].parameters())
        print(label, {k: rows[label].get(k) for k in ("ged_biased_16", "dice", "hungarian_iou")}, flush=True)
    save_part("lidc-main", {"budget": dataclasses.asdict(b), "rows": rows})


def lidc_floor(b: Budget) -> None:
    """The floor every LIDC model must beat: an always-empty prediction scored on the same validation slices as
    the main table (``lidc_cases``) and as Fig. 6 and Table 3 (``fig6_cases``, ``table3_cases``)."""
    config = lidc_models(b)["diffusion (ambiguity paper)"]
    floors = {}
    for n in sorted({b.lidc_cases, b.fig6_cases, b.table3_cases}):
        cases = val_cases(config, n)
        empty = [  # 16 samples, so GED@4 and @16 are defined at every budget (for empty masks they are equal)
            SimpleNamespace(fused=torch.zeros(1, *m.shape[-2:]), samples=torch.zeros(16, 1, *m.shape[-2:]))
            for _, _, m in cases
        ]
        floors[n] = score(empty, cases)
        print("floor", n, floors[n]["ged_biased_16"], floors[n]["dice"], flush=True)
    save_part("lidc-floor", {"budget": dataclasses.asdict(b), "floors": floors})


def lidc_fig6(b: Budget) -> None:
    config = lidc_models(b)["diffusion (ambiguity paper)"]
    ckpt, _ = ensure_trained(config)
    cases = val_cases(config, b.fig6_cases)
    curves: dict[str, dict[int, dict]] = {}
    for sampler in ("ddpm", "ddim"):
        for steps in b.fig6_steps:
            results = ensembles(ckpt, cases, samples=4, sampler=sampler, steps=steps)
            curves.setdefault(sampler, {})[steps] = score(results, cases, ged_sizes=(4,))
            print("fig6", sampler, steps, curves[sampler][steps]["ged_biased_4"], flush=True)
    save_part("lidc-fig6", {"budget": dataclasses.asdict(b), "curves": curves})


TABLE3_PRED = ("x", "eps", "v")
TABLE3_WEIGHT = ("snr", "truncated_snr", "snr_plus_one", "uniform")


def lidc_table3(b: Budget) -> None:
    ch = list_option("model.options.channels", b.lidc_channels)
    saved = OUT / "lidc-table3.json"
    previous = json.loads(saved.read_text()) if saved.exists() else {}
    cells = {} if previous.get("complete") else previous.get("cells", {})  # resume a partly filled table
    for pred in TABLE3_PRED:
        for weight in TABLE3_WEIGHT:
            key = f"{pred}-{weight}"
            if key in cells:
                continue
            config = make_config(b, f"lidc-t3-{key}", f"lidc-central-{key}", b.table3_steps, [ch])
            ckpt, train_min = ensure_trained(config)
            cases = val_cases(config, b.table3_cases)
            cells[key] = score(ensembles(ckpt, cases, samples=4), cases, ged_sizes=(4,))
            cells[key]["train_min"] = train_min
            print("table3", key, cells[key]["ged_biased_4"], cells[key]["dice"], flush=True)
            save_part("lidc-table3", {"budget": dataclasses.asdict(b), "cells": cells, "complete": False})
    save_part("lidc-table3", {"budget": dataclasses.asdict(b), "cells": cells, "complete": True})


# --------------------------------------------------------------------------------------------- DDTI
def ddti_models(b: Budget) -> dict[str, Config]:
    base = f"model.options.base_channels={b.medsegdiff_base}"
    ch = list_option("model.options.channels", b.lidc_channels)
    steps = b.ddti_train_steps
    return {
        "(a) SegDiff-style baseline": make_config(b, "ddti-segdiff", "ablation-segdiff-ddti", steps, [base]),
        "(b) + Dy-Cond": make_config(b, "ddti-dycond", "ablation-dycond-ddti", steps, [base]),
        "(c) + FF-Parser (MedSegDiff)": make_config(b, "ddti-medsegdiff", "medsegdiff-b-ddti", steps, [base]),
        "deterministic UNet": make_config(b, "ddti-unet", "unet-ddti", steps, [ch]),
    }


def ddti_table2(b: Budget) -> None:
    rows = {}
    for label, config in ddti_models(b).items():
        ckpt, train_min = ensure_trained(config)
        cases = val_cases(config, b.ddti_cases)
        members = 1 if "UNet" in label else b.table2_members
        start = time.perf_counter()
        results = ensembles(ckpt, cases, samples=members, sampler=b.ddti_sampler, steps=b.ddti_steps, fusion="staple")
        rows[label] = score(results, cases, ged_sizes=()) | {
            "train_min": train_min,
            "eval_min": (time.perf_counter() - start) / 60,
            "members": members,
        }
        print("table2", label, rows[label]["dice"], flush=True)
    save_part("ddti-table2", {"budget": dataclasses.asdict(b), "rows": rows})


def _fused_scores(results, cases, groups: list[list[int]], fusion: str) -> tuple[float, float]:
    """Mean Dice over cases of each member group fused with ``fusion``; (mean, std) over the groups."""
    per_group = []
    for group in groups:
        dices = []
        for r, (_, _, masks) in zip(results, cases):
            fused, _ = fuse(fusion, r.samples[group, 0][None])
            dices.append(float(M.dice(fused[0], masks.bool()[0])))
        per_group.append(float(np.mean(dices)))
    return float(np.mean(per_group)), float(np.std(per_group)) if len(per_group) > 1 else 0.0


def ddti_table5(b: Budget) -> None:
    config = ddti_models(b)["(c) + FF-Parser (MedSegDiff)"]
    ckpt, _ = ensure_trained(config)
    cases = val_cases(config, b.ddti_cases)
    results = ensembles(ckpt, cases, samples=b.members, sampler=b.ddti_sampler, steps=b.ddti_steps)
    rows = {}
    for n in sorted({1, min(5, b.members), b.members}):
        groups = [list(range(g * n, (g + 1) * n)) for g in range(b.members // n)]
        for fusion in ("mean", "staple") if n > 1 else ("mean",):
            label = f"{n} member(s){' + STAPLE' if fusion == 'staple' else ''}"
            rows[label] = (*_fused_scores(results, cases, groups, fusion), len(groups))
            print("table5", label, rows[label], flush=True)
    save_part("ddti-table5", {"budget": dataclasses.asdict(b), "rows": rows})


def sampler_label(sampler: str, steps: int, spacing: str) -> str:
    """'ddpm 5', or 'ddpm 5 quadratic' off the linear grid."""
    return f"{sampler} {steps}" + ("" if spacing == L else f" {spacing}")


def _sampler_rows(b: Budget, part: str, settings, members: int, n_cases: int) -> None:
    """Score ``members``-member STAPLE ensembles of the MedSegDiff model drawn with each (sampler, steps, spacing);
    saved after every row, and finished rows of an earlier run are kept (resume)."""
    config = ddti_models(b)["(c) + FF-Parser (MedSegDiff)"]
    ckpt, _ = ensure_trained(config)
    cases = val_cases(config, n_cases)
    done = OUT / f"{part}.json"
    rows = json.loads(done.read_text())["rows"] if done.exists() else {}
    for sampler, steps, spacing in settings:
        label = sampler_label(sampler, steps, spacing)
        if label in rows:
            continue
        start = time.perf_counter()
        results = ensembles(
            ckpt, cases, samples=members, sampler=sampler, steps=steps, spacing=spacing, fusion="staple"
        )
        seconds = time.perf_counter() - start
        rows[label] = score(results, cases, ged_sizes=()) | {"s_per_image": seconds / len(cases), "steps": steps}
        print(part, label, rows[label]["dice"], flush=True)
        save_part(part, {"budget": dataclasses.asdict(b), "rows": rows, "cases": len(cases), "members": members})


def ddti_table4(b: Budget) -> None:
    _sampler_rows(b, "ddti-table4", b.table4, b.table4_members, max(2, b.ddti_cases // 2))


def ddti_fast(b: Budget) -> None:
    """The issue's speed goal on quality: few-step 25-member ensembles against the 100-step one."""
    _sampler_rows(b, "ddti-fast", b.fast, b.members, b.ddti_cases)


# (sampler, steps, grid, sample.precision): the first is the reference; each bf16 row is compared pixel by pixel
# with the fp32 row of the same sampler setting (same member seeds)
PRECISION_SETTINGS = (
    ("ddpm", 100, L, "32"), ("ddpm", 5, Q, "32"), ("ddpm", 5, Q, "bf16"), ("ddpm", 4, Q, "32"),
    ("ddpm", 4, Q, "bf16"), ("ddpm", 3, Q, "32"), ("ddpm", 3, Q, "bf16"), ("ddpm", 2, Q, "bf16"),
)  # fmt: skip


def ddti_precision(b: Budget) -> None:
    """What bf16 sampling and fewer steps cost in Dice. 25-member STAPLE ensembles of the MedSegDiff
    model on a sixth of the DDTI validation images of Table 5 (8 of 48: the 100-step reference costs 2,500
    network calls per image), fp32 and bf16 autocast from the same member seeds: fused Dice, member Dice, and the
    share of fused (and member) pixels that bf16 leaves unchanged."""
    config = ddti_models(b)["(c) + FF-Parser (MedSegDiff)"]
    ckpt, _ = ensure_trained(config)
    cases = val_cases(config, max(2, b.ddti_cases // 6))
    rows: dict[str, dict] = {}
    fp32: dict[tuple, list] = {}
    for sampler, steps, spacing, precision in PRECISION_SETTINGS:
        start = time.perf_counter()
        results = ensembles(ckpt, cases, samples=b.members, sampler=sampler, steps=steps, spacing=spacing,
                               fusion="staple", precision=precision)  # fmt: skip
        seconds = time.perf_counter() - start
        label = f"{sampler_label(sampler, steps, spacing)} {'bf16' if precision == 'bf16' else 'fp32'}"
        row = score(results, cases, ged_sizes=()) | {"s_per_image": seconds / len(cases), "steps": steps}
        key = (sampler, steps, spacing)
        if precision == "32":
            fp32[key] = results
        elif key in fp32:
            row["same_fused"] = float(
                np.mean([(a.fused == r.fused).float().mean() for a, r in zip(fp32[key], results)])
            )
            row["same_member"] = float(
                np.mean([(a.samples == r.samples).float().mean() for a, r in zip(fp32[key], results)])
            )
        rows[label] = row
        print("ddti-precision", label, row["dice"], row.get("same_fused"), flush=True)
        save_part("ddti-precision", {"budget": dataclasses.asdict(b), "rows": rows, "cases": len(cases),
                                     "members": b.members, "threads": torch.get_num_threads()})  # fmt: skip


# --------------------------------------------------------------------------------------------- ACDC
# The ambiguity paper's process (lidc-central's), the recipe that gained most for MedSegDiff-B on DDTI
# (benchmarks/results/learning-curve.md; the preset medsegdiff-b-ddti-plus)
AMBIGUITY_PROCESS = [
    "diffusion.schedule=continuous_cosine",
    "diffusion.input_scale=0.1",
    "diffusion.prediction=v",
    "diffusion.weighting=truncated_snr",
]


def acdc_models(b: Budget) -> dict[str, Config]:
    """MedSegDiff-B (the paper's process and the ambiguity paper's) and the deterministic UNet at the DDTI models'
    budget (same resolution, widths, steps), from the bundled ACDC presets."""
    base = f"model.options.base_channels={b.medsegdiff_base}"
    ch = list_option("model.options.channels", b.lidc_channels)
    rows = (
        ("MedSegDiff-B", "medsegdiff-b-acdc", "", [base]),
        ("MedSegDiff-B + the ambiguity paper's process", "medsegdiff-b-acdc", "-ambiguity", [base, *AMBIGUITY_PROCESS]),
        ("deterministic UNet", "unet-acdc", "", [ch]),
    )
    return {
        label: make_config(b, f"acdc-{preset}{run}", preset, b.acdc_train_steps, extra, data=acdc_overrides(b))
        for label, preset, run, extra in rows
    }


def acdc_volumes(config: Config, n: int) -> dict[str, list[tuple[str, torch.Tensor, torch.Tensor]]]:
    """The first ``n`` validation volumes (``val.list``, natural order), each its slices in order: (case id,
    image, masks (A, S, S) atom maps at the model's resolution)."""
    import re

    from diffuseg.data.formats.files import natural_key

    _, val = build_datasets(config, Path(config.train.out_dir))
    by_volume: dict[str, list[tuple[int, int]]] = {}
    for i, cid in enumerate(val.case_ids):
        m = re.fullmatch(r"(.+)_z(\d+)", cid)
        if m is None:
            raise UserError(f"{cid}: not a slice of an ACDC validation volume (expected <volume>_zNNNN)")
        by_volume.setdefault(m.group(1), []).append((int(m.group(2)), i))
    chosen = sorted(by_volume, key=natural_key)[:n]
    out = {}
    for vid in chosen:
        items = [val[i] for _, i in sorted(by_volume[vid])]
        out[vid] = [(it["case_id"], it["image"], it["masks"]) for it in items]
    return out


def draw_label_maps(ckpt: Path, cases, members: int, fusion: str, **sample: Any) -> list[torch.Tensor]:
    """Per case the fused label map (S, S) atoms of ``members`` members drawn as ``predict`` draws them
    (``inference.ensemble.draw_members``: the checkpoint's family, ``predict``'s member seeds); ``fusion`` over the
    members' label maps (``inference.fusion.fuse``; mean = the argmax of the mean class probabilities)."""
    config, draw = load_draw(ckpt, samples=members, **sample)
    scheme = config.data.scheme
    fused = []
    for drawn in draw_members(draw, [(cid, image) for cid, image, _ in cases], config.sample):
        atoms = drawn.masks[:, 0].long()  # (members, S, S)
        if members == 1:
            fused.append(atoms[0])
            continue
        soft = drawn.soft[None].float() if scheme.exclusive and fusion == "mean" else None
        fused.append(fuse(fusion, atoms[None], soft=soft, labels=scheme.atoms)[0][0])
    return fused


def acdc_classes(b: Budget) -> None:
    """ACDC's table: 3D Dice per validation volume of RV, Myo and LV (and their mean), plus 3D IoU and HD95 (voxels
    at the model's resolution: the HDF5 files carry no spacing), for MedSegDiff-B (an ensemble of
    ``table2_members`` members fused by multi-label STAPLE) and the deterministic UNet (one pass), trained alike.
    Scored at the model's resolution (``b.size`` px) on every slice of each volume, stacked in 3D
    (``evaluation.case_metrics.case_metrics``); per-slice 2D Dice means too."""
    done = OUT / "acdc.json"
    rows = json.loads(done.read_text())["rows"] if done.exists() else {}  # rows of an earlier run are kept
    for label, config in acdc_models(b).items():
        if label in rows:
            continue
        ckpt, train_min = ensure_trained(config)
        volumes = acdc_volumes(config, b.acdc_volumes)
        scheme = config.data.scheme
        members = 1 if "UNet" in label else b.table2_members
        start = time.perf_counter()
        per_volume, per_slice = [], []
        for vid, cases in volumes.items():
            fused = draw_label_maps(ckpt, cases, members, "staple", sampler=b.ddti_sampler, steps=b.ddti_steps)
            truth = [masks[:1].long() for _, _, masks in cases]  # (1, S, S) per slice: one annotator
            volume = case_metrics(None, torch.stack(fused)[None], torch.stack(truth, dim=1)[:, None], scheme)
            per_volume.append({"volume": vid, "slices": len(cases)} | volume)
            per_slice += [case_metrics(None, f[None], t[:, None], scheme) for f, t in zip(fused, truth)]
        keys = [k for k in per_volume[0] if k not in ("volume", "slices")]
        row = {k: M.summarize([v[k] for v in per_volume]) for k in keys}
        row["slice_dice"] = {
            k: M.summarize([s[k] for s in per_slice])["mean"] for k in per_slice[0] if k.startswith("dice")
        }
        row |= {"volumes": len(per_volume), "slices": len(per_slice), "members": members, "train_min": train_min}
        row["eval_min"] = (time.perf_counter() - start) / 60
        row["per_volume"] = per_volume
        rows[label] = row
        print("acdc", label, {k: round(row[k]["mean"], 4) for k in keys if k.startswith("dice")}, flush=True)
        save_part("acdc", {"budget": dataclasses.asdict(b), "rows": rows, "classes": list(scheme.names)})


PARTS: dict[str, Callable[[Budget], None]] = {
    "lidc-floor": lidc_floor,
    "lidc-main": lidc_main,
    "lidc-fig6": lidc_fig6,
    "lidc-table3": lidc_table3,
    "ddti-table2": ddti_table2,
    "ddti-table5": ddti_table5,
    "ddti-table4": ddti_table4,
    "ddti-fast": ddti_fast,
    "ddti-precision": ddti_precision,
    "acdc": acdc_classes,
}
QUEUES = {
    "lidc": ("lidc-floor", "lidc-main", "lidc-fig6"),
    "table3": ("lidc-table3",),
    "ddti": ("ddti-table2", "ddti-table5", "ddti-table4", "ddti-fast", "ddti-precision"),
    "acdc": ("acdc",),
    "all": tuple(PARTS),
}


def main(argv: list[str] | None = None) -> None:
    global OUT, DATA
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget: every part in a few minutes")
    parser.add_argument(
        "--budget", choices=sorted(BUDGETS), default="full", help="results go to results/quality[-BUDGET]/"
    )
    parser.add_argument("--queue", choices=sorted(QUEUES), help="run a queue of parts in order")
    parser.add_argument("--part", choices=sorted(PARTS), action="append", default=[], help="run one part")
    parser.add_argument("--report", action="store_true", help="only rebuild quality.md from finished parts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 per queue on a shared machine)")
    parser.add_argument(
        "--data", type=Path, default=DATA, help="folder holding lidc/, ddti/ and acdc/ (../shared/data)"
    )
    parser.add_argument("--out", help="results/OUT/ and results/OUT.md instead of quality[-BUDGET]")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = BUDGETS["quick" if args.quick else args.budget]
    DATA = args.data
    if budget.name != "full":
        OUT = RESULTS / f"quality-{budget.name}"
    if args.out:
        OUT = RESULTS / args.out
    info = machine()
    print_machine(info)
    parts = list(QUEUES[args.queue]) if args.queue else args.part
    if not parts and not args.report:
        parts = list(QUEUES["all"])
    for part in parts:
        start = time.perf_counter()
        PARTS[part](budget)
        print(f"{part}: {(time.perf_counter() - start) / 60:.1f} min", flush=True)
        from quality_report import write_report

        write_report(OUT, info, BUDGET_FIELDS)
    if args.report:
        from quality_report import write_report

        write_report(OUT, info, BUDGET_FIELDS)


if __name__ == "__main__":
    run_main(main)
