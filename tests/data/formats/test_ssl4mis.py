"""The SSL4MIS HDF5 layout: 2D slices and 3D volumes, its case lists, classes from the values."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from datafixtures import ACDC, h5, label_map, shared, ssl4mis

from diffuseg.config import DataConfig
from diffuseg.data.formats import open_dataset
from diffuseg.data.splits import plan_split, split_source
from diffuseg.enums import SplitKind


def test_ssl4mis_slices_volumes_and_lists(tmp_path):
    root = ssl4mis(tmp_path)
    reader = open_dataset(root)
    assert reader.layout == "ssl4mis" and len(reader) == 4 + 3
    assert reader.scheme.names == ("class_1", "class_2", "class_3") and reader.notes  # values taken as classes
    by_id = {e.case_id: i for i, e in enumerate(reader.entries)}
    two_d = reader[by_id["patient001_frame01_slice_2"]]
    assert two_d.patient_id == "patient001" and two_d.masks[0].numpy().tolist() == label_map(16, 2).tolist()
    assert two_d.geometry.format == "h5" and two_d.geometry.volume_id is None
    with h5py.File(root / "data" / "patient001_frame01_slice_2.h5") as f:  # [0, 1] images kept as stored
        assert np.allclose(two_d.image[0].numpy(), f["image"][()])
    z1 = reader[by_id["patient003_frame01_z0001"]]
    g = z1.geometry
    assert (g.volume_id, g.slice_index, g.volume_shape) == ("patient003_frame01", 1, (3, 16, 16))
    assert z1.masks[0].numpy().tolist() == label_map(16, 1).tolist()
    cfg = DataConfig(root=str(root), classes=ACDC)
    assert split_source(cfg).kind is SplitKind.DATASET_LISTS
    split = plan_split(reader, cfg)
    train, val = split.train, split.val
    assert {reader.entries[i].patient_id for i in train} == {"patient001", "patient002"}
    assert {reader.entries[i].patient_id for i in val} == {"patient003"}
    named = open_dataset(root, classes=ACDC)
    assert named.scheme.names == ("RV", "Myo", "LV") and not named.notes
    assert reader.classes_source == "the label values found in the files"


def test_ssl4mis_unlabelled_files_for_prediction(tmp_path):
    h5(tmp_path / "data" / "v.h5", np.random.default_rng(0).random((2, 8, 8)).astype(np.float32))
    reader = open_dataset(tmp_path)
    assert reader.layout == "ssl4mis" and len(reader) == 2 and reader.annotators == 0
    assert reader[1].masks.shape == (0, 8, 8) and reader[1].geometry.slice_index == 1


def test_ssl4mis_binary_labels_stay_binary(tmp_path):
    h5(tmp_path / "data" / "a_slice_1.h5", np.zeros((8, 8), np.float32), (label_map(8) > 1).astype(np.uint8) * 5)
    reader = open_dataset(tmp_path)
    assert reader.scheme.binary and set(reader[0].masks.unique().tolist()) == {0, 1}


def test_ssl4mis_volume_and_slices_of_one_case(tmp_path):
    root = ssl4mis(tmp_path)
    volume = np.stack([label_map(16, z) for z in range(2)])
    h5(root / "data" / "patient001_frame01.h5", np.zeros((2, 16, 16), np.float32), volume)  # also as slices
    h5(root / "data" / "patient003_frame01_slice_1.h5", np.zeros((16, 16), np.float32), label_map(16))
    ids = {e.case_id for e in open_dataset(root).entries}
    assert "patient001_frame01_slice_1" in ids and "patient001_frame01_z0000" not in ids  # train: slices
    assert "patient003_frame01_z0000" in ids and "patient003_frame01_slice_1" not in ids  # val: volume


@pytest.mark.realdata
def test_acdc_real_data():
    root = shared("acdc")
    reader = open_dataset(root, classes=ACDC)
    assert reader.layout == "ssl4mis" and not reader.problems
    slices = [i for i, e in enumerate(reader.entries) if e.volume_id is None]
    volumes = {e.volume_id for e in reader.entries if e.volume_id is not None}
    assert len(slices) == len((root / "train_slices.list").read_text().split())
    assert volumes == set((root / "val.list").read_text().split())
    case = reader[slices[0]]
    with h5py.File(case.geometry.sources[0]) as f:
        label = f["label"][()]
    assert torch.equal(case.masks[0], torch.from_numpy(label))  # ACDC values 1/2/3 are atoms 1/2/3
    split = plan_split(reader, DataConfig(root=str(root), classes=ACDC))
    train, val = split.train, split.val
    assert not {reader.entries[i].patient_id for i in train} & {reader.entries[i].patient_id for i in val}
    assert all(reader.entries[i].volume_id is not None for i in val)
