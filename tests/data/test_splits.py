"""Splits by patient: from the seed or from lists (config, the root's, the parent's, SSL4MIS's), and split.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datafixtures import SHARED, lidc, shared
from hypothesis import given, settings
from hypothesis import strategies as st

from diffuseg.config import DataConfig
from diffuseg.data.dataset import split_indices
from diffuseg.data.formats import open_dataset
from diffuseg.data.splits import (
    find_patient_lists,
    run_folder,
    select_cases,
    split_by_patient,
    split_cases,
    split_from_lists,
    split_source,
    write_split,
)
from diffuseg.enums import SplitKind
from diffuseg.errors import UserError


def _lists(folder: Path, train: list[str], val: list[str]) -> None:
    (folder / "train_patients.txt").write_text("\n".join(train) + "\n")
    (folder / "val_patients.txt").write_text("# held out\n" + "\n".join(val) + "\n")


@pytest.fixture
def nested(tmp_path) -> Path:
    """tmp/lidc/{train,val}_patients.txt beside tmp/lidc/LIDC-IDRI-slices (the shared LIDC layout)."""
    top = tmp_path / "lidc"
    lidc(top, patients=3)
    _lists(top, ["LIDC-IDRI-0000", "LIDC-IDRI-0001"], ["LIDC-IDRI-0002"])
    return top


def test_lists_in_the_parent_are_found_for_the_slices_folder(nested):
    slices = nested / "LIDC-IDRI-slices"
    kind, train, _ = find_patient_lists(slices)
    assert kind is SplitKind.PARENT_LISTS and train == (nested / "train_patients.txt").resolve()
    cfg = DataConfig(root=str(slices))
    assert split_source(cfg).kind is SplitKind.PARENT_LISTS
    reader = open_dataset(slices, "auto")
    tr, va = split_indices(reader, cfg)
    assert {reader.entries[i].patient_id for i in va} == {"LIDC-IDRI-0002"}
    assert {reader.entries[i].patient_id for i in tr} == {"LIDC-IDRI-0000", "LIDC-IDRI-0001"}


def test_root_lists_win_over_the_parent_and_config_over_both(nested):
    assert split_source(DataConfig(root=str(nested))).kind is SplitKind.ROOT_LISTS
    other = nested / "other"
    other.mkdir()
    _lists(other, ["LIDC-IDRI-0001"], ["LIDC-IDRI-0000"])
    cfg = DataConfig(
        root=str(nested), train_patients=str(other / "train_patients.txt"), val_patients=str(other / "val_patients.txt")
    )
    source = split_source(cfg)
    assert source.kind is SplitKind.CONFIG and "data.train_patients" in source.describe()


def test_seed_when_no_lists(tmp_path):
    root = lidc(tmp_path / "plain", patients=3)
    (tmp_path / "train_patients.txt").write_text("x\n")  # only one of the two files: not a pair of lists
    source = split_source(DataConfig(root=str(root), val_fraction=0.3, split_seed=4))
    assert source.kind is SplitKind.SEED and "data.split_seed=4" in source.describe()


def test_one_config_list_alone_is_refused(nested):
    with pytest.raises(UserError, match="given together"):
        split_source(DataConfig(root=str(nested), val_patients=str(nested / "val_patients.txt")))


def test_run_folder_from_run_or_checkpoint(tmp_path):
    assert run_folder(tmp_path / "r", None) == tmp_path / "r"
    assert run_folder(None, tmp_path / "r" / "checkpoints" / "last.ckpt") == tmp_path / "r"
    with pytest.raises(UserError, match="--run RUN_DIR"):
        run_folder(None, tmp_path / "model.ckpt")


def test_split_cases_reads_split_json_and_selects(tmp_path, nested):
    run = tmp_path / "run"
    write_split(run, {"train": {"patients": ["a"], "cases": ["c1"]}, "val": {"patients": ["b"], "cases": ["c2"]}})
    assert json.loads((run / "split.json").read_text())["val"]["cases"] == ["c2"]
    assert split_cases("val", checkpoint=run / "checkpoints" / "last.ckpt") == {"c2"}
    reader = open_dataset(nested, "auto")
    wanted = {reader.entries[1].case_id}
    assert [e.case_id for e in select_cases(reader, wanted, "gt").entries] == sorted(wanted)
    assert select_cases(reader, None, "gt") is reader
    with pytest.raises(UserError, match="none of the 1 case"):
        select_cases(reader, {"nope"}, "gt")
    with pytest.raises(UserError, match=r"no split\.json"):
        split_cases("val", run=tmp_path / "elsewhere")
    with pytest.raises(UserError, match="expected train or val"):
        split_cases("test", run=run)


def test_split_by_patient_is_disjoint_and_seeded():
    patients = [f"p{i // 3}" for i in range(60)]  # 20 patients, 3 items each
    train, val = split_by_patient(patients, 0.25, seed=4)
    assert sorted(train + val) == list(range(60))
    assert not {patients[i] for i in train} & {patients[i] for i in val}
    assert len({patients[i] for i in val}) == 5
    assert split_by_patient(patients, 0.25, seed=4) == (train, val)
    assert split_by_patient(patients, 0.25, seed=5) != (train, val)


def test_split_from_lists(tmp_path):
    (tmp_path / "t.txt").write_text("a\nb\n# comment\n")
    (tmp_path / "v.txt").write_text("c\n")
    train, val = split_from_lists(["a", "c", "b", "x"], tmp_path / "t.txt", tmp_path / "v.txt")
    assert (train, val) == ([0, 2], [1])
    (tmp_path / "v.txt").write_text("c\nb\n")
    with pytest.raises(UserError, match="both list"):
        split_from_lists(["a"], tmp_path / "t.txt", tmp_path / "v.txt")


@given(
    patients=st.lists(st.sampled_from([f"p{i}" for i in range(12)]), min_size=1, max_size=40),
    fraction=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=60, deadline=None)
def test_split_property(patients, fraction, seed):
    train, val = split_by_patient(patients, fraction, seed)
    assert sorted(train + val) == list(range(len(patients)))
    assert not {patients[i] for i in train} & {patients[i] for i in val}
    if len(set(patients)) > 1:
        assert train  # never everything in validation


@pytest.mark.realdata
def test_real_lidc_lists_have_no_overlap():
    shared("lidc")
    train_ids = set((SHARED / "lidc" / "train_patients.txt").read_text().split())
    val_ids = set((SHARED / "lidc" / "val_patients.txt").read_text().split())
    assert train_ids and val_ids and not train_ids & val_ids
