"""A few optimisation steps lower each baseline's loss on tiny ambiguous data (random annotator per step)."""

import pytest
import torch

from diffuseg.nets.phiseg import PHiSeg
from diffuseg.nets.probunet import ProbUNet
from diffuseg.training.latent_loss import latent_loss


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "phiseg":
        return PHiSeg(1, resolution_levels=3, latent_levels=2, n0=8, zdim=2)
    mix = {"components": 2} if name.endswith("mix") else {}
    return ProbUNet(1, name, latent_dim=2, filters=(8, 16), convs_per_block=2, kl_samples=16, **mix)


def pick_annotator(masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One annotator per item at random, as the training data does: (B, K, H, W) -> (B, 1, H, W)."""
    choice = torch.randint(masks.shape[1], (masks.shape[0],), generator=generator)
    return masks[torch.arange(masks.shape[0]), choice][:, None]


def mean_loss(net, images, masks, seeds) -> float:
    """The loss averaged over fixed draws (annotator, latent), so two evaluations are comparable."""
    total = 0.0
    with torch.no_grad():
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            total += float(latent_loss(net, images, pick_annotator(masks, g), g)["loss"])
    return total / len(seeds)


@pytest.mark.parametrize("name", ["aa", "aa_mix", "fc", "fc_mix", "phiseg"])
def test_a_few_steps_lower_the_loss(name, blobs):
    images, masks = blobs
    net = build(name).train()  # batch statistics in BatchNorm, before and after alike
    before = mean_loss(net, images, masks, range(1000, 1003))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(20):
        g = torch.Generator().manual_seed(step)
        loss = latent_loss(net, images, pick_annotator(masks, g), g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = mean_loss(net, images, masks, range(1000, 1003))
    assert after < 0.8 * before, (before, after)
