"""Loss weightings w(lambda) (the ambiguity paper, section 3.4) and training-time samplers.

The weights multiply the data-space error ||x - x_hat||^2, as in the weighted ELBO of Kingma et al. (2021),
eq. 8 of the ambiguity paper. Since ||eps - eps_hat||^2 = SNR ||x - x_hat||^2 and ||v - v_hat||^2 =
(SNR + 1) ||x - x_hat||^2, "snr" is the plain eps-MSE of Ho et al. and MedSegDiff (eq. 7), "snr_plus_one"
is the v-MSE, "uniform" is the x-MSE and "truncated_snr" is max(||x - x_hat||^2, ||eps - eps_hat||^2)
(Salimans & Ho 2022). "sigmoid" is Kingma & Gao (2023): sigmoid(b - lambda) on the eps-MSE, i.e.
SNR * sigmoid(b - lambda) here; a large bias b makes it SNR, a small one flattens it towards uniform.

Everything is computed as a log-weight so that extreme logSNRs do not overflow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from diffuseg.enums import PredictionType, TimeSampler, Weighting


def log_weight(kind: Weighting, logsnr: Tensor, sigmoid_bias: float = -3.0) -> Tensor:
    """log w(lambda) for the data-space error; same shape as ``logsnr``."""
    if kind == Weighting.SNR:
        return logsnr
    if kind == Weighting.TRUNCATED_SNR:
        return logsnr.clamp(min=0.0)
    if kind == Weighting.SNR_PLUS_ONE:
        return F.softplus(logsnr)
    if kind == Weighting.UNIFORM:
        return torch.zeros_like(logsnr)
    if kind == Weighting.SIGMOID:
        return logsnr + F.logsigmoid(sigmoid_bias - logsnr)
    raise ValueError(f"unknown weighting {kind!r}")


def weight(kind: Weighting, logsnr: Tensor, sigmoid_bias: float = -3.0) -> Tensor:
    """w(lambda) on ||x - x_hat||^2."""
    return log_weight(kind, logsnr, sigmoid_bias).exp()


def log_data_space_factor(prediction: PredictionType, logsnr: Tensor) -> Tensor:
    """log of c with ||x - x_hat||^2 = c ||pred - target||^2 for a prediction of this type."""
    if prediction == PredictionType.X:
        return torch.zeros_like(logsnr)
    if prediction == PredictionType.EPS:
        return -logsnr  # sigma^2 / alpha^2
    if prediction == PredictionType.V:
        return F.logsigmoid(-logsnr)  # sigma^2
    raise ValueError(f"unknown prediction type {prediction!r}")


def sample_uniform_times(n: int, generator: torch.Generator, kind: TimeSampler, device=None) -> Tensor:
    """n values in [0, 1): i.i.d. uniform, or the low-discrepancy u_i = (u_0 + i / n) mod 1 (Kingma et al. 2021)."""
    if kind == TimeSampler.UNIFORM:
        return torch.rand(n, generator=generator, dtype=torch.float64).to(device)
    if kind == TimeSampler.LOW_DISCREPANCY:
        u0 = torch.rand((), generator=generator, dtype=torch.float64)
        return ((u0 + torch.arange(n, dtype=torch.float64) / n) % 1.0).to(device)
    raise ValueError(f"unknown time sampler {kind!r}")
