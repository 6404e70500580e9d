"""Stochastic Segmentation Networks (Monteiro et al., NeurIPS 2020, arXiv:2006.06015).

A segmentation network whose logits eta (C x H x W, flattened to N = C * H * W values per image) are Gaussian,
eta ~ N(mu(x), Sigma(x)), with the low-rank plus diagonal covariance Sigma = P P^T + D: P
(N x R) of rank R (the paper: 10) and D diagonal, all three predicted per pixel from the last hidden layer of the
backbone in one pass. A sample is a whole logit map whose pixels co-vary, so K members cost one backbone pass and K
draws of N + R normal numbers: eta_k = mu + P eps_R + sqrt(D) eps_N.

Here the backbone is a segmenter with ``features(image)`` and ``logits(features)`` (``unet``, the deterministic
baseline; ``medsegdiff-*-segmenter``): mu is exactly the backbone's own output head, so an SSN differs from the
deterministic network of the same backbone only by its covariance head, a (GroupNorm, SiLU, 1x1 convolution) on the
same features giving log D (C channels) and P (C * R channels) per pixel. D = exp(log D) + ``epsilon`` keeps
the covariance positive definite (the paper's numerically safe covariance; the authors' code adds 1e-5).

The authors mask P and D outside the brain on BraTS (the covariance of the background otherwise grows without
bound); a diffuseg item is resized, never padded, so every pixel is image and no such mask applies.

Shapes: image (B, in_channels, H, W); mu (B, C, H, W) with C = ``LabelScheme.channels``; loc and cov_diag (B, N);
cov_factor (B, N, R), N indexed channel-major (``tensor.flatten(1)`` of (B, C, H, W)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import LowRankMultivariateNormal

from diffuseg.nets.blocks import group_norm
from diffuseg.nets.latent import Generators, normal_noise

RANK = 10  # the paper's rank
EPSILON = 1e-5  # added to D (the authors' code)


@dataclass(frozen=True)
class LogitDistribution:
    """A batch of B Gaussians over the N = C * H * W logits of an image, by their parameters (float32).

    Sampling reads the parameters directly; ``distribution()`` builds the ``torch.distributions`` object (whose
    constructor factorises the R x R capacitance matrix) only where a density or the covariance is wanted.
    """

    loc: Tensor  # (B, N)
    cov_factor: Tensor  # (B, N, R)
    cov_diag: Tensor  # (B, N), > 0
    shape: tuple[int, int, int]  # (C, H, W) of one logit map

    def distribution(self) -> LowRankMultivariateNormal:
        """``LowRankMultivariateNormal`` with batch shape (B,) and event shape (N,)."""
        return LowRankMultivariateNormal(self.loc, self.cov_factor, self.cov_diag, validate_args=False)

    def transform(self, eps_rank: Tensor, eps_diag: Tensor) -> Tensor:
        """Logit maps from standard normal noise: eps_rank (B, n, R), eps_diag (B, n, N) -> (B, n, C, H, W),
        mu + P eps_rank + sqrt(D) eps_diag for each of the n draws per image, in float32 (also under autocast)."""
        with torch.autocast(self.loc.device.type, enabled=False):
            low_rank = torch.einsum("bnr,bkr->bkn", self.cov_factor, eps_rank.float())
            flat = self.loc[:, None] + low_rank + self.cov_diag.sqrt()[:, None] * eps_diag.float()
        return flat.reshape(*flat.shape[:2], *self.shape)

    def sample(self, n: int, generator: Generators) -> Tensor:
        """n draws per image: (B * n, C, H, W), rows image-major; with a list of generators, row b * n + k comes
        from generator b * n + k alone (``nets.latent.normal_noise``)."""
        b, dims, rank = self.loc.shape[0], self.loc.shape[1], self.cov_factor.shape[2]
        eps = normal_noise((b * n, rank + dims), generator, self.loc.device).reshape(b, n, rank + dims)
        return self.transform(eps[..., :rank], eps[..., rank:]).flatten(0, 1)

    def antithetic_sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n = 2m reparameterised draws per image in antithetic pairs, mu + d_j and mu - d_j for j < m, the
        draws of the SSN loss (the authors' code): (n, B, C, H, W), sample-major."""
        if n < 2 or n % 2:
            raise ValueError(f"antithetic sampling needs an even number of samples >= 2, got {n}")
        b, dims, rank = self.loc.shape[0], self.loc.shape[1], self.cov_factor.shape[2]
        eps = torch.randn((b, n // 2, rank + dims), generator=generator, device=generator.device).to(self.loc.device)
        eps = torch.cat([eps, -eps], dim=1)
        return self.transform(eps[..., :rank], eps[..., rank:]).transpose(0, 1)


class StochasticSegNet(nn.Module):
    """An SSN on a segmenter ``backbone``: ``forward(image) -> mu`` (B, C, H, W), the mean logits (the
    distribution's mode, the network's one deterministic answer); ``logit_distribution(image)`` -> the B
    Gaussians over the logits; ``sample_logits(image, n, generator)`` -> n draws per image from one pass.

    Args:
        backbone: a segmenter with ``features``, ``logits`` and ``feature_channels``, predicting C channels.
        out_channels: C, its logit channels (``LabelScheme.channels``).
        rank: R, the rank of the covariance factor P.
        epsilon: added to the diagonal D.
    """

    def __init__(self, backbone: nn.Module, out_channels: int, rank: int = RANK, epsilon: float = EPSILON):
        super().__init__()
        for name in ("features", "logits"):
            if not callable(getattr(backbone, name, None)):
                raise TypeError(f"{type(backbone).__name__} has no {name}(): it cannot be an SSN backbone")
        if rank < 1 or out_channels < 1 or not epsilon > 0:
            raise ValueError(f"rank, out_channels must be >= 1 and epsilon > 0, got {rank}, {out_channels}, {epsilon}")
        width = backbone.feature_channels
        self.backbone = backbone
        self.covariance = nn.Sequential(group_norm(width), nn.SiLU(), nn.Conv2d(width, out_channels * (1 + rank), 1))
        self.out_channels, self.rank, self.epsilon = out_channels, rank, float(epsilon)
        self.downsampling = getattr(backbone, "downsampling", 1)

    def structure(self) -> str:
        inner = self.backbone.structure() if callable(getattr(self.backbone, "structure", None)) else ""
        head = f"SSN head: low-rank Gaussian over the logits, rank {self.rank}, diagonal + {self.epsilon:g}"
        return f"{inner}; {head}" if inner else head

    def parameters_of(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """features (B, F, H, W) -> mu (B, C, H, W), cov_diag (B, C, H, W) and cov_factor (B, R, C, H, W),
        all float32 (also under autocast)."""
        mu = self.backbone.logits(features).float()
        out = self.covariance(features).float()
        c = self.out_channels
        cov_diag = out[:, :c].exp() + self.epsilon
        cov_factor = out[:, c:].unflatten(1, (self.rank, c))
        return mu, cov_diag, cov_factor

    def logit_distribution(self, image: Tensor) -> LogitDistribution:
        """image (B, in_channels, H, W) -> the B Gaussians over the (C, H, W) logits, one backbone pass."""
        mu, cov_diag, cov_factor = self.parameters_of(self.backbone.features(image))
        return LogitDistribution(
            loc=mu.flatten(1),
            cov_factor=cov_factor.flatten(2).transpose(1, 2),
            cov_diag=cov_diag.flatten(1),
            shape=tuple(mu.shape[1:]),
        )

    def forward(self, image: Tensor) -> Tensor:
        return self.backbone(image)

    def sample_logits(self, image: Tensor, n: int, generator: Generators) -> Tensor:
        """n draws per image: (B * n, C, H, W) logits, rows image-major; row b * n + k uses generator[b * n + k]
        when a list is given (``LogitDistribution.sample``)."""
        return self.logit_distribution(image).sample(n, generator)
