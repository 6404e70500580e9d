import math

import pytest
import torch

from diffuseg.config import DiffusionConfig
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.diffusion.weighting import sample_uniform_times, weight
from diffuseg.enums import PredictionType, ScheduleKind, TimeSampler, Weighting

LAMS = [-6.0, -1.0, 0.0, 0.5, 4.0]


def sig(x):
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize(
    "kind,formula",
    [
        (Weighting.SNR, lambda l, b: math.exp(l)),
        (Weighting.TRUNCATED_SNR, lambda l, b: max(math.exp(l), 1.0)),
        (Weighting.SNR_PLUS_ONE, lambda l, b: math.exp(l) + 1),
        (Weighting.UNIFORM, lambda l, b: 1.0),
        (Weighting.SIGMOID, lambda l, b: math.exp(l) * sig(b - l)),
    ],
)
@pytest.mark.parametrize("bias", [-3.0, 2.0])
def test_weights_equal_their_formulas(kind, formula, bias):
    got = weight(kind, torch.tensor(LAMS, dtype=torch.float64), bias)
    want = torch.tensor([formula(lam, bias) for lam in LAMS], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_sigmoid_tends_to_snr_for_large_bias():
    lam = torch.tensor(LAMS, dtype=torch.float64)
    torch.testing.assert_close(weight(Weighting.SIGMOID, lam, 60.0), weight(Weighting.SNR, lam), rtol=1e-9, atol=0)


def test_low_discrepancy_times_are_stratified():
    u = sample_uniform_times(8, torch.Generator().manual_seed(0), TimeSampler.LOW_DISCREPANCY)
    assert sorted((u * 8).floor().long().tolist()) == list(range(8))


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
