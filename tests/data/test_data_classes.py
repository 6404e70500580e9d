"""The ``classes`` layout (BUSI-like class folders), the one channel policy, and verify agreeing with training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datafixtures import busi, disc, nifti
from PIL import Image

from diffuseg.cli import main
from diffuseg.config import DataConfig
from diffuseg.data.dataset import build_datasets
from diffuseg.data.formats import open_dataset
from diffuseg.data.transforms import LUMA_601
from diffuseg.data.verify import verify_dataset
from diffuseg.errors import DatasetError


def test_class_folders_are_detected_and_kept(tmp_path):
    reader = open_dataset(busi(tmp_path))
    assert reader.layout == "classes" and len(reader) == 5 and not reader.problems
    by_id = {e.case_id: e for e in reader.entries}
    assert set(by_id) == {"benign (1)", "benign (2)", "malignant_benign (2)", "malignant (1)", "normal (1)"}
    assert by_id["normal (1)"].category == "normal"
    case = reader[reader.entries.index(by_id["malignant (1)"])]
    assert case.geometry.category == "malignant"


def test_lesion_masks_of_one_image_are_joined(tmp_path):
    reader = open_dataset(busi(tmp_path))
    i = [e.case_id for e in reader.entries].index("benign (1)")
    case = reader[i]
    assert case.masks.shape == (1, 20, 20)  # one annotator: the union, not two raters
    assert int(case.masks.sum()) == 32 and case.masks[0, 3, 3] == 1 and case.masks[0, 13, 13] == 1


def test_verify_summary_shows_classes_channels_and_empty_masks(tmp_path):
    summary = verify_dataset(busi(tmp_path), in_channels=1)
    assert "layout: classes" in summary
    assert "classes: benign (2 cases), malignant (2 cases), normal (1 cases)" in summary
    assert "as stored: 1 (3 cases), 3 (2 cases)" in summary
    assert "cases whose mask is empty: 1 of 5" in summary


@pytest.mark.parametrize("channels", [1, 3])
def test_mixed_grey_and_rgb_are_converted_alike_by_verify_and_training(tmp_path, channels):
    root = busi(tmp_path / "b")
    verify_dataset(root, in_channels=channels)  # accepted ...
    cfg = DataConfig(root=str(root), image_size=20, in_channels=channels, augment=False, val_fraction=0.0)
    train, _ = build_datasets(cfg)  # ... so training accepts it too
    assert len(train) == 5 and all(train[k]["image"].shape == (channels, 20, 20) for k in range(5))
    k = train.case_ids.index("benign (1)")
    rgb = np.asarray(Image.open(root / "benign" / "benign (1).png"))
    if channels == 1:
        expected = (rgb.astype(np.float64) / 255 * np.asarray(LUMA_601)).sum(-1)
        assert torch.allclose(train[k]["image"][0].double(), torch.from_numpy(expected), atol=2e-3)
    k = train.case_ids.index("benign (2)")
    image = train[k]["image"]
    assert channels == 1 or (torch.equal(image[0], image[1]) and torch.equal(image[0], image[2]))


def _rgb_nifti(root):
    """A 4-D NIfTI (X,Y,1,3): three channels that are no RGB picture."""
    rng = np.random.default_rng(0)
    nifti(root / "images" / "v1.nii.gz", rng.random((12, 12, 1, 3)).astype(np.float32))
    nifti(root / "masks" / "v1.nii.gz", disc(12, 3)[..., None].astype(np.uint8) // 255)
    return root


def test_nifti_channels_are_never_averaged(tmp_path):
    root = _rgb_nifti(tmp_path / "n")
    with pytest.raises(DatasetError, match=r"v1\.nii\.gz: images have 3 channels but data\.in_channels is 1"):
        verify_dataset(root, in_channels=1)
    with pytest.raises(DatasetError, match=r"v1\.nii\.gz: images have 3 channels but data\.in_channels is 1"):
        build_datasets(DataConfig(root=str(root), image_size=12, in_channels=1, val_fraction=0.0))
    assert "channels: 3" in verify_dataset(root, in_channels=3)
    train, _ = build_datasets(DataConfig(root=str(root), image_size=12, in_channels=3, val_fraction=0.0))
    assert train[0]["image"].shape == (3, 12, 12)


def test_verify_and_training_refuse_the_same_problems(tmp_path):
    root = _rgb_nifti(tmp_path / "n")
    nifti(root / "images" / "v2.nii.gz", np.zeros((12, 12, 1, 4), np.float32))
    nifti(root / "masks" / "v2.nii.gz", np.zeros((12, 12, 1), np.uint8))
    with pytest.raises(DatasetError) as verified:
        verify_dataset(root, in_channels=3)
    with pytest.raises(DatasetError) as trained:
        build_datasets(DataConfig(root=str(root), image_size=12, in_channels=3, val_fraction=0.0))
    assert verified.value.problems == trained.value.problems and "4 channels" in str(verified.value)


def test_verify_cli_takes_in_channels(tmp_path, capsys):
    root = _rgb_nifti(tmp_path / "n")
    assert main(["verify", str(root), "--in-channels", "1"]) == 2
    err = capsys.readouterr().err
    assert "images have 3 channels but data.in_channels is 1" in err and "Traceback" not in err
    assert main(["verify", str(root), "--in-channels", "3"]) == 0


def test_one_class_folder_is_read_as_that_class_with_the_same_ids(tmp_path):
    """Pointed at benign/ (whose numbered masks look like multi's raters), the lesions are still joined."""
    root = busi(tmp_path)
    whole = {e.case_id: e for e in open_dataset(root).entries}
    one = open_dataset(root / "benign")
    assert one.layout == "classes" and not one.problems
    assert {e.case_id for e in one.entries} == {"benign (1)", "benign (2)"}
    for e in one.entries:
        assert e.category == "benign" and e.masks == whole[e.case_id].masks  # one mask: the union of lesions
    malignant = open_dataset(root / "malignant")
    assert {e.case_id for e in malignant.entries} == {"malignant (1)", "malignant_benign (2)"}


def test_ids_that_differ_only_by_case_are_a_problem_naming_both(tmp_path):
    from datafixtures import png

    root = busi(tmp_path)
    png(root / "benign" / "BENIGN (1).png", disc(20, 2))
    png(root / "benign" / "BENIGN (1)_mask.png", disc(20, 2))
    problems = open_dataset(root).problems
    assert len(problems) == 1 and "benign (1).png" in problems[0].lower() and "same case id" in problems[0]
