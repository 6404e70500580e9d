"""The anchored network: a segmenter trunk with its features exposed, and a diffusion head that sees them
detached."""

from __future__ import annotations

import pytest
import torch

from diffuseg.nets.anchored import AnchoredNet, anchored_net
from diffuseg.nets.registry import build_network

UNET = {"channels": [8, 8, 16], "num_res_blocks": [1, 1, 1], "middle_blocks": 1}
SIZE = 16


def tiny(classes: int = 1, trunk: str = "unet", **options) -> AnchoredNet:
    torch.manual_seed(0)
    return anchored_net(build_network(trunk, 1, classes, **(options or UNET)), 1, classes, classes, (8, 16), 1, 16)


@pytest.mark.parametrize("name", ["unet", "medsegdiff-s-segmenter"])
def test_a_trunk_is_its_forward_in_two_parts(name):
    options = UNET if name == "unet" else {"base_channels": 4}
    torch.manual_seed(0)
    trunk = build_network(name, 1, 4, **options).eval()
    size = max(SIZE, trunk.downsampling)
    image = torch.randn(2, 1, size, size)
    features = trunk.features(image)
    assert features.shape == (2, trunk.feature_channels, size, size)
    assert torch.equal(trunk.logits(features), trunk(image))


def test_the_net_is_the_trunk_and_a_head_over_its_condition():
    net = tiny(classes=4).eval()
    image = torch.randn(2, 1, SIZE, SIZE)
    features, logits = net.prior(image)
    assert torch.equal(logits, net.trunk(image)) and torch.equal(net(image), logits)
    mu = torch.tanh(logits)
    condition = net.condition(image, features, mu)
    assert condition.shape == (2, 1 + 8 + 4, SIZE, SIZE)
    out = net.denoise(torch.randn(6, 4, SIZE, SIZE), torch.full((6,), 0.5), condition)  # 3 members per image
    assert out.shape == (6, 4, SIZE, SIZE)
    assert net.downsampling == 4  # the trunk's (3 levels) over the head's 2 (2 levels)


@pytest.mark.parametrize(("trunk_features", "mu_input"), [(False, True), (True, False), (False, False)])
def test_the_head_may_see_less_than_the_image_features_and_mu(trunk_features, mu_input):
    torch.manual_seed(0)
    trunk = build_network("unet", 1, 4, **UNET)
    net = anchored_net(trunk, 1, 4, 4, (8, 16), 1, 16, trunk_features=trunk_features, mu_input=mu_input).eval()
    image = torch.randn(2, 1, SIZE, SIZE)
    features, logits = net.prior(image)
    mu = torch.tanh(logits)
    condition = net.condition(image, features, mu)
    seen = [image, *([features] if trunk_features else []), *([mu] if mu_input else [])]
    assert torch.equal(condition, torch.cat(seen, 1))
    assert net.denoise(torch.randn(2, 4, SIZE, SIZE), torch.full((2,), 0.5), condition).shape == (2, 4, SIZE, SIZE)


def test_a_patched_head_sees_the_full_resolution_inputs_rearranged_and_answers_at_full_resolution():
    torch.manual_seed(0)
    trunk = build_network("unet", 1, 4, **UNET)
    net = anchored_net(trunk, 1, 4, 4, (8, 16), 1, 16, patch=2).eval()
    assert net.downsampling == 4 and net.head.stem.in_channels == 4 * (1 + 8 + 4 + 4)  # condition and x_t, in 2 x 2
    image = torch.randn(2, 1, SIZE, SIZE)
    features, logits = net.prior(image)
    mu = torch.tanh(logits)
    condition = net.condition(image, features, mu)
    assert condition.shape == (2, 4 * (1 + 8 + 4), SIZE // 2, SIZE // 2)
    seen = torch.cat([image, features, mu], 1)  # the patch at (row 2i + a, column 2j + b) is channel 4c + 2a + b
    assert torch.equal(condition[:, 4 * 9 + 2 : 4 * 9 + 3, 3, 5], seen[:, 9:10, 7, 10])
    x_t, t = torch.randn(6, 4, SIZE, SIZE), torch.full((6,), 0.5)
    out = net.denoise(x_t, t, condition)
    assert out.shape == (6, 4, SIZE, SIZE)
    inner = net.head(torch.nn.functional.pixel_unshuffle(x_t, 2), t, condition)
    assert torch.equal(out[:, 1, 7, 10], inner[:, 4 * 1 + 2 * 1 + 0, 3, 5])  # channel 4c + 2a + b back in place


def test_the_image_size_must_divide_by_the_trunks_and_the_patched_heads_downsampling():
    trunk = build_network("unet", 1, 1, **UNET)  # downsamples 4x
    assert anchored_net(trunk, 1, 1, 1, (8, 16), 1, 16, patch=3).downsampling == 12  # the head's 2 x 3, and 4


def test_no_gradient_of_the_head_reaches_the_trunk():
    net = tiny()
    image = torch.randn(2, 1, SIZE, SIZE)
    features, logits = net.prior(image)
    condition = net.condition(image, features, torch.tanh(logits))
    net.denoise(torch.randn(2, 1, SIZE, SIZE), torch.full((2,), 0.3), condition).square().sum().backward()
    assert all(p.grad is None for p in net.trunk.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.head.parameters())


def test_a_network_without_features_cannot_be_the_trunk():
    with pytest.raises(TypeError, match="cannot be an anchored trunk"):
        AnchoredNet(torch.nn.Conv2d(1, 1, 1), tiny().head)
