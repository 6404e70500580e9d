"""The baselines through the CLI: train, predict and evaluate on a tiny 4-annotator dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffuseg.cli import main

RUNS = {
    "probunet-fc-mix": [
        "model.options={filters: [8, 16], convs_per_block: 1, latent_dim: 2, components: 2, kl_samples: 8}"
    ],
    "phiseg": ["model.options={resolution_levels: 3, latent_levels: 2, n0: 4, zdim: 2}"],
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
