"""The CLI end to end: train a tiny model for a few steps, predict with it, check the files; error exits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffuseg.checkpoint import read_checkpoint
from diffuseg.cli import main
from diffuseg.data.formats import open_dataset
from diffuseg.data.synthetic import SyntheticSpec, write_synthetic

TINY = [
    "data.image_size=16",
    "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}",
    "train.steps=4",
    "train.ckpt_every=2",
    "train.batch_size=4",
    "train.val_every=2",
    "train.val_cases=2",
    "train.log_every=1",
    "sample.steps=2",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn"), 10, SyntheticSpec(size=16), seed=0, layout="lidc")


@pytest.mark.slow
def test_train_then_predict(synthetic, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "lidc-central", *TINY, "--data", str(synthetic), "--out", str(run)]) == 0
    assert f"run folder: {run}" in capsys.readouterr().out
    ckpt = run / "checkpoints" / "last.ckpt"
    assert read_checkpoint(ckpt)["global_step"] == 4
    assert (run / "config.yaml").is_file()
    metrics = next((run / "logs").glob("version_*/metrics.csv")).read_text()
    assert "loss" in metrics and "val/dice" in metrics and "val/ged" in metrics
    assert list((run / "tensorboard").glob("version_*/events.out.tfevents.*"))

    out = tmp_path / "pred"
    code = main(["predict", str(ckpt), str(synthetic), str(out), "--samples", "3", "--steps", "2", "--save-samples"])
    assert code == 0
    reader = open_dataset(synthetic)
    for case in (reader[i] for i in range(len(reader))):
        mask = np.asarray(Image.open(out / f"{case.case_id}.png"))
        assert mask.shape == case.geometry.size and set(np.unique(mask)) <= {0, 255}
        assert (out / f"{case.case_id}_uncertainty.png").is_file()
    assert len(list((out / "samples").rglob("*.png"))) == 3 * len(reader)


def test_resume_without_run_exits_2(synthetic, tmp_path, capsys):
    code = main(["train", "lidc-central", *TINY, "--data", str(synthetic), "--out", str(tmp_path / "x"), "--resume"])
    assert code == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_predict_with_foreign_checkpoint_exits_2(synthetic, tmp_path, capsys):
    foreign = tmp_path / "savedmodel.pt"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    assert main(["predict", str(foreign), str(synthetic), str(tmp_path / "p")]) == 2
    assert "no diffuseg format version" in capsys.readouterr().err


def test_train_bad_data_exits_2(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["train", "lidc-central", *TINY, "--data", str(missing), "--out", str(tmp_path / "r")]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """``diffuseg demo`` on the bundled LIDC subset, shortened: 2 training steps, 2 held-out slices."""
    from diffuseg import demo

    monkeypatch.setattr(demo, "HELD_OUT", 2)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "2"]) == 0
    page = out / "report" / "index.html"
    assert f"report: {page}" in capsys.readouterr().out
    assert page.is_file() and (out / "results.json").is_file()
    assert len(list((out / "predictions").glob("*_uncertainty.png"))) == 2
    assert read_checkpoint(out / "run" / "checkpoints" / "last.ckpt")["global_step"] == 2
