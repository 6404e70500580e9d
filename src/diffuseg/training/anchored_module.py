"""Training of anchored diffusion (``method: anchored``): a deterministic trunk and a diffusion head on its residual.

One step, for images (B, in_channels, H, W) and the one-hot target (B, C, H, W) of one annotation each:

- trunk loss: the deterministic UNet's loss, ``nets.unet.segmentation_loss`` on the trunk's logits (binary:
  Dice + BCE; exclusive classes: softmax cross-entropy + Dice; regions: BCE + Dice per channel), exactly;
- head loss: the diffusion loss of ``diffusion`` on the residual r_0 = y_0 - mu (``DiffusionProcess.loss`` with
  the ``diffusion.anchored.AnchoredDenoiser``, which makes it the loss on r_0, any prediction type, weighting and
  recipe), plus ``anchored.seg_weight`` times the same segmentation loss on the logits of the head's estimate
  mu + r_hat at the drawn time: p = (mu + r_hat + 1) / 2 clipped to [``PROBABILITY_FLOOR``, 1 - floor], logits
  log p for exclusive classes (softmax gives p / sum p), log(p / (1 - p)) otherwise. With eps-prediction the
  estimate near t = 1 divides by a small alpha and is mostly clipped (no gradient there).

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
from torch import Tensor, nn

from diffuseg.enums import Method
from diffuseg.methods import anchored_denoiser
from diffuseg.nets.unet import segmentation_loss
from diffuseg.training.module import MODULES, SegmentationModule

PROBABILITY_FLOOR = 1e-4
"""The head's probabilities are clipped to [floor, 1 - floor] before its segmentation loss takes their logits."""


def estimate_logits(estimate: Tensor, exclusive: bool) -> Tensor:
    """Logits (N, C, H, W) of a y_0 estimate in about [-1, 1]: log p (exclusive classes, C >= 2) or log(p / (1 - p))
    of p = (estimate + 1) / 2 clipped to [``PROBABILITY_FLOOR``, 1 - ``PROBABILITY_FLOOR``]."""
    p = ((estimate.float() + 1.0) * 0.5).clamp(PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
    return torch.log(p) if exclusive and p.shape[1] > 1 else torch.logit(p)


class AnchoredModule(SegmentationModule):
    """``method: anchored``: ``self.net`` is a ``nets.anchored.AnchoredNet``; logs the three terms of the loss."""

    method = Method.ANCHORED

    def loss(self, image: Tensor, target: Tensor, generator: torch.Generator) -> Tensor:
        exclusive = self.scheme.exclusive
        form = self.config.anchored.form
        denoiser, logits = anchored_denoiser(self.net, image, self.process, form, self.scheme, keep_estimate=True)
        trunk = segmentation_loss(logits, target, exclusive)
        diffusion = self.process.loss(denoiser, target, image, generator)
        segmentation = segmentation_loss(estimate_logits(denoiser.estimate, exclusive), target, exclusive)
        size = image.shape[0]
        for name, value in (("trunk", trunk), ("diffusion", diffusion), ("head_segmentation", segmentation)):
            self.log(name, value.detach(), on_step=True, batch_size=size)
        return trunk + diffusion + self.config.anchored.seg_weight * segmentation

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm=None
    ) -> None:
        """Clip the trunk's and the head's gradients each to norm ``gradient_clip_val`` (``train.grad_clip``)."""
        if not gradient_clip_val:
            return
        for part in (self.net.trunk, self.net.head):
            nn.utils.clip_grad_norm_([p for p in part.parameters() if p.grad is not None], gradient_clip_val)


MODULES[Method.ANCHORED] = AnchoredModule
