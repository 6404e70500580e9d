"""The ``labels`` layout: a folder of label files alone, as ``evaluate`` takes ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datafixtures import disc, grey, label_map, nifti, png

from diffuseg.data.formats import open_dataset, open_ground_truth


def test_a_folder_of_masks_is_ground_truth(tmp_path):
    png(tmp_path / "a.png", disc(16, 4))
    png(tmp_path / "b.png", disc(16, 5))
    assert open_dataset(tmp_path).layout == "images"  # unlabelled images, for predict
    reader = open_ground_truth(tmp_path)
    assert reader.layout == "labels" and reader.scheme.binary and reader.annotators == 1
    case = reader[1]
    assert case.case_id == "b" and case.masks[0].numpy().tolist() == (disc(16, 5) > 0).astype(int).tolist()


def test_label_maps_take_their_classes_from_the_values(tmp_path, capsys):
    png(tmp_path / "a.png", label_map(16))
    reader = open_ground_truth(tmp_path)
    assert reader.scheme.names == ("class_1", "class_2", "class_3")
    assert "--classes class_1=1,class_2=2,class_3=3" in capsys.readouterr().err


def test_labels_ts_reads_the_classes_and_ending_of_dataset_json(tmp_path):
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "RV": 1, "MLV": 2, "LVC": 3}}
    (tmp_path / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".nii.gz"}))
    nifti(tmp_path / "labelsTs" / "c1.nii.gz", np.stack([label_map(8), label_map(8, 1)], -1))
    png(tmp_path / "labelsTs" / "preview.png", grey(8))  # not of the file ending: not read
    reader = open_ground_truth(tmp_path / "labelsTs")
    assert reader.layout == "labels" and reader.scheme.names == ("RV", "MLV", "LVC")
    assert [e.case_id for e in reader.entries] == ["c1_z0000", "c1_z0001"]
    assert reader[1].masks[0].numpy().tolist() == label_map(8, 1).tolist()


@pytest.mark.parametrize("layout", ["paired", "labels"])
def test_a_named_layout_is_kept(tmp_path, layout):
    png(tmp_path / "images" / "a.png", grey(16))
    png(tmp_path / "masks" / "a.png", disc(16, 4))
    assert open_ground_truth(tmp_path, layout=layout).layout == layout
    assert open_ground_truth(tmp_path).layout == "paired"
