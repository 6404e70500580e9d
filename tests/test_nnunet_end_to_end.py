"""An nnU-Net v2 raw dataset (imagesTr/labelsTr/imagesTs/labelsTs, dataset.json, 2 channels, 3 classes, a spacing)
through verify -> train --fold 0 (a generic preset) -> predict --split test -> evaluate --split test, renaming
nothing: no patient on both sides, outputs with the input's geometry."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from diffuseg.cli import main

AFFINE = np.array([[0.0, 0.0, 2.5, 3.0], [0.0, 0.8, 0.0, -1.0], [0.7, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 1.0]])
TINY = [
    "data.image_size=16",
    "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1}",
    "train.batch_size=4",
    "train.val_every=0",
    "train.ckpt_every=2",
]


def _volume(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, AFFINE), str(path))


def _dataset(root: Path) -> Path:
    """Five patients with two frames each in imagesTr (ACDC names), two test cases; 12x10x2 volumes."""
    meta = {
        "channel_names": {"0": "cine", "1": "T2"},
        "labels": {"background": 0, "RV": 1, "MYO": 2, "LV": 3},
        "file_ending": ".nii.gz",
        "numTraining": 10,
    }
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    train = [f"patient{p:03d}_frame{f:02d}" for p in range(1, 6) for f in (1, 12)]
    for side, cases in (("Tr", train), ("Ts", ["patient101_frame01", "patient102_frame01"])):
        for case in cases:
            label = rng.integers(0, 4, (12, 10, 2)).astype(np.uint8)
            for channel in range(2):
                image = (label * (channel + 1) + rng.random((12, 10, 2))).astype(np.float32)
                _volume(root / f"images{side}" / f"{case}_{channel:04d}.nii.gz", image)
            _volume(root / f"labels{side}" / f"{case}.nii.gz", label)
    return root


@pytest.mark.slow
def test_nnunet_raw_dataset_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread) -> None:
    root = _dataset(tmp_path / "Dataset027_ACDC")
    assert main(["verify", str(root), "--fold", "0"]) == 0
    out = capsys.readouterr().out
    assert "layout: nnunet" in out and "RV [1], MYO [2], LV [3]" in out and "fold 0 of a 5-fold split" in out
    run = tmp_path / "run"
    # the generic preset with a class spelled otherwise than dataset.json (Myo, MYO): the same class
    args = ["train", "unet", "--data", str(root), "--out", str(run), "--fold", "0", "--steps", "2", "--threads", "1"]
    assert (
        main(
            [*args, *TINY, "data.classes=[{name: RV, values: [1]}, {name: Myo, values: [2]}, {name: LV, values: [3]}]"]
        )
        == 0
    )
    assert "image channels from the dataset: 2" in capsys.readouterr().out
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]["patients"]) & set(split["val"]["patients"]) and len(split["val"]["patients"]) == 1
    pred = tmp_path / "pred"
    assert main(["predict", str(run / "checkpoints" / "last.ckpt"), str(root), str(pred), "--split", "test"]) == 0
    assert "wrote 2 case(s)" in capsys.readouterr().out  # two volumes, not their 4 slices
    for case in ("patient101_frame01", "patient102_frame01"):
        image = nib.load(root / "imagesTs" / f"{case}_0000.nii.gz")
        mask = nib.load(pred / f"{case}.nii.gz")
        assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)
        assert np.allclose(mask.header.get_zooms(), image.header.get_zooms())
    assert main(["evaluate", str(pred), str(root), "--split", "test"]) == 0
    summary = json.loads((pred / "summary.json").read_text())
    assert len(summary["metric_per_case"]) == 2 and set(summary["mean"]) == {"1", "2", "3"}
