"""Folds: the seeded k-fold split by patient, and nnU-Net's splits_final.json read, used and written back."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from datafixtures import frames, nnunet_cases
from hypothesis import given, settings
from hypothesis import strategies as st

from diffuseg.config import DataConfig
from diffuseg.data.folds import kfold_groups, read_splits_final
from diffuseg.data.formats import open_dataset
from diffuseg.data.splits import case_names, plan_split, split_record, write_split
from diffuseg.enums import SplitKind
from diffuseg.errors import UserError


@given(
    patients=st.lists(st.sampled_from([f"p{i}" for i in range(30)]), min_size=5, max_size=80),
    folds=st.integers(2, 5),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=60, deadline=None)
def test_kfold_groups_are_disjoint_covering_and_seeded(patients, folds, seed):
    if len(set(patients)) < folds:
        with pytest.raises(UserError, match="needs at least 2 folds and as many patients"):
            kfold_groups(patients, folds, seed)
        return
    groups = kfold_groups(patients, folds, seed)
    assert len(groups) == folds and sorted(p for g in groups for p in g) == sorted(set(patients))
    assert max(map(len, groups)) - min(map(len, groups)) <= 1
    assert kfold_groups(list(reversed(patients)), folds, seed) == groups  # the patients' order does not matter


@pytest.fixture
def acdc(tmp_path):
    """nnU-Net ACDC-like: 10 patients, two frames each."""
    return nnunet_cases(tmp_path / "acdc", frames(10))


def _patients(reader, indices) -> set[str]:
    return {reader.patients[i] for i in indices}


def test_fold_k_of_a_kfold_split_by_patient(acdc):
    reader = open_dataset(acdc)
    splits = [plan_split(reader, DataConfig(root=str(acdc), fold=k, split_seed=3)) for k in range(5)]
    assert all(s.source.kind is SplitKind.KFOLD and "fold" in s.describe() for s in splits)
    vals = [_patients(reader, s.val) for s in splits]
    assert all(len(v) == 2 for v in vals) and set().union(*vals) == set(reader.patients)  # 5 folds of 2 patients
    assert all(not a & b for i, a in enumerate(vals) for b in vals[i + 1 :])  # disjoint
    for s, v in zip(splits, vals):
        assert _patients(reader, s.train) == set(reader.patients) - v and len(s.train) + len(s.val) == 20
        assert len(s.folds) == 5 and s.folds == splits[0].folds  # every fold recorded alike
    names = case_names(reader)
    assert [set(f["val"]) for f in splits[0].folds] == [{names[i] for i in s.val} for s in splits]
    again = plan_split(reader, DataConfig(root=str(acdc), fold=2, split_seed=3))
    assert again.val == splits[2].val  # stable under the seed
    other = [plan_split(reader, DataConfig(root=str(acdc), fold=k, split_seed=4)).val for k in range(5)]
    assert other != [s.val for s in splits]
    three = plan_split(reader, DataConfig(root=str(acdc), fold=0, folds=3))
    assert len(three.folds) == 3 and "fold 0 of a 3-fold split" in three.describe()


def test_fold_errors(acdc, tmp_path):
    reader = open_dataset(acdc)
    with pytest.raises(UserError, match=r"data.fold=5: the folds are 0 \.\. 4"):
        plan_split(reader, DataConfig(root=str(acdc), fold=5))
    (tmp_path / "t.txt").write_text("patient001\n")
    (tmp_path / "v.txt").write_text("patient002\n")
    both = DataConfig(
        root=str(acdc), fold=0, train_patients=str(tmp_path / "t.txt"), val_patients=str(tmp_path / "v.txt")
    )
    with pytest.raises(UserError, match="both choose the split: give one"):
        plan_split(reader, both)
    with pytest.raises(UserError, match="as many patients"):
        plan_split(reader, DataConfig(root=str(acdc), fold=0, folds=11))


def test_splits_final_round_trip(acdc, tmp_path):
    """A run's split written as splits_final.json, read back from data.splits_file and from beside the dataset,
    gives the same sides."""
    reader = open_dataset(acdc)
    first = plan_split(reader, DataConfig(root=str(acdc), fold=1))

    def dataset(indices):
        return SimpleNamespace(
            patients=[reader.patients[i] for i in indices], case_ids=[reader.entries[i].case_id for i in indices]
        )

    record = split_record(first, str(acdc), dataset(first.train), dataset(first.val))
    write_split(tmp_path / "run", record)
    saved = json.loads((tmp_path / "run" / "split.json").read_text())
    assert saved["fold"] == 1 and saved["source"] == "kfold" and len(saved["folds"]) == 5
    written = tmp_path / "run" / "splits_final.json"
    assert read_splits_final(written) == saved["folds"]
    for k in range(5):
        again = plan_split(reader, DataConfig(root=str(acdc), splits_file=str(written), fold=k))
        if k == 1:
            assert (again.train, again.val) == (first.train, first.val)
        assert again.source.kind is SplitKind.SPLITS_FILE and again.folds == first.folds
    (acdc / "splits_final.json").write_text(written.read_text())  # beside the dataset: fold 0, or --fold K
    beside = plan_split(reader, DataConfig(root=str(acdc)))
    assert beside.source.kind is SplitKind.SPLITS_FILE and "fold 0 of" in beside.describe()
    assert plan_split(reader, DataConfig(root=str(acdc), fold=1)).val == first.val


@pytest.mark.parametrize(
    "folds,message",
    [
        (
            [{"train": ["patient001_frame01"], "val": ["patient001_frame12"]}],
            "fold 0 puts patient(s) patient001 on both sides",
        ),
        (
            [{"train": ["patient001_frame01"], "val": ["patient009_frame99"]}],
            "fold 0 val: 1 case(s) not in the dataset, e.g. 'patient009_frame99'",
        ),
        ([{"train": [], "val": []}] * 2, "has 2 fold(s), 0 .. 1; data.fold=2"),
        ({"train": []}, "expected a list of folds"),
        ([{"train": ["a"]}], 'fold 0 is not {"train": [case names], "val": [case names]}'),
    ],
)
def test_a_bad_splits_file_is_refused(acdc, tmp_path, folds, message):
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps(folds))
    fold = 2 if "data.fold=2" in message else None  # None: fold 0
    with pytest.raises(UserError) as info:
        plan_split(open_dataset(acdc), DataConfig(root=str(acdc), splits_file=str(path), fold=fold))
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)
