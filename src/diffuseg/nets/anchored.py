"""The network of anchored diffusion: a deterministic trunk and a light diffusion head, one module.

The trunk is a segmenter with ``features(image)`` (its last decoder features) and ``logits(features)``
(``unet``, ``medsegdiff-*-segmenter``); it gives the prior. The head is a small ``unet.DiffusionUNet`` whose
conditioning input is the image with the trunk's features and the prior mu (in [-1, 1]), either or both,
concatenated on channels, and whose x_t input is the head's view of the residual process (``diffusion.anchored``).
What the features and mu are is the caller's: the head sees them detached, so no gradient of the head reaches the
trunk. With ``patch`` p > 1 the head works on p x p patches: its inputs are space-to-depth rearranged
(``pixel_unshuffle``, p^2 times the channels at 1/p of the resolution) and its output back (``pixel_shuffle``), so
its convolutions cost about 1/p^2 of the full-resolution head's for the same widths; nothing is lost in the
rearrangement. Simple diffusion (Hoogeboom et al., ICML 2023) likewise downsamples with an invertible transform (a
wavelet) as the network's first step and upsamples as its last; DiT's patch embedding (Peebles & Xie, ICCV 2023)
is this rearrangement with a projection.

Shapes: image (B, in_channels, H, W); features (B, F, H, W); logits and mu (B, C, H, W); x_t (B * K,
mask_channels, H, W) for K members per image, rows image-major.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffuseg.nets.unet import DiffusionUNet


class AnchoredNet(nn.Module):
    """``trunk`` and ``head`` in one module (one state dict, one EMA copy, one checkpoint).

    ``forward(image) -> logits``: the trunk alone. ``prior(image) -> (features, logits)``: one trunk pass.
    ``condition(image, features, mu) -> (B, p^2 (in_channels [+ F] [+ C]), H / p, W / p)``: the head's per-image
    input, detached: the image, the features (with ``trunk_features``) and mu (with ``mu_input``), concatenated in
    that order, in patches. ``denoise(x_t, t, condition) -> (B * K, C, H, W)``: one head pass
    (``DiffusionUNet.forward`` on x_t's patches).
    """

    def __init__(
        self, trunk: nn.Module, head: DiffusionUNet, trunk_features: bool = True, mu_input: bool = True, patch: int = 1
    ):
        super().__init__()
        self.trunk_features, self.mu_input, self.patch = trunk_features, mu_input, patch
        for name in ("features", "logits"):
            if not callable(getattr(trunk, name, None)):
                raise TypeError(f"{type(trunk).__name__} has no {name}(): it cannot be an anchored trunk")
        self.trunk = trunk
        self.head = head
        self.downsampling = math.lcm(getattr(trunk, "downsampling", 1), head.downsampling * patch)  # a multiple of both

    def prior(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk.features(image)
        return features, self.trunk.logits(features)

    def condition(self, image: torch.Tensor, features: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        dtype = features.dtype
        parts = [image.to(dtype), features.detach()] if self.trunk_features else [image.to(dtype)]
        condition = torch.cat([*parts, mu.detach().to(dtype)] if self.mu_input else parts, dim=1)
        return F.pixel_unshuffle(condition, self.patch)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.head(F.pixel_unshuffle(x_t, self.patch), t, condition), self.patch)

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
    patch: int = 1,
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
        patch: p, the side of the head's patches (1: the head works at full resolution).
        downsample: the head's ``DownsampleKind``.
        padding: the head's ``Padding``.
    """
    head = DiffusionUNet(
        (in_channels + (trunk.feature_channels if trunk_features else 0) + (classes if mu_input else 0)) * patch**2,
        mask_channels=mask_channels * patch**2,
        out_channels=classes * patch**2,
        channels=tuple(channels),
        num_res_blocks=(blocks,) * len(channels),
        middle_blocks=blocks,
        time_dim=time_dim,
        downsample=downsample,
        padding=padding,
    )
    return AnchoredNet(trunk, head, trunk_features, mu_input, patch)
