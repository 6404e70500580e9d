"""Latent distributions of the Prob. UNet family: AA, AA-mix, FC, FC-mix, with seeded sampling and KL.

- AA: axis-aligned Gaussian, ``Independent(Normal)`` (Kohl et al. 2018).
- FC: full covariance as ``W W^T + D`` with ``W`` of shape (dim, rank), ``LowRankMultivariateNormal``;
  rank = dim gives a full-rank factor (Bhat et al. 2022, "full-covariance Gaussian").
- AA-mix / FC-mix: ``MixtureSameFamily`` of M such components with learned weights (Bhat et al. 2022).

torch's distributions draw from the global RNG, so sampling is done here from explicit noise: a
``torch.Generator`` or one generator per output row (row i of the samples depends on generator i only).
Mixtures are sampled with a straight-through Gumbel-softmax (Jang et al. 2017) at ``temperature``, as
Bhat et al. do: the forward pass picks one component, the gradient flows through the relaxed weights.
KL(q || p) is analytic between two non-mixtures and a Monte-Carlo mean of log q(z) - log p(z) over
posterior samples otherwise (Bhat et al. 2022; Hershey & Olsen 2007).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    LowRankMultivariateNormal,
    MixtureSameFamily,
    Normal,
    kl_divergence,
)

from diffuseg.enums import LatentKind

Generators = torch.Generator | Sequence[torch.Generator]


def _noise(shape: Sequence[int], generator: Generators, device: torch.device, uniform: bool = False) -> Tensor:
    """Standard normal (or U(0,1)) noise; with a list of generators, row i comes from generator i."""
    draw = torch.rand if uniform else torch.randn
    if isinstance(generator, torch.Generator):
        return draw(tuple(shape), generator=generator, device=generator.device).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for {shape[0]} rows")
    return torch.stack([draw(tuple(shape[1:]), generator=g, device=g.device) for g in generator]).to(device)


def normal_noise(shape: Sequence[int], generator: Generators, device: torch.device) -> Tensor:
    """Public alias used by the hierarchical model (PHiSeg): N(0, 1) noise, per-row generators allowed."""
    return _noise(shape, generator, device)


@dataclass(frozen=True)
class Latent:
    """A batch of B latent distributions over R^dim, with the sampling rules above.

    ``dist`` has batch shape (B,) and event shape (dim,). ``temperature`` is the Gumbel-softmax temperature
    used when ``dist`` is a mixture.
    """

    dist: Distribution
    temperature: float = 0.1

    @property
    def is_mixture(self) -> bool:
        return isinstance(self.dist, MixtureSameFamily)

    def _component_params(self) -> Distribution:
        return self.dist.component_distribution if self.is_mixture else self.dist

    def rsample(self, n: int, generator: Generators) -> Tensor:
        """n reparameterised samples per distribution: (B * n, dim), image-major (row b * n + k)."""
        comp = self._component_params()
        if isinstance(comp, Independent):
            loc, scale = comp.base_dist.loc, comp.base_dist.scale
            loc, scale = loc.repeat_interleave(n, 0), scale.repeat_interleave(n, 0)
            z = loc + scale * _noise(loc.shape, generator, loc.device)
        else:  # LowRankMultivariateNormal: loc + W eps_w + sqrt(D) eps_d
            loc = comp.loc.repeat_interleave(n, 0)
            factor = comp.cov_factor.repeat_interleave(n, 0)
            diag = comp.cov_diag.repeat_interleave(n, 0)
            rank = factor.shape[-1]
            eps = _noise((*loc.shape[:-1], rank + loc.shape[-1]), generator, loc.device)
            z = loc + (factor @ eps[..., :rank, None])[..., 0] + diag.sqrt() * eps[..., rank:]
        if not self.is_mixture:
            return z
        # z: (B*n, M, dim); pick one component per row with straight-through Gumbel-softmax.
        logits = self.dist.mixture_distribution.logits.repeat_interleave(n, 0)
        u = _noise(logits.shape, generator, logits.device, uniform=True)
        gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
        soft = F.softmax((logits + gumbel) / self.temperature, dim=-1)
        hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
        weights = hard - soft.detach() + soft
        return (weights[..., None] * z).sum(-2)

    def log_prob(self, z: Tensor) -> Tensor:
        """log density of z (..., B, dim) -> (..., B)."""
        return self.dist.log_prob(z)

    @property
    def mean(self) -> Tensor:
        return self.dist.mean


def kl(q: Latent, p: Latent, generator: torch.Generator, samples: int = 1000) -> Tensor:
    """KL(q || p) per batch row, (B,): analytic for two non-mixtures, else the mean of log q - log p
    over ``samples`` reparameterised draws from q (Bhat et al. 2022 use 1000)."""
    if not q.is_mixture and not p.is_mixture:
        return kl_divergence(q.dist, p.dist)
    batch = q.dist.batch_shape[0]
    z = q.rsample(samples, generator).reshape(batch, samples, -1).transpose(0, 1)  # (S, B, dim)
    return (q.log_prob(z) - p.log_prob(z)).mean(0)


class LatentHead(nn.Module):
    """Pooled encoder features (B, F, 1, 1) -> ``Latent``; 1x1 convolutions as in Kohl et al. / Bhat et al.

    Per component: mean (dim), log of the diagonal (dim: std for AA, variance D for FC) and, for FC, the
    factor W (dim x rank). Mixtures add one 1x1 convolution for the M mixture logits.
    """

    def __init__(self, in_channels: int, kind: LatentKind, dim: int, components: int, rank: int, temperature: float):
        super().__init__()
        self.kind, self.dim, self.components, self.temperature = kind, dim, components, temperature
        self.rank = rank if kind.full_covariance else 0
        per_component = 2 * dim + dim * self.rank
        self.params = nn.Conv2d(in_channels, components * per_component, 1)
        self.logits = nn.Conv2d(in_channels, components, 1) if kind.is_mixture else None

    def forward(self, pooled: Tensor) -> Latent:
        b, k, d = pooled.shape[0], self.components, self.dim
        out = self.params(pooled).float().reshape(b, k, -1)  # distributions in float32, also under autocast
        loc, log_diag = out[..., :d], out[..., d : 2 * d]
        if self.kind.full_covariance:
            factor = out[..., 2 * d :].reshape(b, k, d, self.rank)
            comp: Distribution = LowRankMultivariateNormal(loc, factor, torch.exp(log_diag))
        else:
            comp = Independent(Normal(loc, torch.exp(log_diag)), 1)
        if self.logits is None:
            dist = _squeeze_component(comp)
        else:
            logits = self.logits(pooled).float().reshape(b, k)
            dist = MixtureSameFamily(Categorical(logits=logits), comp)
        return Latent(dist, self.temperature)


def _squeeze_component(comp: Distribution) -> Distribution:
    """Drop the size-1 component axis of a single-component head: batch (B, 1) -> (B,)."""
    if isinstance(comp, Independent):
        base = comp.base_dist
        return Independent(Normal(base.loc[:, 0], base.scale[:, 0]), 1)
    return LowRankMultivariateNormal(comp.loc[:, 0], comp.cov_factor[:, 0], comp.cov_diag[:, 0])
