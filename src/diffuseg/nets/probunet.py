"""Probabilistic U-Net (Kohl et al. 2018) and the Generalized Probabilistic U-Net (Bhat et al. 2022).

A segmentation UNet, a prior net p(z | x) on the image and a posterior net q(z | x, y) on the image and
one annotation. A latent z is broadcast over the UNet's last feature map, concatenated to it, and mapped
to logits by ``fcomb``, a stack of 1x1 convolutions. Training uses z ~ q and penalises KL(q || p);
inference draws z ~ p, and the UNet and prior run once per image whatever the number of samples.

The native UNet is the Gen. Prob. UNet's (Bhat et al. 2022, LIDC "shallow" setting): filters
(32, 64, 128, 256), three (3x3 conv, ReLU) per block, 2x2 average pooling down, bilinear upsampling and
concatenated skips up, a BatchNorm closing every block but the last of the decoder; the prior and posterior
encoders repeat its contracting path (BatchNorm on all blocks but the last), average over space and end in
a 1x1 convolution per latent parameter (``nets.latent``). With the latents of ``LATENT_PRESETS`` the
parameter counts equal those of the ambiguity paper's Table 1 exactly (6,847,129 AA; 6,864,027 AA-mix;
6,844,945 FC; 6,882,467 FC-mix).

Backbones are swappable (ambiguity paper, section 4.2 and Table 4): ``backbone="diffusion-unet"`` uses
the ambiguity paper's UNet without its time embedding as the segmentation network; conversely
``ProbUNetDiffusionNet`` (registry name ``probunet-unet``) is the native UNet with a time embedding, taking
``forward(x_t, t, image)`` like every diffusion network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffuseg.enums import LatentKind
from diffuseg.nets.blocks import TimeEmbedding
from diffuseg.nets.latent import Generators, Latent, LatentHead
from diffuseg.nets.unet import DiffusionUNet

FILTERS = (32, 64, 128, 256)
# The ambiguity paper's authors build the diffusion variant with five levels (released code, AmbDiffSeg).
DIFFUSION_FILTERS = (32, 64, 128, 192, 320)

# The latent settings behind the ambiguity paper's Table 1 counts (dim, components); FC uses rank = dim.
LATENT_PRESETS: dict[LatentKind, tuple[int, int]] = {
    LatentKind.AA: (6, 1),
    LatentKind.AA_MIX: (4, 5),
    LatentKind.FC: (2, 1),
    LatentKind.FC_MIX: (2, 9),
}


class ConvBlock(nn.Module):
    """[2x2 avg-pool] -> n x (3x3 conv, ReLU) -> [BatchNorm]; an optional time embedding is added after
    the first convolution (only in the diffusion variant).

    forward: x (B, in_ch, H, W), emb (B, emb_dim) or None -> (B, out_ch, H', W').
    """

    def __init__(self, in_ch: int, out_ch: int, convs: int, pool: bool, norm: bool, emb_dim: int | None = None):
        super().__init__()
        self.pool = nn.AvgPool2d(2, ceil_mode=True) if pool else nn.Identity()
        self.convs = nn.ModuleList(nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1) for i in range(convs))
        self.emb = nn.Linear(emb_dim, out_ch) if emb_dim else None
        self.norm = nn.BatchNorm2d(out_ch) if norm else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        x = self.pool(x)
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i == 0 and self.emb is not None:
                x = x + self.emb(emb)[:, :, None, None]
        return self.norm(x)


class NativeUNet(nn.Module):
    """The Gen. Prob. UNet's UNet without its last layer: image (B, in_channels, H, W) -> (B, filters[0], H, W).

    H and W must be divisible by 2 ** (len(filters) - 1).
    """

    def __init__(
        self,
        in_channels: int,
        filters: Sequence[int] = FILTERS,
        convs_per_block: int = 3,
        emb_dim: int | None = None,
    ):
        super().__init__()
        self.out_channels = filters[0]
        self.down = nn.ModuleList()
        ch = in_channels
        for i, f in enumerate(filters):
            self.down.append(ConvBlock(ch, f, convs_per_block, pool=i > 0, norm=True, emb_dim=emb_dim))
            ch = f
        self.up = nn.ModuleList()
        for i in range(len(filters) - 2, -1, -1):
            self.up.append(ConvBlock(ch + filters[i], filters[i], convs_per_block, False, i > 0, emb_dim))
            ch = filters[i]

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x, emb)
            if i < len(self.down) - 1:
                skips.append(x)
        for block in self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
            x = block(torch.cat([x, skips.pop()], dim=1), emb)
        return x


class LatentEncoder(nn.Module):
    """Prior / posterior net, (B, in_channels, H, W) -> ``Latent``: contracting path, mean over space, head."""

    def __init__(self, in_channels: int, filters: Sequence[int], convs_per_block: int, head: LatentHead):
        super().__init__()
        last = len(filters) - 1
        self.blocks = nn.Sequential(
            *(
                ConvBlock(in_channels if i == 0 else filters[i - 1], f, convs_per_block, i > 0, i < last)
                for i, f in enumerate(filters)
            )
        )
        self.head = head

    def forward(self, x: Tensor) -> Latent:
        return self.head(self.blocks(x).mean(dim=(2, 3), keepdim=True))


class Fcomb(nn.Module):
    """Latent broadcast and 1x1 convolutions (Kohl et al. 2018, f_comb): features (B, F, H, W), z (B, dim)
    -> logits (B, out_channels, H, W). ``convs`` 1x1 layers in all; BatchNorm before each middle one (Bhat et al.)."""

    def __init__(self, channels: int, latent_dim: int, convs: int = 4, out_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels + latent_dim, channels, 1), nn.ReLU()]
        for _ in range(convs - 2):
            layers += [nn.BatchNorm2d(channels), nn.Conv2d(channels, channels, 1), nn.ReLU()]
        layers.append(nn.Conv2d(channels, out_channels, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: Tensor, z: Tensor) -> Tensor:
        tiled = z[:, :, None, None].expand(-1, -1, *features.shape[2:]).to(features.dtype)
        return self.layers(torch.cat([features, tiled], dim=1))


class DiffusionUNetBackbone(nn.Module):
    """The ambiguity paper's diffusion UNet used as a plain segmentation backbone (no x_t, no time).

    Wraps ``nets.unet.DiffusionUNet`` built with ``time_embedding=False`` and without its output head:
    image (B, in_channels, H, W) -> features (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, **options: Any):
        super().__init__()
        self.net = DiffusionUNet(in_channels=in_channels, mask_channels=0, time_embedding=False, head=False, **options)
        self.out_channels = self.net.out_channels

    def forward(self, image: Tensor) -> Tensor:
        return self.net.features(image)


class ProbUNet(nn.Module):
    """Prob. UNet with the latent ``kind`` of Bhat et al. 2022: aa (Kohl et al. 2018), aa_mix, fc, fc_mix.

    ``latent_dim`` / ``components`` default to ``LATENT_PRESETS[kind]``; ``rank`` (FC) defaults to
    ``latent_dim``. ``temperature`` is the Gumbel-softmax temperature of mixtures. ``backbone`` is
    ``native`` or ``diffusion-unet`` (with ``backbone_options`` for the latter, e.g. its channels).
    ``beta`` (the KL weight) and ``kl_samples`` (Monte-Carlo draws for mixture KLs) are loss settings,
    kept here so that one ``model.options`` mapping describes the model (``training.latent_loss``).
    ``out_channels`` is ``LabelScheme.channels``, the channels of the class one-hot (binary: 1; C + 1 for C >= 2
    exclusive classes): the posterior reads the image and that one-hot of an annotation, ``fcomb`` returns as
    many logit channels (a softmax over them for exclusive classes, a sigmoid per channel otherwise;
    ``training.latent_loss``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        kind: str = "aa",
        latent_dim: int | None = None,
        components: int | None = None,
        rank: int | None = None,
        temperature: float = 0.1,
        filters: Sequence[int] = FILTERS,
        convs_per_block: int = 3,
        fcomb_convs: int = 4,
        backbone: str = "native",
        backbone_options: Mapping[str, Any] | None = None,
        beta: float = 1.0,
        kl_samples: int = 1000,
        out_channels: int = 1,
    ):
        super().__init__()
        self.beta, self.kl_samples = float(beta), int(kl_samples)
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        self.out_channels = out_channels
        self.kind = LatentKind.parse(kind)
        dim, k = LATENT_PRESETS[self.kind]
        self.latent_dim = latent_dim or dim
        components = components or k
        if self.kind.is_mixture and components < 2:
            raise ValueError(f"latent {self.kind} needs components >= 2, got {components}")
        if not self.kind.is_mixture and components != 1:
            raise ValueError(f"latent {self.kind} has one component, got components={components}")
        rank = rank or self.latent_dim
        filters = tuple(filters)

        def head() -> LatentHead:
            return LatentHead(filters[-1], self.kind, self.latent_dim, components, rank, temperature)

        if backbone == "native":
            self.unet: nn.Module = NativeUNet(in_channels, filters, convs_per_block)
        elif backbone == "diffusion-unet":
            self.unet = DiffusionUNetBackbone(in_channels, **dict(backbone_options or {}))
        else:
            raise ValueError(f"backbone {backbone!r} is not one of: native, diffusion-unet")
        self.prior_net = LatentEncoder(in_channels, filters, convs_per_block, head())
        self.posterior_net = LatentEncoder(in_channels + out_channels, filters, convs_per_block, head())
        self.fcomb = Fcomb(self.unet.out_channels, self.latent_dim, fcomb_convs, out_channels)
        self.downsampling = 2 ** (len(filters) - 1)
        if backbone == "diffusion-unet":
            self.downsampling = max(self.downsampling, self.unet.net.downsampling)

    def prior(self, image: Tensor) -> Latent:
        """p(z | x): image (B, in_channels, H, W) -> batch of B latents."""
        return self.prior_net(image)

    def posterior(self, image: Tensor, mask: Tensor) -> Latent:
        """q(z | x, y): image (B, in_channels, H, W), mask (B, out_channels, H, W): the one-hot {0, 1} of one
        annotation (binary: the mask) -> batch of B latents."""
        return self.posterior_net(torch.cat([image, mask.to(image.dtype)], dim=1))

    def features(self, image: Tensor) -> Tensor:
        """The UNet's last feature map, (B, F, H, W); computed once per image."""
        return self.unet(image)

    def decode(self, features: Tensor, z: Tensor) -> Tensor:
        """features (B, F, H, W), z (B * n, dim) image-major -> logits (B * n, out_channels, H, W)."""
        n = z.shape[0] // features.shape[0]
        return self.fcomb(features.repeat_interleave(n, 0) if n > 1 else features, z)

    def forward(self, image: Tensor, z: Tensor) -> Tensor:
        """Logits for given latents: image (B, in_channels, H, W), z (B * n, dim) image-major
        -> (B * n, out_channels, H, W)."""
        return self.decode(self.features(image), z)

    def sample_logits(self, image: Tensor, n: int, generator: Generators) -> Tensor:
        """n prior samples per image: (B * n, out_channels, H, W) logits; row b * n + k uses generator[b * n + k]
        when a list is given."""
        z = self.prior(image).rsample(n, generator)
        return self.decode(self.features(image), z)


class ProbUNetDiffusionNet(nn.Module):
    """The Gen. Prob. UNet's UNet as a diffusion network (ambiguity paper, section 4.2 / Table 4).

    Input is the image concatenated with x_t; a sinusoidal time embedding (linear, SiLU, linear) is added
    after the first convolution of every block; a 1x1 convolution gives the prediction. The default
    filters (32, 64, 128, 192, 320) follow the authors' released code (6,378,017 parameters for one
    image channel); ``filters=(32, 64, 128, 256)`` is the Prob. UNet's own UNet.
    forward: x_t (B*K, mask_channels, H, W), t (B*K,) in [0, 1], image (B, in_channels, H, W)
    -> (B*K, out_channels, H, W); with classes ``mask_channels = out_channels = LabelScheme.channels`` (binary: 1).
    """

    def __init__(
        self,
        in_channels: int = 1,
        filters: Sequence[int] = DIFFUSION_FILTERS,
        convs_per_block: int = 3,
        time_dim: int = 128,
        mask_channels: int = 1,
        out_channels: int = 1,
    ):
        super().__init__()
        if mask_channels < 1 or out_channels < 1:
            raise ValueError(f"mask_channels and out_channels must be >= 1, got {mask_channels}, {out_channels}")
        filters = tuple(filters)
        self.mask_channels, self.out_channels = mask_channels, out_channels
        self.time = TimeEmbedding(filters[0], time_dim)
        self.unet = NativeUNet(in_channels + mask_channels, filters, convs_per_block, emb_dim=time_dim)
        self.out = nn.Conv2d(filters[0], out_channels, 1)
        self.downsampling = 2 ** (len(filters) - 1)

    def forward(self, x_t: Tensor, t: Tensor, image: Tensor) -> Tensor:
        k = x_t.shape[0] // image.shape[0]
        cond = image.repeat_interleave(k, 0) if k > 1 else image
        h = torch.cat([cond.to(x_t.dtype), x_t], dim=1)
        return self.out(self.unet(h, self.time(t)))
