"""Splits by patient: from the seed or from lists (config, the root's, the parent's, SSL4MIS's), test.list held
out, the patient rules, and split.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datafixtures import SHARED, frames, lidc, nnunet_cases, paired, shared, ssl4mis_cases
from hypothesis import given, settings
from hypothesis import strategies as st

from diffuseg.config import DataConfig
from diffuseg.data.dataset import build_datasets
from diffuseg.data.formats import open_dataset
from diffuseg.data.splits import (
    case_names,
    find_patient_lists,
    plan_split,
    run_folder,
    select_cases,
    split_by_patient,
    split_cases,
    split_from_lists,
    split_record,
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
    split = plan_split(reader, cfg)
    tr, va = split.train, split.val
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


@pytest.mark.parametrize("name", ["train_patients.txt", "val_patients.txt"])
def test_one_root_list_alone_is_refused_never_ignored(tmp_path, name):
    root = lidc(tmp_path / "plain", patients=3)
    (root / name).write_text("LIDC-IDRI-0000\n")
    with pytest.raises(UserError, match=f"{name}: patient lists come in pairs"):
        split_source(DataConfig(root=str(root)))


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


def _side_patients(reader, split) -> tuple[set[str], set[str]]:
    return {reader.patients[i] for i in split.train}, {reader.patients[i] for i in split.val}


def test_test_list_is_never_trained_on(tmp_path):
    """train.list + test.list and no val.list: validation comes from train.list's patients, test.list's patients
    are on neither side, and one line says so."""
    cases = frames(10)
    root = ssl4mis_cases(tmp_path / "acdc", cases, {"train.list": cases[:14], "test.list": cases[14:]})
    test = {f"patient{p:03d}" for p in range(8, 11)}
    reader = open_dataset(root)
    split = plan_split(reader, DataConfig(root=str(root), val_fraction=0.3))
    train, val = _side_patients(reader, split)
    assert not (train | val) & test and train and val and not train & val
    assert set(split.held_out) == test and not split.left_out
    line = split.describe()
    assert "over the patients of" in line and "train.list" in line and "3 patient(s) of" in line and "test.list" in line
    train_set, val_set = build_datasets(DataConfig(root=str(root), image_size=8, val_fraction=0.3))
    assert not (set(train_set.patients) | set(val_set.patients)) & test
    only_test = ssl4mis_cases(tmp_path / "only-test", cases, {"test.list": cases[14:]})
    reader = open_dataset(only_test)
    split = plan_split(reader, DataConfig(root=str(only_test)))
    assert not set().union(*_side_patients(reader, split)) & test and set(split.held_out) == test


# docs/data.md "Only some lists": which lists are present -> (train side, validation side, held out, left out),
# over patients A (train.list), B (val.list), C (test.list); "A~" is a seeded split of A (validation from A).
SOME_LISTS = {
    ("train.list", "val.list", "test.list"): ("A", "B", "C", ""),
    ("train.list", "val.list"): ("A", "B", "", "C"),
    ("val.list", "test.list"): ("A", "B", "C", ""),
    ("val.list",): ("AC", "B", "", ""),
    ("train.list", "test.list"): ("A~", "A~", "C", "B"),
    ("train.list",): ("A~", "A~", "", "BC"),
    ("test.list",): ("AB~", "AB~", "C", ""),
    (): ("ABC~", "ABC~", "", ""),
}


@pytest.mark.parametrize("present", list(SOME_LISTS), ids=lambda p: "+".join(p) or "none")
def test_only_some_lists_split_as_the_docs_table_says(tmp_path, present):
    groups = {"A": range(1, 7), "B": range(7, 9), "C": range(9, 11)}
    patients = {g: {f"patient{p:03d}" for p in r} for g, r in groups.items()}
    lists = {"train.list": "A", "val.list": "B", "test.list": "C"}
    cases = frames(10)
    chosen = {name: [c for c in cases if c[:10] in patients[lists[name]]] for name in present}
    root = ssl4mis_cases(tmp_path, cases, chosen)
    reader = open_dataset(root)
    split = plan_split(reader, DataConfig(root=str(root), val_fraction=0.3))
    train, val = _side_patients(reader, split)
    want = [set().union(*(patients[g] for g in text.rstrip("~"))) for text in SOME_LISTS[present]]
    if SOME_LISTS[present][0].endswith("~"):  # seeded over that pool: both sides from it, neither empty
        assert train | val == want[0] and train and val and not train & val
    else:
        assert (train, val) == (want[0], want[1])
    assert (set(split.held_out), set(split.left_out)) == (want[2], want[3])


def test_a_fold_is_a_k_fold_over_every_patient_not_in_test_list(tmp_path):
    cases = frames(10)
    lists = {"train.list": cases[:12], "val.list": cases[12:16], "test.list": cases[16:]}  # 6, 2 and 2 patients
    root = ssl4mis_cases(tmp_path, cases, lists)
    reader = open_dataset(root)
    test = {"patient009", "patient010"}
    vals = []
    for k in range(5):
        split = plan_split(reader, DataConfig(root=str(root), fold=k))
        train, val = _side_patients(reader, split)
        assert train | val == {f"patient{p:03d}" for p in range(1, 9)} and not train & val
        assert set(split.held_out) == test and len(split.folds) == 5
        vals.append(val)
    assert set().union(*vals) == {f"patient{p:03d}" for p in range(1, 9)} and sum(map(len, vals)) == 8


def test_a_test_list_patient_on_a_side_is_refused(tmp_path):
    cases = frames(4)
    lists = {"train.list": cases[:4], "val.list": cases[4:6], "test.list": cases[5:]}  # patient003 in val and test
    root = ssl4mis_cases(tmp_path, cases, lists)
    with pytest.raises(UserError, match=r"val\.list and .*test\.list both name patient\(s\) patient003"):
        plan_split(open_dataset(root), DataConfig(root=str(root)))


@pytest.mark.parametrize(
    "entry,message",
    [
        ("../../x", "entry '../../x' leads out of the dataset folder"),
        ("/etc/passwd", "entry '/etc/passwd' leads out of the dataset folder"),
        ("patient099_frame01", "entry 'patient099_frame01' names no case of the dataset"),
    ],
)
@pytest.mark.parametrize("name", ["train.list", "val.list", "test.list"])
def test_a_bad_list_entry_is_refused_by_file_line_and_entry(tmp_path, name, entry, message):
    cases = frames(4)
    lists = {"train.list": cases[:4], "val.list": cases[4:6], "test.list": cases[6:]}
    lists[name] = [*lists[name][:1], entry, *lists[name][1:]]
    root = ssl4mis_cases(tmp_path, cases, lists)
    with pytest.raises(UserError) as info:
        plan_split(open_dataset(root), DataConfig(root=str(root)))
    assert str(info.value).startswith(f"{root / name} line 2: {message}")
    assert "\n" not in str(info.value)


def test_frames_of_one_patient_stay_on_one_side(tmp_path):
    """nnU-Net names ACDC's frames as cases: both frames of a patient are one patient, whatever the seed."""
    root = nnunet_cases(tmp_path / "acdc", frames(10))
    reader = open_dataset(root)
    assert reader.entries[0].patient_id == "patient001" and "_frameNN" in reader.patient_rule
    names = case_names(reader)
    for seed in range(8):
        split = plan_split(reader, DataConfig(root=str(root), val_fraction=0.3, split_seed=seed))
        train, val = _side_patients(reader, split)
        assert len(val) == 3 and not train & val and len(train | val) == 10
        sides: dict[str, set[str]] = {}
        for side, indices in (("train", split.train), ("val", split.val)):
            for i in indices:
                sides.setdefault(names[i][:10], set()).add(side)
        assert all(len(s) == 1 for s in sides.values()) and len(split.val) == 6  # both frames, one side
    ssl = ssl4mis_cases(tmp_path / "ssl", frames(4), {})
    assert open_dataset(ssl).patients == [f"patient{p:03d}" for p in range(1, 5) for _ in range(2)]


def test_patient_regex_replaces_the_layouts_rule(tmp_path):
    root = nnunet_cases(tmp_path / "nn", frames(3))
    reader = open_dataset(root)
    split = plan_split(reader, DataConfig(root=str(root), patient_regex="(.*)"))
    assert len(set(reader.patients)) == 6 and split.patient_rule == "data.patient_regex '(.*)' on each case name"
    plan_split(reader, DataConfig(root=str(root), patient_regex=r"p\w+?(?P<patient>\d+)_"))
    assert reader.patients[:2] == ["001", "001"]
    with pytest.raises(
        UserError, match=r"data\.patient_regex 'case' gives no patient id for case 'patient001_frame01'"
    ):
        plan_split(open_dataset(root), DataConfig(root=str(root), patient_regex="case"))
    ddti = paired(tmp_path / "ddti", n=3)  # stems 0_a, 1_a, 2_a: DDTI's number before the first _
    assert open_dataset(ddti).patients == ["0", "1", "2"]


def test_split_record_names_the_rule_and_writes_splits_final(tmp_path):
    root = nnunet_cases(tmp_path / "nn", frames(5))
    train_set, val_set = build_datasets(DataConfig(root=str(root), image_size=8, val_fraction=0.4))
    record = split_record(train_set.split, str(root), train_set, val_set)
    write_split(tmp_path / "run", record)
    saved = json.loads((tmp_path / "run" / "split.json").read_text())
    assert saved["patient_rule"] == train_set.split.patient_rule and saved["source"] == "seed"
    assert saved["folds"] == [
        {"train": sorted(set(c[:18] for c in train_set.case_ids)), "val": saved["folds"][0]["val"]}
    ]
    assert json.loads((tmp_path / "run" / "splits_final.json").read_text()) == saved["folds"]


@pytest.mark.realdata
def test_real_acdc_frames_together_and_test_list_held_out(tmp_path):
    """The real SSL4MIS ACDC release: its own lists keep both frames of a patient on one side; with val.list
    renamed test.list (train.list + test.list only), those patients are on neither side."""
    root = shared("acdc")
    reader = open_dataset(root)
    split = plan_split(reader, DataConfig(root=str(root)))
    assert split.source.kind is SplitKind.DATASET_LISTS and not split.left_out and not split.held_out
    train, val = _side_patients(reader, split)
    names = case_names(reader)
    assert len(val) == 10 and not train & val and {names[i][:10] for i in split.val} == val
    copy = tmp_path / "acdc"
    copy.mkdir()
    (copy / "data").symlink_to(root / "data")
    (copy / "train.list").write_text((root / "train.list").read_text())
    (copy / "test.list").write_text((root / "val.list").read_text())
    reader = open_dataset(copy)
    split = plan_split(reader, DataConfig(root=str(copy)))
    train, val = _side_patients(reader, split)
    assert set(split.held_out) == {line[:10] for line in (root / "val.list").read_text().split()}
    assert not (train | val) & set(split.held_out) and len(train) == 33 and len(val) == 8
    assert "the 10 patient(s) of" in split.describe()


def test_the_test_split_is_the_datasets_own(tmp_path):
    from diffuseg.data.splits import test_split

    nnunet_cases(tmp_path / "nn", ["a"])
    (tmp_path / "nn" / "imagesTs").mkdir()
    assert test_split(tmp_path / "nn") == (
        tmp_path / "nn" / "imagesTs",
        None,
        f"--split test: nnU-Net's {tmp_path}/nn/imagesTs",
    )
    with pytest.raises(UserError, match="labelsTs: not found"):
        test_split(tmp_path / "nn", labels=True)
    names = frames(3)
    root = ssl4mis_cases(tmp_path / "ssl", names, {"train.list": names[:4], "test.list": ["# held out", names[5]]})
    folder, cases, _ = test_split(root)
    assert folder == root and cases == {names[5]}
    reader = open_dataset(root)
    assert [e.case_id for e in select_cases(reader, cases, "x").entries] == [f"{names[5]}_slice_1"]  # by case name
    with pytest.raises(UserError, match="no test split here"):
        test_split(tmp_path / "nn" / "imagesTr")


def test_a_case_list_file(tmp_path):
    from diffuseg.data.splits import read_case_list

    path = tmp_path / "cases.txt"
    path.write_text("a\n\n# comment\nb  # the second\n")
    assert read_case_list(path) == {"a", "b"}
    path.write_text("a\n../b\n")
    with pytest.raises(UserError, match=r"cases.txt line 2: entry '../b' is a path"):
        read_case_list(path)
    path.write_text("# nothing\n")
    with pytest.raises(UserError, match="names no case"):
        read_case_list(path)
    with pytest.raises(UserError, match="case list not found"):
        read_case_list(tmp_path / "missing.txt")
