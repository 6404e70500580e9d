"""``verify_dataset`` and ``diffuseg verify``: the bad-input corpus, good data, classes, and verify agreeing with
training on the channel policy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datafixtures import (
    ACDC,
    CORPUS,
    busi,
    disc,
    frames,
    grey,
    label_map,
    lidc,
    nifti,
    nnunet,
    nnunet_cases,
    paired,
    png,
    shared,
    ssl4mis,
)
from PIL import Image

from diffuseg.cli import main
from diffuseg.config import DataConfig
from diffuseg.data.dataset import build_datasets
from diffuseg.data.transforms import LUMA_601
from diffuseg.data.verify import verify_dataset
from diffuseg.errors import DatasetError


def test_each_bad_input_is_named(bad_dataset):
    root, message, names = bad_dataset
    with pytest.raises(DatasetError) as info:
        verify_dataset(root)
    lines = [p for p in info.value.problems if message in p]
    assert lines, info.value.problems
    assert any(names in line for line in lines), lines


def test_cli_exit_code_and_no_traceback(bad_dataset, capsys):
    root, message, _ = bad_dataset
    assert main(["verify", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err


def test_every_problem_listed_at_once(tmp_path):
    root = paired(tmp_path / "many", n=4)
    (root / "images" / "1_a.png").write_bytes(b"garbage")
    png(root / "images" / "9_a.png", np.zeros((20, 20), np.uint8))
    png(root / "masks" / "8_b.png", np.zeros((20, 20), np.uint8))
    png(root / "masks" / "2_a.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(DatasetError) as info:
        verify_dataset(root)
    text = str(info.value)
    for fragment in ("unreadable or corrupt", "image without a mask", "mask without an image", "mask size 16x16"):
        assert fragment in text
    assert text.startswith("4 problem(s)")


def test_good_data_passes(tmp_path, capsys):
    root = lidc(tmp_path / "ok")
    summary = verify_dataset(root)
    assert "layout: lidc" in summary and "4 (4 cases)" in summary
    assert main(["verify", str(root)]) == 0
    assert "OK" in capsys.readouterr().out


def test_missing_folder_and_ambiguous_layout(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    root = lidc(tmp_path / "amb")
    paired(root)  # images/ + masks/ beside a LIDC tree: two layouts match
    assert main(["verify", str(root)]) == 2
    err = capsys.readouterr().err
    assert "ambiguous" in err and "--layout" in err
    assert main(["verify", str(root), "--layout", "paired"]) == 0


@pytest.mark.slow
def test_console_script_exit_code(tmp_path):
    script = Path(sys.executable).with_name("diffuseg")
    if not script.exists():
        pytest.skip("the diffuseg console script is not installed beside this python")
    root = tmp_path / "bad"
    root.mkdir()
    CORPUS["corrupt"][0](root)
    done = subprocess.run([str(script), "verify", str(root)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "unreadable or corrupt" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.realdata
def test_real_brats_sample_verifies():
    assert "layout: brats" in verify_dataset(shared("brats_sample"))


@pytest.mark.realdata
def test_real_ddti_subset_verifies(tmp_path):
    source = shared("ddti")
    for image in sorted((source / "cropped").glob("*.png"))[:12]:
        for folder, suffix in (("cropped", ".png"), ("mask", ".gif")):
            (tmp_path / folder).mkdir(exist_ok=True)
            shutil.copy(source / folder / f"{image.stem}{suffix}", tmp_path / folder)
    assert "layout: paired" in verify_dataset(tmp_path)


@pytest.mark.realdata
def test_real_lidc_subset_verifies(tmp_path):
    source = shared("lidc") / "LIDC-IDRI-slices"
    for patient in ("LIDC-IDRI-0001", "LIDC-IDRI-0003"):
        shutil.copytree(source / patient, tmp_path / "LIDC-IDRI-slices" / patient)
    assert "layout: lidc" in verify_dataset(tmp_path)


def test_cli_foreground_option(tmp_path, capsys):
    root = tmp_path / "labels"
    CORPUS["non_binary"][0](root)
    assert main(["verify", str(root)]) == 2
    capsys.readouterr()
    assert main(["verify", str(root), "--foreground", "1,2"]) == 0


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


def test_verify_names_every_file_with_undeclared_values(tmp_path):
    for name in ("a", "b", "c"):
        png(tmp_path / "images" / f"{name}.png", grey(16))
    png(tmp_path / "masks" / "a.png", label_map(16))
    png(tmp_path / "masks" / "b.png", label_map(16) * 2)  # 4 and 6 undeclared
    png(tmp_path / "masks" / "c.png", label_map(12))  # another size
    with pytest.raises(DatasetError) as err:
        verify_dataset(tmp_path, classes=ACDC)
    problems = err.value.problems
    assert len(problems) == 2
    assert "b.png: label value(s) {4, 6} not declared in data.classes" in problems[0]
    assert "c.png: mask size 12x12 differs from image size 16x16" in problems[1]


def test_verify_dataset_json_labels_not_matching_files(tmp_path):
    values = np.stack([label_map(16), label_map(16) * 2], -1)  # slice 1 holds 4 and 6
    root = nnunet(tmp_path, {"background": 0, "a": 1, "b": 2, "c": 3}, values)
    with pytest.raises(DatasetError) as err:
        verify_dataset(root)
    (problem,) = err.value.problems
    assert (
        "labelsTr/c1.nii.gz (slice 1): label value(s) {4, 6} not declared in" in problem and "dataset.json" in problem
    )


def test_verify_summary_lists_classes(tmp_path):
    summary = verify_dataset(ssl4mis(tmp_path), classes=ACDC)
    assert "layout: ssl4mis" in summary and "label classes (exclusive, from data.classes): RV [1]" in summary


def test_verify_prints_the_split_it_would_use(tmp_path, capsys):
    summary = verify_dataset(ssl4mis(tmp_path / "acdc"), classes=ACDC)
    assert "split: case lists" in summary and "train.list" in summary and "val.list" in summary
    assert "patient id: the file stem without _slice_N and _frameNN" in summary
    assert "train: 2 patient(s), 2 case(s), 4 item(s); val: 1 patient(s), 1 case(s), 3 item(s)" in summary
    root = nnunet_cases(tmp_path / "nn", frames(5))
    assert main(["verify", str(root), "--fold", "1"]) == 0
    out = capsys.readouterr().out
    assert "split: fold 1 of a 5-fold split by patient" in out and "train: 4 patient(s), 8 case(s), 8 item(s)" in out
    (root / "test.list").write_text("patient001_frame01\n../../x\n")
    assert main(["verify", str(root)]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: {root / 'test.list'} line 2: entry '../../x' leads out of the dataset folder "
        "(list case names, e.g. patient001_frame01)\n"
    )
