"""The ambiguity paper's diffusion UNet (section 3.5, supplement 7.3) and the deterministic UNet baseline.

Diffusion UNet: the image is concatenated with x_t on the channel axis and passed through a UNet of
residual blocks (``blocks.ResBlock``: GroupNorm with 32 groups where the channels allow, SiLU, 3x3 conv,
twice, with a 1x1 skip where channels change) with ``num_res_blocks=[1, 2, 3, 4]`` per level at widths
``channels=[32, 32, 64, 128]``, 3 downsamplings, 4 middle blocks, and single-head QKV self-attention after
every block at the lowest resolution (4 encoder + 4 middle + 4 decoder = 12 attention layers). Every encoder
block's output is kept and joined to its mirror decoder block by concatenation. A shared time embedding
(sinusoidal, linear, SiLU, linear) enters every residual block.

Deterministic baseline: the same backbone without x_t and without time, ``forward(image) -> logits``,
trained with ``segmentation_loss`` (Dice + cross-entropy; binary: ``dice_bce_loss``) so tables can show what
diffusion adds.

With concatenated conditioning every layer sees x_t, so nothing is shared between ensemble members
except the (cheap) repetition of the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffuseg.enums import DownsampleKind, Padding
from diffuseg.nets.blocks import Attention, Downsample, ResBlock, TimeEmbedding, Upsample, conv3x3, output_head

CHANNELS = (32, 32, 64, 128)
NUM_RES_BLOCKS = (1, 2, 3, 4)
MIDDLE_BLOCKS = 4
# The paper does not state the time-embedding width. 384 (= 12 x 32) puts the count at 6,842,081, 0.7 % under
# the paper's 6,891,905 (4 x 32 = 128, the Nichol & Dhariwal default, would give 6,161,633).
TIME_DIM = 384


class _Level(nn.Module):
    """Residual blocks of one resolution, each followed by attention when ``attention`` is set."""

    def __init__(self, in_chs: Sequence[int], out_ch: int, emb_dim: int | None, attention: bool, padding: Padding):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, out_ch, emb_dim, padding) for c in in_chs)
        self.attn = nn.ModuleList(Attention(out_ch) if attention else nn.Identity() for _ in in_chs)


class DiffusionUNet(nn.Module):
    """UNet of supplement 7.3.

    forward(x_t (B*K, mask_channels, H, W), t (B*K,), image (B, in_channels, H, W)) -> (B*K, out_channels, H, W)
    for K ensemble members per image; with classes ``mask_channels = out_channels = LabelScheme.channels`` (C,
    C + 1 for exclusive classes; binary: 1), kept apart so that x_t can carry more than the prediction. H and W
    must be divisible by 2^(len(channels) - 1) = 8.
    ``mask_channels=0`` and ``time_embedding=False`` give the plain segmentation backbone (``features(image)``);
    ``head=False`` leaves out the output layer, and ``out_channels`` is then the feature width ``channels[0]``.
    ``time_dim`` is the width of the time embedding (sinusoids of width ``channels[0]``, then the MLP).
    ``downsample`` is ``blocks.DownsampleKind``: ``conv`` (the paper's strided convolution) or ``centred``;
    ``padding`` is ``blocks.Padding`` of every 3x3 convolution: ``zeros`` (the paper's) or ``partial``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        mask_channels: int = 1,
        time_embedding: bool = True,
        head: bool = True,
        channels: Sequence[int] = CHANNELS,
        num_res_blocks: Sequence[int] = NUM_RES_BLOCKS,
        middle_blocks: int = MIDDLE_BLOCKS,
        time_dim: int = TIME_DIM,
        out_channels: int = 1,
        downsample: DownsampleKind | str = DownsampleKind.CONV,
        padding: Padding | str = Padding.ZEROS,
    ):
        super().__init__()
        padding = Padding.parse(padding)
        if len(channels) != len(num_res_blocks) or len(channels) < 2:
            raise ValueError(f"one block count per level needed, got {channels} and {num_res_blocks}")
        if min(channels) < 1 or min(num_res_blocks) < 1 or middle_blocks < 0 or time_dim < 1:
            raise ValueError("widths, block counts and time_dim must be >= 1 (middle_blocks >= 0)")
        levels = len(channels)
        self.downsampling = 2 ** (levels - 1)
        self.mask_channels = mask_channels
        self.channels = tuple(channels)
        self.num_res_blocks = tuple(num_res_blocks)
        emb_dim = time_dim if time_embedding else None
        self.time_embed = TimeEmbedding(channels[0], emb_dim) if emb_dim else None
        self.stem = conv3x3(in_channels + mask_channels, channels[0], padding=padding)

        self.down = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        skip_chs = []
        prev = channels[0]
        for lvl, (ch, n) in enumerate(zip(channels, num_res_blocks)):
            self.down.append(_Level([prev] + [ch] * (n - 1), ch, emb_dim, lvl == levels - 1, padding))
            skip_chs += [ch] * n
            prev = ch
            if lvl < levels - 1:
                self.downsamplers.append(Downsample(ch, kind=downsample, padding=padding))
        self.middle = _Level([prev] * middle_blocks, prev, emb_dim, True, padding)

        self.up = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for lvl in reversed(range(levels)):
            ch, n = channels[lvl], num_res_blocks[lvl]
            in_chs = []
            for _ in range(n):
                in_chs.append(prev + skip_chs.pop())
                prev = ch
            self.up.append(_Level(in_chs, ch, emb_dim, lvl == levels - 1, padding))
            if lvl > 0:
                self.upsamplers.append(Upsample(ch, channels[lvl - 1], padding))
                prev = channels[lvl - 1]
        self.head = output_head(channels[0], out_channels, padding) if head else None
        self.out_channels = out_channels if head else channels[0]

    def structure(self) -> str:
        """One line for ``diffuseg info``: blocks and widths per level, attention, conditioning."""
        attention = sum(isinstance(m, Attention) for m in self.modules())
        cond = "image + x_t concatenated" if self.mask_channels else "image only"
        time = "time embedding" if self.time_embed is not None else "no time input"
        return (
            f"res blocks {list(self.num_res_blocks)} at widths {list(self.channels)}, "
            f"{len(self.middle.blocks)} middle blocks, {attention} attention layers; {cond}; {time}"
        )

    def features(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, in_channels + mask_channels, H, W), t (B,) or None -> (B, channels[0], H, W)."""
        emb = self.time_embed(t) if self.time_embed is not None else None
        h = self.stem(x)
        skips = []
        for lvl, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(h, emb))
                skips.append(h)
            if lvl < len(self.downsamplers):
                h = self.downsamplers[lvl](h)
        for block, attn in zip(self.middle.blocks, self.middle.attn):
            h = attn(block(h, emb))
        for lvl, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if lvl < len(self.upsamplers):
                h = self.upsamplers[lvl](h)
        return h

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        members = x_t.shape[0] // image.shape[0]
        if members * image.shape[0] != x_t.shape[0]:
            raise ValueError(f"x_t rows ({x_t.shape[0]}) must be a multiple of image rows ({image.shape[0]})")
        if members > 1:
            image = image.repeat_interleave(members, dim=0)  # row b*K + k is member k of image b
        h = self.features(torch.cat([image.to(x_t.dtype), x_t], dim=1), t)
        return self.head(h) if self.head is not None else h


class SegmentationUNet(nn.Module):
    """Deterministic baseline: the diffusion UNet's backbone without x_t and t.

    forward(image (B, in_channels, H, W)) -> logits (B, out_channels, H, W), ``out_channels`` =
    ``LabelScheme.channels`` (binary: 1); train with ``segmentation_loss``. ``features(image)`` -> the last
    decoder features (B, ``feature_channels`` = channels[0], H, W) and ``logits(features)``: forward in two parts
    (an anchored trunk).
    """

    def __init__(self, in_channels: int = 1, **options: Any):
        super().__init__()
        self.net = DiffusionUNet(in_channels, mask_channels=0, time_embedding=False, **options)
        self.downsampling = self.net.downsampling
        self.feature_channels = self.net.channels[0]

    def structure(self) -> str:
        return self.net.structure()

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.net.features(image)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.head(features)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(image))


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss plus binary cross-entropy (the nnU-Net-style baseline loss), a scalar.

    logits, target: (B, 1, H, W); target in {0, 1}. Dice is computed per image,
    1 - (2 |p*y| + s) / (|p| + |y| + s) with p = sigmoid(logits) and s = ``smooth`` (so two empty masks
    give a Dice loss of 0), then averaged over the batch; BCE is the mean over all pixels.
    """
    logits = logits.float()
    target = target.float()
    prob = torch.sigmoid(logits).flatten(1)
    flat = target.flatten(1)
    dice = (2.0 * (prob * flat).sum(1) + smooth) / (prob.sum(1) + flat.sum(1) + smooth)
    return (1.0 - dice).mean() + F.binary_cross_entropy_with_logits(logits, target)


def _soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float) -> torch.Tensor:
    """1 - (2 |p*y| + s) / (|p| + |y| + s) per image and channel of (B, C, H, W) maps, averaged (a scalar)."""
    p, y = prob.flatten(2), target.flatten(2)
    dice = (2.0 * (p * y).sum(2) + smooth) / (p.sum(2) + y.sum(2) + smooth)
    return (1.0 - dice).mean()


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    exclusive: bool = True,
    smooth: float = 1.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The deterministic UNet's loss (nnU-Net's Dice + cross-entropy, Isensee et al. 2021), a scalar.

    logits, target: (B, C, H, W), C + 1 channels for exclusive classes; target is ``LabelScheme.one_hot`` of the
    label map ({0, 1}).
    - one channel (binary): ``dice_bce_loss`` exactly.
    - C >= 2 exclusive classes, C + 1 channels (channel 0 = background): softmax cross-entropy, the mean over
      pixels of -log softmax(logits)[true class], plus the soft Dice loss of p = softmax(logits) per image and
      foreground channel 1..C (the background left out, as nnU-Net does), averaged over images and classes.
    - overlapping regions (``exclusive=False``): sigmoid BCE (mean over all pixels and channels) plus the soft
      Dice loss per image and region, averaged: ``dice_bce_loss`` channel by channel.
    ``smooth`` s as in ``dice_bce_loss``: an empty class predicted empty costs no Dice. ``valid`` (B, 1, H, W)
    {0, 1}: only those pixels count (nnU-Net's ignore label; ``masked_segmentation_loss``).
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    if valid is not None:
        return masked_segmentation_loss(logits.float(), target.float(), valid.float(), exclusive, smooth)
    if logits.shape[1] == 1:
        return dice_bce_loss(logits, target, smooth)
    logits = logits.float()
    target = target.float()
    if not exclusive:
        return _soft_dice_loss(torch.sigmoid(logits), target, smooth) + F.binary_cross_entropy_with_logits(
            logits, target
        )
    cross_entropy = F.cross_entropy(logits, target.argmax(1))
    return _soft_dice_loss(torch.softmax(logits, 1)[:, 1:], target[:, 1:], smooth) + cross_entropy


def masked_segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, exclusive: bool = True, smooth: float = 1.0
) -> torch.Tensor:
    """``segmentation_loss`` over the pixels where ``valid`` (B, 1, H, W) is 1 only (nnU-Net's ignore label,
    Isensee et al. 2021): the cross-entropy (or BCE) is the mean over those pixels, and the soft Dice sees p and y
    zero elsewhere. With every pixel valid it equals ``segmentation_loss``.

    Args:
        logits, target: (B, C, H, W), as ``segmentation_loss`` takes them.
        valid: (B, 1, H, W) {0, 1}.
        exclusive: softmax over C + 1 channels (True) or a sigmoid per channel.
        smooth: the Dice smoothing s.
    """
    count = valid.sum().clamp_min(1.0)
    if exclusive and logits.shape[1] > 1:
        ce = F.cross_entropy(logits, target.argmax(1), reduction="none")
        prob = torch.softmax(logits, 1)[:, 1:]
        return _soft_dice_loss(prob * valid, target[:, 1:] * valid, smooth) + (ce * valid[:, 0]).sum() / count
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    dice = _soft_dice_loss(torch.sigmoid(logits) * valid, target * valid, smooth)
    return dice + (bce * valid).sum() / (count * logits.shape[1])
