"""CLI options: ``train --steps``, and ``predict``/``evaluate --split val`` (the held-out cases of a run)."""

from __future__ import annotations

import json
from pathlib import Path

from tinydata import tiny_overrides

from diffuseg.checkpoint import read_checkpoint
from diffuseg.cli import main
from diffuseg.training.run import train


def test_predict_and_evaluate_the_held_out_cases_of_a_run(tiny_config, tiny_data, tmp_path, capsys):
    run = train(tiny_config(steps=1, ckpt_every=1))
    val_cases = set(json.loads((run / "split.json").read_text())["val"]["cases"])
    ckpt = run / "checkpoints" / "last.ckpt"
    pred = tmp_path / "pred"
    # the run folder is taken from RUN/checkpoints/last.ckpt
    assert main(["predict", str(ckpt), str(tiny_data), str(pred), "--split", "val", "--samples", "2"]) == 0
    assert f"wrote {len(val_cases)} case(s)" in capsys.readouterr().out
    assert {p.stem for p in pred.glob("*.png") if not p.stem.endswith("_uncertainty")} == val_cases
    assert main(["evaluate", str(pred), str(tiny_data), "--split", "val", "--run", str(run)]) == 0
    results = json.loads((pred / "results.json").read_text())
    assert {c["case"] for c in results["cases"]} == val_cases
    assert not results["missing"]["predictions"]  # the training cases are not counted as missing
    assert main(["evaluate", str(pred), str(tiny_data), "--split", "val"]) == 0  # the run of prediction.json
    assert {c["case"] for c in json.loads((pred / "results.json").read_text())["cases"]} == val_cases
    record = json.loads((pred / "prediction.json").read_text())
    assert record["run_folder"] == str(run.absolute()) and Path(record["run_folder"]).is_absolute()
    split = json.loads((run / "split.json").read_text())
    assert Path(split["data_root"]).is_absolute() and Path(run).is_absolute()


def test_split_needs_a_run_folder(tiny_data, tmp_path, capsys):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"")
    assert main(["predict", str(ckpt), str(tiny_data), str(tmp_path / "p"), "--split", "val"]) == 2
    assert "--run RUN_DIR" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), str(tiny_data), "--split", "val"]) == 2
    assert "--run RUN_DIR" in capsys.readouterr().err
    assert not Path(tmp_path / "p").exists()


def test_train_steps_option_sets_train_steps(tiny_data, tmp_path):
    overrides = [o for o in tiny_overrides(tiny_data, tmp_path / "run") if not o.startswith("train.steps=")]
    assert main(["train", "lidc-central", *overrides, "--steps", "2"]) == 0
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 2
