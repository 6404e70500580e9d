"""The learning curves' seed study: run and file names per training seed, and the report's aggregation over seeds
(mean and sd per point, paired per-patient differences with a bootstrap interval) on small hand-made results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "quality"))
import learning_curve as LC
import learning_curve_report as R

from diffuseg.errors import UserError

UNET, ANCHORED, PATCHED, LONGER = LC.SEEDED["ddti-anchored"]
CASES = ["1_1", "1_2", "2_1"]  # patient 1 has two images, patient 2 one


def test_seed_names_runs_and_files():
    assert LC.seed_suffix(LC.DEFAULT_SEED) == ""
    assert LC.seed_suffix(2) == "-seed2"
    assert LC.result_file("ddti-anchored", False).name == "ddti-anchored.json"
    assert LC.result_file("ddti-anchored", False, 2).name == "ddti-anchored-seed2.json"
    assert LC.result_file("ddti-anchored", True, 3).name == "ddti-anchored-seed3-quick.json"
    for seed in (LC.DEFAULT_SEED, 2):
        stem = LC.result_file("ddti-anchored", True, seed).stem.removesuffix("-quick")
        assert R.task_and_seed(stem) == ("ddti-anchored", None if seed == LC.DEFAULT_SEED else seed)

    every = LC.ddti_anchored_models(LC.QUICK, True)
    own = LC.seeded_models("ddti-anchored", every, LC.DEFAULT_SEED)
    two = LC.seeded_models("ddti-anchored", every, 2)
    assert [m.label for m in two] == [UNET, ANCHORED, PATCHED, LONGER]  # the study's arms only
    assert [m.run for m in own] == [m.run for m in every if m.label in LC.SEEDED["ddti-anchored"]]  # the task's own
    assert two[-1].points == (3, 5) and two[-1].run.endswith("-1.3x-seed2")  # the UNet at 1.3x its compute
    assert [m.run for m in two] == [m.run + "-seed2" for m in own]
    config = LC.model_config(LC.QUICK, two[1], 4)
    assert config.train.seed == 2 and Path(config.train.out_dir).name == own[1].run + "-seed2"
    assert LC.model_config(LC.QUICK, own[1], 4).train.seed == LC.DEFAULT_SEED
    with pytest.raises(UserError, match="no seed study"):
        LC.seeded_models("lidc", LC.lidc_models(LC.QUICK, True), 2)


def _point(steps: int, dice: list[float]) -> dict:
    return {"steps": steps, "images": 8 * steps, "train_min": 1.0, "eval_min": 0.1, "dice": sum(dice) / len(dice),
            "per_case": {"case": CASES, "dice": dice}}  # fmt: skip


def _curves(unet: float, gains: list[float]) -> dict:
    """The UNet at ``unet`` on every image; the anchored model ``gains`` above it image by image."""
    return {
        UNET: {"relative_step_cost": 1.0, "points": {"600": _point(600, [unet] * 3)}},
        ANCHORED: {"relative_step_cost": 1.5, "points": {"600": _point(600, [unet + g for g in gains])}},
    }


# Seed 0 and 2: the anchored model gains 1 point on patient 1 (its images +2 and +0) and 4 on patient 2: +2.5 per
# patient (+2.0 per image); seed 3: 3 and 6, +4.5. Over seeds: +2.5, +2.5, +4.5 (mean 3.17, sd 1.15).
SEEDS = {0: _curves(0.80, [0.02, 0.0, 0.04]), 2: _curves(0.82, [0.02, 0.0, 0.04]), 3: _curves(0.84, [0.04, 0.02, 0.06])}


def test_mean_and_sd_over_seeds():
    rows = {(r[0], r[2]): r for r in R.seed_table(SEEDS)}
    _, cost, _, by, mean, sd = rows[UNET, 600]
    assert (cost, by) == (1.0, "0: 80.0, 2: 82.0, 3: 84.0")
    assert mean == pytest.approx(82.0) and sd == pytest.approx(2.0)
    _, cost, _, _, mean, sd = rows[ANCHORED, 600]  # 82, 84, 88
    assert cost == 1.5 and mean == pytest.approx(254 / 3) and sd == pytest.approx((28 / 3) ** 0.5)


def test_paired_differences_per_patient_with_bootstrap_interval():
    rows = R.paired_table(SEEDS)
    assert [r[2] for r in rows] == ["0", "2", "3", "mean of 0, 2, 3"]
    assert all(r[:2] == [ANCHORED, 600] and r[3] == 2 for r in rows)  # two patients
    # two patients: a resample's mean is one patient's difference or their mean, so the interval is their range
    assert rows[0][4] == rows[1][4] == "+2.50 [+1.00, +4.00]"
    assert rows[2][4] == "+4.50 [+3.00, +6.00]"
    assert rows[3][4] == "+3.17 [+1.67, +4.67]"  # patients' means over seeds: +1.67 and +4.67
    assert rows[3][5] == pytest.approx((4 / 3) ** 0.5) and rows[0][5] is None


def test_report_keeps_the_task_table_and_adds_the_seed_study(tmp_path):
    out = tmp_path / "learning-curve"
    out.mkdir()
    own = SEEDS[0] | {"anchored diffusion (mean_shift)": {"points": {"600": _point(600, [0.5] * 3)}}}
    (out / "ddti-anchored.json").write_text(json.dumps({"machine": "A", "seed": 0, "curves": own}))
    for seed in (2, 3):
        (out / f"ddti-anchored-seed{seed}.json").write_text(json.dumps({"machine": "B", "curves": SEEDS[seed]}))
    page = R.write_report(out, {"cpu": "test"}).read_text()
    task, seeds = page.split("## DDTI-ANCHORED, TRAINING SEEDS")
    assert task.count(f"| {UNET} |") == 1 and "| 88 |" not in task  # seed 0's rows only (seed 3: 88 %)
    assert "mean_shift" in task and "mean_shift" not in seeds  # an arm trained with one seed stays out
    assert "Task `ddti-anchored, seed 0` ran on: A." in seeds and "Task `ddti-anchored, seed 3` ran on: B." in seeds
    assert "Steps scored by seed: 0: 600; 2: 600; 3: 600 (" in seeds
    assert "| 0: 80.0, 2: 82.0, 3: 84.0 | 82 | 2 |" in seeds and "+3.17 [+1.67, +4.67]" in seeds
    assert (tmp_path / "learning-curve-ddti-anchored-seeds-dice.png").stat().st_size > 0


def test_only_runs_the_named_models_and_keeps_what_parallel_jobs_saved(tmp_path, monkeypatch):
    """--only: a job trains the models it names and, saving, keeps the curves another job wrote meanwhile."""
    monkeypatch.setattr(LC, "OUT", tmp_path)
    monkeypatch.setattr(LC, "step_cost", lambda b, model, reference: 1.5)
    monkeypatch.setattr(LC, "train_to", lambda config: 0.1)
    monkeypatch.setattr(LC, "evaluate_point", lambda task, b, model, config: {"dice": 0.5})
    out = LC.result_file("lidc-anchored", True)
    other = {"points": {"4": {"dice": 0.9}}, "train_min": 1.0}
    out.write_text(json.dumps({"task": "lidc-anchored", "curves": {"another job's model": other}}))
    LC.run_task("lidc-anchored", True, only="seg. loss weight 0.1")
    curves = json.loads(out.read_text())["curves"]
    assert curves["another job's model"] == other
    mine = [label for label in curves if "seg. loss weight 0.1" in label]
    assert len(mine) == 2 and all(set(curves[label]["points"]) == {"2", "4"} for label in mine)
    assert "deterministic UNet" not in curves
    with pytest.raises(UserError, match="--only 'nothing like this'"):
        LC.run_task("lidc-anchored", True, only="nothing like this")


def test_the_lidc_study_pairs_ged_with_the_diffusion_unet_by_the_readers_patients():
    study = R.STUDIES["lidc-anchored"]
    base, model = LC.SEEDED["lidc-anchored"]
    assert study.baseline == base and not study.percent

    def point(ged: list[float]) -> dict:  # three slices of two patients, named by the reader
        per_case = {"case": ["P-1_n0", "P-1_n1", "P-2_n0"], "patient": ["P-1", "P-1", "P-2"], "ged_biased_16": ged}
        return {"steps": 1500, "ged_biased_16": sum(ged) / 3, "per_case": per_case}

    def curves(b: list[float], m: list[float]) -> dict:
        return {label: {"relative_step_cost": cost, "points": {"1500": point(g)}}
                for label, cost, g in ((base, 1.07, b), (model, 1.88, m))}  # fmt: skip

    seeds = {0: curves([0.4, 0.4, 0.4], [0.3, 0.5, 0.2]), 2: curves([0.4, 0.4, 0.4], [0.4, 0.4, 0.3])}
    rows = {r[0]: r for r in R.seed_table(seeds, study)}
    assert rows[base][3] == "0: 0.400, 2: 0.400" and rows[model][4] == pytest.approx((1.0 / 3 + 1.1 / 3) / 2)
    paired = R.paired_table(seeds, study)
    # seed 0: patient P-1 0.4 - 0.4 = 0, P-2 0.2 - 0.4 = -0.2; mean -0.1, interval the two patients' range
    assert paired[0][:4] == [model, 1500, "0", 2] and paired[0][4] == "-0.100 [-0.200, +0.000]"
    assert paired[1][4] == "-0.050 [-0.100, +0.000]"  # seed 2: P-1 0, P-2 -0.1
    assert paired[2][2:5] == ["mean of 0, 2", 2, "-0.075 [-0.150, +0.000]"]  # P-1 0, P-2 -0.15 over the seeds


def test_acdc_points_fuse_as_the_model_says_and_keep_each_volumes_dice_with_its_patient(monkeypatch):
    truth = torch.zeros(8, 8, dtype=torch.long)
    truth[2:6, 2:6] = 1  # RV only
    volumes = {v: [(f"{v}_z0000", None, truth[None])] for v in ("patient028_frame01", "patient085_frame02")}
    monkeypatch.setattr(LC.Q, "acdc_volumes", lambda config, n: volumes)
    fusions = []

    def draw(ckpt, cases, members, fusion, **sampling):  # volume 028 right, 085 empty
        fusions.append((members, fusion))
        return [truth if "028" in cases[0][0] else torch.zeros_like(truth)]

    monkeypatch.setattr(LC.Q, "draw_label_maps", draw)
    unet, *_, mean_fused, _ = LC.acdc_anchored_models(LC.QUICK, True)
    assert mean_fused.label == LC.SEEDED["acdc-anchored"][1] and "sample.fusion=mean" in mean_fused.extra
    for model, want in ((mean_fused, (LC.QUICK.members, "mean")), (unet, (1, "staple"))):
        fusions.clear()
        scores = LC.acdc_scores(LC.QUICK, model, LC.model_config(LC.QUICK, model, 4), Path("unused.ckpt"))
        assert fusions == [want, want]
        per_case = scores["per_case"]
        assert per_case["case"] == list(volumes) and per_case["patient"] == ["patient028", "patient085"]
        # a class absent from both the truth and the prediction scores 1: volume 085 has (0 + 1 + 1) / 3
        assert per_case["dice"] == pytest.approx([1.0, 2 / 3]) and scores["dice/RV"] == 0.5
