"""The loss of anchored diffusion (``method: anchored``): a deterministic trunk and a diffusion head on its residual.

One step, for images (B, in_channels, H, W) and the one-hot target (B, C, H, W) of one annotation each:

- trunk loss: the deterministic UNet's loss, ``nets.unet.segmentation_loss`` on the trunk's logits (binary:
  Dice + BCE; exclusive classes: softmax cross-entropy + Dice; regions: BCE + Dice per channel), exactly;
- head loss: the diffusion loss of ``diffusion`` on the residual r_0 = y_0 - mu (``DiffusionProcess.loss`` with
  the ``diffusion.anchored.AnchoredDenoiser``, which makes it the loss on r_0, any prediction type, weighting and
  recipe), plus ``anchored.seg_weight`` times the same segmentation loss on the logits of the head's estimate
  mu + r_hat at the drawn time: p = (mu + r_hat + 1) / 2 clipped to [``PROBABILITY_FLOOR``, 1 - floor], logits
  log p for exclusive classes (softmax gives p / sum p), log(p / (1 - p)) otherwise. With eps-prediction the
  estimate near t = 1 divides by a small alpha and is mostly clipped (no gradient there). ``anchored.seg_weighting
  = signal`` weights each row's segmentation loss by alpha_t^2 (``weighted_segmentation_loss``), as
  ``diffusion.recipes.aux_loss`` weights its loss on x_hat: near t = 1 the estimate is then left to be the mean of
  the masks the noise could still become, rather than pulled towards one annotation.

Both are trained jointly from step 0 by one optimiser (AdamW over trunk and head, as every family), and one EMA
covers both. The head sees the trunk's features and mu detached (stop-gradient), and gradients are clipped to
``train.grad_clip`` per part, so the trunk's updates are exactly those of the deterministic UNet trained alone
from the same seed: mu is the UNet baseline by construction, the head can only add to it, and the residual
target moves only as the trunk learns. CorrDiff trains its regression UNet first and freezes it; training both
at once with a stop-gradient is the one-stage form of the same split. Early in training mu is poor and the
head's residual large; the head follows the trunk as it improves.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffuseg.nets.unet import segmentation_loss

PROBABILITY_FLOOR = 1e-4
"""The head's probabilities are clipped to [floor, 1 - floor] before its segmentation loss takes their logits."""


def estimate_logits(estimate: Tensor, exclusive: bool) -> Tensor:
    """Logits (N, C, H, W) of a y_0 estimate in about [-1, 1]: log p (exclusive classes, C >= 2) or log(p / (1 - p))
    of p = (estimate + 1) / 2 clipped to [``PROBABILITY_FLOOR``, 1 - ``PROBABILITY_FLOOR``]."""
    p = ((estimate.float() + 1.0) * 0.5).clamp(PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
    return torch.log(p) if exclusive and p.shape[1] > 1 else torch.logit(p)


def weighted_segmentation_loss(logits: Tensor, target: Tensor, exclusive: bool, weight: Tensor) -> Tensor:
    """``nets.unet.segmentation_loss`` of each row, times ``weight`` (N,), averaged over the N rows; with every
    weight 1 it is the batch's loss (Dice per image, cross-entropy averaged over equal-sized images).
    logits, target: (N, C, H, W)."""
    rows = [segmentation_loss(x[None], y[None], exclusive) for x, y in zip(logits, target, strict=True)]
    return (weight.to(rows[0]) * torch.stack(rows)).mean()
