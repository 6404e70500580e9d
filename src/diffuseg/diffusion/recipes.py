"""Training recipes beyond the two papers, each off by default and in the papers' presets.

- ``aux_loss``: an auxiliary segmentation loss (soft Dice + BCE) on the network's data estimate x_hat_0, weight
  ``diffusion.aux_weight``. Our own recipe: the official MedSegDiff code instead trains a separate calibration
  head with an MSE against the mask (weight 10); here the loss supervises the denoiser's own estimate, which is
  what the sampler's last step returns. Each row is
  weighted by alpha_t^2 = SNR / (1 + SNR) (our choice): near t = 1 the best estimate is the posterior mean of
  an ambiguous mask, which a segmentation loss would push towards one hard answer, and an eps-network's
  estimate there, (z - sigma eps_hat) / alpha, is mostly clipped, with no gradient.
- ``self_condition_input``: self-conditioning (Chen, Zhang & Hinton 2022, "Analog Bits", section 3 and Fig. 3):
  the network also sees an earlier estimate of x_0 as extra input channels. In training, for half of the
  batches (one coin per batch, as the paper's pseudo-code) that estimate is a first, gradient-free pass with a
  zero estimate; otherwise it is zero. In sampling it is the previous step's x_hat (zero at the first step).
- ``recycled_z``: recycling (Fu et al. 2023, "A Recycling Training Strategy for Medical Image Segmentation
  with Diffusion Denoising Models", MELBA; the "max" variant of their ImgX-DiffSeg code): the noisy input is
  built from the model's own estimate instead of the ground truth. A first, gradient-free pass denoises the
  ground truth noised to t = 1, the noisiest time where sampling starts; its estimate x_hat is noised to the
  training time t and the network learns to recover the ground truth from it, as it must at sampling time.

Masks are x_0 in {-1, 1} (``process.masks_to_x0``); every function is batched over rows ``(B, C, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def aux_loss(x_hat: Tensor, x0: Tensor, weight: Tensor, smooth: float = 1.0, valid: Tensor | None = None) -> Tensor:
    """Soft Dice + BCE between the soft mask p = (x_hat + 1) / 2 clipped to [0, 1] and the target (x0 + 1) / 2.

    x_hat, x0: (B, C, H, W), x0 in {-1, 1}; weight: (B,) per row. Per row, the Dice loss
    1 - (2 |p y| + s) / (|p| + |y| + s) of each channel with s = ``smooth`` (two empty masks: 0), averaged over
    the C channels, plus the mean BCE over the row's pixels; the weighted mean over rows. Exactly 0 for a
    perfect estimate (p = y in {0, 1}). ``valid`` (B, 1, H, W) {0, 1}: only those pixels count (p and y zero
    elsewhere, the BCE their mean). Returns a scalar.

    Computed in float32 with autocast off: CUDA autocast refuses ``binary_cross_entropy`` on probabilities (its
    logits form does not fit here, p is clipped), and a bf16 BCE would lose the small losses near p = y.
    """
    with torch.autocast(device_type=x_hat.device.type, enabled=False):
        p = ((x_hat.float() + 1.0) * 0.5).clamp(0.0, 1.0)
        y = (x0.float() + 1.0) * 0.5
        if valid is not None:
            v = valid.to(p).expand_as(p)
            p, y = p * v, y * v
        pf, yf = p.flatten(2), y.flatten(2)  # (B, C, H * W)
        dice = ((2.0 * (pf * yf).sum(2) + smooth) / (pf.sum(2) + yf.sum(2) + smooth)).mean(1)
        bce = F.binary_cross_entropy(pf, yf, reduction="none")
        if valid is None:
            bce = bce.mean((1, 2))
        else:
            vf = v.flatten(2)
            bce = (bce * vf).sum((1, 2)) / vf.sum((1, 2)).clamp_min(1.0)
        return (weight.to(dice) * (1.0 - dice + bce)).mean()


def self_condition_input(z: Tensor, estimate: Tensor | None) -> Tensor:
    """The network's x_t input with self-conditioning: z and the earlier estimate (zero when there is none)
    concatenated on channels, (B, C, H, W) -> (B, 2C, H, W)."""
    estimate = torch.zeros_like(z) if estimate is None else estimate.to(z.dtype)
    return torch.cat([z, estimate], dim=1)


def self_condition_estimate(
    first_pass: Callable[[Tensor], Tensor], z: Tensor, generator: torch.Generator
) -> Tensor | None:
    """Training: with probability 1/2 (one draw from ``generator`` per batch) the detached estimate
    ``first_pass(z_with_zero_estimate)`` (B, C, H, W), else None (the network sees a zero estimate)."""
    if float(torch.rand((), generator=generator)) >= 0.5:
        return None
    with torch.no_grad():
        return first_pass(self_condition_input(z, None)).detach()


def recycled_z(x_hat: Tensor, alpha: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
    """z_t = alpha_t x_hat + sigma_t eps from the model's own (detached) estimate; alpha, sigma broadcast."""
    return alpha * x_hat.detach() + sigma * noise


def implied_noise(z: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """The eps with z = alpha x0 + sigma eps: the eps / v targets that make a recycled z's loss the x-space
    error against the ground truth x0, whatever the prediction type."""
    return (z - alpha * x0) / sigma
