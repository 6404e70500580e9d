"""The training dataset: items, augmentation and annotator draws seeded per epoch, classes through the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datafixtures import ACDC, lidc, shared, ssl4mis
from PIL import Image

from diffuseg.config import DataConfig
from diffuseg.data import demo_lidc_root
from diffuseg.data.dataset import build_datasets
from diffuseg.data.synthetic import write_synthetic
from diffuseg.errors import UserError
from diffuseg.presets import load_config


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


def test_build_datasets_atom_maps_through_the_cache(tmp_path):
    root = ssl4mis(tmp_path / "d")
    cfg = DataConfig(root=str(root), classes=ACDC, image_size=8, augment=True, cache_dir=str(tmp_path / "cache"))
    train, val = build_datasets(cfg)
    assert len(train) == 4 and len(val) == 3  # the slices of train.list, the volume of val.list
    assert train.scheme.names == ("RV", "Myo", "LV") and train.scheme.channels == 4
    item = train[0]
    assert item["mask"].shape == (1, 8, 8) and set(item["mask"].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert len(item["mask"].unique()) == 4  # quadrants survive the resize and any flip or turn
    again, _ = build_datasets(cfg)  # from the memory-mapped cache
    assert torch.equal(again.arrays.item(0)[1], train.arrays.item(0)[1])
    assert again.arrays.masks.shape[-1] == 8 and again.arrays.atoms == 3


def test_all_empty_training_masks_print_a_warning(tmp_path, capsys):
    data = tmp_path / "data"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    for k in range(4):
        Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(data / "images" / f"p{k}_c.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(data / "masks" / f"p{k}_c.png")
    config = load_config("lidc-central", [f"data.root={data}", "data.layout=paired", "data.image_size=8"])
    build_datasets(config.data)
    assert "every training mask is empty" in capsys.readouterr().err
    Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(data / "masks" / "p0_c.png")
    Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(data / "masks" / "p1_c.png")
    build_datasets(config.data)
    assert "every training mask is empty" not in capsys.readouterr().err
