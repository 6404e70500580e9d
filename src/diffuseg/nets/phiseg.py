"""PHiSeg (Baumgartner et al. 2019): a hierarchical conditional VAE with one latent per resolution level.

Prior p(z | x) and posterior q(z | x, y) share one design: a contracting path over ``resolution_levels``
levels (three 3x3 conv-BN-ReLU units each, channels n0 x (1, 2, 4, 6, 6, ...), 2x2 average pooling) whose
``latent_levels`` coarsest outputs parameterise axis-aligned Gaussians over z_l, a (zdim, h_l, w_l) map.
The coarsest z_{L-1} comes from its features alone; every finer z_l also sees z_{l+1}, upsampled
bilinearly and refined by two units (eqs. 3-4 of the paper: p(z_l | z_{l+1}, x), q(z_l | z_{l+1}, x, y)).
During training the prior is conditioned on the posterior's samples, so KL(q_l || p_l) is analytic per level.

The likelihood decodes the latents alone: each z_l is brought to resolution 2^-l of the image, combined
top-down with the coarser levels, and mapped to logits s_l (nearest-upsampled to the image). The prediction
at level l is the sum s_l + ... + s_{L-1} (the "residual" outputs of the paper, section 2.2); the sample is
the sum over all levels. Logits have ``out_channels`` = ``LabelScheme.channels`` channels: for a binary mask
one logit channel (a sigmoid), where the reference code uses a two-class softmax, which is the same model; for
C >= 2 exclusive classes C + 1 logits under a softmax (the reference code's categorical likelihood); for
overlapping regions one sigmoid channel per region (``training.latent_loss``). L counts latent levels here,
as in the paper.

Defaults are the paper's LIDC setting (``phiseg_7_5``): 7 resolution levels, 5 latent levels, n0 = 32,
zdim = 2; the image size must be divisible by 2 ** (resolution_levels - 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffuseg.nets.latent import Generators, normal_noise

CHANNEL_MULTIPLIERS = (1, 2, 4, 6, 6, 6, 6, 6, 6)


def conv_unit(in_ch: int, out_ch: int) -> nn.Sequential:
    """3x3 convolution (no bias), BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU())


def upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class Hierarchy:
    """Per latent level l = 0 (finest) .. L-1: mean, std and sample, each (B, zdim, h_l, w_l)."""

    mu: list[Tensor]
    sigma: list[Tensor]
    z: list[Tensor]


class HierarchicalEncoder(nn.Module):
    """Prior or posterior net: input (B, in_channels, H, W) -> ``Hierarchy`` of L Gaussians (Baumgartner et al.
    2019)."""

    def __init__(self, in_channels: int, channels: list[int], latent_levels: int, zdim: int, n0: int):
        super().__init__()
        self.latent_levels = latent_levels
        self.offset = len(channels) - latent_levels
        self.pre = nn.ModuleList(
            nn.Sequential(conv_unit(in_channels if i == 0 else channels[i - 1], c), conv_unit(c, c), conv_unit(c, c))
            for i, c in enumerate(channels)
        )
        top = channels[-1]
        self.ups = nn.ModuleList()  # z_{l+1} upsampled to level l, for l < L-1
        self.mix = nn.ModuleList()  # features of level l joined with the upsampled z_{l+1}
        for lvl in range(latent_levels - 1):
            self.ups.append(nn.Sequential(conv_unit(zdim, zdim * n0), conv_unit(zdim * n0, zdim * n0)))
            feat = channels[lvl + self.offset]
            self.mix.append(
                nn.Sequential(conv_unit(feat + zdim * n0, channels[lvl]), conv_unit(channels[lvl], channels[lvl]))
            )
        mu_in = [channels[lvl] for lvl in range(latent_levels - 1)] + [top]
        self.mu = nn.ModuleList(
            nn.Conv2d(c, zdim, 3 if lvl == latent_levels - 1 else 1, padding=1 if lvl == latent_levels - 1 else 0)
            for lvl, c in enumerate(mu_in)
        )
        self.sigma = nn.ModuleList(nn.Conv2d(c, zdim, 1) for c in mu_in)

    def features(self, x: Tensor) -> list[Tensor]:
        """The contracting path's output at the L latent resolutions, finest first."""
        feats = []
        for i, block in enumerate(self.pre):
            x = block(F.avg_pool2d(x, 2) if i > 0 else x)
            feats.append(x)
        return feats[self.offset :]

    def hierarchy(
        self,
        feats: list[Tensor],
        generator: Generators,
        condition: list[Tensor] | None = None,
        samples: int = 1,
    ) -> Hierarchy:
        """Gaussians top-down. ``condition``: the z's to condition finer levels on (the posterior's during
        training; they are also returned as ``z``); None = draw and condition on the hierarchy's own
        samples, ``samples`` per image, rows image-major."""
        if samples > 1:
            feats = [f.repeat_interleave(samples, 0) for f in feats]
        mu: list[Tensor] = []  # built coarsest first, reversed at the end
        sigma: list[Tensor] = []
        z: list[Tensor] = []
        for lvl in reversed(range(self.latent_levels)):
            h = feats[lvl]
            if z:  # every level but the coarsest sees the latent above it
                h = self.mix[lvl](torch.cat([h, self.ups[lvl](upsample(z[-1]))], dim=1))
            mu.append(self.mu[lvl](h))
            sigma.append(F.softplus(self.sigma[lvl](h)))
            if condition is not None:
                z.append(condition[lvl])
            else:
                z.append(mu[-1] + sigma[-1] * normal_noise(mu[-1].shape, generator, mu[-1].device))
        return Hierarchy(mu[::-1], sigma[::-1], z[::-1])


class Likelihood(nn.Module):
    """Decoder p(y | z_0..z_{L-1}): latents -> per-level logits, each (B, out_channels, H, W) (residual parts)."""

    def __init__(self, channels: list[int], latent_levels: int, zdim: int, out_channels: int = 1):
        super().__init__()
        offset = len(channels) - latent_levels
        self.post_z = nn.ModuleList()
        for lvl in range(latent_levels):
            c = channels[lvl]
            layers = [conv_unit(zdim, c), conv_unit(c, c)]
            layers += [
                nn.Sequential(nn.Upsample(scale_factor=2.0, mode="bilinear"), conv_unit(c, c)) for _ in range(offset)
            ]
            self.post_z.append(nn.Sequential(*layers))
        self.ups = nn.ModuleList()
        self.post_c = nn.ModuleList()
        for lvl in range(latent_levels - 1):
            above = channels[lvl + 1 + offset] if lvl + 1 < latent_levels - 1 else channels[lvl + 1]
            c, out = channels[lvl], channels[lvl + offset]
            self.ups.append(conv_unit(above, c))
            self.post_c.append(nn.Sequential(conv_unit(2 * c, out), conv_unit(out, out)))
        outs = [channels[lvl + offset] for lvl in range(latent_levels - 1)] + [channels[latent_levels - 1]]
        self.out = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in outs)

    def forward(self, z: list[Tensor], size: tuple[int, int]) -> list[Tensor]:
        levels = len(z)
        post_z = [block(zl) for block, zl in zip(self.post_z, z)]
        c = post_z[-1]
        logits = [F.interpolate(self.out[-1](c), size=size, mode="nearest")]
        for lvl in reversed(range(levels - 1)):
            c = self.post_c[lvl](torch.cat([post_z[lvl], self.ups[lvl](upsample(c))], dim=1))
            logits.insert(0, F.interpolate(self.out[lvl](c), size=size, mode="nearest"))
        return logits


class PHiSeg(nn.Module):
    """PHiSeg with ``resolution_levels`` R, ``latent_levels`` L <= R, base channels ``n0`` and ``zdim``.

    ``kl_weight`` and ``exponential_weighting`` (KL of level l weighted by 4^l) are the loss settings of
    the reference code; they are kept here so that one ``model.options`` mapping describes the model.
    ``out_channels`` is ``LabelScheme.channels``, the channels of the class one-hot (binary: 1): the posterior
    reads the image and the one-hot, the likelihood returns as many logit channels.
    """

    def __init__(
        self,
        in_channels: int = 1,
        resolution_levels: int = 7,
        latent_levels: int = 5,
        n0: int = 32,
        zdim: int = 2,
        kl_weight: float = 1.0,
        exponential_weighting: bool = True,
        out_channels: int = 1,
    ):
        super().__init__()
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        self.out_channels = out_channels
        self.kl_weight, self.exponential_weighting = float(kl_weight), bool(exponential_weighting)
        if not 1 <= latent_levels <= resolution_levels <= len(CHANNEL_MULTIPLIERS):
            raise ValueError(
                f"need 1 <= latent_levels ({latent_levels}) <= resolution_levels ({resolution_levels}) "
                f"<= {len(CHANNEL_MULTIPLIERS)}"
            )
        channels = [n0 * m for m in CHANNEL_MULTIPLIERS[:resolution_levels]]
        self.latent_levels = latent_levels
        self.downsampling = 2 ** (resolution_levels - 1)
        self.prior_net = HierarchicalEncoder(in_channels, channels, latent_levels, zdim, n0)
        self.posterior_net = HierarchicalEncoder(in_channels + out_channels, channels, latent_levels, zdim, n0)
        self.likelihood = Likelihood(channels, latent_levels, zdim, out_channels)

    def posterior(self, image: Tensor, mask: Tensor, generator: Generators) -> Hierarchy:
        """q(z | x, y) with one sample per image; the mask (B, out_channels, H, W), the one-hot {0, 1} of one
        annotation (binary: the mask), enters as mask - 0.5."""
        x = torch.cat([image, mask.to(image.dtype) - 0.5], dim=1)
        return self.posterior_net.hierarchy(self.posterior_net.features(x), generator)

    def prior(
        self, image: Tensor, generator: Generators, condition: list[Tensor] | None = None, samples: int = 1
    ) -> Hierarchy:
        """p(z | x): conditioned top-down on ``condition`` (training) or on its own samples (generation)."""
        return self.prior_net.hierarchy(self.prior_net.features(image), generator, condition, samples)

    def decode(self, z: list[Tensor], size: tuple[int, int]) -> list[Tensor]:
        """Per-level residual logits s_0..s_{L-1}, each (B, out_channels, H, W); the level-l prediction is
        sum_{j>=l} s_j."""
        return self.likelihood(z, size)

    def forward(self, image: Tensor, z: list[Tensor]) -> Tensor:
        """Logits (B, out_channels, H, W) for given latents: the sum of all levels' outputs."""
        return torch.stack(self.decode(z, tuple(image.shape[-2:]))).sum(0)

    def sample_logits(self, image: Tensor, n: int, generator: Generators) -> Tensor:
        """n prior samples per image: (B * n, out_channels, H, W) logits, image-major; per-row generators allowed."""
        z = self.prior(image, generator, samples=n).z
        return torch.stack(self.decode(z, tuple(image.shape[-2:]))).sum(0)
