"""``evaluate`` on tiny datasets written to tmp_path: PNG pairs, LIDC-style 4 annotators, NIfTI volumes."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from diffuseg.cli import main
from diffuseg.errors import UserError
from diffuseg.evaluation import metrics as M
from diffuseg.evaluation.evaluate import evaluate, find_predictions

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def square(size: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    out = np.zeros((size, size), np.uint8)
    out[r0:r1, c0:c1] = 1
    return out


@pytest.fixture
def paired(tmp_path: Path) -> tuple[Path, Path]:
    """GT: images/ + masks/ with cases a, b, c (one annotator). PRED: a, b and an extra z."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    truth = {"a": square(16, 2, 6, 2, 6), "b": square(16, 4, 10, 4, 10), "c": square(16, 0, 3, 0, 3)}
    for name, m in truth.items():
        png(gt / "images" / f"{name}.png", np.full((16, 16), 100))
        png(gt / "masks" / f"{name}.png", m * 255)
    png(pred / "a.png", truth["a"] * 255)  # perfect
    png(pred / "b.png", square(16, 4, 10, 4, 7) * 255)  # half of b
    png(pred / "z.png", truth["a"] * 255)  # no ground truth
    return pred, gt


def test_paired_single_annotator(paired, capsys):
    pred, gt = paired
    res = evaluate(pred, gt)
    rows = {r["case"]: r for r in res["cases"]}
    assert set(rows) == {"a", "b"}
    assert rows["a"]["dice"] == 1.0 and rows["a"]["hd95"] == 0.0
    assert rows["b"]["dice"] == pytest.approx(2 * 18 / (18 + 36))
    assert rows["b"]["iou"] == pytest.approx(0.5)
    assert "ged" not in rows["a"]  # no samples, one annotator
    assert res["missing"] == {"predictions": ["c"], "ground_truth": ["z"]}
    assert res["summary"]["dice"]["mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert res["spacing_unit"] == "pixel" and res["calibration"] == {}
    on_disk = json.loads((pred / "results.json").read_text())
    assert on_disk["summary"]["dice"]["n"] == 2
    with open(pred / "results.csv") as fh:
        assert [r["case"] for r in csv.DictReader(fh)] == ["a", "b"]
    printed = capsys.readouterr().out
    assert "dice" in printed and "without a prediction: c" in printed


def lidc(root: Path, masks: list[np.ndarray], slice_name: str = "slice-0") -> str:
    nodule = root / "LIDC-IDRI-slices" / "LIDC-IDRI-0001" / "nodule-0"
    png(nodule / "images" / f"{slice_name}.png", np.full((8, 8), 80))
    for k, m in enumerate(masks):
        png(nodule / f"mask-{k}" / f"{slice_name}.png", m * 255)
    return f"LIDC-IDRI-0001_nodule-0_{slice_name}"


def test_four_annotators_with_samples(tmp_path):
    g = torch.Generator().manual_seed(0)
    annot = [(torch.rand(8, 8, generator=g) > 0.5).numpy().astype(np.uint8) for _ in range(3)]
    annot.append(np.zeros((8, 8), np.uint8))
    case = lidc(tmp_path / "gt", annot)
    samples = [(torch.rand(8, 8, generator=g) > 0.5).numpy().astype(np.uint8) for _ in range(16)]
    pred = tmp_path / "pred"
    png(pred / f"{case}.png", annot[0] * 255)
    png(pred / f"{case}_uncertainty.png", np.full((8, 8), 7))
    for k, s in enumerate(samples):
        png(pred / "samples" / f"{case}_{k:02d}.png", s * 255)
    files = find_predictions(pred)
    assert len(files[case].samples) == 16 and files[case].uncertainty is not None
    res = evaluate(pred, tmp_path / "gt", out=tmp_path / "out" / "r.json", quiet=True)
    row = res["cases"][0]
    s, y = torch.from_numpy(np.stack(samples)), torch.from_numpy(np.stack(annot))
    assert row["ged"] == pytest.approx(M.ged(s, y, unbiased=True))
    assert row["ged_biased"] == pytest.approx(M.ged(s, y, unbiased=False))
    assert row["ged_biased_4"] == pytest.approx(M.ged_at(s, y, 4, unbiased=False))
    assert row["ged_16"] == pytest.approx(M.ged(s, y, unbiased=True))
    assert row["dice_majority"] == pytest.approx(float(M.dice(y[0], M.majority(y))))
    assert row["dice"] == pytest.approx(float(M.dice(y[0][None], y).mean()))
    for key in ("diversity", "hungarian_iou", "ci", "ncc", "ece", "sample_dice", "samples"):
        assert key in row
    assert (tmp_path / "out" / "r.csv").is_file()
    # one case: the pooled calibration error is that case's
    assert res["calibration"]["all"]["ece"] == pytest.approx(row["ece"])
    assert res["calibration"]["foreground"]["ece"] == pytest.approx(row["ece_foreground"])


def test_samples_in_case_folders(tmp_path):
    case = lidc(tmp_path / "gt", [square(8, 1, 4, 1, 4)] * 2)
    pred = tmp_path / "pred"
    png(pred / f"{case}.png", square(8, 1, 4, 1, 4) * 255)
    for k in range(3):
        png(pred / "samples" / case / f"{k}.png", square(8, 1, 4, 1, 4) * 255)
    row = evaluate(pred, tmp_path / "gt", quiet=True)["cases"][0]
    assert row["samples"] == 3
    assert row["ged_biased"] == pytest.approx(0.0) and row["ged"] == pytest.approx(0.0)
    assert row["ncc"] is None  # every map constant: undefined, stored as null
    assert json.loads((pred / "results.json").read_text())["summary"]["ncc"]["n_undefined"] == 1


def test_nifti_volume_with_spacing(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    truth = np.zeros((12, 10, 6), np.uint8)
    truth[3:8, 2:7, 1:5] = 1
    guess = np.zeros_like(truth)
    guess[4:9, 2:7, 1:4] = 1
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    (gt / "images").mkdir(parents=True)
    (gt / "masks").mkdir()
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).random(truth.shape).astype(np.float32), affine),
        gt / "images" / "vol.nii.gz",
    )
    nib.save(nib.Nifti1Image(truth, affine), gt / "masks" / "vol.nii.gz")
    pred.mkdir()
    nib.save(nib.Nifti1Image(guess, affine), pred / "vol.nii.gz")
    res = evaluate(pred, gt, quiet=True)
    assert len(res["cases"]) == 6 and res["spacing_unit"] == "mm"
    (vol,) = res["volumes"]
    assert vol["case"] == "vol" and vol["slices"] == 6
    assert vol["dice"] == pytest.approx(float(M.dice(torch.from_numpy(guess), torch.from_numpy(truth), dims=3)))
    assert vol["hd95"] == pytest.approx(M.hd95(guess, truth, (0.8, 0.8, 2.5)))
    z1 = next(r for r in res["cases"] if r["case"].endswith("z0001"))
    assert z1["hd95"] == pytest.approx(M.hd95(guess[:, :, 1], truth[:, :, 1], (0.8, 0.8)))
    empty_slice = next(r for r in res["cases"] if r["case"].endswith("z0000"))
    assert empty_slice["dice"] == 1.0 and empty_slice["hd95"] == 0.0
    z4 = next(r for r in res["cases"] if r["case"].endswith("z0004"))
    assert z4["hd95"] is None  # prediction empty, ground truth not: undefined


def test_bad_inputs_name_the_file(tmp_path, paired):
    pred, gt = paired
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no predicted masks"):
        evaluate(tmp_path / "empty", gt)
    with pytest.raises(UserError, match="not found"):
        evaluate(tmp_path / "nope", gt)
    other = tmp_path / "other"
    png(other / "q.png", np.zeros((16, 16)))
    with pytest.raises(UserError, match="no case of"):
        evaluate(other, gt)
    png(pred / "a.png", np.zeros((12, 16)))
    with pytest.raises(UserError, match=r"a\.png: size 12x16 differs"):
        evaluate(pred, gt)


def test_cli_evaluate(paired, tmp_path, capsys):
    pred, gt = paired
    assert main(["evaluate", str(pred), str(gt), "--out", str(tmp_path / "r.json")]) == 0
    assert (tmp_path / "r.json").is_file()
    assert main(["evaluate", str(tmp_path / "missing"), str(gt)]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.realdata
def test_empty_prediction_on_real_lidc(tmp_path):
    src = DATA / "lidc" / "LIDC-IDRI-slices" / "LIDC-IDRI-0001"
    if not src.is_dir():
        pytest.skip(f"real LIDC data not found at {src}")
    (tmp_path / "gt" / "LIDC-IDRI-slices").mkdir(parents=True)
    (tmp_path / "gt" / "LIDC-IDRI-slices" / "LIDC-IDRI-0001").symlink_to(src.resolve())
    pred = tmp_path / "pred"
    cases = [p for p in sorted(src.glob("nodule-*/images/*.png"))][:6]
    for p in cases:
        case = f"LIDC-IDRI-0001_{p.parent.parent.name}_{p.stem}"
        png(pred / f"{case}.png", np.zeros((128, 128)))
        for k in range(4):
            png(pred / "samples" / f"{case}_{k}.png", np.zeros((128, 128)))
    res = evaluate(pred, tmp_path / "gt", quiet=True)
    assert len(res["cases"]) == len(cases)
    for row in res["cases"]:
        assert row["dice"] == pytest.approx(row["sample_dice"])
        # empty samples: GED_unbiased = 2 (1 - Dice) - d_YY and GED_biased - GED_unbiased = d_YY / 4
        d_yy = 4 * (row["ged_biased"] - row["ged"])
        assert row["ged"] == pytest.approx(2 * (1 - row["dice"]) - d_yy)
        assert 0.0 <= row["ged_biased"] <= 2.0 and not math.isnan(row["ged"])


def test_reads_what_the_prediction_writer_writes(tmp_path):
    """PNG cases and a NIfTI volume written by inference.writers, evaluated and reported."""
    from diffuseg.data.formats import open_dataset
    from diffuseg.evaluation.report import write_report
    from diffuseg.inference.writers import PredictionWriter

    annot = [square(8, 1, 5, 1, 5), square(8, 2, 6, 2, 6), np.zeros((8, 8), np.uint8)]
    lidc(tmp_path / "lidc", annot, "slice-1")
    lidc(tmp_path / "lidc", annot[::-1], "slice-11")
    vol_gt = tmp_path / "vol"
    truth = np.zeros((10, 10, 4), np.uint8)
    truth[2:7, 3:8, 1:3] = 1
    affine = np.diag([0.5, 0.5, 3.0, 1.0])
    (vol_gt / "images").mkdir(parents=True)
    (vol_gt / "masks").mkdir()
    nib.save(nib.Nifti1Image(np.ones(truth.shape, np.float32), affine), vol_gt / "images" / "v1.nii.gz")
    nib.save(nib.Nifti1Image(truth, affine), vol_gt / "masks" / "v1.nii.gz")
    for gt in (tmp_path / "lidc", vol_gt):
        pred = tmp_path / f"pred_{gt.name}"
        reader = open_dataset(gt)
        with PredictionWriter(pred, [gt], save_samples=True) as writer:
            for i in range(len(reader)):
                case = reader[i]
                masks = case.masks.float()
                writer.write(case, masks[0], masks.mean(0) * (1 - masks.mean(0)), torch.cat([masks, masks]))
        res = evaluate(pred, gt, quiet=True)
        assert len(res["cases"]) == len(reader) and not res["missing"]["predictions"]
        for row in res["cases"]:
            assert row["samples"] == 2 * reader.annotators
            assert row["ged_biased"] == pytest.approx(0.0, abs=1e-12)  # samples = the annotators, twice
        if gt == vol_gt:
            assert res["volumes"][0]["dice"] == 1.0 and res["volumes"][0]["hd95"] == 0.0
        page = write_report(pred)
        assert "<h3>" in page.read_text()


@pytest.mark.realdata
def test_brats_slices_in_mm(tmp_path):
    """BraTS NIfTI slices: an eroded ground truth as prediction scores HD95 >= 1 mm, and the unlabelled
    testing slices are reported as lacking ground truth."""
    from scipy import ndimage

    from diffuseg.data.formats import open_dataset

    root = DATA / "brats_sample"
    if not root.is_dir():
        pytest.skip(f"BraTS sample not found at {root}")
    reader = open_dataset(root)
    pred = tmp_path / "pred"
    pred.mkdir()
    for i in range(len(reader)):
        case = reader[i]
        mask = case.masks[0].numpy() if case.annotators else np.zeros(case.geometry.size, np.uint8)
        eroded = ndimage.binary_erosion(mask, iterations=2).astype(np.uint8)
        nib.save(nib.Nifti1Image(eroded, np.array(case.geometry.affine)), pred / f"{case.case_id}.nii.gz")
    res = evaluate(pred, root, quiet=True)
    labelled = [reader.entries[i].case_id for i in range(len(reader)) if reader[i].annotators]
    assert sorted(r["case"] for r in res["cases"]) == sorted(labelled)
    assert len(res["missing"]["ground_truth"]) == len(reader) - len(labelled)
    assert res["spacing_unit"] == "mm"
    for row in res["cases"]:
        assert 0.5 < row["dice"] < 1.0 and row["hd95"] >= 1.0  # erosion removes islands: no upper bound
