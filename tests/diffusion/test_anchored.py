"""Anchored diffusion's process on the residual: the forms' algebra, a perfect trunk, the mean-shifted marginals
and start, and oracle heads (exact posterior means of known residual distributions) through every sampler."""

from __future__ import annotations

import pytest
import torch

from diffuseg.config import DiffusionConfig
from diffuseg.diffusion import parameterization as P
from diffuseg.diffusion.anchored import AnchoredDenoiser, head_view, prediction_shift
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.diffusion.samplers import sample
from diffuseg.enums import AnchorForm, PredictionType, SamplerKind, ScheduleKind, TimeSampler

REGRESSION = [p for p in PredictionType if p != PredictionType.LOGITS]  # the head predicts the residual's target

SIZE = 8


def process(schedule=ScheduleKind.CONTINUOUS_COSINE, prediction=PredictionType.V, **options) -> DiffusionProcess:
    return DiffusionProcess(DiffusionConfig(schedule=schedule, prediction=prediction, **options))


def coefficients(proc: DiffusionProcess, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) per row of t as float32 columns (N, 1, 1, 1)."""
    return tuple(v.float().view(-1, 1, 1, 1) for v in proc.schedule.alpha_sigma(t.double()))


def soft_prior(batch: int = 1) -> torch.Tensor:
    """A soft, spatially varying mu in [-1, 1]: (batch, 1, SIZE, SIZE)."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    mu = torch.tanh((xx - yy).float() / 3.0) * 0.8
    return mu.expand(batch, 1, SIZE, SIZE).clone()


class ResidualOracle:
    """The exact denoiser of a residual distribution: r_0 = y_j - mu with probability p_j (whole masks y_j).

    Called as the head: ``(view (N, 1, H, W), t (N,)) -> the head's target`` for the form: the posterior mean
    r_hat = sum_j w_j r_j, w_j ~ p_j N(z_t; alpha r_j, sigma^2 I) with z_t the residual state the view shows,
    returned as the target of r_0 (``residual``) or of y_0 = mu + r_0 (``mean_shift``). Records every view."""

    def __init__(self, proc, form, mu, masks, probs):
        self.proc, self.form, self.mu = proc, form, mu  # mu (1, 1, H, W)
        self.r = masks * 2.0 - 1.0 - mu  # (J, 1, H, W)
        self.log_p = torch.log(torch.tensor(probs))
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, view, t):
        self.seen.append((view.clone(), t.clone()))
        alpha, sigma = coefficients(self.proc, t)
        mu = self.mu.to(view)
        z = view if self.form is AnchorForm.RESIDUAL else view - mu
        dist = ((z.unsqueeze(1) - alpha.unsqueeze(1) * self.r.unsqueeze(0)) ** 2).flatten(2).sum(2)  # (N, J)
        w = torch.softmax(self.log_p - dist / (2 * sigma.view(-1, 1) ** 2), dim=1)
        r_hat = torch.einsum("nj,jchw->nchw", w, self.r)
        eps_hat = (z - alpha * r_hat) / sigma
        x0 = r_hat if self.form is AnchorForm.RESIDUAL else r_hat + mu
        return P.target(self.proc.prediction, x0, eps_hat, alpha, sigma)


@pytest.mark.parametrize("form", list(AnchorForm))
@pytest.mark.parametrize("prediction", REGRESSION)
def test_the_head_sees_the_residual_process_and_its_prediction_is_y0s_target(form, prediction):
    """For w_t = alpha y_0 + sigma eps: the residual head sees alpha r_0 + sigma eps, the mean-shifted one
    alpha y_0 + (1 - alpha) mu + sigma eps = that + mu; the head's target plus the shift is y_0's target."""
    g = torch.Generator().manual_seed(0)
    y0 = torch.randint(0, 2, (4, 2, SIZE, SIZE), generator=g).float() * 2 - 1
    mu = torch.rand(y0.shape, generator=g) * 2 - 1
    eps = torch.randn(y0.shape, generator=g)
    alpha = torch.tensor([0.1, 0.5, 0.9, 0.99]).view(-1, 1, 1, 1)
    sigma = (1 - alpha**2).sqrt()
    w, r0 = alpha * y0 + sigma * eps, y0 - mu
    residual_view = alpha * r0 + sigma * eps
    expected = residual_view if form is AnchorForm.RESIDUAL else alpha * y0 + (1 - alpha) * mu + sigma * eps
    torch.testing.assert_close(head_view(form, w, mu, alpha), expected)
    torch.testing.assert_close(head_view(AnchorForm.MEAN_SHIFT, w, mu, alpha) - mu, residual_view)
    head_target = P.target(prediction, r0 if form is AnchorForm.RESIDUAL else y0, eps, alpha, sigma)
    shifted = head_target + prediction_shift(form, prediction, mu, alpha, sigma)
    torch.testing.assert_close(shifted, P.target(prediction, y0, eps, alpha, sigma))


def test_a_perfect_trunk_leaves_the_residual_head_a_zero_target():
    """mu = y_0: r_0 = 0, so an x-predicting residual head that answers 0 has a training loss of exactly 0."""
    proc = process(ScheduleKind.LINEAR, PredictionType.X)
    y0 = torch.randint(0, 2, (6, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(1)).float()
    mu = y0 * 2 - 1
    targets = []

    def zero_head(view, t):
        targets.append(view)
        return torch.zeros_like(view)

    denoiser = AnchoredDenoiser(zero_head, mu, proc, AnchorForm.RESIDUAL, keep_estimate=True)
    assert float(proc.loss(denoiser, y0, torch.zeros(6, 1, SIZE, SIZE), torch.Generator().manual_seed(2))) == 0.0
    torch.testing.assert_close(denoiser.estimate, mu)  # mu + r_hat with r_hat = 0


@pytest.mark.parametrize("form", list(AnchorForm))
@pytest.mark.parametrize("prediction", REGRESSION)
def test_the_zero_residual_oracle_has_zero_loss(form, prediction):
    proc = process(ScheduleKind.LINEAR, prediction)
    y0 = torch.randint(0, 2, (6, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(1)).float()
    mu = y0 * 2 - 1
    oracle = ResidualOracle(proc, form, mu[:1], y0[:1], [1.0])
    rows = y0[:1].expand(6, -1, -1, -1)
    loss = proc.loss(
        AnchoredDenoiser(oracle, mu[:1], proc, form),
        rows,
        torch.zeros(1, 1, SIZE, SIZE),
        torch.Generator().manual_seed(2),
    )
    assert float(loss) < 1e-8


@pytest.mark.parametrize("kind", list(SamplerKind))
@pytest.mark.parametrize("schedule", list(ScheduleKind))
@pytest.mark.parametrize("prediction", REGRESSION)
@pytest.mark.parametrize("form", list(AnchorForm))
def test_a_head_that_adds_nothing_samples_mu(kind, schedule, prediction, form):
    """A head whose residual estimate is 0 (the oracle of r_0 = 0) makes every sampler return mu itself, a soft
    prior included: soft = (mu + 1) / 2 for every member."""
    proc = process(schedule, prediction, input_scale=0.5)
    mu = soft_prior(2)
    mu[1] = -mu[1]
    oracle = ResidualOracle(proc, form, mu[:1], ((mu[:1] + 1) / 2), [1.0])

    def head(view, t):  # one oracle per image: rows 0-2 belong to image 0, rows 3-5 to image 1
        rows = view.shape[0] // 2
        oracle.mu, oracle.r = mu[:1], torch.zeros(1, 1, SIZE, SIZE)
        first = oracle(view[:rows], t[:rows])
        oracle.mu = mu[1:]
        return torch.cat([first, oracle(view[rows:], t[rows:])])

    out = sample(
        kind,
        AnchoredDenoiser(head, mu, proc, form),
        torch.zeros(2, 1, SIZE, SIZE),
        proc,
        6,
        generator=torch.Generator().manual_seed(0),
        members=3,
    )
    torch.testing.assert_close(out.soft, ((mu + 1) / 2).repeat_interleave(3, 0), rtol=0, atol=1e-5)


@pytest.mark.parametrize("form", list(AnchorForm))
def test_training_views_follow_the_forward_marginals(form):
    """Over many draws of the training loss, the head's input is alpha y_0 + (1 - alpha) mu + sigma eps
    (mean shift; alpha r_0 + sigma eps residual) with eps of mean 0, variance 1, uncorrelated with y_0 and mu."""
    proc = process(ScheduleKind.LINEAR, PredictionType.EPS, time_sampler=TimeSampler.LOW_DISCREPANCY)
    g = torch.Generator().manual_seed(3)
    y01 = torch.randint(0, 2, (4096, 1, 4, 4), generator=g).float()
    y0, mu = y01 * 2 - 1, torch.rand(4096, 1, 4, 4, generator=g) * 2 - 1
    seen = []

    def head(view, t):
        seen.append((view, t))
        return torch.zeros_like(view)

    proc.loss(AnchoredDenoiser(head, mu, proc, form), y01, torch.zeros(4096, 1, 4, 4), g)
    view, t = seen[0]
    alpha, sigma = coefficients(proc, t)
    mean = alpha * y0 + (1 - alpha) * mu if form is AnchorForm.MEAN_SHIFT else alpha * (y0 - mu)
    eps = (view - mean) / sigma
    assert abs(float(eps.mean())) < 0.01 and float(eps.var()) == pytest.approx(1.0, abs=0.02)
    for other in (y0, mu):
        assert abs(float(torch.corrcoef(torch.stack([eps.flatten(), other.flatten()]))[0, 1])) < 0.01


def test_mean_shifted_sampling_starts_at_n_mu_i():
    """The first head call, at t = 1, sees y_1 ~ N(mu, I) per pixel (up to alpha_1 mu), over 4,000 members."""
    proc = process(ScheduleKind.LINEAR, PredictionType.EPS)
    mu = soft_prior()
    oracle = ResidualOracle(proc, AnchorForm.MEAN_SHIFT, mu, (mu > 0).float(), [1.0])
    sample(
        "ddim",
        AnchoredDenoiser(oracle, mu, proc, AnchorForm.MEAN_SHIFT),
        torch.zeros(1, 1, SIZE, SIZE),
        proc,
        2,
        generator=torch.Generator().manual_seed(0),
        members=4000,
    )
    view, t = oracle.seen[0]
    assert float(t.min()) == float(t.max()) == 1.0
    alpha_1 = float(proc.schedule.alpha_sigma(1.0)[0])
    assert alpha_1 < 0.01
    torch.testing.assert_close(view.mean(0), mu[0], rtol=0, atol=0.06)
    torch.testing.assert_close(view.var(0), torch.ones(1, SIZE, SIZE), rtol=0, atol=0.1)


CANDIDATES = (0.2, 0.5, 0.3)


def candidates() -> torch.Tensor:
    """Three whole masks (3, 1, SIZE, SIZE) {0, 1}: a small disc, a large disc, empty."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    d2 = (yy - 3.5) ** 2 + (xx - 3.5) ** 2
    return torch.stack([(d2 < 3).float(), (d2 < 10).float(), torch.zeros(SIZE, SIZE)]).unsqueeze(1)


@pytest.mark.parametrize("form", list(AnchorForm))
@pytest.mark.parametrize("kind", [SamplerKind.DDPM, SamplerKind.DDIM])
def test_an_oracle_head_recovers_the_residual_distribution(form, kind):
    """With the exact posterior mean of r_0 (three masks with probabilities 0.2 / 0.5 / 0.3 around a soft mu),
    the ancestral and the deterministic sampler draw each mask with its probability."""
    proc = process(ScheduleKind.CONTINUOUS_COSINE, PredictionType.V)
    mu, masks = soft_prior(), candidates()
    oracle = ResidualOracle(proc, form, mu, masks, list(CANDIDATES))
    members = 800
    out = sample(
        kind,
        AnchoredDenoiser(oracle, mu, proc, form),
        torch.zeros(1, 1, SIZE, SIZE),
        proc,
        25,
        generator=torch.Generator().manual_seed(4),
        members=members,
    )
    same = (out.mask.unsqueeze(1) == masks.unsqueeze(0)).flatten(2).all(2)  # (members, 3)
    assert bool(same.any(1).all()), "every member is one of the three masks"
    freq = same.float().mean(0)
    torch.testing.assert_close(freq, torch.tensor(CANDIDATES), rtol=0, atol=0.06)  # ~3.5 standard errors
