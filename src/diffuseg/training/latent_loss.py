"""Training losses of the latent-variable baselines (their LightningModules: ``training.module``).

- Prob. UNet family (Kohl et al. 2018; Bhat et al. 2022), ``method: probunet``: the negative ELBO
  ``sum_pixels BCE(f(x, z), y) / B + beta * KL(q(z | x, y) || p(z | x))`` averaged over the batch, with
  z ~ q drawn by reparameterisation (Kohl et al. 2018, eq. 4). The KL is analytic for AA and FC and a
  Monte-Carlo estimate over ``kl_samples`` posterior draws for the mixtures (Bhat et al. 2022).
- PHiSeg (Baumgartner et al. 2019), ``method: phiseg``: the residual reconstruction loss over levels,
  ``sum_l sum_pixels BCE(s_l + ... + s_{L-1}, y) / B``, plus ``kl_weight * sum_l w_l KL(q_l || p_l)`` with
  w_l = 4^l when ``exponential_weighting`` (the reference code's default) and the prior of every level
  conditioned on the posterior's samples of the coarser ones (eqs. 5-6 of the paper).

Classes: the posterior sees the annotation as its one-hot (B, C, H, W) and the likelihood is categorical for
two or more exclusive classes (softmax cross-entropy over the C logit channels, background included, summed
over pixels, as PHiSeg's reference code; Kohl et al. 2018 likewise use a softmax), Bernoulli per channel
otherwise (binary: the BCE above; overlapping regions: one BCE per region channel) - ``reconstruction_nll``.

Each training step uses one annotator per image, drawn at random per item and step by the training data
(``data.dataset``), and the posterior sees that annotation. Prediction draws z from the prior
(``methods.latent_sample``, which returns the diffusion samplers' ``SampleOutput``), so ensembles and
``diffuseg predict`` treat both families alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from diffuseg.nets.latent import kl
from diffuseg.nets.phiseg import PHiSeg
from diffuseg.nets.probunet import ProbUNet


def _bce_per_image(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy summed over pixels and averaged over the batch (a scalar)."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="sum")
    return bce / logits.shape[0]


def reconstruction_nll(logits: Tensor, target: Tensor, exclusive: bool = True) -> Tensor:
    """-log p(y | z) summed over pixels and averaged over the batch (a scalar); logits, target (B, C, H, W).

    Exclusive classes with C >= 2 channels: categorical, -log softmax(logits)[true class] per pixel (``target`` a
    one-hot). Otherwise (binary C = 1, overlapping regions): Bernoulli per channel, ``_bce_per_image``."""
    if exclusive and logits.shape[1] > 1:
        nll = F.cross_entropy(logits.float(), target.argmax(1), reduction="sum")
        return nll / logits.shape[0]
    return _bce_per_image(logits, target)


def probunet_loss(
    net: ProbUNet, image: Tensor, target: Tensor, generator: torch.Generator, exclusive: bool = True
) -> dict[str, Tensor]:
    """Negative ELBO of the Prob. UNet for one annotation per image: ``{"loss", "reconstruction", "kl"}``
    (scalars); loss = reconstruction + net.beta * kl.

    Args:
        net: the Prob. UNet (any kind).
        image: images (B, in_channels, H, W).
        target: one annotation per image as its one-hot (B, C, H, W) {0, 1} (binary: the mask (B, 1, H, W)).
        generator: the step's generator (posterior and Monte-Carlo KL draws).
        exclusive: whether the classes exclude each other (``reconstruction_nll``).
    """
    posterior = net.posterior(image, target)
    prior = net.prior(image)
    z = posterior.rsample(1, generator)
    reconstruction = reconstruction_nll(net.decode(net.features(image), z), target, exclusive)
    kl_term = kl(posterior, prior, generator, net.kl_samples).mean()
    return {"loss": reconstruction + net.beta * kl_term, "reconstruction": reconstruction, "kl": kl_term}


def phiseg_loss(
    net: PHiSeg, image: Tensor, target: Tensor, generator: torch.Generator, exclusive: bool = True
) -> dict[str, Tensor]:
    """PHiSeg's loss for one annotation per image: ``{"loss", "reconstruction", "kl"}`` (scalars); ``kl`` is the
    weighted sum over levels.

    Args:
        net: the PHiSeg network.
        image: images (B, in_channels, H, W).
        target: one annotation per image as its one-hot (B, C, H, W) {0, 1} (binary: the mask (B, 1, H, W)).
        generator: the step's generator (posterior and prior draws).
        exclusive: whether the classes exclude each other (``reconstruction_nll``).
    """
    posterior = net.posterior(image, target, generator)
    prior = net.prior(image, generator, condition=posterior.z)
    parts = net.decode(posterior.z, tuple(image.shape[-2:]))
    reconstruction = image.new_zeros((), dtype=torch.float32)
    accumulated = torch.zeros_like(parts[0])
    for level in reversed(range(len(parts))):
        accumulated = accumulated + parts[level]
        reconstruction = reconstruction + reconstruction_nll(accumulated, target, exclusive)
    kl_term = image.new_zeros((), dtype=torch.float32)
    for level, (mq, sq, mp, sp) in enumerate(zip(posterior.mu, posterior.sigma, prior.mu, prior.sigma)):
        weight = 4.0**level if net.exponential_weighting else 1.0
        per_image = kl_divergence(Normal(mq.float(), sq.float()), Normal(mp.float(), sp.float())).flatten(1).sum(1)
        kl_term = kl_term + weight * per_image.mean()
    return {"loss": reconstruction + net.kl_weight * kl_term, "reconstruction": reconstruction, "kl": kl_term}


def latent_loss(
    net: nn.Module, image: Tensor, target: Tensor, generator: torch.Generator, exclusive: bool = True
) -> dict[str, Tensor]:
    """The loss of ``net``'s family, ``probunet_loss`` or ``phiseg_loss``: ``{"loss", "reconstruction", "kl"}``.

    Args:
        net: the Prob. UNet or PHiSeg.
        image: images (B, in_channels, H, W).
        target: one annotation per image as its one-hot (B, C, H, W) {0, 1} (binary: the mask (B, 1, H, W)).
        generator: the step's generator (posterior and KL draws).
        exclusive: whether the classes exclude each other (``reconstruction_nll``).
    """
    if isinstance(net, ProbUNet):
        return probunet_loss(net, image, target, generator, exclusive)
    if isinstance(net, PHiSeg):
        return phiseg_loss(net, image, target, generator, exclusive)
    raise TypeError(f"{type(net).__name__} is not a latent-variable network (ProbUNet or PHiSeg)")
