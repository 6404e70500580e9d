"""Latent distributions of the Prob. UNet family: sampling is right, seeded, and KL behaves."""

import pytest
import torch
from torch.distributions import (
    Categorical,
    Independent,
    LowRankMultivariateNormal,
    MixtureSameFamily,
    Normal,
    kl_divergence,
)

from diffuseg.enums import LatentKind
from diffuseg.nets.latent import Latent, LatentHead, kl

KINDS = [("aa", 1), ("aa_mix", 3), ("fc", 1), ("fc_mix", 3)]


def head_latent(kind: str, components: int, seed: int = 0, dim: int = 3, batch: int = 2) -> Latent:
    torch.manual_seed(seed)
    head = LatentHead(8, LatentKind.parse(kind), dim, components, rank=dim, temperature=0.3)
    return head(torch.randn(batch, 8, 1, 1))


@pytest.mark.parametrize(("kind", "components"), KINDS)
def test_kl_is_zero_when_posterior_equals_prior(kind, components):
    q = head_latent(kind, components)
    value = kl(q, q, torch.Generator().manual_seed(0), samples=64)
    assert value.shape == (2,)
    assert torch.allclose(value, torch.zeros(2), atol=1e-5)


@pytest.mark.parametrize(("kind", "components"), KINDS)
def test_kl_is_positive_for_different_distributions(kind, components):
    q, p = head_latent(kind, components, seed=0), head_latent(kind, components, seed=1)
    assert (kl(q, p, torch.Generator().manual_seed(0), samples=2000) > 0).all()


@pytest.mark.parametrize("kind", ["aa", "fc"])
def test_monte_carlo_kl_matches_analytic(kind):
    """The estimator used for mixtures, applied to single Gaussians, agrees with the closed form."""
    q, p = head_latent(kind, 1, seed=0), head_latent(kind, 1, seed=1)
    exact = kl_divergence(q.dist, p.dist)
    z = q.rsample(20000, torch.Generator().manual_seed(3)).reshape(2, 20000, -1).transpose(0, 1)
    estimate = (q.log_prob(z) - p.log_prob(z)).mean(0)
    assert torch.allclose(estimate, exact, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(("kind", "components"), KINDS)
def test_rsample_moments_match_the_distribution(kind, components):
    latent = head_latent(kind, components, batch=1)
    z = latent.rsample(40000, torch.Generator().manual_seed(1)).detach()
    assert z.shape == (40000, 3)
    mean = latent.mean.detach()[0]
    assert torch.allclose(z.mean(0), mean, atol=0.05 * (1 + mean.abs().max()))
    cov = torch.cov(z.T)
    if not latent.is_mixture:
        dist = latent.dist
        exact = dist.covariance_matrix[0] if kind == "fc" else torch.diag(dist.variance[0])
        assert torch.allclose(cov, exact.detach(), rtol=0.1, atol=0.05 * exact.abs().max().item())


def test_mixture_samples_pick_components_with_their_weights():
    """With far-apart components, the sample frequency of each equals its mixture weight."""
    head = LatentHead(4, LatentKind.AA_MIX, 1, 3, rank=0, temperature=0.5)
    with torch.no_grad():
        head.params.weight.zero_()
        head.params.bias.copy_(torch.tensor([-10.0, -5.0, 0.0, -5.0, 10.0, -5.0]))  # means -10, 0, 10; tiny std
        head.logits.weight.zero_()
        head.logits.bias.copy_(torch.log(torch.tensor([0.2, 0.3, 0.5])))
    z = head(torch.zeros(1, 4, 1, 1)).rsample(20000, torch.Generator().manual_seed(0)).detach()[:, 0]
    freq = torch.stack([(z < -5).float().mean(), (z.abs() < 5).float().mean(), (z > 5).float().mean()])
    assert torch.allclose(freq, torch.tensor([0.2, 0.3, 0.5]), atol=0.02)


def test_mixture_rsample_passes_gradients_to_weights_and_components():
    torch.manual_seed(0)
    head = LatentHead(4, LatentKind.FC_MIX, 2, 3, rank=2, temperature=0.5)
    z = head(torch.randn(2, 4, 1, 1)).rsample(4, torch.Generator().manual_seed(0))
    z.pow(2).sum().backward()
    assert head.logits.weight.grad.abs().sum() > 0
    assert head.params.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("kind", "components"), KINDS)
def test_per_row_generators_make_rows_independent_of_the_batch(kind, components):
    latent = head_latent(kind, components, batch=2)
    gens = [torch.Generator().manual_seed(10 + i) for i in range(6)]
    both = latent.rsample(3, gens)
    assert both.shape == (6, 3)
    # The rows of image 1 drawn again, alone, with the same per-row generators.
    alone = Latent(_slice(latent.dist, 1), latent.temperature).rsample(
        3, [torch.Generator().manual_seed(13 + i) for i in range(3)]
    )
    assert torch.allclose(both[3:], alone)


def _slice(dist, index):
    """The distribution of batch row ``index`` alone (batch shape (1,))."""
    sl = slice(index, index + 1)
    if isinstance(dist, MixtureSameFamily):
        return MixtureSameFamily(
            Categorical(logits=dist.mixture_distribution.logits[sl]), _slice(dist.component_distribution, index)
        )
    if isinstance(dist, Independent):
        return Independent(Normal(dist.base_dist.loc[sl], dist.base_dist.scale[sl]), 1)
    return LowRankMultivariateNormal(dist.loc[sl], dist.cov_factor[sl], dist.cov_diag[sl])


def test_latent_kind_parse_names_allowed_values():
    with pytest.raises(ValueError, match="aa_mix"):
        LatentKind.parse("gaussian")
    assert LatentKind.parse("fc-mix") is LatentKind.FC_MIX
