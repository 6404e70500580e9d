"""Building blocks shared by every network: time embedding, residual block, attention, resampling.

The residual block follows MedSegDiff section 2.3 and the ambiguity paper's supplement 7.3 (itself the
Nichol & Dhariwal 2021 block): two (GroupNorm, SiLU, 3x3 conv) blocks, the time embedding added after the
first, and a 1x1 convolution on the residual path when the channel count changes.

Everything here is a plain ``nn.Module`` with its layers built in ``__init__``; nothing is created in
``forward``, and every operation works in ``channels_last`` memory format and under bf16 autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from diffuseg.enums import DownsampleKind, Padding

TIME_SCALE = 1000.0  # t in [0, 1] is scaled to the DDPM step range before the sinusoids


def group_count(channels: int, preferred: int = 32) -> int:
    """Groups for GroupNorm: ``preferred`` when it divides ``channels``, else the largest divisor below it."""
    for groups in range(min(preferred, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups where the channel count allows (supplement 7.3, ambiguity paper)."""
    return nn.GroupNorm(group_count(channels), channels)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of a float time, as in Ho et al. 2020 / Nichol & Dhariwal 2021.

    t: (B,) float in [0, 1], scaled by 1000 inside so a continuous time matches the discrete step index.
    Returns (B, dim) float32: [cos(s * f_i), sin(s * f_i)] with f_i = 10000^(-i / (dim/2)).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * TIME_SCALE)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimeEmbedding(nn.Module):
    """Sinusoidal features followed by (linear, SiLU, linear); shared by all blocks of a network.

    forward: t (B,) float in [0, 1] -> (B, out_dim).
    """

    def __init__(self, base_dim: int, out_dim: int):
        super().__init__()
        self.base_dim = base_dim
        self.mlp = nn.Sequential(nn.Linear(base_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.base_dim).to(self.mlp[0].weight.dtype))


class PartialPadConv2d(nn.Conv2d):
    """Zero-padded convolution rescaled where it reads padding (Liu et al. 2018, "Partial convolution based
    padding", arXiv:1811.11718): out = conv(x, no bias) * taps / valid taps + bias, so a border pixel's response
    has the scale of an interior one. Same parameters and state dict as ``nn.Conv2d``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._ratios: dict[tuple, torch.Tensor] = {}

    def _ratio(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(1, 1, H', W') taps / valid taps for input ``x``'s size, cached per size, device and dtype. Made outside
        inference mode, so that a ratio first needed while sampling serves a later training step (an inference
        tensor cannot be saved for backward)."""
        key = (*x.shape[-2:], x.device, dtype)
        if key not in self._ratios:
            with torch.inference_mode(False), torch.no_grad():
                self._ratios[key] = self._new_ratio(x, dtype)
        return self._ratios[key]

    def _new_ratio(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        ones = torch.ones(1, 1, *x.shape[-2:], device=x.device)
        kernel = torch.ones(1, 1, *self.kernel_size, device=x.device)
        valid = F.conv2d(ones, kernel, stride=self.stride, padding=self.padding, dilation=self.dilation)
        return (kernel.numel() / valid).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._conv_forward(x, self.weight, None)  # nn.Conv2d's own call: stride, dilation, groups
        if self.bias is None:
            return out * self._ratio(x, out.dtype)
        return torch.addcmul(self.bias.view(1, -1, 1, 1).to(out.dtype), out, self._ratio(x, out.dtype))


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, padding: Padding | str = Padding.ZEROS) -> nn.Conv2d:
    """3x3 convolution, one pixel of ``padding`` (``Padding``) per side: (B, in_ch, H, W) -> (B, out_ch, H/s, W/s)."""
    padding = Padding.parse(padding)
    conv = PartialPadConv2d if padding is Padding.PARTIAL else nn.Conv2d
    return conv(in_ch, out_ch, 3, stride=stride, padding=1)


class ResBlock(nn.Module):
    """(GN, SiLU, conv3x3) -> + time projection -> (GN, SiLU, conv3x3), plus a residual connection.

    forward: x (B, in_ch, H, W), emb (B, emb_dim) or None -> (B, out_ch, H, W).
    ``emb_dim=None`` builds a block without time input (the deterministic baseline). The time projection
    is (SiLU, linear) on the shared embedding, i.e. the per-block end of the paper's "linear, SiLU, linear".
    ``padding``: see ``Padding``.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None, padding: Padding | str = Padding.ZEROS):
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(in_ch), nn.SiLU(), conv3x3(in_ch, out_ch, padding=padding))
        self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_ch)) if emb_dim else None
        self.out_layers = nn.Sequential(group_norm(out_ch), nn.SiLU(), conv3x3(out_ch, out_ch, padding=padding))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.in_layers(x)
        if self.emb_proj is not None:
            h = h + self.emb_proj(emb).to(h.dtype)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    """Single-head QKV self-attention over all pixels, with GroupNorm before and a residual around it.

    forward: x (B, F, H, W) -> (B, F, H, W), F = ``channels``. Uses ``scaled_dot_product_attention`` (no (HW)^2
    Python work).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(-1, -2)  # (B, 3, HW, F)
        out = F.scaled_dot_product_attention(qkv[:, 0:1], qkv[:, 1:2], qkv[:, 2:3])  # one head
        out = out[:, 0].transpose(1, 2).reshape(n, c, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    """(B, channels, H, W) -> (B, out_ch, H/2, W/2) by ``kind`` (``DownsampleKind``), the conv padded by ``padding``."""

    def __init__(
        self,
        channels: int,
        out_ch: int | None = None,
        kind: DownsampleKind | str = DownsampleKind.CONV,
        padding: Padding | str = Padding.ZEROS,
    ):
        super().__init__()
        self.kind = DownsampleKind.parse(kind)
        stride = 2 if self.kind is DownsampleKind.CONV else 1
        self.conv = conv3x3(channels, out_ch or channels, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind is DownsampleKind.CENTRED:
            x = F.avg_pool2d(x, 2)
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then 3x3 convolution: (B, channels, H, W) -> (B, out_ch, 2H, 2W)."""

    def __init__(self, channels: int, out_ch: int | None = None, padding: Padding | str = Padding.ZEROS):
        super().__init__()
        self.conv = conv3x3(channels, out_ch or channels, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def output_head(channels: int, out_ch: int = 1, padding: Padding | str = Padding.ZEROS) -> nn.Sequential:
    """(GN, SiLU, conv3x3) to the prediction channels: (B, channels, H, W) -> (B, out_ch, H, W)."""
    return nn.Sequential(group_norm(channels), nn.SiLU(), conv3x3(channels, out_ch, padding=padding))
