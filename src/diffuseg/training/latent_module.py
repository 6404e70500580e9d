"""Training losses, sampling and LightningModules of the latent-variable baselines.

- Prob. UNet family (Kohl et al. 2018; Bhat et al. 2022), ``method: probunet``: the negative ELBO
  ``sum_pixels BCE(f(x, z), y) / B + beta * KL(q(z | x, y) || p(z | x))`` averaged over the batch, with
  z ~ q drawn by reparameterisation (Kohl et al. 2018, eq. 4). The KL is analytic for AA and FC and a
  Monte-Carlo estimate over ``kl_samples`` posterior draws for the mixtures (Bhat et al. 2022).
- PHiSeg (Baumgartner et al. 2019), ``method: phiseg``: the residual reconstruction loss over levels,
  ``sum_l sum_pixels BCE(s_l + ... + s_{L-1}, y) / B``, plus ``kl_weight * sum_l w_l KL(q_l || p_l)`` with
  w_l = 4^l when ``exponential_weighting`` (the reference code's default) and the prior of every level
  conditioned on the posterior's samples of the coarser ones (eqs. 5-6 of the paper).

Classes: the posterior sees the annotation as its one-hot (B, C, H, W) and the likelihood is categorical for
K >= 2 exclusive classes (softmax cross-entropy over the C = K + 1 logit channels, summed over pixels, as
PHiSeg's reference code; Kohl et al. 2018 likewise use a softmax), Bernoulli per channel otherwise (binary:
the BCE above; overlapping regions: one BCE per region channel) - ``reconstruction_nll``.

Each training step uses one annotator per image, drawn at random per item and step by the training data
(``data.dataset``), and the posterior sees that annotation. Prediction draws z from the prior
(``inference.ensemble.latent_sample``, which returns the diffusion samplers' ``SampleOutput``), so ensembles
and ``diffuseg predict`` treat both families alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from diffuseg.enums import Method
from diffuseg.nets.latent import kl
from diffuseg.nets.phiseg import PHiSeg
from diffuseg.nets.probunet import ProbUNet
from diffuseg.training.module import MODULES, SegmentationModule


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
    """Negative ELBO of the Prob. UNet for images (B, in_channels, H, W) and one annotation each, its one-hot
    (B, C, H, W) {0, 1} (binary: the mask (B, 1, H, W)); ``exclusive``: the classes' (``reconstruction_nll``).

    Returns ``{"loss", "reconstruction", "kl"}`` (scalars); loss = reconstruction + net.beta * kl.
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
    """PHiSeg's loss for images (B, in_channels, H, W) and one annotation each, its one-hot (B, C, H, W) {0, 1}
    (binary: the mask (B, 1, H, W)); ``exclusive``: the classes' (``reconstruction_nll``).

    Returns ``{"loss", "reconstruction", "kl"}``; ``kl`` is the weighted sum over levels.
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
    """The loss of ``net``'s family (Prob. UNet or PHiSeg); ``target`` (B, C, H, W) one-hot."""
    if isinstance(net, ProbUNet):
        return probunet_loss(net, image, target, generator, exclusive)
    if isinstance(net, PHiSeg):
        return phiseg_loss(net, image, target, generator, exclusive)
    raise TypeError(f"{type(net).__name__} is not a latent-variable network (ProbUNet or PHiSeg)")


class LatentModule(SegmentationModule):
    """Training of a latent-variable baseline; logs the reconstruction and KL terms beside the loss."""

    def loss(self, image: Tensor, target: Tensor, generator: torch.Generator) -> Tensor:
        parts = latent_loss(self.net, image, target, generator, self.scheme.exclusive)
        size = image.shape[0]
        self.log("reconstruction", parts["reconstruction"].detach(), on_step=True, batch_size=size)
        self.log("kl", parts["kl"].detach(), on_step=True, batch_size=size)
        return parts["loss"]


class ProbUNetModule(LatentModule):
    """``method: probunet``: Prob. UNet (AA) and the Gen. Prob. UNet (AA-mix, FC, FC-mix)."""

    method = Method.PROBUNET


class PHiSegModule(LatentModule):
    """``method: phiseg``."""

    method = Method.PHISEG


MODULES[Method.PROBUNET] = ProbUNetModule
MODULES[Method.PHISEG] = PHiSegModule
