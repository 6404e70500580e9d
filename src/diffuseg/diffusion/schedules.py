"""Noise schedules behind one interface: logSNR, alpha and sigma as functions of t in [0, 1], in float64.

All schedules are variance preserving, alpha^2 + sigma^2 = 1, so everything follows from the logSNR
lambda(t) = log(alpha^2 / sigma^2): alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda)
(the ambiguity paper, eqs. 3 and 5; Kingma et al. 2021). t = 0 is data and t = 1 is noise.

Input scaling (the ambiguity paper, eqs. 6-7; Chen 2023): multiplying the data by b lowers the SNR by b^2.
The equivalent unit-variance schedule has lambda_b(t) = lambda(t) + 2 log b, which is what every schedule
here applies, so data stay in {-1, 1} and all formulas are reused unchanged.

Discrete schedules (Ho et al. 2020) hold T cumulative alphas; step i (0-based) sits at t = (i + 1) / T.
Sampling with S < T steps keeps the cumulative alphas of S chosen steps ("respacing", Nichol & Dhariwal 2021),
spaced evenly in t ("linear") or as t ~ (k / S)^2, denser near the data ("quadratic", Song et al. 2021, App. D.2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffuseg.config import DiffusionConfig
from diffuseg.enums import ScheduleKind, Spacing

DTYPE = torch.float64
_POWER = {Spacing.LINEAR: 1.0, Spacing.QUADRATIC: 2.0}  # sampling grid: t_k = (1 - k / S) ** power


class Schedule:
    """Base class: subclasses define ``_base_logsnr`` on t in [0, 1] (before input scaling)."""

    discrete_steps: int | None = None

    def __init__(self, input_scale: float = 1.0):
        if input_scale <= 0:
            raise ValueError(f"input_scale must be > 0, got {input_scale}")
        self.shift = 2.0 * math.log(input_scale)

    def _base_logsnr(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def logsnr(self, t: Tensor | float) -> Tensor:
        """lambda(t) in float64, strictly decreasing in t; shape of ``t``."""
        return self._base_logsnr(torch.as_tensor(t, dtype=DTYPE)) + self.shift

    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(alpha(t), sigma(t)) in float64 with alpha^2 + sigma^2 = 1."""
        lam = self.logsnr(t)
        return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()

    def quantize(self, u: Tensor) -> Tensor:
        """Map uniform u in [0, 1) to training times (identity for continuous schedules)."""
        return u.to(DTYPE)

    def sampling_times(self, steps: int, spacing: Spacing | str = Spacing.LINEAR) -> list[float]:
        """``steps + 1`` decreasing times from 1 to 0; the network is called at all but the last (data)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        power = _POWER[Spacing(spacing)]
        return [(1.0 - k / steps) ** power for k in range(steps)] + [0.0]


class ContinuousCosine(Schedule):
    """VP cosine schedule, lambda(t) = -2 log tan(pi t / 2) (the ambiguity paper, eq. 4; Nichol & Dhariwal 2021).

    t is mapped linearly onto [t_min, t_max] so that the unscaled logSNR spans exactly
    [logsnr_min, logsnr_max] (Hoogeboom et al. 2023): clamped, yet strictly decreasing.
    """

    def __init__(self, input_scale: float = 1.0, logsnr_min: float = -15.0, logsnr_max: float = 15.0):
        super().__init__(input_scale)
        self.t_min = 2.0 / math.pi * math.atan(math.exp(-0.5 * logsnr_max))
        self.t_max = 2.0 / math.pi * math.atan(math.exp(-0.5 * logsnr_min))

    def _base_logsnr(self, t: Tensor) -> Tensor:
        tt = self.t_min + t * (self.t_max - self.t_min)
        return -2.0 * torch.log(torch.tan(0.5 * math.pi * tt))


class ContinuousLinear(Schedule):
    """VP linear schedule of Song et al. (2021): log alpha^2 = -(b0 t + (b1 - b0) t^2 / 2), b0 = 0.1, b1 = 20.

    Then lambda(t) = -log(expm1(b0 t + (b1 - b0) t^2 / 2)); t is mapped onto the range whose logSNR lies in
    [logsnr_min, logsnr_max].
    """

    beta_0, beta_1 = 0.1, 20.0

    def __init__(self, input_scale: float = 1.0, logsnr_min: float = -15.0, logsnr_max: float = 15.0):
        super().__init__(input_scale)
        self.t_min = self._time_of(logsnr_max)
        self.t_max = min(1.0, self._time_of(logsnr_min))

    def _time_of(self, lam: float) -> float:
        """Solve (b1 - b0)/2 t^2 + b0 t = log1p(exp(-lam)) for t >= 0."""
        c = math.log1p(math.exp(-lam))
        a, b = 0.5 * (self.beta_1 - self.beta_0), self.beta_0
        return (-b + math.sqrt(b * b + 4 * a * c)) / (2 * a)

    def _base_logsnr(self, t: Tensor) -> Tensor:
        tt = self.t_min + t * (self.t_max - self.t_min)
        return -torch.log(torch.expm1(self.beta_0 * tt + 0.5 * (self.beta_1 - self.beta_0) * tt**2))


class Discrete(Schedule):
    """DDPM with T steps: a table of cumulative alphas, abar_i = prod_{j<=i} (1 - beta_j) (Ho et al. 2020).

    Between table points the logSNR is interpolated linearly in t, so continuous-time samplers also work; on
    the points it is exact. ``sampling_times(S)`` returns the respaced steps, which keep their cumulative alphas.
    """

    def __init__(self, betas: Tensor, input_scale: float = 1.0):
        super().__init__(input_scale)
        betas = betas.to(DTYPE)
        abar = torch.cumprod(1.0 - betas, dim=0)
        self.discrete_steps = len(betas)
        self.table = torch.log(abar) - torch.log1p(-abar)  # unscaled logSNR of step i
        self.knots = torch.arange(1, self.discrete_steps + 1, dtype=DTYPE) / self.discrete_steps

    def _base_logsnr(self, t: Tensor) -> Tensor:
        T = self.discrete_steps
        pos = (t * T - 1.0).clamp(0.0, T - 1.0)
        lo = pos.floor().long().clamp(max=T - 2)
        frac = pos - lo.to(DTYPE)
        table = self.table.to(t.device)
        inside = table[lo] + frac * (table[lo + 1] - table[lo])
        # below the first step (t < 1/T) extrapolate with the first slope, towards data
        first = table[0] + (t * T - 1.0) * (table[1] - table[0])
        return torch.where(t * T < 1.0, first, inside)

    def quantize(self, u: Tensor) -> Tensor:
        T = self.discrete_steps
        return ((u.to(DTYPE) * T).floor().clamp(0, T - 1) + 1.0) / T

    def sampling_steps(self, steps: int, spacing: Spacing | str = Spacing.LINEAR) -> list[int]:
        """The S distinct step indices kept when respacing T -> S, from T-1 down to 0, spaced as ``spacing``."""
        T = self.discrete_steps
        if not 1 <= steps <= T:
            raise ValueError(f"steps must be in [1, {T}] for a {T}-step schedule, got {steps}")
        if steps == 1:
            return [T - 1]
        power = _POWER[Spacing(spacing)]
        idx = [round((T - 1) * (1 - k / (steps - 1)) ** power) for k in range(steps)]
        for k in range(steps - 2, -1, -1):  # quadratic rounding can repeat indices near 0: keep them distinct
            idx[k] = max(idx[k], idx[k + 1] + 1)
        return idx

    def sampling_times(self, steps: int, spacing: Spacing | str = Spacing.LINEAR) -> list[float]:
        return [(i + 1) / self.discrete_steps for i in self.sampling_steps(steps, spacing)] + [0.0]


def linear_betas(T: int) -> Tensor:
    """Ho et al. (2020): betas from 1e-4 to 0.02 at T = 1000, scaled by 1000 / T for other T."""
    scale = 1000.0 / T
    return torch.linspace(1e-4 * scale, 0.02 * scale, T, dtype=DTYPE)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal (2021), eq. 17: abar(t) = cos^2(((t/T + s) / (1 + s)) pi/2), betas clipped."""
    steps = torch.arange(T + 1, dtype=DTYPE) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def make_schedule(cfg: DiffusionConfig) -> Schedule:
    """The schedule a ``DiffusionConfig`` names."""
    if cfg.schedule == ScheduleKind.LINEAR:
        return Discrete(linear_betas(cfg.timesteps), cfg.input_scale)
    if cfg.schedule == ScheduleKind.COSINE:
        return Discrete(cosine_betas(cfg.timesteps), cfg.input_scale)
    if cfg.schedule == ScheduleKind.CONTINUOUS_COSINE:
        return ContinuousCosine(cfg.input_scale, cfg.logsnr_min, cfg.logsnr_max)
    if cfg.schedule == ScheduleKind.CONTINUOUS_LINEAR:
        return ContinuousLinear(cfg.input_scale, cfg.logsnr_min, cfg.logsnr_max)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")
