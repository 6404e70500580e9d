"""The ambiguity paper's diffusion UNet, the deterministic baseline and the Dice + BCE loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from diffuseg.nets.blocks import Attention
from diffuseg.nets.unet import DiffusionUNet, SegmentationUNet, dice_bce_loss

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
