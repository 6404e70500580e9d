"""Anchored diffusion: the diffusion process on the residual of a deterministic prior (``method: anchored``).

A trunk gives a prior mu(image) in [-1, 1] (C channels, 2 p - 1 of its class probabilities p); the mask is
y_0 in {-1, 1} (``process.masks_to_x0``) and the residual r_0 = y_0 - mu, which is zero where the trunk is right
and certain. The process runs on r: z_t = alpha_t r_0 + sigma_t eps. Two published forms (``AnchorForm``):

- ``residual`` (CorrDiff, Mardani et al. 2024, "Residual corrective diffusion modeling for km-scale atmospheric
  downscaling"; PGRD, Mao et al. 2025, arXiv:2509.01330): the head sees z_t and predicts the target of r_0
  (eps, r_0 or v = alpha eps - sigma r_0, ``diffusion.prediction``); a sample is y = mu + r_hat.
- ``mean_shift`` (CARD, Han et al., NeurIPS 2022, eq. 2: y_t = alpha y_0 + (1 - alpha) mu + sigma eps; HiDiff,
  Chen et al., IEEE TMI 2024, its Bernoulli analogue from a segmenter's probability map): the forward process
  ends at N(mu, I), sampling starts there; the head sees y_t and predicts the target of y_0 (eps, y_0 or
  alpha eps - sigma y_0), as a plain diffusion network would.

Since y_t - mu = alpha r_0 + sigma eps = z_t, both forms are one process on r; they differ in what the head sees
(z_t, or z_t + mu) and predicts (the target of r_0, or of r_0 + mu).

Neither needs a process of its own. w_t = z_t + alpha_t mu = alpha_t y_0 + sigma_t eps is the ordinary process
on y_0 (``process.DiffusionProcess``), so training and sampling run that one unchanged, with its schedules,
prediction types, loss weightings, recipes and every sampler, on the network ``AnchoredDenoiser``: it maps w_t to
the head's view, calls the head, and returns the prediction of y_0's target at w_t. The targets are linear in
(x_0, eps), so target(y_0, eps) = target(r_0, eps) + target(mu, 0), the last (0, mu, -sigma mu) for (eps, x, v):
the residual head's prediction plus that, the mean-shifted head's as it is. The process's loss on w_t is then
exactly the loss on r_0 (or on y_0 seen from y_t), its estimate x_hat is mu + r_hat, clipped to [-1, 1] as every
mask estimate is; the samplers' updates are affine in (w_t, x_hat) and keep E[w_s | y_0] = alpha_s y_0, so walking
w_t walks z_t. The sampler's start w_1 ~ N(0, I) is the head's z_1 = w_1 - alpha_1 mu (``residual``) and
y_1 = w_1 + (1 - alpha_1) mu ~ N((1 - alpha_1) mu, I) (``mean_shift``): N(mu, I) up to alpha_1 (at most 0.0064
for the linear schedule with T = 1000), the approximation every sampler makes when it starts at N(0, I).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffuseg.diffusion import parameterization as param
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.enums import AnchorForm, PredictionType

Head = Callable[[Tensor, Tensor], Tensor]
"""``head(view (N, mask_channels, H, W), t (N,)) -> prediction (N, C, H, W)``: the diffusion head with the
per-image conditioning (trunk features, mu) already bound."""


def head_view(form: AnchorForm, w: Tensor, mu: Tensor, alpha: Tensor) -> Tensor:
    """What the head sees for w_t = alpha_t y_0 + sigma_t eps: z_t = w_t - alpha_t mu = alpha_t r_0 + sigma_t eps
    (``residual``), y_t = w_t + (1 - alpha_t) mu = alpha_t y_0 + (1 - alpha_t) mu + sigma_t eps (``mean_shift``).
    w, mu: (N, C, H, W); alpha: broadcastable, e.g. (N, 1, 1, 1)."""
    if form is AnchorForm.RESIDUAL:
        return w - alpha * mu
    return w + (1.0 - alpha) * mu


def prediction_shift(form: AnchorForm, prediction: PredictionType, mu: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """target(y_0, eps) - (the head's target): target(mu, 0) = (0, mu, -sigma mu) for eps, x, v with ``residual``;
    0 with ``mean_shift``, whose head predicts y_0's target itself.

    Args:
        form: residual or mean_shift.
        prediction: the process's prediction type.
        mu: the trunk's prior (N, C, H, W) in [-1, 1], one row per row of w_t.
        alpha: alpha_t, broadcastable against mu, e.g. (N, 1, 1, 1).
        sigma: sigma_t, likewise.
    """
    if form is AnchorForm.MEAN_SHIFT:
        return torch.zeros_like(mu)
    return param.target(prediction, mu, torch.zeros_like(mu), alpha, sigma)


class AnchoredDenoiser:
    """The network the process and the samplers see: ``net(w_t, t, image) -> prediction of y_0's target``.

    w_t: (B * K, C, H, W), K members per image, rows image-major; with self-conditioning (B * K, 2C, H, W), the
    second C channels the earlier estimate of y_0, passed to the head as they are. t: (B * K,) float in [0, 1].
    ``image`` is unused: the head has the image's conditioning bound (computed once per image batch).
    ``mu``: (B, C, H, W) in [-1, 1]. With ``keep_estimate`` the last call's y_0 estimate mu + r_hat (unclipped,
    float32, (B * K, C, H, W)) is kept in ``estimate``, for a loss on it, and each row's alpha_t^2 (float32,
    (B * K,)) in ``signal``.
    """

    def __init__(
        self, head: Head, mu: Tensor, process: DiffusionProcess, form: AnchorForm, keep_estimate: bool = False
    ):
        self.head, self.mu, self.process, self.form = head, mu, process, AnchorForm.parse(form)
        self.keep_estimate = keep_estimate
        self.estimate: Tensor | None = None
        self.signal: Tensor | None = None

    def __call__(self, w: Tensor, t: Tensor, image: Tensor) -> Tensor:
        channels = self.mu.shape[1]
        members = w.shape[0] // self.mu.shape[0]
        mu = (self.mu.repeat_interleave(members, dim=0) if members > 1 else self.mu).to(w.dtype)
        alpha, sigma = (v.to(w.dtype).view(-1, 1, 1, 1) for v in self.process.schedule.alpha_sigma(t.double()))
        state = w[:, :channels]
        view = head_view(self.form, state, mu, alpha)
        pred = self.head(torch.cat([view, w[:, channels:]], dim=1) if w.shape[1] > channels else view, t)
        pred = pred.float() + prediction_shift(self.form, self.process.prediction, mu, alpha, sigma).float()
        if self.keep_estimate:
            self.estimate = self.process.to_x0(pred, state.float(), alpha.float(), sigma.float())
            self.signal = alpha.float().view(-1) ** 2
        return pred
