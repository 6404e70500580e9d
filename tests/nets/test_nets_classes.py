"""Every network takes and returns C class channels (C = 4: three exclusive classes and the background)."""

from __future__ import annotations

import pytest
import torch

from diffuseg.errors import UserError
from diffuseg.nets.registry import NETWORKS, allowed_options, build_network, takes_mask

C = 4
# Tiny options per registry name; inputs are max(16, downsampling) pixels wide (MedSegDiff-L: 64).
TINY = {
    "medsegdiff-s": {"base_channels": 4},
    "medsegdiff-b": {"base_channels": 4},
    "medsegdiff-l": {"base_channels": 4},
    "medsegdiff-s-segmenter": {"base_channels": 4},
    "medsegdiff-b-segmenter": {"base_channels": 4},
    "medsegdiff-l-segmenter": {"base_channels": 4},
    "diffusion-unet": {"channels": [8, 8, 16], "num_res_blocks": [1, 1, 1], "middle_blocks": 1, "time_dim": 16},
    "unet": {"channels": [8, 8, 16], "num_res_blocks": [1, 1, 1], "middle_blocks": 1},
    "probunet": {"latent_dim": 2, "filters": [8, 16], "convs_per_block": 1, "kl_samples": 4},
    "probunet-aa-mix": {"latent_dim": 2, "components": 2, "filters": [8, 16], "convs_per_block": 1},
    "probunet-fc": {"latent_dim": 2, "filters": [8, 16], "convs_per_block": 1},
    "probunet-fc-mix": {"latent_dim": 2, "components": 2, "filters": [8, 16], "convs_per_block": 1},
    "probunet-unet": {"filters": [8, 16], "convs_per_block": 1, "time_dim": 16},
    "phiseg": {"resolution_levels": 3, "latent_levels": 2, "n0": 8, "zdim": 2},
}
ONE_PASS = {"unet", "medsegdiff-s-segmenter", "medsegdiff-b-segmenter", "medsegdiff-l-segmenter"}  # net(image)


def _size(net: torch.nn.Module) -> int:
    return max(16, net.downsampling)


def _call(name: str, net: torch.nn.Module, image: torch.Tensor, x_t_channels: int, members: int = 2) -> torch.Tensor:
    """One forward pass as the family runs it: x_t of ``x_t_channels`` for diffusion, prior samples otherwise."""
    b, size = image.shape[0], image.shape[-1]
    if takes_mask(name):
        x_t = torch.randn(b * members, x_t_channels, size, size)
        return net(x_t, torch.full((b * members,), 0.5), image)
    if name in ONE_PASS:
        return net(image)
    return net.sample_logits(image, members, torch.Generator().manual_seed(0))


def test_every_network_has_tiny_options():
    assert set(TINY) == set(NETWORKS)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_network_builds_with_c_channels_and_returns_them(name):
    torch.manual_seed(0)
    net = build_network(name, 2, C, **TINY[name]).eval()
    size = _size(net)
    with torch.no_grad():
        out = _call(name, net, torch.randn(3, 2, size, size), C)
    rows = 3 if name in ONE_PASS else 6
    assert out.shape == (rows, C, size, size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", [n for n in NETWORKS if takes_mask(n)])
def test_diffusion_networks_keep_mask_and_output_channels_apart(name):
    """x_t may carry more channels than the prediction (e.g. 2C for self-conditioning)."""
    net = build_network(name, 1, C, mask_channels=2 * C, **TINY[name]).eval()
    size = _size(net)
    with torch.no_grad():
        out = _call(name, net, torch.randn(1, 1, size, size), 2 * C)
        assert out.shape == (2, C, size, size)
        with pytest.raises(RuntimeError):  # the stem reads 2C channels, not C
            _call(name, net, torch.randn(1, 1, size, size), C)


@pytest.mark.parametrize("name", ["probunet", "phiseg"])
def test_latent_posteriors_read_the_c_channel_one_hot(name):
    net = build_network(name, 1, C, **TINY[name]).eval()
    size = 16
    one_hot = torch.nn.functional.one_hot(torch.randint(C, (2, size, size)), C).movedim(-1, 1).float()
    image = torch.randn(2, 1, size, size)
    with torch.no_grad():
        if name == "phiseg":
            posterior = net.posterior(image, one_hot, torch.Generator().manual_seed(0))
            assert net(image, posterior.z).shape == (2, C, size, size)
        else:
            z = net.posterior(image, one_hot).rsample(1, torch.Generator().manual_seed(0))
            assert net(image, z).shape == (2, C, size, size)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_binary_default_builds_the_same_network_as_one_channel(name):
    """C = 1 is the default: same parameters, same initial weights for a seed (old checkpoints load)."""
    torch.manual_seed(3)
    default = build_network(name, 1, **TINY[name])
    torch.manual_seed(3)
    explicit = build_network(name, 1, 1, **TINY[name])
    a, b = default.state_dict(), explicit.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_channel_counts_are_not_model_options():
    assert not {"in_channels", "out_channels", "mask_channels"} & set(allowed_options("diffusion-unet"))


def test_bad_channel_counts_are_user_errors():
    with pytest.raises(UserError, match="out_channels must be a positive integer"):
        build_network("unet", 1, 0)
    with pytest.raises(UserError, match="takes no noisy mask"):
        build_network("unet", 1, 4, mask_channels=4)
