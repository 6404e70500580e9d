"""The prediction folder: names, finding the files of each case, and reading masks and uncertainty back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffuseg.errors import UserError
from diffuseg.inference.outputs import (
    UNCERTAINTY_SCALE,
    find_predictions,
    plane,
    prediction_files,
    read_mask,
    read_uncertainty,
)
from diffuseg.labels import LabelScheme, label_scheme

THREE = label_scheme([{"name": n, "values": [v]} for n, v in (("RV", 1), ("Myo", 2), ("LV", 3))])


def png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_names_and_find_round_trip(tmp_path):
    files = prediction_files(tmp_path, "case_1", "png", samples=12)
    assert files.fused == tmp_path / "case_1.png" and files.uncertainty == tmp_path / "case_1_uncertainty.png"
    assert files.samples[11] == tmp_path / "samples" / "case_1_s011.png"
    for p in (files.fused, files.uncertainty, *files.samples):
        png(p, np.zeros((4, 4), np.uint8))
    png(tmp_path / "other.png", np.zeros((4, 4), np.uint8))
    found = find_predictions(tmp_path)
    assert set(found) == {"case_1", "other"}
    assert found["case_1"] == files  # samples in their natural order, s002 before s010
    assert found["other"].uncertainty is None and not found["other"].samples


def test_find_refuses_folders_without_masks_and_stray_samples(tmp_path):
    png(tmp_path / "a_uncertainty.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match="no predicted masks"):
        find_predictions(tmp_path)
    png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    png(tmp_path / "samples" / "b_s000.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match="sample of no predicted case"):
        find_predictions(tmp_path)


def test_uncertainty_scales(tmp_path):
    u = np.array([[0.0, 0.25], [0.5, 1.0]])
    sixteen = png(tmp_path / "a.png", np.round(u * UNCERTAINTY_SCALE).astype(np.uint16))
    eight = png(tmp_path / "b.png", np.round(u * 255).astype(np.uint8))
    np.save(tmp_path / "c.npy", u.astype(np.float32))
    assert np.allclose(read_uncertainty(sixteen), u, atol=1 / UNCERTAINTY_SCALE)
    assert np.allclose(read_uncertainty(eight), u, atol=1 / 255)
    assert np.array_equal(read_uncertainty(tmp_path / "c.npy"), u.astype(np.float32))


def test_masks_binary_and_label_maps(tmp_path):
    binary = png(tmp_path / "a.png", np.array([[0, 255], [255, 0]], np.uint8))
    assert read_mask(binary, LabelScheme()).tolist() == [[0, 1], [1, 0]]
    assert read_mask(binary, LabelScheme()).dtype == np.uint8
    soft = png(tmp_path / "soft.png", np.array([[0, 128], [255, 0]], np.uint8))
    with pytest.raises(UserError, match="not binary"):
        read_mask(soft, LabelScheme())
    labels = png(tmp_path / "l.png", np.array([[0, 1], [2, 3]], np.uint8))
    assert read_mask(labels, THREE).tolist() == [[0, 1], [2, 3]]
    with pytest.raises(UserError, match=r"label value\(s\) 7 not declared"):
        read_mask(png(tmp_path / "bad.png", np.array([[0, 7], [2, 3]], np.uint8)), THREE)
    jpeg = tmp_path / "l.jpg"
    Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8)).save(jpeg)
    with pytest.raises(UserError, match="lossy"):
        read_mask(jpeg, THREE)


def test_plane_axis_by_format(tmp_path):
    volume = np.arange(24).reshape(2, 3, 4)
    assert plane(volume, tmp_path / "v.h5", 1).tolist() == volume[1].tolist()  # HDF5 (D,H,W)
    assert plane(volume, tmp_path / "v.nii.gz", 3).tolist() == volume[:, :, 3].tolist()  # NIfTI: the last axis
    assert plane(volume, tmp_path / "v.nii.gz", None) is volume
    with pytest.raises(UserError, match="has no slice 4"):
        plane(volume, tmp_path / "v.nii.gz", 4)
