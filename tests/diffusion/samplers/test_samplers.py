import math

import pytest
import torch

from diffuseg.config import DiffusionConfig
from diffuseg.diffusion import parameterization as P
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.diffusion.samplers import sample
from diffuseg.enums import DDPMVariance, PredictionType, SamplerKind, ScheduleKind, Spacing

H = W = 16


def true_masks(batch=2):
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    disk = ((yy - 8) ** 2 + (xx - 8) ** 2 < 20).float()
    masks = torch.stack([disk, 1 - disk][:batch]).unsqueeze(1)
    return masks


class Oracle(torch.nn.Module):
    """Knows x0 for each image and answers with the matching eps / x / v; records every z it sees."""

    def __init__(self, process, masks):
        super().__init__()
        self.process, self.x0, self.seen = process, masks * 2 - 1, []

    def forward(self, z, t, image):
        k = z.shape[0] // image.shape[0]
        x0 = self.x0.repeat_interleave(k, dim=0).to(z)
        alpha, sigma = (float(v) for v in self.process.schedule.alpha_sigma(float(t[0])))
        self.seen.append((float(t[0]), z.clone(), alpha, sigma, x0))
        if self.process.prediction == PredictionType.LOGITS:
            return 30.0 * x0  # sigmoid(+-30): x_hat = x0 to 1e-13
        eps = (z - alpha * x0) / sigma
        return P.target(self.process.prediction, x0, eps, alpha, sigma)


def make(schedule, prediction, scale=1.0):
    return DiffusionProcess(DiffusionConfig(schedule=schedule, prediction=prediction, input_scale=scale))


@pytest.mark.parametrize("schedule", list(ScheduleKind))
@pytest.mark.parametrize("prediction", list(PredictionType))
@pytest.mark.parametrize("kind", [SamplerKind.DDIM, SamplerKind.DPM_SOLVER, SamplerKind.DDPM])
def test_oracle_lands_on_x0(schedule, prediction, kind):
    proc = make(schedule, prediction, scale=0.5)
    masks = true_masks()
    out = sample(
        kind,
        Oracle(proc, masks),
        torch.zeros(2, 1, H, W),
        proc,
        10,
        generator=torch.Generator().manual_seed(0),
        members=3,
    )
    assert out.mask.shape == (6, 1, H, W)
    torch.testing.assert_close(out.mask, masks.repeat_interleave(3, 0))
    torch.testing.assert_close(out.soft, masks.repeat_interleave(3, 0), rtol=0, atol=1e-4)


@pytest.mark.parametrize("spacing", list(Spacing))
@pytest.mark.parametrize("kind", list(SamplerKind))
def test_samplers_call_the_network_on_the_spaced_grid_and_land_on_x0(kind, spacing):
    proc = make(ScheduleKind.LINEAR, PredictionType.EPS)
    masks = true_masks()
    net = Oracle(proc, masks)
    out = sample(
        kind, net, torch.zeros(2, 1, H, W), proc, 5, generator=torch.Generator().manual_seed(0), spacing=spacing
    )
    assert [t for t, *_ in net.seen] == pytest.approx(proc.schedule.sampling_times(5, spacing)[:-1])
    torch.testing.assert_close(out.mask, masks)


@pytest.mark.parametrize("kind", [SamplerKind.DDIM, SamplerKind.DPM_SOLVER])
def test_deterministic_samplers_trajectory_stays_on_the_oracle_path(kind):
    """With eta = 0 and the oracle, z_s = alpha_s x0 + sigma_s eps_1 exactly: the starting noise is carried."""
    proc = make(ScheduleKind.CONTINUOUS_COSINE, PredictionType.V)
    net = Oracle(proc, true_masks(1))
    sample(kind, net, torch.zeros(1, 1, H, W), proc, 8, generator=torch.Generator().manual_seed(1))
    eps1 = net.seen[0][1]  # z at t = 1 with logSNR clamped: not pure noise, so recover eps from it
    _, z1, a1, s1, x0 = net.seen[0]
    eps1 = (z1 - a1 * x0) / s1
    for _, z, alpha, sigma, x0 in net.seen[1:]:
        torch.testing.assert_close(z, alpha * x0 + sigma * eps1, rtol=0, atol=2e-5)


@pytest.mark.parametrize("variance", list(DDPMVariance))
def test_ddpm_marginals_match_forward_process(variance):
    """Ancestral steps with the oracle keep z_s ~ N(alpha_s x0, sigma_s^2) for the posterior variance;
    the larger beta variance gives a spread at least as large; both shrink to x0 as the noise vanishes."""
    proc = make(ScheduleKind.LINEAR, PredictionType.EPS)
    masks = torch.ones(1, 1, 64, 64)
    net = Oracle(proc, masks)
    sample(
        SamplerKind.DDPM,
        net,
        torch.zeros(1, 1, 64, 64),
        proc,
        20,
        generator=torch.Generator().manual_seed(0),
        members=8,
        ddpm_variance=variance,
    )
    for _, z, alpha, sigma, x0 in net.seen[1:]:
        resid = (z - alpha * x0) / sigma
        assert abs(resid.mean().item()) < 0.05 * max(1.0, resid.std().item())
        if variance == DDPMVariance.POSTERIOR:
            assert resid.std().item() == pytest.approx(1.0, abs=0.05)
        else:
            assert resid.std().item() > 0.95
    last_sigma = net.seen[-1][3]
    assert last_sigma < 0.02  # the final z is within a few hundredths of x0


def test_per_row_generators_make_members_independent_of_batch():
    proc = make(ScheduleKind.LINEAR, PredictionType.EPS)

    class Noisy(torch.nn.Module):
        def forward(self, z, t, image):
            return 0.5 * z + image.repeat_interleave(z.shape[0] // image.shape[0], 0)

    image = torch.randn(1, 1, H, W, generator=torch.Generator().manual_seed(5))
    gens = lambda ks: [torch.Generator().manual_seed(100 + k) for k in ks]  # noqa: E731
    together = sample("ddpm", Noisy(), image, proc, 5, generator=gens(range(4)), members=4)
    alone = sample("ddpm", Noisy(), image, proc, 5, generator=gens([2]), members=1)
    torch.testing.assert_close(together.soft[2:3], alone.soft)


def test_ddim_eta_one_is_stochastic_and_eta_zero_deterministic():
    proc = make(ScheduleKind.CONTINUOUS_COSINE, PredictionType.X)

    class Net(torch.nn.Module):
        def forward(self, z, t, image):
            return torch.tanh(z)

    image = torch.zeros(1, 1, H, W)

    def run(eta, seed_after):
        g = torch.Generator().manual_seed(0)
        out = sample("ddim", Net(), image, proc, 6, generator=g, eta=eta)
        return out.soft, g.initial_seed() == seed_after

    a, _ = run(0.0, 0)
    b, _ = run(0.0, 0)
    torch.testing.assert_close(a, b)
    c, _ = run(1.0, 0)
    assert not torch.allclose(a, c)
    assert math.isfinite(float(c.sum()))
