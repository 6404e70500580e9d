"""The training loss of Stochastic Segmentation Networks (Monteiro et al., NeurIPS 2020, arXiv:2006.06015).

The negative log-likelihood of one annotation y under the network's Gaussian over the logits,
log p(y | x) = log E_{eta ~ N(mu, P P^T + D)} [prod_i p(y_i | eta_i)], estimated by Monte Carlo with M
reparameterised draws (the paper uses M = 20):

    loss = -mean_b [ logsumexp_m sum_i log p(y_i | eta_m) - log M ]

The M draws come in antithetic pairs mu + d, mu - d (the authors' code), which lowers the estimate's variance; mu,
P and D all get their gradients through the draws. The per-pixel likelihood is that of the other
baselines (``latent_loss.reconstruction_nll``): categorical (softmax over the C channels, background included) for
two or more exclusive classes, Bernoulli per channel otherwise (binary: one sigmoid channel; overlapping regions: one
per region).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from diffuseg.nets.ssn import StochasticSegNet


def log_likelihood(logits: Tensor, target: Tensor, exclusive: bool = True) -> Tensor:
    """log p(y | eta_m) summed over pixels and channels: logits (M, B, C, H, W), target (B, C, H, W) one-hot
    {0, 1} -> (M, B) float32."""
    m, b = logits.shape[:2]
    logits = logits.float()
    target = target.float().expand_as(logits)
    if exclusive and logits.shape[2] > 1:
        nll = F.cross_entropy(logits.flatten(0, 1), target.argmax(2).flatten(0, 1), reduction="none")
    else:
        nll = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return -nll.reshape(m, b, -1).sum(-1)


def ssn_loss(
    net: StochasticSegNet, image: Tensor, target: Tensor, generator: torch.Generator, samples: int, exclusive: bool
) -> dict[str, Tensor]:
    """The SSN loss for one annotation per image: ``{"loss", "mean_nll"}`` (scalars). ``mean_nll`` is
    -log p(y | mu) per image, the likelihood of the mean logits alone (logged, not trained on).

    Args:
        net: the SSN.
        image: images (B, in_channels, H, W).
        target: one annotation per image as its one-hot (B, C, H, W) {0, 1} (binary: the mask (B, 1, H, W)).
        generator: the step's generator (the Monte Carlo draws).
        samples: M, even (antithetic pairs).
        exclusive: whether the classes exclude each other.
    """
    dist = net.logit_distribution(image)
    draws = dist.antithetic_sample(samples, generator)
    log_lik = torch.logsumexp(log_likelihood(draws, target, exclusive), dim=0) - math.log(samples)
    mu = dist.loc.detach().reshape(1, -1, *dist.shape)
    mean_nll = -log_likelihood(mu, target, exclusive).mean()
    return {"loss": -log_lik.mean(), "mean_nll": mean_nll}
