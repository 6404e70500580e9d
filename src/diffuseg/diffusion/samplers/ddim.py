"""DDIM sampling (Song, Meng & Ermon 2021, eq. 12) for any schedule and prediction type.

    z_s = alpha_s x_hat + sqrt(sigma_s^2 - c^2) eps_hat + c noise,  c = eta * sqrt(posterior variance),
with eps_hat = (z_t - alpha_t x_hat) / sigma_t. eta = 0 is deterministic; eta = 1 matches ancestral DDPM.
"""

from __future__ import annotations

import math

from torch import Tensor

from diffuseg.diffusion.noise import Generators, randn
from diffuseg.diffusion.process import DiffusionProcess, Network
from diffuseg.diffusion.samplers.base import SampleOutput, Step, walk
from diffuseg.enums import Spacing
from diffuseg.labels import LabelScheme


def sample(
    net: Network,
    image: Tensor,
    process: DiffusionProcess,
    steps: int,
    *,
    generator: Generators,
    members: int = 1,
    eta: float = 0.0,
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
        eta: the noise scale, 0 deterministic, 1 ancestral.
        threshold: the cut of a binary or region channel's soft mask.
        spacing: the time grid (``Spacing``).
        scheme: the classes (None: binary).
    """

    def update(z: Tensor, x0: Tensor, step: Step) -> Tensor:
        alpha_t, sigma_t = step.alpha_sigma(at_s=False)
        alpha_s, sigma_s = step.alpha_sigma(at_s=True)
        eps = (z - alpha_t * x0) / sigma_t
        c = eta * math.sqrt(step.sigma2_ts() * sigma_s**2 / sigma_t**2)
        z_s = alpha_s * x0 + math.sqrt(max(sigma_s**2 - c**2, 0.0)) * eps
        return z_s + c * randn(z.shape, generator, device=z.device, dtype=z.dtype) if c > 0 else z_s

    return walk(net, image, process, steps, generator, members, threshold, update, spacing, scheme)
