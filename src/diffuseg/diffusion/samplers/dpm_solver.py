"""DPM-Solver++(2M), the second-order multistep data-prediction solver (Lu et al. 2022, "DPM-Solver++", Alg. 2).

With lambda = log(alpha / sigma) (half the logSNR) and h = lambda_s - lambda_t:
    z_s = (sigma_s / sigma_t) z_t - alpha_s expm1(-h) D,
    D = x_hat_t on the first step, else (1 + 1/(2r)) x_hat_t - 1/(2r) x_hat_prev with r = h_prev / h.
The last step, to the data (h = inf), is first order: it returns x_hat ("lower order final").
"""

from __future__ import annotations

import math

from torch import Tensor

from diffuseg.diffusion.noise import Generators
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
    threshold: float = 0.5,
    spacing: Spacing | str = Spacing.LINEAR,
    scheme: LabelScheme | None = None,
    **_: object,
) -> SampleOutput:
    """image: (B, in_channels, H, W) -> ``SampleOutput`` (see ``walk``), rows grouped by image; deterministic
    given z_1.

    Args:
        net: the network ``net(x_t, t, image)``.
        image: (B, in_channels, H, W).
        process: the schedule and prediction type.
        steps: S, the network calls per member.
        generator: one generator, or one per output row (B * K).
        members: K, masks per image.
        threshold: the cut of a binary or region channel's soft mask.
        spacing: the time grid (``Spacing``).
        scheme: the classes (None: binary).
    """
    history: list[tuple[Tensor, float]] = []  # (x_hat, h) of the previous step

    def update(z: Tensor, x0: Tensor, step: Step) -> Tensor:
        _, sigma_t = step.alpha_sigma(at_s=False)
        alpha_s, sigma_s = step.alpha_sigma(at_s=True)
        h = 0.5 * (step.logsnr_s - step.logsnr_t)
        d = x0
        if history:
            x_prev, h_prev = history[-1]
            r = h_prev / h
            d = (1 + 0.5 / r) * x0 - (0.5 / r) * x_prev
        history[:] = [(x0, h)]
        return (sigma_s / sigma_t) * z - alpha_s * math.expm1(-h) * d

    return walk(net, image, process, steps, generator, members, threshold, update, spacing, scheme)
