"""The reference masks (empty, all-foreground) on hand-made cases: values computed by hand, and what ``evaluate``
writes of them to ``results.json`` (per case, per volume, per class)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from pngs import png

from diffuseg.evaluation.evaluate import evaluate
from diffuseg.evaluation.references import REFERENCES, reference_metrics
from diffuseg.labels import LabelScheme, label_scheme

THREE = label_scheme([{"name": "RV", "values": [1]}, {"name": "Myo", "values": [2]}, {"name": "LV", "values": [3]}])


def masks(*maps: np.ndarray) -> torch.Tensor:
    """Atom maps ``(A, 1, *S)``."""
    return torch.from_numpy(np.stack(maps)[:, None].astype(np.uint8))


def block(rows: int, cols: int, size: int = 4, value: int = 1) -> np.ndarray:
    out = np.zeros((size, size), np.uint8)
    out[:rows, :cols] = value
    return out


def test_one_annotator_by_hand():
    refs = reference_metrics(masks(block(2, 2)), LabelScheme())  # 4 of 16 pixels
    assert refs["empty"] == {"dice": 0.0, "iou": 0.0}
    assert refs["all_foreground"]["dice"] == pytest.approx(2 * 4 / (4 + 16))
    assert refs["all_foreground"]["iou"] == pytest.approx(4 / 16)
    refs = reference_metrics(masks(np.zeros((4, 4))), LabelScheme())  # nothing to find: empty is perfect
    assert refs["empty"] == {"dice": 1.0, "iou": 1.0}
    assert refs["all_foreground"] == {"dice": 0.0, "iou": 0.0}


def test_ignored_pixels_are_left_out_of_the_references():
    valid = torch.ones(4, 4, dtype=torch.bool)
    valid[2:] = False  # the bottom half ignored: 8 pixels count, 4 of them foreground
    refs = reference_metrics(masks(block(2, 2)), LabelScheme(), valid)
    assert refs["all_foreground"]["dice"] == pytest.approx(2 * 4 / (4 + 8))
    assert refs["all_foreground"]["iou"] == pytest.approx(4 / 8)
    assert refs["empty"] == {"dice": 0.0, "iou": 0.0}
    assert reference_metrics(masks(block(2, 2)), LabelScheme(), torch.ones(4, 4, dtype=torch.bool)) == (
        reference_metrics(masks(block(2, 2)), LabelScheme())
    )


def test_two_annotators_with_ged_by_hand():
    y1, y2 = block(2, 2), block(2, 4)  # 4 and 8 pixels, y1 inside y2: d(y1, y2) = 1 - 4/8
    refs = reference_metrics(masks(y1, y2), LabelScheme())
    assert refs["empty"]["dice"] == 0.0
    assert refs["empty"]["ged"] == pytest.approx(2 * 1.0 - 0.5)  # 2 E d(0, Y) - E d(Y, Y')
    assert refs["all_foreground"]["dice"] == pytest.approx((2 * 4 / 20 + 2 * 8 / 24) / 2)
    d_full = ((1 - 4 / 16) + (1 - 8 / 16)) / 2
    assert refs["all_foreground"]["ged"] == pytest.approx(2 * d_full - 0.5)


def test_three_classes_per_class_and_mean():
    label = block(1, 2, value=1) + (block(2, 4) - block(1, 4)) * 2  # RV 2 pixels, Myo 4, LV absent
    refs = reference_metrics(masks(label), THREE)
    empty, full = refs["empty"], refs["all_foreground"]
    assert (empty["dice/RV"], empty["dice/Myo"], empty["dice/LV"]) == (0.0, 0.0, 1.0)
    assert empty["dice"] == pytest.approx(1 / 3)
    assert full["dice/RV"] == pytest.approx(4 / 18) and full["dice/Myo"] == pytest.approx(8 / 20)
    assert full["dice/LV"] == 0.0
    assert full["dice"] == pytest.approx((4 / 18 + 8 / 20) / 3)
    assert full["iou/Myo"] == pytest.approx(4 / 16)
    assert "ged" not in empty  # one annotator


def test_three_classes_two_annotators_ged_over_classes():
    a = block(1, 2, value=1)
    refs = reference_metrics(masks(a, a), THREE)
    assert refs["empty"]["ged"] == pytest.approx(2.0)  # d(0, Y) = 1, d(Y, Y') = 0
    assert "ged" not in refs["all_foreground"] and "ged/RV" in refs["all_foreground"]


def test_evaluate_writes_the_references(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    truths = {"a": block(2, 2, 8), "b": block(4, 4, 8), "c": np.zeros((8, 8), np.uint8)}
    for name, m in truths.items():
        png(gt / "images" / f"{name}.png", np.full((8, 8), 90))
        png(gt / "masks" / f"{name}.png", m * 255)
        png(pred / f"{name}.png", m * 255)
    res = evaluate(pred, gt)
    on_disk = json.loads((pred / "results.json").read_text())
    assert on_disk["references"] == res["references"] and set(res["references"]) == set(REFERENCES)
    empty = res["references"]["empty"]["summary"]["dice"]
    full = res["references"]["all_foreground"]["summary"]["dice"]
    assert empty["mean"] == pytest.approx(1 / 3) and empty["n"] == 3
    assert full["mean"] == pytest.approx((2 * 4 / 68 + 2 * 16 / 80 + 0) / 3)
    assert res["references"]["empty"]["volume_summary"] == {}
    printed = capsys.readouterr().out
    assert "reference, the empty mask per case: dice 0.3333" in printed
    assert "groups" not in res  # paired layout: no groups


def test_evaluate_references_per_volume_and_class(tmp_path):
    gt, pred = tmp_path / "acdc", tmp_path / "pred"
    label = np.stack([block(2, 2, 8, value=1), block(4, 4, 8, value=3), np.zeros((8, 8), np.uint8)])
    (gt / "data").mkdir(parents=True)
    pred.mkdir()
    with h5py.File(gt / "data" / "p1_frame01.h5", "w") as f:
        f["image"], f["label"] = np.full((3, 8, 8), 0.5, np.float32), label
    with h5py.File(pred / "p1_frame01.h5", "w") as f:
        f["label"] = label
    res = evaluate(pred, gt, quiet=True, classes="RV=1,Myo=2,LV=3")
    vol = res["references"]["all_foreground"]["volume_summary"]
    n = 3 * 64
    assert vol["dice/RV"]["mean"] == pytest.approx(2 * 4 / (4 + n))
    assert vol["dice/LV"]["mean"] == pytest.approx(2 * 16 / (16 + n))
    assert vol["dice/Myo"]["mean"] == 0.0  # absent from the volume
    assert res["references"]["empty"]["volume_summary"]["dice"]["mean"] == pytest.approx(1 / 3)
    per_slice = res["references"]["empty"]["summary"]["dice/LV"]
    assert per_slice["mean"] == pytest.approx(2 / 3) and per_slice["n"] == 3
