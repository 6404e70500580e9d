"""``evaluate`` on tiny datasets written to tmp_path: PNG pairs, LIDC-style 4 annotators, NIfTI volumes, and
hand-made label-map predictions (PNG and HDF5) with several classes."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from pngs import png

from diffuseg.cli import main
from diffuseg.errors import UserError
from diffuseg.evaluation import class_metrics as CM
from diffuseg.evaluation import metrics as M
from diffuseg.evaluation.case_metrics import class_masks
from diffuseg.evaluation.evaluate import evaluate, parse_classes
from diffuseg.inference.outputs import find_predictions
from diffuseg.labels import label_scheme

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
ACDC_YAML = (
    "data:\n  classes:\n    - {name: RV, values: [1]}\n    - {name: Myo, values: [2]}\n    - {name: LV, values: [3]}\n"
)


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
    # and so are the pooled pixel AUROC and the equal-mass ECE
    assert res["uncertainty"]["pixel"]["auroc"] == pytest.approx(row["pixel_auroc"])
    assert res["uncertainty"]["calibration"]["ece_marked"] == pytest.approx(row["ece_marked"])


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


# several classes


def truth() -> np.ndarray:
    """8x8 label map: RV (1) 16 px top left, Myo (2) 16 px bottom right, LV (3) 4 px top right."""
    g = np.zeros((8, 8), np.uint8)
    g[0:4, 0:4] = 1
    g[4:8, 4:8] = 2
    g[0:2, 6:8] = 3
    return g


def guess() -> np.ndarray:
    """RV: 8 of its 16 px; Myo exact; LV missed."""
    p = truth()
    p[0:4, 0:2] = 0
    p[0:2, 6:8] = 0
    return p


@pytest.fixture
def label_pngs(tmp_path: Path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    png(gt / "images" / "a.png", np.full((8, 8), 100))
    png(gt / "masks" / "a.png", truth())
    png(gt / "images" / "b.png", np.full((8, 8), 100))
    png(gt / "masks" / "b.png", truth())
    png(pred / "a.png", guess())
    png(pred / "b.png", truth())
    (pred / "config.yaml").write_text(ACDC_YAML)
    return pred, gt


def test_png_label_maps_per_class_through_the_cli(label_pngs, capsys):
    pred, gt = label_pngs
    assert main(["evaluate", str(pred), str(gt)]) == 0  # classes from PRED/config.yaml
    res = json.loads((pred / "results.json").read_text())
    assert res["class_names"] == ["RV", "Myo", "LV"] and res["regions"] is False
    assert res["classes"][2] == {"name": "LV", "values": [3]}
    a, b = ({r["case"]: r for r in res["cases"]}[c] for c in "ab")
    assert a["dice/RV"] == pytest.approx(2 * 8 / (8 + 16))
    assert a["iou/RV"] == pytest.approx(0.5)
    assert a["dice/Myo"] == 1.0 and a["hd95/Myo"] == 0.0
    assert a["dice/LV"] == 0.0 and a["iou/LV"] == 0.0
    assert a["hd95/LV"] is None  # predicted empty, ground truth not: undefined, left out of the mean
    assert a["hd95/RV"] == pytest.approx(2.0)
    assert a["dice"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert a["iou"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert a["hd95"] == pytest.approx((2.0 + 0.0) / 2)
    assert b["dice"] == 1.0 and all(b[f"dice/{n}"] == 1.0 for n in ("RV", "Myo", "LV"))
    assert res["summary"]["dice/RV"]["mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert res["summary"]["hd95/LV"]["n_undefined"] == 1
    with open(pred / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {"dice", "dice/RV", "dice/Myo", "dice/LV", "iou/LV", "hd95/RV"} <= set(rows[0])
    assert float(rows[0]["dice/RV"]) == pytest.approx(2 / 3)
    assert "dice/Myo" in capsys.readouterr().out


def test_classes_option_and_regions(label_pngs):
    pred, gt = label_pngs
    (pred / "config.yaml").unlink()
    assert main(["evaluate", str(pred), str(gt), "--classes", "all=1+2+3,inner=2+3:2,lv=3"]) == 0
    res = json.loads((pred / "results.json").read_text())
    assert res["regions"] is True and res["class_names"] == ["all", "inner", "lv"]
    a = res["cases"][0]
    # all: truth 36 px, guess 24 px inside it; inner: truth 20 px, guess the 16 Myo px; lv: missed
    assert a["dice/all"] == pytest.approx(2 * 24 / (24 + 36))
    assert a["dice/inner"] == pytest.approx(2 * 16 / (16 + 20))
    assert a["dice/lv"] == 0.0
    assert a["dice"] == pytest.approx((48 / 60 + 32 / 36 + 0) / 3)


def test_parse_classes():
    assert [(c.name, c.values, c.label) for c in parse_classes("RV=1, Myo=2,WT=1+2+4:2")] == [
        ("RV", (1,), None),
        ("Myo", (2,), None),
        ("WT", (1, 2, 4), 2),
    ]
    for bad in ("RV", "RV=", "=1", "RV=x", "RV=1:x"):
        with pytest.raises(UserError, match="NAME=V"):
            parse_classes(bad)


def test_binary_results_have_no_class_keys(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    png(gt / "images" / "a.png", np.full((8, 8), 100))
    png(gt / "masks" / "a.png", (truth() > 0) * 255)
    png(pred / "a.png", (guess() > 0) * 255)
    res = evaluate(pred, gt, quiet=True)
    assert not {"classes", "class_names", "regions"} & set(res)
    assert not any("/" in k for k in res["cases"][0])
    assert res["cases"][0]["dice"] == pytest.approx(2 * 24 / (24 + 36))


def test_undeclared_predicted_value_names_the_file(label_pngs):
    pred, gt = label_pngs
    bad = guess()
    bad[7, 0] = 5
    png(pred / "a.png", bad)
    with pytest.raises(UserError, match=r"a\.png.*label value\(s\) 5 not declared"):
        evaluate(pred, gt, quiet=True)


def test_samples_ged_over_classes_and_calibration_per_class(label_pngs):
    pred, gt = label_pngs
    samples = [guess(), truth(), np.zeros((8, 8), np.uint8)]
    for k, s in enumerate(samples):
        png(pred / "samples" / f"a_s{k:03d}.png", s)
    res = evaluate(pred, gt, quiet=True)
    a = {r["case"]: r for r in res["cases"]}["a"]
    scheme = label_scheme(
        [{"name": "RV", "values": [1]}, {"name": "Myo", "values": [2]}, {"name": "LV", "values": [3]}]
    )
    s_cm = class_masks(scheme, torch.from_numpy(np.stack(samples)))
    y_cm = class_masks(scheme, torch.from_numpy(truth()[None]))
    assert a["samples"] == 3
    assert a["diversity"] == pytest.approx(CM.class_diversity(s_cm))
    assert a["ged_biased"] == pytest.approx(CM.class_ged(s_cm, y_cm, unbiased=False))
    # by hand: mIoU over the classes present in either mask: guess (0.5 + 1 + 0) / 3, truth 1, empty 0; the one
    # annotation repeated 3 times is matched to each sample once
    assert a["hungarian_iou"] == pytest.approx((0.5 + 1 + 0) / 3 / 3 + 1 / 3)
    # per class, the binary GED of that class's masks
    assert a["ged_biased/LV"] == pytest.approx(CM.M.ged(s_cm[:, 2], y_cm[:, 2], unbiased=False))
    assert set(res["calibration"]) == {"all"} | {f"all/{n}" for n in scheme.names}
    assert np.asarray(res["calibration"]["all"]["bins"]).sum(0)[0] == 64 * 3  # the case with samples, 3 classes
    assert np.asarray(res["calibration"]["all/LV"]["bins"]).sum(0)[0] == 64


def hdf5(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, a in arrays.items():
            f.create_dataset(key, data=a)


def test_hdf5_volume_per_class_3d_dice(tmp_path):
    """SSL4MIS layout: a (D,H,W) volume; evaluate slices the predicted volume along axis 0 and scores the
    volume in 3D."""
    gt, pred = tmp_path / "acdc", tmp_path / "pred"
    label = np.stack([truth(), truth(), np.zeros((8, 8), np.uint8)])  # (3, 8, 8)
    hdf5(gt / "data" / "p1_frame01.h5", image=np.full((3, 8, 8), 0.5, np.float32), label=label)
    (gt / "val.list").write_text("p1_frame01\n")
    guessed = np.stack([guess(), truth(), np.zeros((8, 8), np.uint8)])
    hdf5(pred / "p1_frame01.h5", label=guessed)
    assert main(["evaluate", str(pred), str(gt), "--classes", "RV=1,Myo=2,LV=3"]) == 0
    res = json.loads((pred / "results.json").read_text())
    rows = {r["case"]: r for r in res["cases"]}
    assert set(rows) == {"p1_frame01_z0000", "p1_frame01_z0001", "p1_frame01_z0002"}
    assert rows["p1_frame01_z0002"]["dice/LV"] == 1.0  # both empty: 1
    (vol,) = res["volumes"]
    assert vol["case"] == "p1_frame01" and vol["slices"] == 3
    assert vol["dice/RV"] == pytest.approx(2 * 24 / (24 + 32))
    assert vol["dice/Myo"] == 1.0
    assert vol["dice/LV"] == pytest.approx(2 * 4 / (4 + 8))
    assert vol["dice"] == pytest.approx((48 / 56 + 1 + 8 / 12) / 3)
    assert res["volume_summary"]["dice/LV"]["mean"] == pytest.approx(2 / 3)


@pytest.mark.skipif(not (DATA / "acdc" / "val.list").is_file(), reason="../shared/data/acdc not present")
def test_real_acdc_volume_scored_against_itself(tmp_path):
    root = DATA / "acdc"
    name = (root / "val.list").read_text().split()[0]
    with h5py.File(root / "data" / f"{name}.h5") as f:
        label = np.asarray(f["label"][()])
    hdf5(tmp_path / "pred" / f"{name}.h5", label=label)
    (tmp_path / "pred" / "config.yaml").write_text(ACDC_YAML)
    cases = {f"{name}_z{z:04d}" for z in range(label.shape[0])}
    res = evaluate(tmp_path / "pred", root, quiet=True, cases=cases)
    (vol,) = res["volumes"]
    assert vol["case"] == name and vol["slices"] == label.shape[0]
    assert [vol[f"dice/{n}"] for n in ("RV", "Myo", "LV")] == [1.0, 1.0, 1.0]
    assert vol["hd95"] == 0.0


def test_binary_run_reads_the_ground_truth_with_its_foreground(tmp_path):
    """A binary run trained on one label of a multi-label map (``data.foreground``, e.g. REFUGE's cup) is scored
    against that label, as it was trained, not against every non-zero value."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    png(gt / "images" / "a.png", np.full((8, 8), 100))
    png(gt / "masks" / "a.png", truth())
    png(pred / "a.png", (truth() == 2) * 255)
    (pred / "config.yaml").write_text("data:\n  foreground: [2]\n")
    res = evaluate(pred, gt, quiet=True)
    assert res["cases"][0]["dice"] == 1.0 and "classes" not in res


def test_the_ignore_label_is_out_of_the_scores(tmp_path):
    """labelsTs beside a dataset.json with nnU-Net's ignore label: a prediction wrong only where the reference is
    ignore scores as perfect, in results.json and in summary.json."""
    meta = {"channel_names": {"0": "US"}, "labels": {"background": 0, "lesion": 1, "ignore": 2}, "file_ending": ".png"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    truth = np.zeros((12, 12), np.uint8)
    truth[4:8, 4:8] = 1
    truth[:2] = 2  # two rows nobody annotated
    (tmp_path / "labelsTs").mkdir()
    Image.fromarray(truth).save(tmp_path / "labelsTs" / "c1.png")
    pred = np.where(truth == 1, 255, 0).astype(np.uint8)
    pred[0, :6] = 255  # foreground where the reference is ignore
    (tmp_path / "pred").mkdir()
    Image.fromarray(pred).save(tmp_path / "pred" / "c1.png")
    results = evaluate(tmp_path / "pred", tmp_path / "labelsTs", quiet=True)
    assert results["cases"][0]["dice"] == 1.0 and results["cases"][0]["iou"] == 1.0
    counts = json.loads((tmp_path / "pred" / "summary.json").read_text())["metric_per_case"][0]["metrics"]["1"]
    assert (counts["TP"], counts["FP"], counts["FN"], counts["TN"]) == (16, 0, 0, 12 * 12 - 24 - 16)
