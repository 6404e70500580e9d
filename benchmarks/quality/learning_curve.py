"""Learning curves: validation quality against training compute, diffusion against the baselines.

    .venv/bin/python benchmarks/quality/learning_curve.py --task ddti  # UNet and MedSegDiff-B, 600/1200/2400 steps
    .venv/bin/python benchmarks/quality/learning_curve.py --task lidc              # UNet, Prob. UNet, diffusion UNet
    .venv/bin/python benchmarks/quality/learning_curve.py --task ddti-recipes      # the recipes on MedSegDiff-B
    .venv/bin/python benchmarks/quality/learning_curve.py --report                 # rebuild learning-curve.md and plots
    .venv/bin/python benchmarks/quality/learning_curve.py --task ddti --quick      # smoke check, tiny budget
    .venv/bin/python benchmarks/quality/learning_curve.py --task ddti-anchored --seed 2 --max-steps 1200

Every model trains once through ``diffuseg.training.run.train`` with a constant learning rate after warm-up
(``train.decay_steps=0``), so training to budget 2 resumes from budget 1 and equals one run to budget 2 bit for
bit (the resume guarantee); after each budget the checkpoint is scored on validation patients only (DDTI: a
seeded 20 % of patients, split by patient; LIDC: ``val_patients.txt``), as ``benchmarks/quality/quality.py`` scores
(same networks, sizes and cases as its ``long`` budget). Compute is reported three ways: optimiser steps,
images seen (steps x batch) and the wall-clock minutes each model trained; a recipe whose step costs more
(self-conditioning and recycling add a forward pass) also gets its cost per step relative to the papers'
recipe, timed back to back in this process (``step_cost``), so that "equal compute" can be read off the curve.

Results land in ``benchmarks/results/learning-curve/<task>.json`` after every point (a rerun skips finished
points and resumes unfinished training) and ``learning-curve.md`` plus ``learning-curve-<task>.png`` are
rebuilt from every finished task. DDTI, LIDC and ACDC points keep each validation image's (ACDC: volume's) scores
with its patient (``per_case``), so that two models can be compared patient by patient.

Training seeds: ``--seed N`` trains the arms of the task's seed study (``SEEDED``: the models that decide) with
``train.seed=N``, in run folders and a result file suffixed ``-seedN`` (none for the presets' seed,
``DEFAULT_SEED``, whose runs are the task's own); a finished point of such a run without per-case scores is trained
and scored again. ``--max-steps`` leaves out the points beyond it. The validation patients are the same for
every seed (``data.split_seed`` is not the training seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder's modules
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # common.py
import quality as Q
from common import RESULTS, machine, print_machine, run_main

from diffuseg.checkpoint import LAST, read_checkpoint
from diffuseg.config import Config, TrainConfig
from diffuseg.errors import UserError
from diffuseg.files import write_text_atomic
from diffuseg.training.run import train

OUT = RESULTS / "learning-curve"
BUDGET = Q.BUDGETS["long"]  # sizes, widths and evaluation cases of quality.py's long budget
QUICK = Q.BUDGETS["quick"]

# (sampler, steps, grid) of the DDTI ensembles: 25 members, DDPM on the 5-step quadratic grid, which matched
# the 100-step ensemble within 0.5 Dice points at the long budget (results/quality-long.md, few-step table)
DDTI_SAMPLING = dict(sampler="ddpm", steps=5, spacing="quadratic", fusion="staple")


@dataclasses.dataclass(frozen=True)
class Model:
    """One curve: a label, a preset, its overrides, and the steps at which it is scored."""

    label: str
    run: str
    preset: str
    extra: tuple[str, ...]
    points: tuple[int, ...]
    family: str  # "unet" (one deterministic mask), "diffusion", "latent"
    fusion: str = DDTI_SAMPLING["fusion"]  # how the members are fused when scored (``inference.fusion``)


def _constant_lr(warmup: int) -> list[str]:
    return ["train.decay_steps=0", f"train.warmup_steps={warmup}"]


def ddti_models(b: Q.Budget, quick: bool) -> list[Model]:
    points = (2, 4) if quick else (600, 1200, 2400)
    base = f"model.options.base_channels={b.medsegdiff_base}"
    ch = Q.list_option("model.options.channels", b.lidc_channels)
    return [
        Model("deterministic UNet", "lc-ddti-unet", "unet-ddti", (ch, *_constant_lr(60)), points, "unet"),
        Model(
            "MedSegDiff-B (paper recipe)",
            "lc-ddti-medsegdiff",
            "medsegdiff-b-ddti",
            (base, *_constant_lr(60)),
            points,
            "diffusion",
        ),
    ]


# The recipes beyond the papers on MedSegDiff-B: each differs from the paper's recipe in the overrides named here only.
RECIPES: dict[str, tuple[str, ...]] = {
    "+ aux. loss on x_hat_0 (lambda 1)": ("diffusion.aux_weight=1.0",),
    "+ ambiguity-paper process (cosine, b 0.1, v-pred, truncated SNR)": (  # the lidc-central preset's process
        "diffusion.schedule=continuous_cosine",
        "diffusion.input_scale=0.1",
        "diffusion.prediction=v",
        "diffusion.weighting=truncated_snr",
    ),
    "+ self-conditioning": ("diffusion.self_condition=true",),
    "+ recycling": ("diffusion.recycle=true", "diffusion.prediction=x"),
}


def ddti_recipe_models(b: Q.Budget, quick: bool) -> list[Model]:
    """Every recipe at 600 steps; the two that gained at 600 (aux. loss, the ambiguity paper's process) also at
    1200 (this machine's time did not stretch to all four)."""
    base = f"model.options.base_channels={b.medsegdiff_base}"
    slug = ("aux", "ambiguity", "selfcond", "recycle")
    models = []
    for s, (label, extra) in zip(slug, RECIPES.items()):
        points = (2, 4) if quick else (600, 1200) if s in ("aux", "ambiguity") else (600,)
        models.append(Model(label, f"lc-ddti-{s}", "medsegdiff-b-ddti", (base, *_constant_lr(60), *extra), points,
                            "diffusion"))  # fmt: skip
    return models


# Recipes combined, after the screening at 600 steps (learning-curve.md, ddti-recipes): the ambiguity paper's
# process, which gained most, with the auxiliary loss, which gained too.
COMBOS: dict[str, tuple[str, ...]] = {
    "+ ambiguity-paper process + aux. loss (lambda 1)": (
        *RECIPES["+ ambiguity-paper process (cosine, b 0.1, v-pred, truncated SNR)"],
        *RECIPES["+ aux. loss on x_hat_0 (lambda 1)"],
    ),
}


def ddti_combo_models(b: Q.Budget, quick: bool) -> list[Model]:
    points = (2, 4) if quick else (600, 1200)
    base = f"model.options.base_channels={b.medsegdiff_base}"
    return [
        Model(label, f"lc-ddti-combo{i}", "medsegdiff-b-ddti", (base, *_constant_lr(60), *extra), points, "diffusion")
        for i, (label, extra) in enumerate(COMBOS.items())
    ]


def lidc_models(b: Q.Budget, quick: bool) -> list[Model]:
    """The three models of quality.py's LIDC table at lr 1e-3, the rate at which all three did best (the Prob. UNet
    to 1500 steps only: this machine's time did not stretch to its 3000)."""
    points = (2, 4) if quick else (750, 1500, 3000)
    ch = Q.list_option("model.options.channels", b.lidc_channels)
    probunet = ("method=probunet", "model.name=probunet", Q.list_option("model.options.filters", b.probunet_filters))
    lr = ("train.lr=0.001", *_constant_lr(150))
    return [
        Model("deterministic UNet", "lc-lidc-unet", "unet-lidc", (ch, "data.augment=false", *lr), points, "unet"),
        Model("Prob. UNet (AA)", "lc-lidc-probunet", "lidc-central", (*probunet, *lr), points[:2], "latent"),
        Model("diffusion (ambiguity paper)", "lc-lidc-diffusion", "lidc-central", (ch, *lr), points, "diffusion"),
    ]


def lidc_recipe_models(b: Q.Budget, quick: bool) -> list[Model]:
    """The auxiliary loss on the ambiguity paper's diffusion UNet (the recipe that gained Dice on DDTI)."""
    diffusion = lidc_models(b, quick)[2]
    points = (2, 4) if quick else (750, 1500)
    extra = (*diffusion.extra, *RECIPES["+ aux. loss on x_hat_0 (lambda 1)"])
    return [Model("diffusion (ambiguity paper) + aux. loss (lambda 1)", "lc-lidc-aux", "lidc-central", extra, points,
                  "diffusion")]  # fmt: skip


# Training aligned with sampling (Fu et al. 2023, arXiv:2303.06040) on the ambiguity paper's process: x_0 through
# logits with Dice + CE, training on the sampler's 5-step quadratic grid, recycling from pure noise.
ALIGNED: dict[str, tuple[str, ...]] = {
    "+ logits (Dice + CE)": ("diffusion.prediction=logits", "diffusion.weighting=uniform"),
    "+ logits + the sampler's grid": (
        "diffusion.prediction=logits",
        "diffusion.weighting=uniform",
        "diffusion.train_grid=5",
        "diffusion.train_grid_spacing=quadratic",
    ),
    "+ logits + grid + recycling from noise": (
        "diffusion.prediction=logits",
        "diffusion.weighting=uniform",
        "diffusion.train_grid=5",
        "diffusion.train_grid_spacing=quadratic",
        "diffusion.recycle=true",
        "diffusion.recycle_from=noise",
    ),
}


def acdc_models(b: Q.Budget, quick: bool) -> list[Model]:
    """ACDC (3 exclusive classes): the UNet, MedSegDiff-B with the ambiguity paper's process, and that model
    trained aligned with sampling."""
    points = (2, 4) if quick else (300, 600, 1200)
    base = f"model.options.base_channels={b.medsegdiff_base}"
    ch = Q.list_option("model.options.channels", b.lidc_channels)
    diffusion = (base, *_constant_lr(60), *Q.AMBIGUITY_PROCESS)
    return [
        Model("deterministic UNet", "lc-acdc-unet", "unet-acdc", (ch, *_constant_lr(60)), points, "unet"),
        Model(
            "MedSegDiff-B + ambiguity process", "lc-acdc-ambiguity", "medsegdiff-b-acdc", diffusion, points, "diffusion"
        ),
        *(
            Model(
                f"MedSegDiff-B + ambiguity process {label}",
                f"lc-acdc-aligned{i}",
                "medsegdiff-b-acdc",
                (*diffusion, *extra),
                points,
                "diffusion",
            )
            for i, (label, extra) in enumerate(ALIGNED.items())
        ),
    ]


LIGHT_HEAD = "anchored.head_channels=[8,16,32,32]"  # steps 1.45x the UNet at 64 px (preset head: 1.9x)
PATCHED = "head 8-16-32-32 on 2 x 2 patches"  # that head at half the resolution (anchored.head_patch=2): 1.24x


def fused_by(model: Model, fusion: str) -> Model:
    """``model`` scored with its members fused by ``fusion``, which its config records too."""
    return dataclasses.replace(model, extra=(*model.extra, f"sample.fusion={fusion}"), fusion=fusion)


LENIENT = 1.3  # the lenient compute ratio against the UNet
LONGER_UNET = f"deterministic UNet, {LENIENT}x the steps"


def longer(unet: Model) -> Model:
    """``unet`` trained to ``LENIENT`` times its budgets up to 1,200 steps: the UNet at the compute the lenient
    ratio grants an anchored model, so that the ratio hides nothing."""
    points = tuple(round(LENIENT * p) for p in unet.points if p <= 1200)
    return dataclasses.replace(unet, label=LONGER_UNET, run=f"{unet.run}-{LENIENT}x", points=points)


def patched(light: Model) -> Model:
    """``light`` (the residual form with ``LIGHT_HEAD``) with its head on 2 x 2 patches."""
    return dataclasses.replace(
        light,
        label=f"anchored diffusion (residual, {PATCHED})",
        run=f"{light.run}-patch2",
        extra=(*light.extra, "anchored.head_patch=2"),
    )


# The head the arms below first ran with, pinned so that a change of a preset's head leaves their results valid.
WIDE_HEAD = ("anchored.head_channels=[16,32,64,64]", "anchored.head_patch=1")


def anchored_models(unet: Model, preset: str, run: str) -> list[Model]:
    """Anchored diffusion with ``unet`` as its trunk (same options and schedule): both forms with the 16-32-64-64
    head at full resolution, and the residual form with a lighter head."""
    arms = [("residual", WIDE_HEAD), ("mean_shift", WIDE_HEAD), ("residual", (LIGHT_HEAD, "anchored.head_patch=1"))]
    return [
        Model(
            f"anchored diffusion ({form}{', head 8-16-32-32' if LIGHT_HEAD in extra else ''})",
            f"{run}-{form}{'-light' if LIGHT_HEAD in extra else ''}",
            preset,
            (*unet.extra, f"anchored.form={form}", *extra),
            unet.points,
            "diffusion",
        )
        for form, extra in arms
    ]


def ddti_anchored_models(b: Q.Budget, quick: bool) -> list[Model]:
    """The UNet against anchored diffusion (its trunk that same UNet), trained alike."""
    points = (2, 4) if quick else (600, 1200, 2400)
    ch = Q.list_option("model.options.channels", b.lidc_channels)
    unet = Model("deterministic UNet", "lc-ddti-anchored-unet", "unet-ddti", (ch, *_constant_lr(60)), points, "unet")
    arms = anchored_models(unet, "anchored-ddti", "lc-ddti-anchored")
    return [unet, *arms, patched(arms[2]), longer(unet)]


def acdc_anchored_models(b: Q.Budget, quick: bool) -> list[Model]:
    """ACDC: the UNet against anchored diffusion with that UNet as its trunk (members drawn in fp32)."""
    points = (2, 4) if quick else (300, 600, 1200)
    ch = Q.list_option("model.options.channels", b.lidc_channels)
    extra = (ch, *_constant_lr(60), "sample.precision=32")
    unet = Model("deterministic UNet", "lc-acdc-anchored-unet", "unet-acdc", extra, points, "unet")
    arms = [fused_by(m, "staple") for m in anchored_models(unet, "anchored-acdc", "lc-acdc-anchored")]
    patched_light = patched(arms[2])
    mean_fused = dataclasses.replace(  # multi-label STAPLE loses a point on ACDC where the mean of the members does not
        fused_by(patched_light, "mean"),
        label=f"anchored diffusion (residual, {PATCHED}, mean fusion)",
        run=f"{patched_light.run}-mean",  # its own run: a run keeps only its last checkpoint
    )
    return [unet, arms[0], arms[2], patched_light, mean_fused, longer(unet)]


SEG_WEIGHTS = (("0", "no seg. loss"), ("0.1", "seg. loss weight 0.1"))


def lidc_anchored_models(b: Q.Budget, quick: bool) -> list[Model]:
    """LIDC: the UNet of the lidc task against anchored diffusion with that UNet as its trunk, in variants, and the
    ambiguity paper's diffusion UNet on the same machine; the UNet, that diffusion UNet, the signal-weighted
    variants, the image-only heads and the preset-width mean-shifted heads go on to 3,000 steps, past equal compute,
    the other variants stop at 1,500."""
    unet = dataclasses.replace(lidc_models(b, quick)[0], run="lc-lidc-anchored-unet")
    unet = dataclasses.replace(unet, points=(2, 4) if quick else (750, 1500))
    longer = {"points": (2, 4, 8) if quick else (750, 1500, 3000)}
    diffusion = dataclasses.replace(lidc_models(b, quick)[2], run="lc-lidc-anchored-diffusion", **longer)
    pinned = "anchored.seg_weighting=uniform"  # as the arms first ran, whatever the preset's weighting
    arms = anchored_models(unet, "anchored-lidc", "lc-lidc-anchored")
    residual, mean_shift, light = (dataclasses.replace(m, extra=(*m.extra, pinned)) for m in arms)

    def seg_weighted(model: Model, head: str, weight: str, label: str) -> Model:
        return dataclasses.replace(
            model,
            label=f"anchored diffusion (residual, {head}{label})",
            run=f"{model.run}-seg-weight{weight}",
            extra=(*model.extra, f"anchored.seg_weight={weight}"),
        )

    light_label, preset_label = "head 8-16-32-32, ", "head 16-32-64-64, "
    no_seg, low_seg = (seg_weighted(light, light_label, w, label) for w, label in SEG_WEIGHTS)
    preset_no_seg, preset_low_seg = (seg_weighted(residual, preset_label, w, label) for w, label in SEG_WEIGHTS)
    preset_signal = dataclasses.replace(
        residual,
        label=f"anchored diffusion (residual, {preset_label}seg. loss weighted by alpha_t^2)",
        run=f"{residual.run}-seg-signal",
        extra=(*residual.extra, "anchored.seg_weighting=signal"),
        **longer,
    )
    no_features = dataclasses.replace(  # is the collapse a shortcut through the trunk's features?
        preset_signal,
        label=f"anchored diffusion (residual, {preset_label}seg. loss weighted by alpha_t^2, no trunk features)",
        run=f"{preset_signal.run}-no-features",
        extra=(*preset_signal.extra, "anchored.trunk_features=false"),
    )
    # mu as the head's input or as the residual's origin? the head sees the image alone, as the diffusion UNet does
    image_only = dataclasses.replace(
        no_features,
        label=f"anchored diffusion (residual, {preset_label}seg. loss weighted by alpha_t^2, image only)",
        run=f"{preset_signal.run}-image-only",
        extra=(*no_features.extra, "anchored.mu_input=false"),
    )
    image_only_no_seg = dataclasses.replace(
        image_only,
        label=f"anchored diffusion (residual, {preset_label}no seg. loss, image only)",
        run=f"{residual.run}-seg-weight0-image-only",
        extra=(*residual.extra, "anchored.seg_weight=0", "anchored.trunk_features=false", "anchored.mu_input=false"),
    )
    # the mean-shifted head predicts y_0 itself: its untrained output is the uncertain 0, not the confident mu
    mean_shift_signal, mean_shift_no_seg = (
        dataclasses.replace(
            mean_shift,
            label=f"anchored diffusion (mean_shift, {preset_label}{label})",
            run=f"{mean_shift.run}-{run}",
            extra=(*mean_shift.extra, option),
            **longer,
        )
        for label, run, option in (
            ("seg. loss weighted by alpha_t^2", "seg-signal", "anchored.seg_weighting=signal"),
            ("no seg. loss", "seg-weight0", "anchored.seg_weight=0"),
        )
    )
    patched_mean_shift = dataclasses.replace(  # the preset's head at half the resolution: 1.9x -> about 1.3x a step
        mean_shift_signal,
        label="anchored diffusion (mean_shift, head 16-32-64-64 on 2 x 2 patches, seg. loss weighted by alpha_t^2)",
        run=f"{mean_shift_signal.run}-patch2",
        extra=(*mean_shift_signal.extra, "anchored.head_patch=2"),
    )
    light_mean_shift = dataclasses.replace(
        light, label="anchored diffusion (mean_shift, head 8-16-32-32)", run="lc-lidc-anchored-mean_shift-light",
        extra=(*mean_shift.extra, LIGHT_HEAD),
    )  # fmt: skip
    # the variants: what keeps the samples from spreading (the head's segmentation loss, its width, the form)?
    variants = [light, no_seg, light_mean_shift, residual, low_seg, preset_no_seg, preset_low_seg, preset_signal,
                no_features, image_only, image_only_no_seg, mean_shift_signal, mean_shift_no_seg,
                patched_mean_shift]  # fmt: skip
    return [dataclasses.replace(unet, **longer), *variants, diffusion]


# The seed study of a task: the labels of its models trained with several seeds (--seed).
SEEDED = {
    "ddti-anchored": (
        "deterministic UNet",
        "anchored diffusion (residual, head 8-16-32-32)",
        f"anchored diffusion (residual, {PATCHED})",
        LONGER_UNET,
    ),
    "acdc-anchored": ("deterministic UNet", f"anchored diffusion (residual, {PATCHED}, mean fusion)", LONGER_UNET),
    "lidc-anchored": (
        "diffusion (ambiguity paper)",
        "anchored diffusion (mean_shift, head 16-32-64-64, seg. loss weighted by alpha_t^2)",
    ),
}
DEFAULT_SEED = TrainConfig.seed  # the presets' training seed: its runs and results carry no suffix


def seed_suffix(seed: int) -> str:
    """What a run folder and a result file of training seed ``seed`` end with."""
    return "" if seed == DEFAULT_SEED else f"-seed{seed}"


def seeded_models(task: str, models: list[Model], seed: int) -> list[Model]:
    """The models of ``task``'s seed study, trained with ``seed`` (run folders suffixed by ``seed_suffix``)."""
    if task not in SEEDED:
        raise UserError(f"--seed: task {task} has no seed study (tasks with one: {', '.join(sorted(SEEDED))})")
    return [
        dataclasses.replace(m, run=m.run + seed_suffix(seed), extra=(*m.extra, f"train.seed={seed}"))
        for m in models
        if m.label in SEEDED[task]
    ]


TASKS = {
    "acdc": acdc_models,
    "lidc-anchored": lidc_anchored_models,
    "acdc-anchored": acdc_anchored_models,
    "ddti-anchored": ddti_anchored_models,
    "ddti": ddti_models,
    "ddti-recipes": ddti_recipe_models,
    "ddti-combo": ddti_combo_models,
    "lidc": lidc_models,
    "lidc-recipes": lidc_recipe_models,
}


def reference_model(task: str, b: Q.Budget, quick: bool) -> Model:
    """The model whose training step the task's step costs are relative to: MedSegDiff-B with the papers'
    recipe on DDTI, the ambiguity paper's diffusion UNet on LIDC, MedSegDiff-B with that process on ACDC."""
    if task == "acdc":
        return acdc_models(b, quick)[1]
    if task == "ddti-anchored":
        return ddti_anchored_models(b, quick)[0]
    if task == "acdc-anchored":
        return acdc_anchored_models(b, quick)[0]
    if task == "lidc-anchored":
        return lidc_anchored_models(b, quick)[0]
    return lidc_models(b, quick)[2] if task.startswith("lidc") else ddti_models(b, quick)[1]


# --------------------------------------------------------------------------------------------- one curve
def model_config(b: Q.Budget, model: Model, steps: int) -> Config:
    data = Q.acdc_overrides(b) if model.preset.endswith("-acdc") else None
    return Q.make_config(b, model.run, model.preset, steps, [*model.extra, f"train.ckpt_every={steps}"], data=data)


def train_to(config: Config) -> float:
    """Train (or resume) ``config`` to ``train.steps``; minutes spent now."""
    ckpt = Path(config.train.out_dir) / "checkpoints" / LAST
    start = time.perf_counter()
    if ckpt.exists():
        if int(read_checkpoint(ckpt)["diffuseg"]["global_step"]) < config.train.steps:
            train(config, resume=True)
    else:
        train(config)
    return (time.perf_counter() - start) / 60


LIDC_PER_CASE = ("ged_biased_16", "dice", "hungarian_iou")  # each validation slice's, for the seed study


def evaluate_point(task: str, b: Q.Budget, model: Model, config: Config) -> dict[str, Any]:
    """Scores of the checkpoint at ``config.train.steps`` on the task's validation cases."""
    ckpt = Path(config.train.out_dir) / "checkpoints" / LAST
    start = time.perf_counter()
    if task.startswith("acdc"):
        scores = acdc_scores(b, model, config, ckpt)
    elif task.startswith("ddti"):
        cases = Q.val_cases(config, b.ddti_cases)
        sampling = {"samples": 1} if model.family == "unet" else {"samples": b.members, **DDTI_SAMPLING}
        sampling |= {"fusion": model.fusion}
        rows = Q.case_scores(Q.ensembles(ckpt, cases, **sampling), cases, ged_sizes=())
        scores = Q.mean_scores(rows)
        per_case = {"case": [cid for cid, _, _ in cases], "dice": [r["dice"] for r in rows]}
        if model.family == "diffusion":  # the one-step diagnostic: the network's own x_hat_0 at t = 1
            one = Q.case_scores(Q.ensembles(ckpt, cases, samples=1, sampler="ddim", steps=1), cases, ged_sizes=())
            scores["dice_one_step"] = Q.mean_scores(one)["dice"]
            per_case["dice_one_step"] = [r["dice"] for r in one]
        scores["per_case"] = per_case
    else:
        items = Q.val_items(config, b.lidc_cases)
        cases = [Q.as_case(it) for it in items]
        rows = Q.case_scores(Q.ensembles(ckpt, cases, samples=b.samples), cases)
        scores = Q.mean_scores(rows)
        named = {"case": [it["case_id"] for it in items], "patient": [it["patient_id"] for it in items]}  # reader's
        scores["per_case"] = named | {k: [r[k] for r in rows] for k in LIDC_PER_CASE}
    return scores | {"eval_min": (time.perf_counter() - start) / 60}


def acdc_scores(b: Q.Budget, model: Model, config: Config, ckpt: Path) -> dict[str, Any]:
    """Mean over ``b.acdc_volumes`` validation volumes of the per-volume 3D Dice (and IoU, HD95) of each class
    and their mean, and each volume's mean Dice with its patient (``per_case``); a diffusion model's label maps
    fused from ``b.members`` members by ``model.fusion`` (multi-label STAPLE unless the model says otherwise)."""
    from diffuseg.data.formats.ssl4mis import patient_of
    from diffuseg.evaluation.case_metrics import case_metrics

    scheme = config.data.scheme
    members = 1 if model.family == "unet" else b.members
    sampling = {k: v for k, v in DDTI_SAMPLING.items() if k != "fusion"}
    per_volume = {}
    for volume, cases in Q.acdc_volumes(config, b.acdc_volumes).items():
        fused = Q.draw_label_maps(ckpt, cases, members, model.fusion, **sampling)
        truth = torch.stack([masks[:1].long() for _, _, masks in cases], dim=1)  # (1, slices, S, S)
        per_volume[volume] = case_metrics(None, torch.stack(fused)[None], truth[:, None], scheme)
    keys = next(iter(per_volume.values()))
    scores: dict[str, Any] = {k: float(np.nanmean([v[k] for v in per_volume.values()])) for k in keys}
    volumes = list(per_volume)
    scores["per_case"] = {"case": volumes, "patient": [patient_of(v) for v in volumes],
                          "dice": [float(per_volume[v]["dice"]) for v in volumes]}  # fmt: skip
    return scores


def cpu_line() -> str:
    """This machine in one line: CPU, cores, vector ISA, torch."""
    info = machine()
    return f"{info['cpu']}, {info['logical cores']} cores, {info['vector ISA']}, torch {info['torch']}"


def step_cost(b: Q.Budget, model: Model, reference: Model, steps: int = 16) -> float:
    """Seconds per training step of ``model`` over ``reference``'s: one step of each in turn on the same batch, in
    this process, so that both see the same load; the median of the per-pair ratios after two warm-up pairs."""
    from diffuseg.training.module import module_class
    from diffuseg.training.stream import build_datasets

    def stepper(m: Model):
        config = model_config(b, m, steps)
        train_set, _ = build_datasets(config, Path(config.train.out_dir))
        module = module_class(config.method)(config)
        opt = torch.optim.AdamW(module.net.parameters(), lr=1e-4)
        batch = torch.utils.data.default_collate([train_set[i] for i in range(config.train.batch_size)])

        def step(i: int) -> float:
            t0 = time.perf_counter()
            target = module.scheme.one_hot(batch["mask"][:, 0])  # as the training step feeds it
            loss = module.loss(batch["image"], target, torch.Generator().manual_seed(i))
            opt.zero_grad()
            loss.backward()
            opt.step()
            return time.perf_counter() - t0

        return step

    ours, theirs = stepper(model), stepper(reference)
    ratios = [ours(i) / theirs(i) for i in range(steps)]
    return float(np.median(ratios[2:]))


def result_file(task: str, quick: bool, seed: int = DEFAULT_SEED) -> Path:
    return OUT / f"{task}{seed_suffix(seed)}{'-quick' if quick else ''}.json"


def run_task(
    task: str,
    quick: bool,
    remeasure: bool = False,
    seed: int | None = None,
    max_steps: int | None = None,
    only: str | None = None,
) -> None:
    """Train and score every model of ``task`` at each of its budgets (finished points are kept); the task's JSON
    records the machine it ran on, since step costs and minutes are only comparable on one machine.

    Args:
        task: a key of ``TASKS``.
        quick: the tiny budget (results in ``<task>-quick.json``).
        remeasure: time the step costs again.
        seed: None: every model with the presets' seed; N: the task's seed study (``seeded_models``) with
            training seed N, every point with per-case scores.
        max_steps: leave out the points beyond this many steps (None: every point).
        only: run only the models whose label contains this text; the JSON is then re-read before each save and
            only those curves replaced, so jobs running other models of the task in parallel keep theirs.
    """
    b = QUICK if quick else BUDGET
    out = result_file(task, quick, DEFAULT_SEED if seed is None else seed)
    saved = json.loads(out.read_text()) if out.exists() else {}
    curves: dict[str, Any] = saved.get("curves", {})
    reference = reference_model(task, b, quick)

    def save() -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        if only is not None and out.exists():  # another job may have saved its models since
            ours = {m.label for m in models}
            curves.update({k: v for k, v in json.loads(out.read_text())["curves"].items() if k not in ours})
        payload = {"task": task, "machine": saved.get("machine") or cpu_line(), "budget": dataclasses.asdict(b),
                   "sampling": DDTI_SAMPLING, "seed": DEFAULT_SEED if seed is None else seed,
                   "curves": curves}  # fmt: skip
        write_text_atomic(out, json.dumps(payload, indent=1, default=float))

    models = TASKS[task](b, quick)
    if seed is not None:
        models = seeded_models(task, models, seed)
        reference = (seeded_models(task, [reference], seed) or [reference])[0]
    if max_steps is not None:
        models = [dataclasses.replace(m, points=tuple(p for p in m.points if p <= max_steps)) for m in models]
    if only is not None:
        models = [m for m in models if only in m.label]
        if not models:
            raise UserError(f"--only {only!r}: no model of task {task} has that in its label")

    def todo(model: Model, steps: int) -> bool:
        point = curves[model.label]["points"].get(str(steps))
        return steps in model.points and (point is None or (seed is not None and "per_case" not in point))

    for model in models:
        curve = curves.setdefault(model.label, {"points": {}, "train_min": 0.0})
        if model.run == reference.run:  # the same run, whatever points --max-steps left it
            curve["relative_step_cost"] = 1.0
        elif remeasure or "relative_step_cost" not in curve:
            curve["relative_step_cost"] = step_cost(b, model, reference)
            print(model.label, "relative step cost", round(curve["relative_step_cost"], 3), flush=True)
            save()
    for steps in sorted({s for m in models for s in m.points}):  # every model at a budget before the next one
        for model in (m for m in models if todo(m, steps)):
            curve = curves[model.label]
            config = model_config(b, model, steps)
            if not (Path(config.train.out_dir) / "checkpoints" / LAST).exists():
                curve["train_min"] = 0.0  # a run trained from its first step (again, if its folder was removed)
            curve["train_min"] += train_to(config)
            point = evaluate_point(task, b, model, config)
            point |= {"steps": steps, "images": steps * config.train.batch_size, "train_min": curve["train_min"]}
            curve["points"][str(steps)] = point
            print(task, model.label, steps, {k: point.get(k) for k in ("dice", "ged_biased_16", "train_min")},
                  flush=True)  # fmt: skip
            save()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), action="append", default=[], help="curves to run")
    parser.add_argument("--quick", action="store_true", help="tiny budget, results in <task>-quick.json")
    parser.add_argument("--report", action="store_true", help="only rebuild learning-curve.md and the plots")
    parser.add_argument("--remeasure-costs", action="store_true", help="time the recipes' step costs again")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 per job on a shared machine)")
    parser.add_argument("--data", type=Path, default=Q.DATA, help="folder holding lidc/ and ddti/ (../shared/data)")
    parser.add_argument("--seed", type=int, help=f"training seed of the task's seed study (presets: {DEFAULT_SEED})")
    parser.add_argument("--max-steps", type=int, help="leave out the points beyond this many training steps")
    parser.add_argument("--only", help="train only the models whose label contains this text (parallel jobs)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    Q.DATA = args.data
    info = machine()
    print_machine(info)
    for task in args.task:
        run_task(task, args.quick, args.remeasure_costs, args.seed, args.max_steps, args.only)
    from learning_curve_report import write_report

    write_report(OUT, info, args.quick)


if __name__ == "__main__":
    run_main(main)
