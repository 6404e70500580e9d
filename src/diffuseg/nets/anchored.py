"""The network of anchored diffusion: a deterministic trunk and a light diffusion head, one module.

The trunk is a segmenter with ``features(image)`` (its last decoder features) and ``logits(features)``
(``unet``, ``medsegdiff-*-segmenter``); it gives the prior. The head is a small ``unet.DiffusionUNet`` whose
conditioning input is the image with the trunk's features and the prior mu (in [-1, 1]), either or both,
concatenated on channels, and whose x_t input is the head's view of the residual process (``diffusion.anchored``).
What the features and mu are is the caller's: the head sees them detached, so no gradient of the head reaches the
trunk.

Shapes: image (B, in_channels, H, W); features (B, F, H, W); logits and mu (B, C, H, W); x_t (B * K,
mask_channels, H, W) for K members per image, rows image-major.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from diffuseg.nets.unet import DiffusionUNet


class AnchoredNet(nn.Module):
    """``trunk`` and ``head`` in one module (one state dict, one EMA copy, one checkpoint).

    ``forward(image) -> logits``: the trunk alone. ``prior(image) -> (features, logits)``: one trunk pass.
    ``condition(image, features, mu) -> (B, in_channels [+ F] [+ C], H, W)``: the head's per-image input, detached:
    the image, the features (with ``trunk_features``) and mu (with ``mu_input``), concatenated in that order.
    ``head(x_t, t, condition) -> (B * K, C, H, W)``: one head pass (``DiffusionUNet.forward``).
    """

    def __init__(self, trunk: nn.Module, head: DiffusionUNet, trunk_features: bool = True, mu_input: bool = True):
        super().__init__()
        self.trunk_features, self.mu_input = trunk_features, mu_input
        for name in ("features", "logits"):
            if not callable(getattr(trunk, name, None)):
                raise TypeError(f"{type(trunk).__name__} has no {name}(): it cannot be an anchored trunk")
        self.trunk = trunk
        self.head = head
        self.downsampling = max(getattr(trunk, "downsampling", 1), head.downsampling)

    def prior(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk.features(image)
        return features, self.trunk.logits(features)

    def condition(self, image: torch.Tensor, features: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        dtype = features.dtype
        parts = [image.to(dtype), features.detach()] if self.trunk_features else [image.to(dtype)]
        return torch.cat([*parts, mu.detach().to(dtype)] if self.mu_input else parts, dim=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.prior(image)[1]


def anchored_net(
    trunk: nn.Module,
    in_channels: int,
    classes: int,
    mask_channels: int,
    channels: Sequence[int],
    blocks: int,
    time_dim: int,
    trunk_features: bool = True,
    mu_input: bool = True,
    downsample: str = "conv",
    padding: str = "zeros",
) -> AnchoredNet:
    """``trunk`` (built, with ``feature_channels``) and a head over ``classes`` = C channels.

    Args:
        trunk: the segmenter, ``features`` / ``logits`` / ``feature_channels``.
        in_channels: image channels.
        classes: C, the channels of mu and of the head's prediction.
        mask_channels: channels of the head's x_t (C; 2C with self-conditioning).
        channels: the head's width per level; ``blocks`` residual blocks per level and in the middle.
        blocks: see ``channels``.
        time_dim: the head's time-embedding width.
        trunk_features: whether the head is conditioned on the trunk's last decoder features.
        mu_input: whether the head is conditioned on mu (else mu is only the residual's origin).
        downsample: the head's ``DownsampleKind``.
        padding: the head's ``Padding``.
    """
    head = DiffusionUNet(
        in_channels + (trunk.feature_channels if trunk_features else 0) + (classes if mu_input else 0),
        mask_channels=mask_channels,
        out_channels=classes,
        channels=tuple(channels),
        num_res_blocks=(blocks,) * len(channels),
        middle_blocks=blocks,
        time_dim=time_dim,
        downsample=downsample,
        padding=padding,
    )
    return AnchoredNet(trunk, head, trunk_features, mu_input)
