"""The ambiguity paper's diffusion UNet (corners treated alike with centred downsampling), the deterministic
baseline, and its losses checked by hand (Dice + BCE; Dice + cross-entropy over classes on 2x2 label maps).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from diffuseg.nets.blocks import Attention
from diffuseg.nets.unet import DiffusionUNet, SegmentationUNet, dice_bce_loss, segmentation_loss
from symmetries import TRANSFORMS, relative_error, symmetrise

TINY = {"channels": (8, 8, 16, 16), "num_res_blocks": (1, 1, 2, 2), "middle_blocks": 2, "time_dim": 32}


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_paper_structure_and_parameter_count() -> None:
    net = DiffusionUNet(1)
    assert sum(isinstance(m, Attention) for m in net.modules()) == 12  # 4 encoder + 4 middle + 4 decoder
    assert net.downsampling == 8
    assert [len(level.blocks) for level in net.down] == [1, 2, 3, 4]
    assert len(net.middle.blocks) == 4
    assert abs(_params(net) - 6_891_905) / 6_891_905 < 0.01  # Table 1 of the ambiguity paper


@pytest.mark.parametrize(("size", "channels", "members"), [(16, 1, 1), (24, 3, 2), (32, 4, 3), (64, 1, 1)])
def test_output_shape(size: int, channels: int, members: int) -> None:
    torch.manual_seed(0)
    net = DiffusionUNet(channels, **TINY)
    image = torch.randn(2, channels, size, size)
    x_t = torch.randn(2 * members, 1, size, size)
    with torch.no_grad():
        out = net(x_t, torch.rand(2 * members), image)
    assert out.shape == (2 * members, 1, size, size)


def test_paper_widths_at_128px() -> None:
    torch.manual_seed(0)
    net = DiffusionUNet(1)
    with torch.no_grad():
        assert net(torch.randn(1, 1, 128, 128), torch.rand(1), torch.randn(1, 1, 128, 128)).shape == (1, 1, 128, 128)


def test_members_match_repeated_images() -> None:
    torch.manual_seed(0)
    net = DiffusionUNet(3, **TINY)
    image, x_t = torch.randn(2, 3, 16, 16), torch.randn(6, 1, 16, 16)
    t = torch.rand(2).repeat_interleave(3)
    with torch.no_grad():
        assert torch.allclose(net(x_t, t, image), net(x_t, t, image.repeat_interleave(3, 0)), atol=1e-6)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    diffusion = DiffusionUNet(2, **TINY)
    baseline = SegmentationUNet(2, **{k: v for k, v in TINY.items() if k != "time_dim"})
    diffusion(torch.randn(2, 1, 16, 16), torch.rand(2), torch.randn(2, 2, 16, 16)).square().mean().backward()
    baseline(torch.randn(2, 2, 16, 16)).square().mean().backward()
    for net in (diffusion, baseline):
        assert not [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]


def test_deterministic_baseline_has_no_time_or_mask_input() -> None:
    torch.manual_seed(0)
    net = SegmentationUNet(3)
    assert net.net.time_embed is None and net.net.stem.in_channels == 3
    assert _params(net) < _params(DiffusionUNet(3))
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        first = net(image)
        assert first.shape == (2, 1, 32, 32) and torch.equal(first, net(image))


def test_feature_backbone_for_other_networks() -> None:
    net = DiffusionUNet(1, mask_channels=0, time_embedding=False, head=False, **TINY)
    assert net.out_channels == 8
    assert net.features(torch.randn(1, 1, 16, 16)).shape == (1, 8, 16, 16)


def test_dice_bce_loss_by_hand() -> None:
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere: Dice = (2*0.5 + 1) / (2 + 1 + 1) = 0.5, BCE = log 2
    assert torch.isclose(dice_bce_loss(logits, target), torch.tensor(0.5 + math.log(2.0)))
    perfect = (target * 2 - 1) * 50.0
    assert dice_bce_loss(perfect, target) < 1e-6
    empty = torch.zeros(2, 1, 4, 4)
    assert dice_bce_loss(torch.full_like(empty, -50.0), empty) < 1e-6  # two empty masks: no loss
    logits = torch.randn(3, 1, 8, 8)
    target = (torch.rand(3, 1, 8, 8) > 0.5).float()
    prob = torch.sigmoid(logits).flatten(1)
    dice = (2 * (prob * target.flatten(1)).sum(1) + 1) / (prob.sum(1) + target.flatten(1).sum(1) + 1)
    expected = (1 - dice).mean() + F.binary_cross_entropy(torch.sigmoid(logits), target)
    assert torch.isclose(dice_bce_loss(logits, target), expected, atol=1e-5)


def test_channels_last_bf16_autocast() -> None:
    torch.manual_seed(0)
    net = DiffusionUNet(1, **TINY).to(memory_format=torch.channels_last)
    image, x_t, t = torch.randn(1, 1, 16, 16), torch.randn(2, 1, 16, 16), torch.rand(1).repeat(2)
    with torch.no_grad():
        ref = net(x_t, t, image)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x_t.contiguous(memory_format=torch.channels_last), t, image)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.1 * ref.abs().mean() + 1e-2


def _tiny_unet(**options) -> DiffusionUNet:
    return DiffusionUNet(1, channels=[8, 8, 16], num_res_blocks=[1, 1, 1], middle_blocks=1, time_dim=16, **options)


@pytest.mark.parametrize("padding", ["zeros", "partial"])
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_centred_unet_treats_corners_alike(name, padding):
    torch.manual_seed(0)
    tf = TRANSFORMS[name]
    net = symmetrise(_tiny_unet(downsample="centred", padding=padding)).eval()
    image, x_t, t = torch.rand(2, 1, 32, 32), torch.randn(2, 1, 32, 32), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        assert relative_error(net(tf(x_t), t, tf(image)), tf(net(x_t, t, image))) < 1e-4


def test_partial_padding_under_bf16_autocast_and_channels_last():
    net = _tiny_unet(downsample="centred", padding="partial").to(memory_format=torch.channels_last)
    x_t = torch.randn(2, 1, 32, 32).to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x_t, torch.tensor([0.3, 0.8]), torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out.float()).all()


def test_padding_keeps_the_parameters():
    zeros, partial = _tiny_unet(padding="zeros"), _tiny_unet(padding="partial")
    shapes = {k: v.shape for k, v in zeros.state_dict().items()}
    assert shapes == {k: v.shape for k, v in partial.state_dict().items()}
    partial.load_state_dict(zeros.state_dict())  # one checkpoint format for both


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
