"""The training loss of ``DiffusionProcess``: the network's own target, weighted into the data-space error."""

from __future__ import annotations

import pytest
import torch

from diffuseg.config import DiffusionConfig
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.diffusion.weighting import sample_uniform_times
from diffuseg.enums import PredictionType, ScheduleKind, Weighting


class FixedNet(torch.nn.Module):
    """Returns a constant prediction; the loss then has a closed form given the drawn t and noise."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, z, t, image):
        return torch.full_like(z, self.value)


@pytest.mark.parametrize(
    "prediction,weighting",
    [
        (PredictionType.EPS, Weighting.SNR),
        (PredictionType.X, Weighting.UNIFORM),
        (PredictionType.V, Weighting.SNR_PLUS_ONE),
    ],
)
def test_loss_is_plain_mse_on_own_target_for_matching_weighting(prediction, weighting):
    """eps+SNR is MedSegDiff's eps-MSE (eq. 7), x+uniform the x-MSE, v+(SNR+1) the v-MSE: factor exactly 1."""
    cfg = DiffusionConfig(schedule=ScheduleKind.LINEAR, prediction=prediction, weighting=weighting)
    proc = DiffusionProcess(cfg)
    masks = torch.randint(0, 2, (6, 1, 4, 4), generator=torch.Generator().manual_seed(1)).float()
    image = torch.zeros(6, 1, 4, 4)
    loss = proc.loss(FixedNet(0.25), masks, image, torch.Generator().manual_seed(7))
    # replay the same draws
    g = torch.Generator().manual_seed(7)
    u = sample_uniform_times(6, g, cfg.time_sampler)
    t = proc.schedule.quantize(u)
    eps = torch.randn(masks.shape, generator=g)
    x0 = masks * 2 - 1
    alpha, sigma = (v.view(-1, 1, 1, 1).float() for v in proc.schedule.alpha_sigma(t))
    target = {PredictionType.EPS: eps, PredictionType.X: x0, PredictionType.V: alpha * eps - sigma * x0}[prediction]
    torch.testing.assert_close(loss, (0.25 - target).pow(2).mean(), rtol=1e-5, atol=1e-6)


def test_weighted_loss_equals_data_space_error():
    """For eps-prediction with uniform weighting the loss is e^{-lambda} ||eps - eps_hat||^2 = ||x - x_hat||^2."""
    cfg = DiffusionConfig(
        schedule=ScheduleKind.CONTINUOUS_COSINE,
        prediction=PredictionType.EPS,
        weighting=Weighting.UNIFORM,
        logsnr_min=-5,
        logsnr_max=5,
    )
    proc = DiffusionProcess(cfg)
    masks = torch.ones(3, 1, 2, 2)
    loss = proc.loss(FixedNet(0.0), masks, torch.zeros(3, 1, 2, 2), torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    t = proc.schedule.quantize(sample_uniform_times(3, g, cfg.time_sampler))
    eps = torch.randn(masks.shape, generator=g, dtype=torch.float32).double()
    alpha, sigma = (v.view(-1, 1, 1, 1) for v in proc.schedule.alpha_sigma(t))
    z = alpha * 1.0 + sigma * eps
    x_hat = z / alpha  # eps_hat = 0
    torch.testing.assert_close(loss.double(), (x_hat - 1.0).pow(2).mean(), rtol=1e-5, atol=1e-6)
