"""DPM-Solver++(2M), the second-order multistep data-prediction solver (Lu et al. 2022, "DPM-Solver++", Alg. 2).

With lambda = log(alpha / sigma) (half the logSNR) and h = lambda_s - lambda_t:
    z_s = (sigma_s / sigma_t) z_t - alpha_s expm1(-h) D,
    D = x_hat_t on the first step, else (1 + 1/(2r)) x_hat_t - 1/(2r) x_hat_prev with r = h_prev / h.
The last step, to the data (h = inf), is first order: it returns x_hat ("lower order final").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffuseg.diffusion.noise import Generators
from diffuseg.diffusion.process import DiffusionProcess, Network
from diffuseg.diffusion.samplers.base import SampleOutput, finish, grid, start_noise


@torch.inference_mode()
def sample(
    net: Network,
    image: Tensor,
    process: DiffusionProcess,
    steps: int,
    *,
    generator: Generators,
    members: int = 1,
    threshold: float = 0.5,
    **_: object,
) -> SampleOutput:
    """image: (B, C, H, W) -> masks (B * members, 1, H, W), rows grouped by image. Deterministic given z_1."""
    z = start_noise(image, members, generator)
    x0 = z
    prev: tuple[Tensor, float] | None = None  # (x_hat, h) of the previous step
    for step in grid(process, steps):
        x0 = process.denoise(net, z, step.t, image)
        if step.s == 0.0:
            break
        _, sigma_t = step.alpha_sigma(at_s=False)
        alpha_s, sigma_s = step.alpha_sigma(at_s=True)
        h = 0.5 * (step.logsnr_s - step.logsnr_t)
        d = x0
        if prev is not None:
            r = prev[1] / h
            d = (1 + 0.5 / r) * x0 - (0.5 / r) * prev[0]
        z = (sigma_s / sigma_t) * z - alpha_s * math.expm1(-h) * d
        prev = (x0, h)
    return finish(x0, threshold)
