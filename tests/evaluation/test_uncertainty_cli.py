"""predict -> evaluate -> report through the CLI, binary (4 annotators) and 3 classes: ``evaluate`` writes the
uncertainty-error metrics per case (``results.json`` and ``results.csv``) and pooled (``results["uncertainty"]``),
predict writes the disagreement map by default, and the report shows the section."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffuseg.cli import main
from diffuseg.data.synthetic import SyntheticSpec, write_synthetic
from diffuseg.presets import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from datafixtures import ssl4mis

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "data.image_size=16",
    "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}",
    "sample.steps=2",
]
CASE_KEYS = ("pixel_auroc", "pixel_auprc", "pixel_error_rate", "case_uncertainty", "ece_marked")


def _checkpoint(root: Path, preset: str, overrides: list[str]) -> Path:
    """An untrained tiny diffusion UNet of ``preset`` in the training package's checkpoint format."""
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.training.module import DiffusionModule

    config = load_config(preset, overrides)
    torch.manual_seed(0)
    path = root / "last.ckpt"
    save_atomic({"state_dict": DiffusionModule(config).state_dict(), "diffuseg": metadata(config, 0, 0)}, path)
    return path


def _run(ckpt: Path, data: Path, out: Path) -> dict:
    assert main(["predict", str(ckpt), str(data), str(out), "--samples", "4", "--save-samples", "--threads", "1"]) == 0
    assert main(["evaluate", str(out), str(data)]) == 0
    return json.loads((out / "results.json").read_text())


def _check_pooled(block: dict, names: tuple[str, ...]) -> None:
    assert block["reference"] == "majority"
    suffixes = ["", *(f"/{n}" for n in names)]
    for s in suffixes:
        assert {f"auroc{s}", f"auprc{s}", f"error_rate{s}"} <= set(block["pixel"])
        assert {f"aurc{s}", f"aurc_optimal{s}", f"aurc_random{s}", f"e_aurc{s}", f"spearman{s}"} <= set(
            block["failure"]
        )
        assert f"ece_marked{s}" in block["calibration"]
    assert len(block["failure"]["curve"]["risk"]) == block["failure"]["cases"] > 0
    bins = np.asarray(block["calibration"]["bins"])
    if len(bins):
        assert bins.shape == (10, 3) and np.all(bins[:, 0] > 0)


def test_binary_predict_evaluate_report(tmp_path, capsys):
    data = write_synthetic(tmp_path / "data", 6, SyntheticSpec(size=16), seed=0, layout="lidc")
    results = _run(_checkpoint(tmp_path, "lidc-central", TINY), data, tmp_path / "pred")
    config = (tmp_path / "pred" / "config.yaml").read_text()
    assert "uncertainty: disagreement" in config
    for row in results["cases"]:
        assert set(CASE_KEYS) <= set(row)
        assert row["case_uncertainty"] >= 0
    assert set(CASE_KEYS) <= set(results["summary"])
    _check_pooled(results["uncertainty"], ())
    with open(tmp_path / "pred" / "results.csv") as f:
        assert set(CASE_KEYS) <= set(next(csv.reader(f)))
    assert "uncertainty: the members' disagreement" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "pred")]) == 0
    text = (tmp_path / "pred" / "report" / "index.html").read_text()
    assert "Is the uncertainty useful?" in text and "AUROC" in text
    assert (tmp_path / "pred" / "report" / "figures" / "uncertainty.png").is_file()


def test_three_classes_predict_evaluate(tmp_path):
    data = ssl4mis(tmp_path / "data")
    ckpt = _checkpoint(tmp_path, "diffusion-unet-acdc", TINY[:2])
    results = _run(ckpt, data, tmp_path / "pred")
    names = ("RV", "Myo", "LV")
    for row in results["cases"]:
        assert all(f"{k}/{n}" in row for k in CASE_KEYS for n in names) and set(CASE_KEYS) <= set(row)
    _check_pooled(results["uncertainty"], names)
    assert results["uncertainty"]["pixel"]["pixels"] == 3 * sum(16 * 16 for _ in results["cases"])
    assert main(["report", str(tmp_path / "pred")]) == 0
    text = (tmp_path / "pred" / "report" / "index.html").read_text()
    assert "pixel AUROC" in text and all(f"<td class='name'>{n}</td>" in text for n in names)
