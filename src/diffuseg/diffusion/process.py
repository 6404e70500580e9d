"""The diffusion process on masks: forward noising, the weighted training loss, and the denoiser.

Masks in {0, 1} are mapped to x0 in {-1, 1}. Input scaling lives in the schedule (a logSNR shift, see
``schedules``), which is the same as scaling x0 by b and renormalising to unit variance.
The network is any ``net(x_t, t, image) -> prediction`` of type ``cfg.prediction``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffuseg.config import DiffusionConfig
from diffuseg.diffusion import parameterization as param
from diffuseg.diffusion.noise import randn
from diffuseg.diffusion.schedules import make_schedule
from diffuseg.diffusion.weighting import log_data_space_factor, log_weight, sample_uniform_times

Network = Callable[[Tensor, Tensor, Tensor], Tensor]


def masks_to_x0(masks01: Tensor) -> Tensor:
    """{0, 1} -> {-1, 1}, float."""
    return masks01.float() * 2.0 - 1.0


def x0_to_soft(x0: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], the soft mask before thresholding."""
    return ((x0 + 1.0) * 0.5).clamp(0.0, 1.0)


def _col(values: Tensor, like: Tensor) -> Tensor:
    """(B,) float64 -> (B, 1, ..., 1) in ``like``'s dtype for broadcasting."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


class DiffusionProcess:
    """Schedule + prediction type + loss weighting, independent of any network."""

    def __init__(self, cfg: DiffusionConfig):
        self.cfg = cfg
        self.schedule = make_schedule(cfg)
        self.prediction = cfg.prediction

    def add_noise(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """z_t = alpha(t) x0 + sigma(t) eps (eq. 1); t has shape (B,)."""
        alpha, sigma = self.schedule.alpha_sigma(t)
        return _col(alpha, x0) * x0 + _col(sigma, x0) * noise

    def loss(self, net: Network, masks01: Tensor, image: Tensor, generator: torch.Generator) -> Tensor:
        """E_t[w(lambda_t) ||x0 - x_hat||^2] (eq. 8), computed on the network's own target for stability.

        masks01: (B, 1, H, W) in {0, 1}; image: (B, C, H, W). Returns a scalar.
        """
        x0 = masks_to_x0(masks01)
        batch = x0.shape[0]
        u = sample_uniform_times(batch, generator, self.cfg.time_sampler)
        t = self.schedule.quantize(u)
        noise = randn(x0.shape, generator, device=x0.device, dtype=x0.dtype)
        lam = self.schedule.logsnr(t)
        alpha, sigma = torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()
        z = _col(alpha, x0) * x0 + _col(sigma, x0) * noise
        pred = net(z, t.to(device=x0.device, dtype=torch.float32), image)
        tgt = param.target(self.prediction, x0, noise, _col(alpha, x0), _col(sigma, x0))
        mse = (pred.float() - tgt).pow(2).flatten(1).mean(dim=1)
        log_factor = log_weight(self.cfg.weighting, lam, self.cfg.sigmoid_bias) + log_data_space_factor(
            self.prediction, lam
        )
        return (log_factor.exp().to(mse) * mse).mean()

    def predict_x0(self, pred: Tensor, z: Tensor, t: float, clip: bool = True) -> Tensor:
        """x_hat from a network output at a single time t shared by the batch; clipped to [-1, 1]."""
        alpha, sigma = (float(v) for v in self.schedule.alpha_sigma(t))
        x0 = param.to_x0(self.prediction, pred.to(z.dtype), z, alpha, sigma)
        return x0.clamp(-1.0, 1.0) if clip else x0

    def denoise(self, net: Network, z: Tensor, t: float, image: Tensor, clip: bool = True) -> Tensor:
        """One network call at time t for all rows of z (rows grouped by image); returns x_hat."""
        t_in = torch.full((z.shape[0],), t, device=z.device, dtype=torch.float32)
        return self.predict_x0(net(z, t_in, image), z, t, clip)
