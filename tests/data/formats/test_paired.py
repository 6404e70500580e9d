"""The paired layout: two folders or suffixed masks, joined lesions, NIfTI volumes, label maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datafixtures import ACDC, disc, grey, label_map, nifti, paired, png, shared

from diffuseg.data.formats import open_dataset
from diffuseg.errors import UserError
from diffuseg.labels import ClassSpec


def test_paired_two_folders_and_patients(tmp_path):
    reader = open_dataset(paired(tmp_path, n=3))
    assert reader.layout == "paired" and len(reader) == 3
    case = reader[1]
    assert case.image.shape == (1, 20, 20) and case.image.dtype.is_floating_point
    assert case.masks.shape == (1, 20, 20) and set(case.masks.unique().tolist()) == {0, 1}
    assert case.case_id == "1_a" and case.patient_id == "1"
    assert float(case.image.min()) >= 0.0 and float(case.image.max()) <= 1.0


def test_paired_suffix_and_joined_lesions(tmp_path):
    png(tmp_path / "j" / "images" / "c1.png", grey(12))
    png(tmp_path / "j" / "masks" / "c1_1.png", np.pad(np.full((2, 2), 255, np.uint8), ((0, 10), (0, 10))))
    png(tmp_path / "j" / "masks" / "c1_2.png", np.pad(np.full((2, 2), 255, np.uint8), ((10, 0), (10, 0))))
    joined = open_dataset(tmp_path / "j")
    assert joined.layout == "paired" and len(joined) == 1
    assert int(joined[0].masks.sum()) == 8  # two 2x2 lesions joined into one mask
    png(tmp_path / "s" / "c2.jpg", np.stack([grey(12)] * 3, -1) // 2 + np.arange(3, dtype=np.uint8))
    png(tmp_path / "s" / "c2_segmentation.png", disc(12, 3, 1))
    png(tmp_path / "s" / "c3.png", grey(12))
    png(tmp_path / "s" / "c3_mask.png", disc(12, 2))
    reader = open_dataset(tmp_path / "s")
    assert reader.layout == "paired"
    by_id = {reader[i].case_id: reader[i] for i in range(len(reader))}
    assert by_id["c2"].image.shape[0] == 3  # RGB kept as 3 channels
    assert by_id["c3"].masks.shape == (1, 12, 12)


def test_nifti_volumes_are_sliced(tmp_path):
    vol = np.random.default_rng(0).normal(100, 20, (9, 7, 5)).astype(np.int16)
    label = np.zeros((9, 7, 5), np.uint8)
    label[2:5, 2:5, 1:3] = 1
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    nifti(tmp_path / "images" / "v.nii.gz", vol, affine)
    nifti(tmp_path / "labels" / "v.nii.gz", label, affine)
    reader = open_dataset(tmp_path, layout="nifti")
    assert len(reader) == 5
    case = reader[2]
    g = case.geometry
    assert case.image.shape == (1, 9, 7) and g.volume_id == "v" and g.slice_index == 2 and g.volume_shape == (9, 7, 5)
    assert np.allclose(g.spacing, (0.8, 0.8, 2.5)) and np.allclose(g.affine, affine)
    assert int(case.masks.sum()) == 9
    # one scale for the whole volume: the normalised slices share the volume's percentiles
    lo, hi = np.percentile(vol.astype(np.float32), (0.5, 99.5))
    expected = (np.clip(vol[:, :, 2], lo, hi) - lo) / (hi - lo)
    assert np.allclose(case.image[0].numpy(), expected, atol=1e-5)


def test_paired_integer_label_images(tmp_path):
    png(tmp_path / "images" / "a.png", grey(16))
    png(tmp_path / "masks" / "a.png", label_map(16))
    reader = open_dataset(tmp_path, classes=ACDC)
    case = reader[0]
    assert case.masks.dtype == torch.uint8 and case.masks[0].numpy().tolist() == label_map(16).tolist()
    inferred = open_dataset(tmp_path)  # no classes declared: the label values found are the classes, with a note
    assert inferred.scheme.names == ("class_1", "class_2", "class_3") and "--classes" in inferred.notes[0]
    assert inferred[0].masks[0].numpy().tolist() == label_map(16).tolist()
    assert open_dataset(tmp_path, foreground=[3]).scheme.binary


def test_masks_with_255_and_other_values_are_not_read_as_classes(tmp_path):
    png(tmp_path / "images" / "a.png", grey(16))
    png(tmp_path / "masks" / "a.png", label_map(16) * 85)  # 0, 85, 170, 255: anti-aliasing or a void label
    reader = open_dataset(tmp_path)
    assert reader.scheme.binary and not reader.notes
    with pytest.raises(UserError, match=r"not binary \(values \{0, 85, 170, 255\}\); declare its classes"):
        reader[0]


def test_nifti_label_volumes_name_the_slice_and_take_classes_from_values(tmp_path):
    volume = np.stack([label_map(16, z) for z in range(3)], -1)
    nifti(tmp_path / "images" / "v.nii.gz", np.random.default_rng(0).random((16, 16, 3)).astype(np.float32))
    nifti(tmp_path / "labels" / "v.nii.gz", volume)
    reader = open_dataset(tmp_path)
    assert reader.scheme.names == ("class_1", "class_2", "class_3")
    assert all(reader.check(i)[1] == [] for i in range(3))
    nifti(tmp_path / "labels" / "v.nii.gz", volume * 85)  # 255 among the values: not read as classes
    problems = open_dataset(tmp_path).check(1)[1]
    assert len(problems) == 1 and "v.nii.gz (slice 1): mask is not binary" in problems[0]


def test_atoms_follow_declaration_order(tmp_path):
    png(tmp_path / "images" / "a.png", grey(16))
    png(tmp_path / "masks" / "a.png", label_map(16) * 10)  # values 0, 10, 20, 30
    classes = (ClassSpec("b", (30,)), ClassSpec("a", (10, 20), 10))
    case = open_dataset(tmp_path, classes=classes)[0]
    assert case.masks[0, 0, -1] == 2 and case.masks[0, -1, 0] == 3 and case.masks[0, -1, -1] == 1


@pytest.mark.realdata
def test_real_ddti():
    reader = open_dataset(shared("ddti"))
    assert reader.layout == "paired" and len(reader) == 522 and not reader.problems
    case = reader[0]
    assert case.image.shape == (1, 300, 300) and case.masks.shape == (1, 300, 300)
    assert case.patient_id == case.case_id.split("_")[0]
    assert case.geometry.mask_sources[0][0].endswith(".gif")
