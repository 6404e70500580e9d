"""The diffusion process on masks: forward noising, the weighted training loss, and the denoiser.

Masks in {0, 1} are mapped to x0 in {-1, 1}. Input scaling lives in the schedule (a logSNR shift, see
``schedules``), which is the same as scaling x0 by b and renormalising to unit variance.
The network is any ``net(x_t, t, image) -> prediction`` of type ``cfg.prediction``; with
``cfg.self_condition`` its x_t input also carries an earlier estimate of x0 (``recipes``). The recipes beyond
the papers (auxiliary loss, self-conditioning, recycling, logits with Dice + CE, training on the sampler's grid)
are in ``recipes`` and off by default.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffuseg.config import DiffusionConfig
from diffuseg.diffusion import parameterization as param
from diffuseg.diffusion import recipes
from diffuseg.diffusion.noise import randn
from diffuseg.diffusion.schedules import make_schedule
from diffuseg.diffusion.weighting import log_data_space_factor, log_weight, sample_uniform_times
from diffuseg.enums import PredictionType, RecycleStart
from diffuseg.nets.unet import segmentation_loss

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
    """Schedule + prediction type + loss weighting, independent of any network. ``exclusive``: the C + 1 channels
    are exclusive classes (a ``logits`` network's x_hat is then a softmax over them, not a sigmoid per channel)."""

    def __init__(self, cfg: DiffusionConfig, exclusive: bool = False):
        self.cfg = cfg
        self.schedule = make_schedule(cfg)
        self.prediction = cfg.prediction
        self.exclusive = exclusive

    def to_x0(self, pred: Tensor, z: Tensor, alpha, sigma) -> Tensor:
        """The data estimate x_hat implied by the network's output ``pred`` at z (``parameterization.to_x0``)."""
        return param.to_x0(self.prediction, pred, z, alpha, sigma, self.exclusive)

    def train_times(self, batch: int, generator: torch.Generator) -> Tensor:
        """(batch,) float64 training times: every time of the schedule (``cfg.time_sampler``), or with
        ``cfg.train_grid`` = S only the S network times of the sampler's grid, each equally likely. Recycling from
        pure noise leaves out the top time (the grid's first step, the discrete schedule's step T), whose input
        the first pass already is (ImgX-DiffSeg, Fu et al. 2023)."""
        top_out = self.cfg.recycle and self.cfg.recycle_from == RecycleStart.NOISE
        if self.cfg.train_grid:
            times = self.schedule.sampling_times(self.cfg.train_grid, self.cfg.train_grid_spacing)[:-1]
            times = times[1:] if top_out and len(times) > 1 else times
            index = torch.randint(len(times), (batch,), generator=generator)
            return torch.tensor(times, dtype=torch.float64)[index]
        u = sample_uniform_times(batch, generator, self.cfg.time_sampler)
        steps = self.schedule.discrete_steps or 0  # None for continuous schedules
        if top_out and steps > 1:
            u = u * (steps - 1) / steps  # quantizes to the steps 1 .. T - 1
        return self.schedule.quantize(u)

    def add_noise(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """z_t = alpha(t) x0 + sigma(t) eps (eq. 1); t has shape (B,)."""
        alpha, sigma = self.schedule.alpha_sigma(t)
        return _col(alpha, x0) * x0 + _col(sigma, x0) * noise

    def loss(
        self, net: Network, masks01: Tensor, image: Tensor, generator: torch.Generator, valid: Tensor | None = None
    ) -> Tensor:
        """E_t[w(lambda_t) ||x0 - x_hat||^2] (eq. 8), computed on the network's own target for stability,
        plus ``aux_weight`` times the auxiliary loss on x_hat when that is on (``recipes``).

        masks01: (B, C, H, W) in {0, 1}, ``LabelScheme.one_hot`` of the label maps (C + 1 channels for exclusive
        classes; 1 for binary); image: (B, in_channels, H, W); valid: (B, 1, H, W) {0, 1}, the pixels the loss is
        taken over (nnU-Net's ignore label out), or ``None`` for all. Returns a scalar.
        """
        x0 = masks_to_x0(masks01)
        t = self.train_times(x0.shape[0], generator)
        noise = randn(x0.shape, generator, device=x0.device, dtype=x0.dtype)
        lam = self.schedule.logsnr(t)
        alpha, sigma = _col(torch.sigmoid(lam).sqrt(), x0), _col(torch.sigmoid(-lam).sqrt(), x0)
        t_in = t.to(device=x0.device, dtype=torch.float32)
        z = alpha * x0 + sigma * noise
        if self.cfg.recycle:
            z = recipes.recycled_z(self._recycle_estimate(net, x0, image, generator), alpha, sigma, noise)
            noise = recipes.implied_noise(z, x0, alpha, sigma)
        pred = net(self._net_input(net, z, t_in, image, (alpha, sigma), generator), t_in, image)
        loss = self._main_loss(pred.float(), masks01, x0, noise, lam, alpha, sigma, valid)
        if self.cfg.aux_weight > 0:
            x_hat = self.to_x0(pred.float(), z, alpha, sigma)
            loss = loss + self.cfg.aux_weight * recipes.aux_loss(x_hat, x0, torch.sigmoid(lam), valid=valid)
        return loss

    def _main_loss(
        self,
        pred: Tensor,
        masks01: Tensor,
        x0: Tensor,
        noise: Tensor,
        lam: Tensor,
        alpha: Tensor,
        sigma: Tensor,
        valid: Tensor | None = None,
    ) -> Tensor:
        """``logits``: the deterministic UNet's Dice + CE on them; otherwise the weighted regression on the
        prediction type's target, w(lambda) times the data-space factor times the mean squared error per row
        (over the ``valid`` pixels of each row when given)."""
        if self.prediction == PredictionType.LOGITS:
            return segmentation_loss(pred, masks01, self.exclusive, valid=valid)
        tgt = param.target(self.prediction, x0, noise, alpha, sigma)
        if valid is None:
            mse = (pred - tgt).pow(2).flatten(1).mean(dim=1)
        else:
            weight = valid.to(pred).expand_as(pred).flatten(1)
            mse = ((pred - tgt).pow(2).flatten(1) * weight).sum(1) / weight.sum(1).clamp_min(1.0)
        log_factor = log_weight(self.cfg.weighting, lam, self.cfg.sigmoid_bias) + log_data_space_factor(
            self.prediction, lam
        )
        return (log_factor.exp().to(mse) * mse).mean()

    def _net_input(
        self, net: Network, z: Tensor, t: Tensor, image: Tensor, coef: tuple[Tensor, Tensor], generator: torch.Generator
    ) -> Tensor:
        """z, or with self-conditioning z and a detached first-pass estimate (or zeros) on channels;
        ``coef``: (alpha_t, sigma_t) as columns for z's rows."""
        if not self.cfg.self_condition:
            return z

        def first_pass(zin: Tensor) -> Tensor:
            return self._clipped_x0(net, zin, z, t, image, coef)

        return recipes.self_condition_input(z, recipes.self_condition_estimate(first_pass, z, generator))

    def _with_estimate(self, z: Tensor, estimate: Tensor | None) -> Tensor:
        """The network's x_t input: z, and with self-conditioning the estimate (zero when None) beside it."""
        return recipes.self_condition_input(z, estimate) if self.cfg.self_condition else z

    def _clipped_x0(
        self, net: Network, zin: Tensor, z: Tensor, t: Tensor, image: Tensor, coef: tuple[Tensor, Tensor]
    ) -> Tensor:
        """x_hat in [-1, 1] from one call on the input ``zin`` of z (per-row ``coef`` = (alpha_t, sigma_t))."""
        return self.to_x0(net(zin, t, image).float(), z, *coef).clamp(-1.0, 1.0)

    @torch.no_grad()
    def _recycle_estimate(self, net: Network, x0: Tensor, image: Tensor, generator: torch.Generator) -> Tensor:
        """Recycling's first pass at t = 1, denoised without gradient, from the ground truth noised to t = 1
        (fresh noise; ``recycle_from: truth``) or from pure noise as the sampler starts (``noise``)."""
        noise = randn(x0.shape, generator, device=x0.device, dtype=x0.dtype)
        t_max = torch.ones(x0.shape[0], dtype=torch.float64)
        alpha, sigma = (_col(v, x0) for v in self.schedule.alpha_sigma(t_max))
        z = noise if self.cfg.recycle_from == RecycleStart.NOISE else alpha * x0 + sigma * noise
        t_in = t_max.to(device=x0.device, dtype=torch.float32)
        return self._clipped_x0(net, self._with_estimate(z, None), z, t_in, image, (alpha, sigma))

    def predict_x0(self, pred: Tensor, z: Tensor, t: float, clip: bool = True) -> Tensor:
        """x_hat from a network output at a single time t shared by the batch; clipped to [-1, 1]."""
        alpha, sigma = (float(v) for v in self.schedule.alpha_sigma(t))
        x0 = self.to_x0(pred.to(z.dtype), z, alpha, sigma)
        return x0.clamp(-1.0, 1.0) if clip else x0

    def denoise(
        self, net: Network, z: Tensor, t: float, image: Tensor, clip: bool = True, estimate: Tensor | None = None
    ) -> Tensor:
        """One network call at time t for all rows of z; returns x_hat, shaped like z.

        Args:
            net: the network ``net(x_t, t, image)``.
            z: z_t (B * K, C, H, W), rows grouped by image (K members of each).
            t: the time shared by every row.
            image: (B, in_channels, H, W).
            clip: clip x_hat to [-1, 1].
            estimate: the previous step's x_hat, which the network sees with self-conditioning (zero when None).
        """
        t_in = torch.full((z.shape[0],), t, device=z.device, dtype=torch.float32)
        return self.predict_x0(net(self._with_estimate(z, estimate), t_in, image), z, t, clip)
