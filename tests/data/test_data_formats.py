"""Each reader on tiny generated datasets, and on the real files in ../shared/data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from datafixtures import disc, grey, lidc, nifti, paired, png, shared

from diffuseg.data.formats import images_from_files, open_dataset
from diffuseg.errors import UserError


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


def test_multi_annotator_folders_and_suffixes(tmp_path):
    for k in range(3):
        for i in range(2):
            png(tmp_path / "a" / "images" / f"x{i}.png", grey(10, i))
            png(tmp_path / "a" / f"masks_{k}" / f"x{i}.png", disc(10, k + 1))
            png(tmp_path / "b" / f"y{i}.png", grey(10, i))
            png(tmp_path / "b" / f"y{i}_rater{k}.png", disc(10, k + 1))
    for sub in ("a", "b"):
        reader = open_dataset(tmp_path / sub)
        assert reader.layout == "multi" and len(reader) == 2
        masks = reader[0].masks
        assert masks.shape == (3, 10, 10)
        assert masks[0].sum() < masks[1].sum() < masks[2].sum()


def test_lidc_layout(tmp_path):
    reader = open_dataset(lidc(tmp_path))
    assert reader.layout == "lidc" and len(reader) == 4
    case = reader[3]
    assert case.case_id == "LIDC-IDRI-0001_nodule-0_slice-1" and case.patient_id == "LIDC-IDRI-0001"
    assert case.masks.shape == (4, 16, 16)


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


def test_brats_3d_volumes_and_subregions(tmp_path):
    case_dir = tmp_path / "BraTS2021_00001"
    rng = np.random.default_rng(1)
    for m in ("flair", "t1", "t1ce", "t2"):
        nifti(case_dir / f"BraTS2021_00001_{m}.nii.gz", rng.random((8, 8, 3)).astype(np.float32))
    seg = np.zeros((8, 8, 3), np.uint8)
    seg[1, 1, :], seg[2, 2, :], seg[3, 3, :] = 1, 2, 4
    nifti(case_dir / "BraTS2021_00001_seg.nii.gz", seg)
    whole = open_dataset(tmp_path)
    assert whole.layout == "brats" and len(whole) == 3
    assert whole[0].image.shape == (4, 8, 8) and int(whole[0].masks.sum()) == 3
    core = open_dataset(tmp_path, foreground=(1, 4))
    assert int(core[0].masks.sum()) == 2
    assert core[0].patient_id == "BraTS2021_00001"


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


def test_images_from_files_are_unlabelled(tmp_path):
    files = [png(tmp_path / "a.png", grey(8)), png(tmp_path / "b.png", grey(8, 1))]
    reader = images_from_files(files)
    assert len(reader) == 2 and reader[0].masks.shape == (0, 8, 8)
    with pytest.raises(UserError, match="not found"):
        images_from_files([tmp_path / "missing.png"])


def test_unknown_layout_name(tmp_path):
    with pytest.raises(UserError, match="not one of"):
        open_dataset(paired(tmp_path), layout="dicom")


@pytest.mark.realdata
def test_real_ddti():
    reader = open_dataset(shared("ddti"))
    assert reader.layout == "paired" and len(reader) == 522 and not reader.problems
    case = reader[0]
    assert case.image.shape == (1, 300, 300) and case.masks.shape == (1, 300, 300)
    assert case.patient_id == case.case_id.split("_")[0]
    assert case.geometry.mask_sources[0][0].endswith(".gif")


@pytest.mark.realdata
def test_real_brats_sample():
    reader = open_dataset(shared("brats_sample"))
    assert reader.layout == "brats" and len(reader) == 8
    labelled = [reader[i] for i in range(len(reader)) if reader.entries[i].masks]
    assert len(labelled) == 6
    case = labelled[0]
    assert case.image.shape == (4, 240, 240) and case.masks.shape == (1, 240, 240)
    assert case.geometry.affine is not None and case.masks.sum() > 0


@pytest.mark.realdata
def test_real_lidc_patients(tmp_path):
    source = shared("lidc") / "LIDC-IDRI-slices"
    for patient in ("LIDC-IDRI-0001", "LIDC-IDRI-0003"):
        shutil.copytree(source / patient, tmp_path / "LIDC-IDRI-slices" / patient)
    reader = open_dataset(tmp_path)
    assert reader.layout == "lidc" and not reader.problems
    case = reader[0]
    assert case.image.shape == (1, 128, 128) and case.masks.shape == (4, 128, 128)
    assert set(reader.patients) == {"LIDC-IDRI-0001", "LIDC-IDRI-0003"}
