"""Paired transforms: resizing, augmentation, the random crop and the model input, images and masks alike."""

from __future__ import annotations

import pytest
import torch
from datafixtures import label_map, paired

from diffuseg.config import DataConfig
from diffuseg.data.dataset import build_datasets
from diffuseg.data.formats import open_dataset
from diffuseg.data.transforms import Augment, model_input, random_crop, resize_pair, rotate_pair
from symmetries import SYMMETRIES, TRANSFORMS


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


def test_model_input_matches_training_preprocessing(tmp_path):
    root = paired(tmp_path / "d", n=2, size=24)
    reader = open_dataset(root)
    train, _ = build_datasets(DataConfig(root=str(root), image_size=16, augment=False, val_fraction=0.0))
    case = reader[0]
    index = train.case_ids.index(case.case_id)
    expected = train[index]["image"]
    assert torch.allclose(model_input(case.image, 16, 1, case.case_id), expected, atol=2e-3)  # cache is float16


def test_resize_atoms_matches_binary_rule_and_keeps_classes():
    masks = torch.from_numpy(label_map(16))[None]
    image = torch.zeros(1, 16, 16)
    _, small = resize_pair(image, masks, 8, atoms=3)
    assert small[0].tolist() == label_map(8).tolist()
    noisy = torch.randint(0, 4, (2, 16, 16), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    _, out = resize_pair(torch.zeros(1, 16, 16), noisy, 8, atoms=3)
    _, flipped = resize_pair(torch.zeros(1, 16, 16), noisy.flip(-1), 8, atoms=3)
    assert torch.equal(flipped, out.flip(-1))  # weights 1/8, 3/8: exact sums, so flips commute exactly


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_resize_and_rotation_commute_with_flips(name):
    tf = TRANSFORMS[name]
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 40, 40, generator=g)
    masks = (torch.rand(3, 40, 40, generator=g) > 0.6).to(torch.uint8)
    for size in (16, 20, 64):
        img, msk = resize_pair(image, masks, size)
        img_t, msk_t = resize_pair(tf(image), tf(masks), size)
        assert torch.allclose(img_t, tf(img), atol=1e-5)
        assert torch.equal(msk_t, tf(msk))
    if name == "rot180":  # a turn commutes with a rotation of the same centre
        img, msk = rotate_pair(image, masks, 10.0)
        img_t, msk_t = rotate_pair(tf(image), tf(masks), 10.0)
        assert torch.allclose(img_t, tf(img), atol=1e-5) and (msk_t != tf(msk)).float().mean() < 0.01


def test_augmentation_draws_every_symmetry_of_the_square_equally():
    augment = Augment(rotation=0.0, contrast=0.0, brightness=0.0, gamma=0.0)
    image = torch.arange(16.0).reshape(1, 4, 4)  # no two symmetries give the same image
    variants = [tf(image) for tf in (lambda x: x, *SYMMETRIES)]
    g, counts = torch.Generator().manual_seed(0), [0] * len(variants)
    draws = 4000
    for _ in range(draws):
        out, _ = augment(image, image.new_zeros((0, 4, 4), dtype=torch.uint8), g)
        counts[next(i for i, v in enumerate(variants) if torch.equal(out, v))] += 1
    assert min(counts) > 0.8 * draws / 8 and max(counts) < 1.2 * draws / 8, counts
