"""The baselines through the CLI: train, predict and evaluate on a tiny 4-annotator dataset, and the SSN over three
classes on a tiny ACDC-like one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from diffuseg.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from datafixtures import ssl4mis

TINY_UNET = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1}"
RUNS = {
    "probunet-fc-mix": [
        "model.options={filters: [8, 16], convs_per_block: 1, latent_dim: 2, components: 2, kl_samples: 8}"
    ],
    "phiseg": ["model.options={resolution_levels: 3, latent_levels: 2, n0: 4, zdim: 2}"],
    "ssn-lidc": [TINY_UNET, "ssn.rank=2", "ssn.mc_samples=4"],
}
COMMON = [
    "data.image_size=16",
    "train.steps=2",
    "train.batch_size=2",
    "train.val_every=0",
    "train.ckpt_every=2",
    "sample.samples=3",
    "sample.batch_size=3",
]


def write_lidc(root: Path, patients: int = 3, size: int = 16) -> Path:
    """LIDC slices layout: a bright disc per image; annotator k marks radius r + k - 1, annotator 0 nothing
    on odd patients."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for p in range(patients):
        nodule = root / "LIDC-IDRI-slices" / f"LIDC-IDRI-{p:04d}" / "nodule-0"
        cy, cx = rng.integers(5, size - 5, 2)
        dist = np.hypot(yy - cy, xx - cx)
        (nodule / "images").mkdir(parents=True)
        image = np.clip(0.2 + 0.6 * (dist <= 3) + 0.05 * rng.standard_normal((size, size)), 0, 1)
        Image.fromarray((image * 255).astype(np.uint8)).save(nodule / "images" / "slice-0.png")
        for k in range(4):
            mask = (dist <= 3 + k - 1) & ~(k == 0 and p % 2 == 1)
            (nodule / f"mask-{k}").mkdir()
            Image.fromarray((mask * 255).astype(np.uint8)).save(nodule / f"mask-{k}" / "slice-0.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(RUNS))
def test_train_predict_evaluate(preset: str, tmp_path: Path) -> None:
    data = write_lidc(tmp_path / "data")
    run, pred = tmp_path / "run", tmp_path / "pred"
    assert main(["train", preset, *RUNS[preset], *COMMON, "--data", str(data), "--out", str(run)]) == 0
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    assert main(["predict", str(checkpoint), str(data), str(pred), "--save-samples"]) == 0
    assert len(list(pred.glob("**/*uncertainty*.png"))) == 3
    assert main(["evaluate", str(pred), str(data)]) == 0
    results = json.loads((pred / "results.json").read_text())
    assert len(results["cases"]) == 3
    assert 0.0 <= results["summary"]["ged"]["mean"] <= 2.0


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_ssn_over_three_classes_train_predict_evaluate(tmp_path: Path) -> None:
    """ssn-acdc on two training patients' slices, predicting the 3D validation volume: label maps of the classes,
    members that differ, and per-class results."""
    data = ssl4mis(tmp_path / "data")
    run, pred = tmp_path / "run", tmp_path / "pred"
    tiny = [TINY_UNET, "ssn.rank=2", "ssn.mc_samples=4", *COMMON, "--threads", "1"]
    assert main(["train", "ssn-acdc", *tiny, "--data", str(data), "--out", str(run)]) == 0
    checkpoint = run / "checkpoints" / "last.ckpt"
    args = ["predict", str(checkpoint), str(data), str(pred), "--split", "val", "--save-samples", "--threads", "1"]
    assert main(args) == 0
    with h5py.File(pred / "patient003_frame01.h5", "r") as f:
        label = np.asarray(f["label"][()])
    assert label.shape == (3, 16, 16) and set(np.unique(label)) <= {0, 1, 2, 3}
    samples = []
    for path in sorted((pred / "samples").glob("*.h5")):
        with h5py.File(path, "r") as f:
            samples.append(np.asarray(f["label"][()]))
    assert len(samples) == 3 and any(not np.array_equal(samples[0], s) for s in samples[1:])
    assert main(["evaluate", str(pred), str(data)]) == 0
    results = json.loads((pred / "results.json").read_text())
    assert len(results["cases"]) == 3  # the volume's slices
    assert {"dice/RV", "dice/Myo", "dice/LV"} <= set(results["summary"])
