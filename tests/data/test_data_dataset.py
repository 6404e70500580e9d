"""Splits, cache, the training dataset and its augmentation."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from datafixtures import SHARED, lidc, paired, shared
from hypothesis import given, settings
from hypothesis import strategies as st

from diffuseg.config import DataConfig
from diffuseg.data import demo_lidc_root
from diffuseg.data.cache import decode_all, load_cached
from diffuseg.data.dataset import build_datasets
from diffuseg.data.formats import open_dataset
from diffuseg.data.splits import split_by_patient, split_from_lists
from diffuseg.data.synthetic import write_synthetic
from diffuseg.data.transforms import Augment, model_input, random_crop, resize_pair, rotate_pair
from diffuseg.errors import DatasetError, UserError


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


def test_cache_is_built_once_and_reused(tmp_path):
    root = paired(tmp_path / "d", n=4)
    reader = open_dataset(root)
    first = load_cached(reader, range(4), 16, 1, tmp_path / "cache")
    (folder,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    stamp = os.stat(folder / "images.npy").st_mtime_ns
    again = load_cached(open_dataset(root), range(4), 16, 1, tmp_path / "cache")
    assert os.stat(folder / "images.npy").st_mtime_ns == stamp
    image, masks = again.item(2)
    ref_image, ref_masks = resize_pair(reader[2].image, reader[2].masks, 16)
    assert torch.allclose(image, ref_image, atol=1e-3) and torch.equal(masks, ref_masks)
    assert isinstance(again.images, np.memmap) and first.case_ids == again.case_ids
    clone = pickle.loads(pickle.dumps(again))
    assert isinstance(clone.images, np.memmap) and np.array_equal(clone.images, again.images)
    # another size, or a changed file, is another cache entry
    load_cached(reader, range(4), 8, 1, tmp_path / "cache")
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 2


def test_cache_build_reports_every_problem(tmp_path):
    root = paired(tmp_path / "d", n=3)
    (root / "images" / "0_a.png").write_bytes(b"broken")
    with pytest.raises(DatasetError, match="unreadable or corrupt"):
        build_datasets(DataConfig(root=str(root), image_size=16), cache_dir=tmp_path / "c")
    assert not any((tmp_path / "c").glob("*/meta.json"))


def test_parallel_decode_matches_serial(tmp_path):
    root = write_synthetic(tmp_path / "s", 24)
    reader = open_dataset(root)
    one = decode_all(reader, range(24), 16, 4, workers=1)
    two = decode_all(reader, range(24), 16, 4, workers=2, chunk=8)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


def test_build_datasets_items(tmp_path):
    root = write_synthetic(tmp_path / "s", 20, seed=3)
    cfg = DataConfig(root=str(root), image_size=16, val_fraction=0.25)
    train, val = build_datasets(cfg, cache_dir=tmp_path / "c", seed=1)
    assert len(train) == 15 and len(val) == 5
    assert not set(train.patients) & set(val.patients)
    item = train[0]
    assert item["image"].shape == (1, 16, 16) and item["image"].dtype == torch.float32
    assert item["masks"].shape == (4, 16, 16) and item["mask"].shape == (1, 16, 16)
    assert torch.equal(item["mask"][0], item["masks"][item["annotator"]])
    assert set(item["masks"].unique().tolist()) <= {0.0, 1.0}


def test_augmentation_seeded_per_epoch_and_training_only(tmp_path):
    root = write_synthetic(tmp_path / "s", 12)
    train, val = build_datasets(DataConfig(root=str(root), image_size=16, val_fraction=0.25), seed=0)
    a, b = train[3], train[3]
    assert torch.equal(a["image"], b["image"]) and a["annotator"] == b["annotator"]
    draws = set()
    for epoch in range(12):
        train.set_epoch(epoch)
        draws.add(train[3]["annotator"])
    assert len(draws) > 1  # a random annotator per item per step
    v1 = val[0]
    val.set_epoch(5)
    assert torch.equal(v1["image"], val[0]["image"]) and v1["annotator"] == val[0]["annotator"]
    image, _ = val.arrays.item(val.indices[0])
    assert torch.allclose(v1["image"], image)  # no augmentation for validation


def test_augment_moves_image_and_masks_together():
    image = torch.zeros(1, 16, 16)
    image[0, 2:6, 3:9] = 1.0
    masks = (image > 0.5).to(torch.uint8).repeat(2, 1, 1)
    aug = Augment(rotation=0.0, contrast=0.0, brightness=0.0, gamma=0.0)
    for seed in range(8):
        out_image, out_masks = aug(image, masks, torch.Generator().manual_seed(seed))
        assert torch.equal((out_image[0] > 0.5).to(torch.uint8), out_masks[0])
    rotated_image, rotated_masks = rotate_pair(image, masks, 90.0)
    assert torch.equal((rotated_image[0] > 0.5).to(torch.uint8), rotated_masks[0])


def test_random_crop_keeps_size_and_pairing():
    image = torch.rand(1, 32, 32)
    masks = (image > 0.5).to(torch.uint8)[None, 0].repeat(4, 1, 1)
    out_image, out_masks = random_crop(image, masks, torch.Generator().manual_seed(0))
    assert out_image.shape == (1, 32, 32) and out_masks.shape == (4, 32, 32)


def test_random_crop_option(tmp_path):
    root = write_synthetic(tmp_path / "s", 8)
    cfg = DataConfig(root=str(root), image_size=16, random_crop=True, augment=False, val_fraction=0.25)
    train, val = build_datasets(cfg)
    assert train[0]["image"].shape == (1, 16, 16)
    assert torch.equal(val[0]["image"], val[0]["image"])  # fixed validation crop


def test_channel_mismatch_is_a_user_error(tmp_path):
    root = lidc(tmp_path / "l")
    with pytest.raises(UserError, match="channels"):
        build_datasets(DataConfig(root=str(root), image_size=16, in_channels=4))
    train, _ = build_datasets(DataConfig(root=str(root), image_size=16, in_channels=3))
    assert train[0]["image"].shape == (3, 16, 16)


def test_demo_data_uses_its_patient_lists():
    train, val = build_datasets(DataConfig(root=str(demo_lidc_root()), image_size=32, max_cases=20))
    listed = set((demo_lidc_root() / "val_patients.txt").read_text().split())
    assert set(val.patients) <= listed and not set(train.patients) & listed
    assert len(train) == 20 and len(val) >= 1
    assert (demo_lidc_root() / "ATTRIBUTION.md").read_text().count("CC BY 3.0") == 1


@pytest.mark.realdata
def test_real_ddti_split_by_patient(tmp_path):
    root = shared("ddti")
    train, val = build_datasets(DataConfig(root=str(root), image_size=32, max_cases=40, val_fraction=0.2))
    assert not set(train.patients) & set(val.patients)
    assert train[0]["image"].shape == (1, 32, 32)


@pytest.mark.realdata
def test_real_lidc_lists_have_no_overlap():
    shared("lidc")
    train_ids = set((SHARED / "lidc" / "train_patients.txt").read_text().split())
    val_ids = set((SHARED / "lidc" / "val_patients.txt").read_text().split())
    assert train_ids and val_ids and not train_ids & val_ids


def test_model_input_matches_training_preprocessing(tmp_path):
    root = paired(tmp_path / "d", n=2, size=24)
    reader = open_dataset(root)
    train, _ = build_datasets(DataConfig(root=str(root), image_size=16, augment=False, val_fraction=0.0))
    case = reader[0]
    index = train.case_ids.index(case.case_id)
    expected = train[index]["image"]
    assert torch.allclose(model_input(case.image, 16, 1, case.case_id), expected, atol=2e-3)  # cache is float16


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
