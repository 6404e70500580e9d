"""``nets.ssn``: the SSN's shapes, its covariance (the one built, by the moments of many draws), the member-generator
contract and the mean head shared with the deterministic UNet."""

from __future__ import annotations

import pytest
import torch

from diffuseg.nets.ssn import LogitDistribution, StochasticSegNet
from diffuseg.nets.unet import SegmentationUNet

TINY = {"channels": (8, 8, 16), "num_res_blocks": (1, 1, 1), "middle_blocks": 1}


def tiny_ssn(classes: int = 1, rank: int = 3, seed: int = 0) -> StochasticSegNet:
    torch.manual_seed(seed)
    return StochasticSegNet(SegmentationUNet(1, out_channels=classes, **TINY), classes, rank=rank).eval()


def image(batch: int = 2, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("classes", [1, 4])
def test_shapes_of_the_distribution_and_the_draws(classes):
    net, x = tiny_ssn(classes, rank=3), image()
    with torch.no_grad():
        dist = net.logit_distribution(x)
        n = classes * 16 * 16
        assert dist.loc.shape == (2, n) and dist.cov_diag.shape == (2, n) and dist.cov_factor.shape == (2, n, 3)
        assert dist.shape == (classes, 16, 16) and bool((dist.cov_diag >= net.epsilon).all())
        assert net(x).shape == (2, classes, 16, 16)
        assert net.sample_logits(x, 5, torch.Generator().manual_seed(0)).shape == (10, classes, 16, 16)
        assert dist.antithetic_sample(4, torch.Generator().manual_seed(0)).shape == (4, 2, classes, 16, 16)
        torch_dist = dist.distribution()
        assert torch_dist.batch_shape == (2,) and torch_dist.event_shape == (n,)


def test_the_mean_is_the_backbone_s_own_prediction():
    """mu is the deterministic UNet's output on the same weights: an SSN adds only its covariance head."""
    net, x = tiny_ssn(2), image()
    with torch.no_grad():
        mu = net.logit_distribution(x).loc.reshape(2, 2, 16, 16)
        torch.testing.assert_close(mu, net.backbone(x))
        torch.testing.assert_close(net(x), net.backbone(x))
    extra = sum(p.numel() for p in net.covariance.parameters())
    assert extra == 2 * 8 + 8 * 2 * (1 + 3) + 2 * (1 + 3)  # GroupNorm, 1x1 conv weights and biases


def test_the_sample_covariance_of_many_draws_is_the_one_built():
    """On a 1-class 4x4 map (N = 16): the mean and covariance of 40,000 draws match mu and P P^T + D; the low-rank
    part is there (off-diagonal entries far from 0), and the torch distribution holds the same matrix."""
    torch.manual_seed(0)
    net = StochasticSegNet(SegmentationUNet(1, out_channels=1, channels=(8, 8), num_res_blocks=(1, 1)), 1, rank=2)
    with torch.no_grad():
        dist = net.eval().logit_distribution(image(1, size=4))
        draws = dist.sample(40_000, torch.Generator().manual_seed(3)).reshape(40_000, 16).double()
    built = (dist.cov_factor[0] @ dist.cov_factor[0].T + torch.diag(dist.cov_diag[0])).double()
    torch.testing.assert_close(built, dist.distribution().covariance_matrix[0].double(), rtol=1e-5, atol=1e-6)
    scale = float(built.diagonal().max())
    assert float((built - torch.diag(built.diagonal())).abs().max()) > 0.1 * scale  # really correlated
    centred = draws - draws.mean(0)
    empirical = centred.T @ centred / (draws.shape[0] - 1)
    assert float((empirical - built).abs().max()) < 0.05 * scale
    assert float((draws.mean(0) - dist.loc[0].double()).abs().max()) < 0.03 * scale**0.5


def test_antithetic_draws_come_in_mirrored_pairs():
    net = tiny_ssn(1)
    with torch.no_grad():
        dist = net.logit_distribution(image())
        draws = dist.antithetic_sample(6, torch.Generator().manual_seed(0))
    mu = dist.loc.reshape(1, 2, 1, 16, 16)
    torch.testing.assert_close(draws[:3] - mu, -(draws[3:] - mu), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(draws[0], draws[1])
    with pytest.raises(ValueError, match="even"):
        dist.antithetic_sample(3, torch.Generator())


def test_a_member_depends_on_its_generator_only():
    """Row b * K + k comes from generator b * K + k: the same member whatever the batch it is drawn in, and a
    different one for another seed."""
    net, x = tiny_ssn(4), image(3)
    seeds = [[10 * b + k for k in range(2)] for b in range(3)]
    with torch.no_grad():
        together = net.sample_logits(x, 2, [torch.Generator().manual_seed(s) for row in seeds for s in row])
        for b in range(3):
            alone = net.sample_logits(x[b : b + 1], 2, [torch.Generator().manual_seed(s) for s in seeds[b]])
            torch.testing.assert_close(together[2 * b : 2 * b + 2], alone, rtol=1e-5, atol=1e-5)
        other = net.sample_logits(x[:1], 2, [torch.Generator().manual_seed(99), torch.Generator().manual_seed(98)])
    assert not torch.allclose(other, together[:2])
    with pytest.raises(ValueError, match="generators"):
        net.sample_logits(x, 2, [torch.Generator()])


def test_a_backbone_without_features_is_refused():
    with pytest.raises(TypeError, match="cannot be an SSN backbone"):
        StochasticSegNet(torch.nn.Conv2d(1, 1, 1), 1)
    with pytest.raises(ValueError, match="rank"):
        StochasticSegNet(SegmentationUNet(1, **TINY), 1, rank=0)


def test_the_logit_distribution_is_float32_under_bf16_autocast():
    net, x = tiny_ssn(1), image()
    gens = [torch.Generator().manual_seed(k) for k in range(4)]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        dist: LogitDistribution = net.logit_distribution(x)
        draws = dist.sample(2, gens)
    assert dist.loc.dtype == dist.cov_factor.dtype == dist.cov_diag.dtype == draws.dtype == torch.float32
    gens = [torch.Generator().manual_seed(k) for k in range(4)]
    torch.testing.assert_close(draws, dist.sample(2, gens), rtol=0, atol=0)  # the draws exactly as without autocast
