"""What every sampler shares: the starting noise, the time grid and the output.

All samplers walk the schedule's grid t_0 = 1 > t_1 > ... > t_S = 0, call the network at t_0..t_{S-1}
(S network evaluations) and return the last data estimate x_hat, i.e. the step to t = 0 lands on the
denoised mask (alpha = 1, sigma = 0 there). Coefficients are Python floats: every row shares t.

Classes: x_t has C channels, the one-hot of the label scheme scaled to {-1, 1} (``LabelScheme.channels``:
C + 1 for exclusive classes; binary 1), and the soft estimate is decoded into a label map of atoms by
``LabelScheme.decode`` (argmax for exclusive classes, per-channel threshold for regions). Without a scheme
(``scheme=None``) a sampler is binary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from diffuseg.diffusion.noise import Generators, randn
from diffuseg.diffusion.process import DiffusionProcess, Network, x0_to_soft
from diffuseg.enums import Spacing
from diffuseg.labels import LabelScheme


@dataclass(frozen=True)
class SampleOutput:
    """mask: (B * K, 1, H, W) float32 label map of atoms (``LabelScheme.decode``; binary: {0, 1},
    ``soft > threshold``); soft: (B * K, C, H, W) in [0, 1], the per-channel estimate (x_hat + 1) / 2 before
    decoding (binary: C = 1). Rows grouped by image, K members each."""

    mask: Tensor
    soft: Tensor


@dataclass(frozen=True)
class Step:
    """One transition t -> s of the grid with the schedule's float64 values as floats."""

    t: float
    s: float
    logsnr_t: float
    logsnr_s: float  # +inf at s = 0 (data)

    def alpha_sigma(self, at_s: bool) -> tuple[float, float]:
        lam = self.logsnr_s if at_s else self.logsnr_t
        if math.isinf(lam):
            return 1.0, 0.0
        return math.sqrt(_sigmoid(lam)), math.sqrt(_sigmoid(-lam))

    def sigma2_ts(self) -> float:
        """Variance of q(z_t | z_s): sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2 = -sigma_t^2 expm1(l_t - l_s)."""
        sigma_t2 = _sigmoid(-self.logsnr_t)
        return sigma_t2 if math.isinf(self.logsnr_s) else -sigma_t2 * math.expm1(self.logsnr_t - self.logsnr_s)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def grid(process: DiffusionProcess, steps: int, spacing: Spacing | str = Spacing.LINEAR) -> list[Step]:
    """The S transitions of the sampling grid spaced as ``spacing``, last one to the data (s = 0)."""
    times = process.schedule.sampling_times(steps, spacing)
    lams = [float(process.schedule.logsnr(t)) for t in times[:-1]] + [math.inf]
    return [Step(times[i], times[i + 1], lams[i], lams[i + 1]) for i in range(len(times) - 1)]


def start_noise(image: Tensor, members: int, generator: Generators, channels: int = 1) -> Tensor:
    """z_1 ~ N(0, I) of shape (B * K, channels, H, W), K = ``members``, rows grouped by image (``channels``:
    ``LabelScheme.channels``)."""
    b, _, h, w = image.shape
    return randn((b * members, channels, h, w), generator, device=image.device, dtype=torch.float32)


def to_mask(soft: Tensor, threshold: float, scheme: LabelScheme | None = None) -> Tensor:
    """soft (B * K, C, H, W), in [0, 1] or not yet clipped to it -> label map (B * K, 1, H, W) float32 of atoms:
    ``scheme.decode`` (argmax over the channels for exclusive classes, ``soft > threshold`` per channel for
    regions); ``scheme=None``: binary, ``soft > threshold``."""
    if scheme is None:
        return (soft > threshold).float()
    return scheme.decode(soft, threshold).unsqueeze(1).float()


Update = Callable[[Tensor, Tensor, "Step"], Tensor]
"""One sampler's transition: (z_t, x_hat, step) -> z_s."""


@torch.inference_mode()
def walk(
    net: Network,
    image: Tensor,
    process: DiffusionProcess,
    steps: int,
    generator: Generators,
    members: int,
    threshold: float,
    update: Update,
    spacing: Spacing | str = Spacing.LINEAR,
    scheme: LabelScheme | None = None,
) -> SampleOutput:
    """Start from noise, call the network at each grid time and let ``update`` take z_t to z_s; the last
    transition (to the data) returns the network's x_hat. image: (B, in_channels, H, W) -> label maps
    (B * K, 1, H, W) and soft (B * K, C, H, W), C = ``scheme.channels`` (binary: 1).

    Args:
        net: the network ``net(x_t, t, image)``.
        image: (B, in_channels, H, W).
        process: the schedule and prediction type.
        steps: S, the network calls per member.
        generator: one generator, or one per output row (B * K).
        members: K, masks per image.
        threshold: the cut of a binary or region channel's soft mask.
        update: the sampler's transition (z_t, x_hat, step) -> z_s.
        spacing: the time grid (``Spacing``).
        scheme: the classes (None: binary).
    """
    z = start_noise(image, members, generator, 1 if scheme is None else scheme.channels)
    x0 = None  # the previous estimate, which a self-conditioned network sees
    for step in grid(process, steps, spacing):
        last = step.s == 0.0
        x0 = process.denoise(net, z, step.t, image, clip=not last, estimate=x0)
        if last:
            break
        z = update(z, x0, step)
    # decoded before clipping: channels clipped at +1 would tie, and the argmax would give the lower label
    mask = to_mask((x0.float() + 1.0) * 0.5, threshold, scheme)
    return SampleOutput(mask=mask, soft=x0_to_soft(x0.float()))
