"""Shared blocks: GroupNorm groups, sinusoidal time features, residual block, attention, resampling, and
partial-convolution padding.

A stride-2 3x3 convolution (``downsample=conv``, the papers' UNets) samples pixels 0, 2, ..., H-2: it reads the
top and left borders through its padding and never the bottom and right ones, so no network built with it can
treat the four corners alike; ``downsample=centred`` (2x2 average, then a 3x3 convolution) can.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffuseg.nets.blocks import (
    Attention,
    Downsample,
    PartialPadConv2d,
    ResBlock,
    TimeEmbedding,
    Upsample,
    conv3x3,
    group_count,
    sinusoidal_embedding,
)
from symmetries import relative_error, symmetrise


@pytest.mark.parametrize(("channels", "groups"), [(32, 32), (64, 32), (352, 32), (48, 24), (36, 18), (8, 8), (1, 1)])
def test_group_count_is_32_or_largest_divisor(channels: int, groups: int) -> None:
    assert group_count(channels) == groups


def test_sinusoidal_embedding_by_hand() -> None:
    # t = 0.001 is step 1 after the x1000 scaling: features are cos(f_i), sin(f_i), f_i = 10000^(-i/4)
    emb = sinusoidal_embedding(torch.tensor([0.0, 0.001]), 8)
    freqs = [10000 ** (-i / 4) for i in range(4)]
    expected = [math.cos(f) for f in freqs] + [math.sin(f) for f in freqs]
    assert emb.shape == (2, 8)
    assert torch.allclose(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert torch.allclose(emb[1], torch.tensor(expected), atol=1e-6)
    assert sinusoidal_embedding(torch.rand(3), 7).shape == (3, 7)  # odd width is zero-padded


def test_time_embedding_distinguishes_times() -> None:
    torch.manual_seed(0)
    emb = TimeEmbedding(16, 64)(torch.tensor([0.1, 0.1, 0.9]))
    assert emb.shape == (3, 64)
    assert torch.equal(emb[0], emb[1]) and not torch.allclose(emb[0], emb[2])


def test_resblock_shapes_skip_and_time() -> None:
    torch.manual_seed(0)
    x, emb = torch.randn(2, 8, 8, 8), torch.randn(2, 32)
    changing, same = ResBlock(8, 16, 32), ResBlock(8, 8, 32)
    assert changing(x, emb).shape == (2, 16, 8, 8)
    assert isinstance(changing.skip, torch.nn.Conv2d) and changing.skip.kernel_size == (1, 1)
    assert isinstance(same.skip, torch.nn.Identity)
    assert not torch.allclose(changing(x, emb), changing(x, emb + 1.0))  # time enters the block
    untimed = ResBlock(8, 16, None)
    assert untimed.emb_proj is None and untimed(x).shape == (2, 16, 8, 8)


def test_attention_is_equivariant_to_pixel_permutations() -> None:
    # No positional terms: permuting the pixels of the input permutes the output the same way.
    torch.manual_seed(0)
    attn = Attention(16)
    x = torch.randn(2, 16, 4, 4)
    perm = torch.randperm(16)
    permuted_in = x.flatten(2)[:, :, perm].reshape_as(x)
    out, permuted_out = attn(x), attn(permuted_in)
    assert torch.allclose(out.flatten(2)[:, :, perm].reshape_as(x), permuted_out, atol=1e-5)
    assert not torch.allclose(out, x)


def test_resampling_shapes() -> None:
    x = torch.randn(1, 8, 12, 12)
    assert Downsample(8)(x).shape == (1, 8, 6, 6)
    assert Downsample(8, 16)(x).shape == (1, 16, 6, 6)
    assert Upsample(8, 4)(x).shape == (1, 4, 24, 24)


def test_strided_conv_downsampling_does_not():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 16, 16)
    strided, centred = symmetrise(Downsample(8, kind="conv")), symmetrise(Downsample(8, kind="centred"))
    with torch.no_grad():
        assert relative_error(strided(x.flip(-1)), strided(x).flip(-1)) > 0.1
        assert relative_error(centred(x.flip(-1)), centred(x).flip(-1)) < 1e-5
        up = symmetrise(Upsample(8))
        assert relative_error(up(x.flip(-2)), up(x).flip(-2)) < 1e-5


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


def test_partial_padding_ratio_made_while_sampling_serves_a_later_training_step():
    conv = conv3x3(1, 2, padding="partial")
    x = torch.randn(1, 1, 8, 8)
    with torch.inference_mode():  # sampled validation meets this size first
        conv(x)
    conv(x).sum().backward()  # a training step at the same size: its ratio is saved for backward
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
