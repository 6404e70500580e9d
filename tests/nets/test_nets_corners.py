"""Corners treated alike: with flip-symmetric kernels the network commutes with flips and transposes.

A stride-2 3x3 convolution (``downsample=conv``, the papers' UNets) samples pixels 0, 2, ..., H-2: it reads the
top and left borders through its padding and never the bottom and right ones, so no network built with it can
treat the four corners alike; ``downsample=centred`` (2x2 average, then a 3x3 convolution) can.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffuseg.data.transforms import resize_pair, rotate_pair
from diffuseg.nets.blocks import Downsample, Upsample
from diffuseg.nets.unet import DiffusionUNet

TRANSFORMS = {
    "flip_w": lambda x: x.flip(-1),
    "flip_h": lambda x: x.flip(-2),
    "rot180": lambda x: x.flip(-2, -1),
    "transpose": lambda x: x.transpose(-1, -2),
}


def symmetrise(net: nn.Module) -> nn.Module:
    """Average every spatial kernel over the 8 flips/turns of the square, so the kernels favour no side."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1:
                w = m.weight
                turns = [w, w.flip(-1), w.flip(-2), w.flip(-2, -1)]
                m.weight.copy_(sum(turns + [t.transpose(-1, -2) for t in turns]) / 8)
    return net


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_centred_unet_treats_corners_alike(name):
    torch.manual_seed(0)
    tf = TRANSFORMS[name]
    net = symmetrise(
        DiffusionUNet(
            1, channels=[8, 8, 16], num_res_blocks=[1, 1, 1], middle_blocks=1, time_dim=16, downsample="centred"
        )
    ).eval()
    image, x_t, t = torch.rand(2, 1, 32, 32), torch.randn(2, 1, 32, 32), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        assert _relative_error(net(tf(x_t), t, tf(image)), tf(net(x_t, t, image))) < 1e-4


def test_strided_conv_downsampling_does_not():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 16, 16)
    strided, centred = symmetrise(Downsample(8, kind="conv")), symmetrise(Downsample(8, kind="centred"))
    with torch.no_grad():
        assert _relative_error(strided(x.flip(-1)), strided(x).flip(-1)) > 0.1
        assert _relative_error(centred(x.flip(-1)), centred(x).flip(-1)) < 1e-5
        up = symmetrise(Upsample(8))
        assert _relative_error(up(x.flip(-2)), up(x).flip(-2)) < 1e-5


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
