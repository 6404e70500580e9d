"""``training.ssn_loss``: the per-sample likelihood against hand-made sums, the Monte Carlo estimate at zero
covariance, gradients to every head, and a few steps that lower the loss on tiny ambiguous data."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from diffuseg.nets.ssn import StochasticSegNet
from diffuseg.nets.unet import SegmentationUNet
from diffuseg.training.ssn_loss import log_likelihood, ssn_loss

TINY = {"channels": (8, 8, 16), "num_res_blocks": (1, 1, 1), "middle_blocks": 1}


def tiny_ssn(classes: int = 1, rank: int = 3) -> StochasticSegNet:
    torch.manual_seed(0)
    return StochasticSegNet(SegmentationUNet(1, out_channels=classes, **TINY), classes, rank=rank)


def test_log_likelihood_sums_the_pixels_of_each_draw():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 4, 5, 5, generator=g)
    labels = torch.randint(0, 4, (2, 5, 5), generator=g)
    one_hot = F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    exclusive = log_likelihood(logits, one_hot, exclusive=True)
    by_hand = torch.log_softmax(logits, 2).gather(2, labels[None, :, None].expand(3, -1, -1, -1, -1)).sum((2, 3, 4))
    torch.testing.assert_close(exclusive, by_hand)
    regions = (torch.rand(2, 3, 5, 5, generator=g) > 0.5).float()
    p = torch.sigmoid(logits[:, :, :3])
    bernoulli = (regions * p.log() + (1 - regions) * (1 - p).log()).sum((2, 3, 4))
    torch.testing.assert_close(log_likelihood(logits[:, :, :3], regions, exclusive=False), bernoulli)
    torch.testing.assert_close(log_likelihood(logits[:, :, :1], regions[:, :1]), bernoulli_one(logits, regions))


def bernoulli_one(logits: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits[:, :, :1])
    return (regions[:, :1] * p.log() + (1 - regions[:, :1]) * (1 - p).log()).sum((2, 3, 4))


@pytest.mark.parametrize("classes,exclusive", [(1, True), (4, True), (3, False)])
def test_with_no_covariance_the_loss_is_the_likelihood_of_the_mean(classes, exclusive):
    """P = 0 and D = epsilon: every draw is mu (to 1e-5 / logit), so logsumexp over M equal terms - log M is the
    mean's log-likelihood, which ``mean_nll`` reports."""
    net = tiny_ssn(classes)
    head = net.covariance[-1]
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    head.bias.data[:classes] = -40.0  # log D: D = exp(-40) + 1e-5
    image = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 4, (2, 16, 16), generator=torch.Generator().manual_seed(2))
    target = F.one_hot(labels, 4).permute(0, 3, 1, 2).float()[:, -classes:]  # binary / regions: any {0, 1} maps
    parts = ssn_loss(net, image, target, torch.Generator().manual_seed(3), 20, exclusive)
    mu = net(image)[None]
    expected = -log_likelihood(mu, target, exclusive).mean()
    torch.testing.assert_close(parts["loss"], expected, rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(parts["mean_nll"], expected, rtol=1e-5, atol=1e-3)


def test_the_estimate_is_a_log_mean_exp_over_the_draws():
    """Two draws of very different likelihood: the loss is -log((p1 + p2) / 2), near the better one + log 2."""
    net = tiny_ssn(1, rank=1)
    image = torch.zeros(1, 1, 16, 16)
    target = torch.zeros(1, 1, 16, 16)
    dist = net.logit_distribution(image)
    draws = dist.antithetic_sample(2, torch.Generator().manual_seed(5))
    terms = log_likelihood(draws, target)
    loss = ssn_loss(net, image, target, torch.Generator().manual_seed(5), 2, True)["loss"]
    torch.testing.assert_close(loss, -(torch.logsumexp(terms[:, 0], 0) - math.log(2)))


def test_gradients_reach_the_mean_and_the_covariance_heads():
    net = tiny_ssn(4)
    image = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 4, (2, 16, 16), generator=torch.Generator().manual_seed(2))
    target = F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    ssn_loss(net, image, target, torch.Generator().manual_seed(3), 4, True)["loss"].backward()
    mean_head = net.backbone.net.head[-1].weight.grad
    factor_and_diag = net.covariance[-1].weight.grad
    assert mean_head is not None and float(mean_head.abs().sum()) > 0
    assert float(factor_and_diag[:4].abs().sum()) > 0 and float(factor_and_diag[4:].abs().sum()) > 0


def ambiguous_discs(batch: int = 4, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B, 1, S, S), masks (B, 2, S, S): annotator 0 marks the disc, annotator 1 a larger one or nothing."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    g = torch.Generator().manual_seed(0)
    images, masks = [], []
    for i in range(batch):
        cy, cx = (torch.rand(2, generator=g) * size / 2 + size / 4).tolist()
        dist2 = (yy - cy) ** 2 + (xx - cx) ** 2
        disc = (dist2 <= (size / 6) ** 2).float()
        other = (dist2 <= (size / 6 + 2) ** 2).float() if i % 2 == 0 else torch.zeros_like(disc)
        images.append(disc + 0.1 * torch.randn(size, size, generator=g))
        masks.append(torch.stack([disc, other]))
    return torch.stack(images)[:, None], torch.stack(masks)


def test_a_few_steps_lower_the_loss():
    images, masks = ambiguous_discs()
    net = tiny_ssn(1)

    def batch_loss(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        choice = torch.randint(2, (masks.shape[0],), generator=g)
        target = masks[torch.arange(masks.shape[0]), choice][:, None]
        return ssn_loss(net, images, target, g, 8, True)["loss"]

    with torch.no_grad():
        before = sum(float(batch_loss(s)) for s in range(1000, 1003)) / 3
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(20):
        loss = batch_loss(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = sum(float(batch_loss(s)) for s in range(1000, 1003)) / 3
    assert after < 0.5 * before, (before, after)
