"""``diffuseg evaluate`` on hand-made label-map predictions (PNG and HDF5) with several classes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from diffuseg.cli import main
from diffuseg.errors import UserError
from diffuseg.evaluation import class_metrics as CM
from diffuseg.evaluation.evaluate import evaluate
from diffuseg.evaluation.labelmaps import class_masks, parse_classes
from diffuseg.labels import label_scheme

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
ACDC_YAML = (
    "data:\n  classes:\n    - {name: RV, values: [1]}\n    - {name: Myo, values: [2]}\n    - {name: LV, values: [3]}\n"
)


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


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
    assert set(res["calibration"]) == {"all", "foreground"} | {
        f"{k}/{n}" for k in ("all", "foreground") for n in scheme.names
    }
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
