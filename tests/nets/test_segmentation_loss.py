"""The deterministic UNet's loss over classes, checked by hand on 2x2 label maps."""

from __future__ import annotations

import math

import pytest
import torch

from diffuseg.nets.unet import dice_bce_loss, segmentation_loss


def one_hot(atoms: list, channels: int) -> torch.Tensor:
    """(H, W) atom lists -> (1, C, H, W) one-hot."""
    return torch.nn.functional.one_hot(torch.tensor(atoms), channels).movedim(-1, 0)[None].float()


def test_binary_is_dice_bce_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, generator=g)
    target = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).float()
    assert torch.equal(segmentation_loss(logits, target), dice_bce_loss(logits, target))
    assert torch.equal(segmentation_loss(logits, target, exclusive=False), dice_bce_loss(logits, target))


def test_exclusive_classes_by_hand():
    """Label map [[0, 1], [2, 1]] and softmax probabilities (bg, c1, c2) per pixel chosen so that every true class
    gets 1/2: cross-entropy = log 2. Dice (smooth 1) of c1: sum p = 1.5, sum y = 2, sum p y = 1 -> 3 / 4.5;
    of c2: sum p = 1.25, sum y = 1, sum p y = 0.5 -> 2 / 3.25; the background is left out."""
    p = torch.tensor(
        [
            [[0.50, 0.25], [0.25, 0.25]],  # background
            [[0.25, 0.50], [0.25, 0.50]],  # class 1
            [[0.25, 0.25], [0.50, 0.25]],  # class 2
        ]
    )[None]
    target = one_hot([[0, 1], [2, 1]], 3)
    dice_loss = ((1 - 3 / 4.5) + (1 - 2 / 3.25)) / 2  # = 14 / 39
    expected = math.log(2.0) + dice_loss
    assert float(segmentation_loss(p.log(), target)) == pytest.approx(expected, rel=1e-6)
    assert dice_loss == pytest.approx(14 / 39, rel=1e-12)


def test_regions_by_hand():
    """Two overlapping regions, logits 0 (p = 1/2 everywhere): BCE = log 2; Dice of r1 [[1, 1], [0, 0]]:
    (2 * 1 + 1) / (2 + 2 + 1) = 3/5, of r2 [[1, 0], [0, 0]]: (2 * 0.5 + 1) / (2 + 1 + 1) = 1/2."""
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])[None]
    loss = segmentation_loss(torch.zeros(1, 2, 2, 2), target, exclusive=False)
    assert float(loss) == pytest.approx(math.log(2.0) + ((1 - 3 / 5) + (1 - 1 / 2)) / 2, rel=1e-6)


def test_a_perfect_prediction_is_the_minimum():
    g = torch.Generator().manual_seed(1)
    atoms = torch.randint(4, (2, 8, 8), generator=g)
    target = torch.nn.functional.one_hot(atoms, 4).movedim(-1, 1).float()
    perfect = 30.0 * (2 * target - 1)
    for exclusive in (True, False):
        best = float(segmentation_loss(perfect, target, exclusive))
        assert 0.0 <= best < 1e-6
        for _ in range(5):
            noisy = perfect + 40.0 * torch.randn(perfect.shape, generator=g)
            assert float(segmentation_loss(noisy, target, exclusive)) > best


def test_the_gradient_pushes_the_true_class_up():
    target = one_hot([[0, 1], [2, 1]], 3)
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    segmentation_loss(logits, target).backward()
    assert (logits.grad[target.bool()] < 0).all() and (logits.grad[~target.bool()] > 0).all()
