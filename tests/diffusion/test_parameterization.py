import pytest
import torch

from diffuseg.config import DiffusionConfig
from diffuseg.diffusion import parameterization as P
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.enums import PredictionType, ScheduleKind

KINDS = [p for p in PredictionType if p != PredictionType.LOGITS]  # the regression targets


def draws(seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 2, (4, 1, 8, 8), generator=g).double() * 2 - 1
    eps = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    lam = torch.linspace(-12, 12, 4, dtype=torch.float64).view(4, 1, 1, 1)
    return x0, eps, torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()


@pytest.mark.parametrize("kind", KINDS)
def test_round_trips_recover_x_eps_v(kind):
    x0, eps, alpha, sigma = draws()
    z = alpha * x0 + sigma * eps
    pred = P.target(kind, x0, eps, alpha, sigma)
    torch.testing.assert_close(P.to_x0(kind, pred, z, alpha, sigma), x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(P.to_eps(kind, pred, z, alpha, sigma), eps, rtol=0, atol=1e-9)
    torch.testing.assert_close(P.to_v(kind, pred, z, alpha, sigma), alpha * eps - sigma * x0, rtol=0, atol=1e-9)


def test_v_identities():
    x0, eps, alpha, sigma = draws(1)
    z = alpha * x0 + sigma * eps
    v = alpha * eps - sigma * x0
    torch.testing.assert_close(alpha * z - sigma * v, x0)
    torch.testing.assert_close(sigma * z + alpha * v, eps)


@pytest.mark.parametrize("schedule", list(ScheduleKind))
def test_add_noise_then_conversion_recovers_x0(schedule):
    proc = DiffusionProcess(DiffusionConfig(schedule=schedule, input_scale=0.3))
    g = torch.Generator().manual_seed(3)
    x0 = torch.randint(0, 2, (5, 1, 6, 6), generator=g).double() * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95], dtype=torch.float64)
    z = proc.add_noise(x0, t, eps)
    alpha, sigma = (v.view(-1, 1, 1, 1) for v in proc.schedule.alpha_sigma(t))
    torch.testing.assert_close(P.to_x0(PredictionType.EPS, eps, z, alpha, sigma), x0, rtol=0, atol=1e-9)
    v = alpha * eps - sigma * x0
    torch.testing.assert_close(P.to_x0(PredictionType.V, v, z, alpha, sigma), x0, rtol=0, atol=1e-12)


def test_logits_give_x_through_a_sigmoid_or_a_softmax():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]]).view(1, 2, 2, 1)  # (1, C=2, 2, 1)
    z, alpha, sigma = torch.zeros_like(logits), 0.6, 0.8
    x = P.to_x0(PredictionType.LOGITS, logits, z, alpha, sigma)
    torch.testing.assert_close(x, 2.0 * torch.sigmoid(logits) - 1.0)
    x = P.to_x0(PredictionType.LOGITS, logits, z, alpha, sigma, exclusive=True)
    torch.testing.assert_close(x, 2.0 * torch.softmax(logits, dim=1) - 1.0)
    torch.testing.assert_close(((x + 1) / 2).sum(1), torch.ones(1, 2, 1))  # one class per pixel
    one = logits[:, :1]  # one channel: a sigmoid even when "exclusive" (binary)
    torch.testing.assert_close(P.to_x0(PredictionType.LOGITS, one, z[:, :1], 0.6, 0.8, True), 2 * one.sigmoid() - 1)


def test_logits_imply_the_eps_and_v_of_their_x():
    x0, eps, alpha, sigma = draws(2)
    z = alpha * x0 + sigma * eps
    logits = 40.0 * x0  # x_hat = x0 to 1e-17
    torch.testing.assert_close(P.to_eps(PredictionType.LOGITS, logits, z, alpha, sigma), eps, rtol=0, atol=1e-9)
    v = alpha * eps - sigma * x0
    torch.testing.assert_close(P.to_v(PredictionType.LOGITS, logits, z, alpha, sigma), v, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="no regression target"):
        P.target(PredictionType.LOGITS, x0, eps, alpha, sigma)
