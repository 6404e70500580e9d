"""PHiSeg: the hierarchy's shapes, KL per level, residual outputs and seeded sampling."""

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from diffuseg.methods import latent_sample as sample
from diffuseg.nets.phiseg import PHiSeg
from diffuseg.training.latent_loss import phiseg_loss


def tiny(**options) -> PHiSeg:
    torch.manual_seed(0)
    return PHiSeg(1, **{"resolution_levels": 4, "latent_levels": 3, "n0": 4, "zdim": 2, **options})


def test_hierarchy_has_one_latent_per_level_at_its_resolution():
    net = tiny().eval()
    image, mask = torch.randn(2, 1, 32, 32), torch.zeros(2, 1, 32, 32)
    g = torch.Generator().manual_seed(0)
    q = net.posterior(image, mask, g)
    # Resolution levels 32, 16, 8, 4; the 3 coarsest carry latents, finest first.
    assert [tuple(z.shape) for z in q.z] == [(2, 2, 16, 16), (2, 2, 8, 8), (2, 2, 4, 4)]
    assert all((s > 0).all() for s in q.sigma)
    parts = net.decode(q.z, (32, 32))
    assert len(parts) == 3 and all(p.shape == (2, 1, 32, 32) for p in parts)
    assert torch.allclose(net(image, q.z), torch.stack(parts).sum(0))
    assert net.sample_logits(image, 5, g).shape == (10, 1, 32, 32)


def test_prior_during_training_is_conditioned_on_the_posterior_samples():
    net = tiny().eval()
    image, mask = torch.randn(1, 1, 32, 32), torch.ones(1, 1, 32, 32)
    g = torch.Generator().manual_seed(0)
    q = net.posterior(image, mask, g)
    p = net.prior(image, g, condition=q.z)
    assert all(torch.equal(a, b) for a, b in zip(p.z, q.z))
    shifted = [z + 1.0 for z in q.z]
    p2 = net.prior(image, g, condition=shifted)
    # The coarsest level sees only the image; finer levels move with the conditioning latents.
    assert torch.equal(p2.mu[-1], p.mu[-1])
    assert not torch.allclose(p2.mu[0], p.mu[0])


def test_kl_is_zero_when_posterior_equals_prior():
    """The loss's KL term vanishes when q and p coincide; here the posterior's own parameters both ways."""
    net = tiny().eval()
    image, mask = torch.randn(2, 1, 32, 32), torch.ones(2, 1, 32, 32)
    q = net.posterior(image, mask, torch.Generator().manual_seed(0))
    for mu, sigma in zip(q.mu, q.sigma):
        value = kl_divergence(Normal(mu, sigma), Normal(mu, sigma)).sum()
        assert value.abs() < 1e-6


def test_loss_terms_are_finite_and_kl_weighting_is_exponential():
    net = tiny()
    image, mask = torch.randn(2, 1, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    weighted = phiseg_loss(net, image, mask, torch.Generator().manual_seed(0))
    net.exponential_weighting = False
    flat = phiseg_loss(net, image, mask, torch.Generator().manual_seed(0))
    assert torch.isfinite(weighted["loss"]) and weighted["kl"] > 0
    assert weighted["kl"] > flat["kl"]  # weights 1, 4, 16 >= 1
    assert torch.allclose(weighted["reconstruction"], flat["reconstruction"])


def test_sampling_is_seeded_and_members_do_not_depend_on_the_batch():
    net = tiny().eval()
    images = torch.randn(2, 1, 32, 32)
    # An untrained net's probabilities sit in a narrow band; threshold at their median so masks can differ.
    level = float(sample(net, images[:1], 6, generator=torch.Generator().manual_seed(0)).soft.median())

    def draw(seed):
        return sample(net, images[:1], 6, generator=torch.Generator().manual_seed(seed), threshold=level)

    a, b, c = draw(1), draw(1), draw(2)
    assert torch.equal(a.soft, b.soft) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.soft, c.soft)
    assert not torch.equal(a.mask, c.mask)

    def gens(start):
        return [torch.Generator().manual_seed(50 + start + i) for i in range(3)]

    together = sample(net, images, 3, generator=gens(0) + gens(3))
    alone = sample(net, images[1:], 3, generator=gens(3))
    assert torch.allclose(together.soft[3:], alone.soft, atol=1e-6)


def test_level_options_are_checked():
    with pytest.raises(ValueError, match="latent_levels"):
        PHiSeg(1, resolution_levels=3, latent_levels=4)
