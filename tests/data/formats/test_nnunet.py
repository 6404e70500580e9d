"""The nnU-Net raw layout: several annotators, classes and regions from dataset.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datafixtures import label_map, nifti, nnunet

from diffuseg.data.formats import images_from_files, open_dataset
from diffuseg.errors import UserError
from diffuseg.labels import ClassSpec


@pytest.mark.parametrize("three_d", [False, True])
def test_nnunet_with_several_annotators(tmp_path, three_d):
    shape = (6, 6, 4) if three_d else (6, 6)
    meta = {
        "channel_names": {"0": "CT", "1": "PET"},
        "labels": {"background": 0, "lesion": 1},
        "file_ending": ".nii.gz",
        "numTraining": 2,
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    for case in ("c_001", "c_002"):
        for ch in range(2):
            nifti(tmp_path / "imagesTr" / f"{case}_{ch:04d}.nii.gz", rng.random(shape).astype(np.float32))
        for k, folder in enumerate(("labelsTr", "labelsTr_rater1", "labelsTr_rater2")):
            nifti(tmp_path / folder / f"{case}.nii.gz", (rng.random(shape) > 0.5 + 0.1 * k).astype(np.uint8))
    reader = open_dataset(tmp_path)
    assert reader.layout == "nnunet"
    assert len(reader) == (8 if three_d else 2)
    case = reader[0]
    assert case.image.shape == (2, 6, 6) and case.masks.shape == (3, 6, 6)


def test_nnunet_dataset_json_classes(tmp_path):
    values = np.stack([label_map(16), label_map(16, 3)], -1)
    reader = open_dataset(nnunet(tmp_path, {"background": 0, "RV": 1, "MLV": 2, "LVC": 3}, values))
    assert reader.scheme.names == ("RV", "MLV", "LVC") and reader.scheme.channels == 4
    assert reader[1].masks[0].numpy().tolist() == label_map(16, 3).tolist()
    assert reader[0].geometry.volume_id == "c1"
    binary = open_dataset(tmp_path, foreground=[3])  # data.foreground keeps it binary
    assert binary.scheme.binary and set(binary[0].masks.unique().tolist()) == {0, 1}
    with pytest.raises(UserError, match=r"dataset.json: its labels .* do not match data.classes .*'data.classes=\[\]'"):
        open_dataset(tmp_path, classes=(ClassSpec("RV", (1,)), ClassSpec("LV", (3,))))
    spelled = (ClassSpec("rv", (1,)), ClassSpec("Mlv", (2,)), ClassSpec("LVC", (3,)))  # names up to case: the same
    assert open_dataset(tmp_path, classes=spelled).scheme.names == ("rv", "Mlv", "LVC")


def test_nnunet_msd_v1_labels_and_regions(tmp_path):
    values = np.stack([label_map(16)] * 2, -1)
    v1 = open_dataset(nnunet(tmp_path / "v1", {"0": "background", "1": "a", "2": "b", "3": "c"}, values))
    assert v1.scheme.names == ("a", "b", "c") and v1.scheme.exclusive
    regions = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    reader = open_dataset(nnunet(tmp_path / "v2", regions, values, regions_class_order=[1, 2, 3]))
    scheme = reader.scheme
    assert not scheme.exclusive and scheme.channels == 3 and scheme.painted == (1, 2, 3)
    atoms = reader[0].masks[0]
    decoded = scheme.decode(scheme.one_hot(atoms))
    assert torch.equal(scheme.to_values(decoded), torch.from_numpy(label_map(16)).long())
    with pytest.raises(UserError, match="regions_class_order"):
        open_dataset(nnunet(tmp_path / "bad", regions, values, regions_class_order=[1, 2]))


def _nnunet(root: Path, annotator_folders: list[str]) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), root / "imagesTr" / "c_0000.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4)), root / "labelsTr" / "c.nii.gz")
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps({**meta, "annotator_folders": annotator_folders}))
    return root


@pytest.mark.parametrize("entry", ["../outside", "/etc", "labelsTr/../../outside"])
def test_nnunet_annotator_folders_outside_the_dataset_are_refused(tmp_path, entry):
    (tmp_path / "outside").mkdir()
    root = _nnunet(tmp_path / "ds", ["labelsTr", entry])
    with pytest.raises(UserError, match="outside the dataset folder"):
        open_dataset(str(root), "nnunet", ())


def test_nnunet_annotator_folders_inside_the_dataset_are_read(tmp_path):
    root = _nnunet(tmp_path / "ds", ["labelsTr"])
    assert len(open_dataset(str(root), "nnunet", ()).entries) == 2  # the two slices of one volume


def _images_ts(root: Path, cases: dict[str, int]) -> Path:
    """``root/imagesTs`` with ``CASE_XXXX.nii.gz`` files, ``cases[CASE]`` channels each (6x6x2 volumes)."""
    rng = np.random.default_rng(0)
    for case, channels in cases.items():
        for c in range(channels):
            nifti(root / "imagesTs" / f"{case}_{c:04d}.nii.gz", rng.random((6, 6, 2)).astype(np.float32))
    return root / "imagesTs"


def test_an_images_ts_folder_groups_channel_files_into_cases(tmp_path, capsys):
    folder = _images_ts(tmp_path, {"a": 2, "b": 2})
    reader = open_dataset(folder)
    assert reader.layout == "nnunet" and reader.annotators == 0
    assert [e.case_id for e in reader.entries] == ["a_z0000", "a_z0001", "b_z0000", "b_z0001"]
    assert {e.volume_id for e in reader.entries} == {"a", "b"} and reader[0].image.shape == (2, 6, 6)
    assert "read as 2 case(s) of 2 channels" in capsys.readouterr().err
    alone = open_dataset(folder, layout="images")  # each file an image of its own
    assert {e.volume_id for e in alone.entries} == {"a_0000", "a_0001", "b_0000", "b_0001"}
    files = images_from_files(sorted(folder.iterdir()))
    assert files.layout == "nnunet" and {e.volume_id for e in files.entries} == {"a", "b"}


def test_an_images_ts_folder_checks_the_channels_of_dataset_json(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "PET"}, "labels": {}}))
    folder = _images_ts(tmp_path, {"a": 1})
    reader = open_dataset(folder)
    assert reader.layout == "nnunet" and not reader.entries
    assert reader.problems == [f"{folder}/a: missing channel file(s) _0001 ({tmp_path / 'dataset.json'} declares 2)"]


@pytest.mark.parametrize(
    "names",
    [["a_0000", "a_0002"], ["a_0000", "a_0001", "b_0000"], ["a_0000", "notes"], ["frame_0001"]],
)
def test_files_not_named_as_nnunet_channels_stay_images(tmp_path, names):
    for name in names:
        nifti(tmp_path / f"{name}.nii.gz", np.zeros((4, 4), np.float32))
    reader = open_dataset(tmp_path)
    assert reader.layout == "images" and sorted(e.case_id for e in reader.entries) == sorted(names)


def test_nnunet_ignore_label_is_no_class(tmp_path):
    values = label_map(16)
    values[:4] = 4  # unannotated rows
    labels = {"background": 0, "RV": 1, "MLV": 2, "LVC": 3, "ignore": 4}
    reader = open_dataset(nnunet(tmp_path / "classes", labels, np.stack([values, label_map(16)], -1)))
    assert reader.scheme.names == ("RV", "MLV", "LVC") and reader.scheme.ignore == 4
    assert reader[0].masks[0].numpy().tolist() == values.tolist()  # atoms 1..3 as the values, ignore atom 4
    binary = np.where(values == 4, 2, values > 0).astype(np.uint8)
    root = nnunet(tmp_path / "binary", {"background": 0, "lesion": 1, "ignore": 2}, np.stack([binary] * 2, -1))
    reader = open_dataset(root)
    assert reader.scheme.binary and reader.scheme.ignore == 2
    assert reader[0].masks[0].numpy().tolist() == binary.tolist()
    with pytest.raises(UserError, match=r"dataset.json: data.ignore_label=2: the ignore label must be above"):
        open_dataset(nnunet(tmp_path / "low", {"background": 0, "a": 1, "ignore": 2, "b": 3}, values[..., None]))
