"""Corners treated alike: with flip-symmetric kernels the network commutes with flips and transposes.

A stride-2 3x3 convolution (``downsample=conv``, the papers' UNets) samples pixels 0, 2, ..., H-2: it reads the
top and left borders through its padding and never the bottom and right ones, so no network built with it can
treat the four corners alike; ``downsample=centred`` (2x2 average, then a 3x3 convolution) can, with zero or
partial-convolution padding. The augmentation draws the 8 symmetries of the square equally often, so training
shows the network each corner alike.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffuseg.data.transforms import Augment, resize_pair, rotate_pair
from diffuseg.nets.blocks import Downsample, PartialPadConv2d, Upsample, conv3x3
from diffuseg.nets.unet import DiffusionUNet

TRANSFORMS = {
    "flip_w": lambda x: x.flip(-1),
    "flip_h": lambda x: x.flip(-2),
    "rot180": lambda x: x.flip(-2, -1),
    "transpose": lambda x: x.transpose(-1, -2),
}


# the 7 symmetries of the square other than the identity
SYMMETRIES = (
    *TRANSFORMS.values(),
    lambda x: x.transpose(-1, -2).flip(-1, -2),  # anti-transpose
    lambda x: torch.rot90(x, 1, (-2, -1)),
    lambda x: torch.rot90(x, -1, (-2, -1)),
)


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


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_padding_rescales_the_border_to_the_interior(stride):
    zeros, partial = conv3x3(1, 1, stride, "zeros"), conv3x3(1, 1, stride, "partial")
    assert isinstance(partial, PartialPadConv2d)
    with torch.no_grad():
        for conv in (zeros, partial):
            conv.weight.fill_(1.0 / 9)
            conv.bias.fill_(0.5)
        x = torch.full((1, 1, 8, 8), 2.0)
        assert torch.allclose(partial(x), torch.full_like(partial(x), 2.5))  # a uniform kernel: flat everywhere
        corner = 2.0 * 4 / 9 + 0.5  # zero padding: 4 of the 9 taps of output (0, 0) fall inside
        assert torch.isclose(zeros(x)[0, 0, 0, 0], torch.tensor(corner))
        x = torch.randn(2, 1, 8, 8)
        assert torch.allclose(partial(x)[..., 1:-1, 1:-1], zeros(x)[..., 1:-1, 1:-1], atol=1e-6)  # interior: unchanged


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


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_medsegdiff_with_centred_downsampling_and_partial_padding_treats_corners_alike(name):
    from diffuseg.nets.medsegdiff import MedSegDiff

    torch.manual_seed(0)
    tf = TRANSFORMS[name]
    options = {"downsample": "centred", "padding": "partial"}  # FF-Parser as initialised: the identity
    net = symmetrise(MedSegDiff(1, [1, 1, 1, 1], [8, 8, 16, 16], decoder_blocks=1, **options)).eval()
    image, x_t, t = torch.rand(2, 1, 32, 32), torch.randn(4, 1, 32, 32), torch.tensor([0.3, 0.3, 0.8, 0.8])
    with torch.no_grad():
        assert _relative_error(net(tf(x_t), t, tf(image)), tf(net(x_t, t, image))) < 1e-4
        if name != "transpose":  # the strided conv treats a transpose alike, not the flips
            paper = symmetrise(MedSegDiff(1, [1, 1, 1, 1], [8, 8, 16, 16], decoder_blocks=1)).eval()
            assert _relative_error(paper(tf(x_t), t, tf(image)), tf(paper(x_t, t, image))) > 0.1
