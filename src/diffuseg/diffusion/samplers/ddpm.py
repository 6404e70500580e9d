"""Ancestral DDPM sampling (Ho et al. 2020, Alg. 2) for any schedule and prediction type.

For a transition t -> s < t, with alpha_ts = alpha_t / alpha_s and sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2,
the posterior q(z_s | z_t, x) (Kingma et al. 2021, eq. 2 of the ambiguity paper) has
    mean = alpha_ts sigma_s^2 / sigma_t^2 z_t + alpha_s sigma_ts^2 / sigma_t^2 x,
    var  = sigma_ts^2 sigma_s^2 / sigma_t^2            ("posterior", beta-tilde of Ho et al.),
or the larger var = sigma_ts^2 ("beta", beta_t of Ho et al.). On a respaced discrete grid
sigma_ts^2 = 1 - abar_t / abar_s, the respaced beta of Nichol & Dhariwal (2021).
"""

from __future__ import annotations

import math

from torch import Tensor

from diffuseg.diffusion.noise import Generators, randn
from diffuseg.diffusion.process import DiffusionProcess, Network
from diffuseg.diffusion.samplers.base import SampleOutput, Step, walk
from diffuseg.enums import DDPMVariance, Spacing
from diffuseg.labels import LabelScheme


def sample(
    net: Network,
    image: Tensor,
    process: DiffusionProcess,
    steps: int,
    *,
    generator: Generators,
    members: int = 1,
    ddpm_variance: DDPMVariance = DDPMVariance.POSTERIOR,
    threshold: float = 0.5,
    spacing: Spacing | str = Spacing.LINEAR,
    scheme: LabelScheme | None = None,
    **_: object,
) -> SampleOutput:
    """image: (B, in_channels, H, W) -> ``SampleOutput`` (see ``walk``), rows grouped by image.

    Args:
        net: the network ``net(x_t, t, image)``.
        image: (B, in_channels, H, W).
        process: the schedule and prediction type.
        steps: S, the network calls per member.
        generator: one generator, or one per output row (B * K).
        members: K, masks per image.
        ddpm_variance: posterior (beta-tilde) or beta.
        threshold: the cut of a binary or region channel's soft mask.
        spacing: the time grid (``Spacing``).
        scheme: the classes (None: binary).
    """

    def update(z: Tensor, x0: Tensor, step: Step) -> Tensor:
        alpha_t, sigma_t = step.alpha_sigma(at_s=False)
        alpha_s, sigma_s = step.alpha_sigma(at_s=True)
        sigma2_ts = step.sigma2_ts()
        mean = (alpha_t / alpha_s * sigma_s**2 / sigma_t**2) * z + (alpha_s * sigma2_ts / sigma_t**2) * x0
        var = sigma2_ts * sigma_s**2 / sigma_t**2 if ddpm_variance == DDPMVariance.POSTERIOR else sigma2_ts
        return mean + math.sqrt(var) * randn(z.shape, generator, device=z.device, dtype=z.dtype)

    return walk(net, image, process, steps, generator, members, threshold, update, spacing, scheme)
