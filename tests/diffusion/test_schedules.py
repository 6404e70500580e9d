import itertools
import math

import pytest
import torch

from diffuseg.config import DiffusionConfig
from diffuseg.diffusion.schedules import Discrete, linear_betas, make_schedule
from diffuseg.enums import ScheduleKind, Spacing

ALL = list(ScheduleKind)


def schedule(kind, **kw):
    return make_schedule(DiffusionConfig(schedule=kind, timesteps=1000, **kw))


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_variance_preserving(kind, scale):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    alpha, sigma = schedule(kind, input_scale=scale).alpha_sigma(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ALL)
def test_logsnr_strictly_decreasing_and_finite(kind):
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    lam = schedule(kind).logsnr(t)
    assert torch.isfinite(lam).all()
    assert (lam[1:] < lam[:-1]).all()


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("b", [0.1, 0.5, 2.0])
def test_input_scaling_shifts_logsnr_by_2logb(kind, b):
    t = torch.linspace(0, 1, 57, dtype=torch.float64)
    shift = schedule(kind, input_scale=b).logsnr(t) - schedule(kind).logsnr(t)
    torch.testing.assert_close(shift, torch.full_like(t, 2 * math.log(b)), rtol=0, atol=1e-12)


def test_continuous_cosine_is_clamped_to_range():
    s = schedule(ScheduleKind.CONTINUOUS_COSINE, logsnr_min=-10.0, logsnr_max=12.0)
    ends = s.logsnr(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ends, torch.tensor([12.0, -10.0], dtype=torch.float64))
    # the middle follows -2 log tan(pi t / 2) of the mapped time
    tt = s.t_min + 0.3 * (s.t_max - s.t_min)
    assert float(s.logsnr(0.3)) == pytest.approx(-2 * math.log(math.tan(math.pi * tt / 2)), abs=1e-12)


def test_discrete_table_matches_cumulative_alphas():
    s = schedule(ScheduleKind.LINEAR)
    abar = torch.cumprod(1 - linear_betas(1000), 0)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    alpha, _ = s.alpha_sigma(t)
    torch.testing.assert_close(alpha**2, abar, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", [ScheduleKind.LINEAR, ScheduleKind.COSINE])
def test_respacing_keeps_cumulative_alphas_of_chosen_steps(kind):
    s = schedule(kind)
    assert isinstance(s, Discrete)
    idx = s.sampling_steps(100)
    assert len(idx) == 100 and idx[0] == 999 and idx[-1] == 0
    times = s.sampling_times(100)
    assert times[-1] == 0.0 and len(times) == 101
    alpha, _ = s.alpha_sigma(torch.tensor(times[:-1], dtype=torch.float64))
    abar_table = torch.sigmoid(s.table)
    torch.testing.assert_close(alpha**2, abar_table[idx], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("steps", [1, 2, 5, 100, 1000])
def test_quadratic_spacing_is_denser_near_the_data(kind, steps):
    s = schedule(kind)
    if s.discrete_steps is None and steps == 1000:
        steps = 999
    lin, quad = s.sampling_times(steps), s.sampling_times(steps, Spacing.QUADRATIC)
    assert len(quad) == steps + 1 and quad[0] == 1.0 and quad[-1] == 0.0
    assert all(a > b for a, b in itertools.pairwise(quad))  # distinct, decreasing (no repeated network time)
    if 2 < steps < 1000:
        assert all(q <= lt for q, lt in zip(quad, lin)) and quad[steps // 2] < lin[steps // 2]


def test_quadratic_respacing_of_five_steps():
    # (T - 1) * (1 - k / 4)^2 for k = 0..4, the grid the DDTI benchmark's 5-step ensembles use
    assert schedule(ScheduleKind.LINEAR).sampling_steps(5, "quadratic") == [999, 562, 250, 62, 0]


def test_discrete_quantize_hits_table_points():
    s = schedule(ScheduleKind.LINEAR)
    t = s.quantize(torch.tensor([0.0, 0.4999, 0.9999999], dtype=torch.float64))
    assert t.tolist() == [1 / 1000, 500 / 1000, 1.0]


def test_bad_steps_rejected():
    with pytest.raises(ValueError, match="steps"):
        schedule(ScheduleKind.LINEAR).sampling_steps(1001)
    with pytest.raises(ValueError, match="steps"):
        schedule(ScheduleKind.CONTINUOUS_COSINE).sampling_times(0)
