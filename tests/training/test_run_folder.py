"""What a run folder records and what a failed or short run leaves: split.json, metrics.csv, no empty folder."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest

from diffuseg.errors import UserError
from diffuseg.training.run import train


def test_split_json_records_the_seeded_split_and_the_source_is_printed(tiny_config, capsys):
    run = train(tiny_config(steps=1, ckpt_every=1))
    out = capsys.readouterr().out
    assert "split: seeded split by patient (data.val_fraction=" in out
    record = json.loads((run / "split.json").read_text())
    assert record["source"] == "seed"
    train_ids, val_ids = set(record["train"]["patients"]), set(record["val"]["patients"])
    assert train_ids and val_ids and not train_ids & val_ids
    assert all(c.startswith(tuple(val_ids)) for c in record["val"]["cases"])  # case ids begin with the patient
    assert len(record["train"]["cases"]) + len(record["val"]["cases"]) == 12  # 4 patients x 3 slices


def test_split_json_names_the_lists_found_in_the_parent(tiny_data, tiny_config, tmp_path, capsys):
    top = tmp_path / "lidc"
    (top / "LIDC-IDRI-slices").mkdir(parents=True)
    for patient in (tiny_data / "LIDC-IDRI-slices").iterdir():
        (top / "LIDC-IDRI-slices" / patient.name).symlink_to(patient)
    (top / "train_patients.txt").write_text("LIDC-IDRI-0000\nLIDC-IDRI-0001\nLIDC-IDRI-0002\n")
    (top / "val_patients.txt").write_text("LIDC-IDRI-0003\n")
    run = train(tiny_config(f"data.root={top / 'LIDC-IDRI-slices'}", steps=1, ckpt_every=1))
    assert "found in the dataset's parent folder" in capsys.readouterr().out
    record = json.loads((run / "split.json").read_text())
    assert record["source"] == "parent_lists" and record["val_list"] == str((top / "val_patients.txt").resolve())
    assert record["val"]["patients"] == ["LIDC-IDRI-0003"] and len(record["val"]["cases"]) == 3


def test_short_run_writes_metrics_without_the_logging_interval_warning(tiny_config):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = train(tiny_config("train.log_every=50", steps=3, ckpt_every=3))
    assert not [w for w in caught if "log_every_n_steps" in str(w.message)]
    with open(next(run.glob("logs/version_*/metrics.csv"))) as fh:
        rows = list(csv.DictReader(fh))
    assert any(r.get("loss") for r in rows)


def test_failed_start_removes_the_run_folder_it_created(tiny_config, tmp_path):
    empty = tmp_path / "no-cases"
    empty.mkdir()
    config = tiny_config(f"data.root={empty}", name="nested/run")
    with pytest.raises(UserError, match="no known dataset layout here"):
        train(config)
    assert not (tmp_path / "nested").exists()  # the parents it created go too


def test_failed_start_keeps_an_existing_folder(tiny_config, tmp_path):
    empty = tmp_path / "no-cases"
    empty.mkdir()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UserError):
        train(tiny_config(f"data.root={empty}", name="mine"))
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_nothing_created_for_a_missing_dataset(tiny_config, tmp_path):
    with pytest.raises(UserError):
        train(tiny_config(f"data.root={tmp_path / 'absent'}", name="run"))
    assert not Path(tmp_path / "run").exists()
