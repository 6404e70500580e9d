"""nnU-Net's summary.json: counts and Dice/IoU by hand on 4x4 maps, keys of labels and regions, NaN means."""

from __future__ import annotations

import json
import math

import numpy as np

from diffuseg.evaluation.nnunet_summary import SummaryCounts, label_keys, write_summary
from diffuseg.labels import ClassSpec, label_scheme

ALL = np.ones((4, 4), bool)


def test_counts_and_metrics_by_hand(tmp_path):
    scheme = label_scheme([ClassSpec("a", (1,)), ClassSpec("b", (2,))])
    truth = np.zeros((4, 4), np.uint8)
    truth[0, :2] = 1  # a: 2 pixels
    pred = np.zeros((4, 4), np.uint8)
    pred[0, 1:3] = 1  # a: 1 TP, 1 FP, 1 FN; b empty on both sides
    counts = SummaryCounts(scheme)
    counts.add("x", "pred/x.png", "gt/x.png", pred, truth, ALL)
    counts.add("x", "pred/x.png", "gt/x.png", pred, truth, ALL)  # a second slice of the same file: summed
    summary = json.loads(write_summary(counts, tmp_path / "summary.json").read_text())
    a = summary["metric_per_case"][0]["metrics"]["1"]
    assert (a["TP"], a["FP"], a["FN"], a["TN"], a["n_pred"], a["n_ref"]) == (2, 2, 2, 26, 4, 4)
    assert a["Dice"] == 0.5 and math.isclose(a["IoU"], 1 / 3)
    assert math.isnan(summary["metric_per_case"][0]["metrics"]["2"]["Dice"])  # both empty: NaN, as nnU-Net
    assert math.isnan(summary["mean"]["2"]["Dice"]) and math.isnan(summary["foreground_mean"]["Dice"])
    assert summary["mean"]["1"]["Dice"] == 0.5


def test_mean_skips_the_cases_without_a_value():
    scheme = label_scheme()
    empty, full = np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)
    counts = SummaryCounts(scheme)
    counts.add("a", "a", "a", full, full, ALL)  # Dice 1
    counts.add("b", "b", "b", empty, empty, ALL)  # Dice NaN
    counts.add("c", "c", "c", empty, full, ALL)  # Dice 0
    summary = counts.summary()
    assert summary["mean"]["1"]["Dice"] == 0.5 and summary["foreground_mean"]["Dice"] == 0.5


def test_ignored_pixels_are_not_counted():
    counts = SummaryCounts(label_scheme())
    valid = ALL.copy()
    valid[0] = False
    pred = np.zeros((4, 4), np.uint8)
    pred[0] = 1  # wrong only where the reference is ignored
    counts.add("a", "a", "a", pred, np.zeros((4, 4), np.uint8), valid)
    metrics = counts.summary()["metric_per_case"][0]["metrics"]["1"]
    assert (metrics["FP"], metrics["TN"]) == (0, 12)


def test_keys_of_labels_and_regions():
    regions = [ClassSpec("WT", (1, 2, 4)), ClassSpec("TC", (1, 4), 1), ClassSpec("ET", (4,))]
    assert label_keys(label_scheme(regions)) == ["(1, 2, 4)", "(1, 4)", "4"]
    assert label_keys(label_scheme()) == ["1"] and label_keys(label_scheme((), (2,))) == ["2"]
