"""Prob. UNet and the Gen. Prob. UNet: sizes of the paper, shapes, KL, seeded sampling, diffusion wrapper."""

import pytest
import torch

from diffuseg.methods import latent_sample as sample
from diffuseg.nets.latent import kl
from diffuseg.nets.probunet import ProbUNet, ProbUNetDiffusionNet
from diffuseg.nets.registry import build_network

KINDS = ["aa", "aa_mix", "fc", "fc_mix"]


def tiny(kind: str, in_channels: int = 1, **options) -> ProbUNet:
    torch.manual_seed(0)
    mix = {"components": 3} if kind.endswith("mix") else {}
    opts = {"latent_dim": 3, "filters": (8, 16), "convs_per_block": 2, "kl_samples": 32, **mix, **options}
    return ProbUNet(in_channels, kind, **opts)


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("probunet", 6_847_129),
        ("probunet-aa-mix", 6_864_027),
        ("probunet-fc", 6_844_945),
        ("probunet-fc-mix", 6_882_467),
    ],
)
def test_parameter_counts_equal_the_ambiguity_papers_table_1(name, expected):
    assert count(build_network(name, 1)) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_shapes(kind):
    net = tiny(kind, in_channels=3).eval()
    image = torch.randn(2, 3, 16, 16)
    mask = torch.zeros(2, 1, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert net.prior(image).rsample(5, g).shape == (10, 3)
    assert net.posterior(image, mask).rsample(1, g).shape == (2, 3)
    assert net.sample_logits(image, 5, g).shape == (10, 1, 16, 16)
    assert net(image, torch.randn(4, 3)).shape == (4, 1, 16, 16)
    out = sample(net, image, 4, generator=g)
    assert out.mask.shape == out.soft.shape == (8, 1, 16, 16)
    assert set(out.mask.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("kind", KINDS)
def test_kl_is_zero_when_the_posterior_net_equals_the_prior_net(kind):
    """Give the posterior net the prior's weights and zero weights on its mask channel: q = p, KL = 0."""
    net = tiny(kind).eval()
    prior_state = net.prior_net.state_dict()
    post_state = {k: v.clone() for k, v in prior_state.items()}
    first = "blocks.0.convs.0.weight"
    post_state[first] = torch.cat([prior_state[first], torch.zeros_like(prior_state[first][:, :1])], dim=1)
    net.posterior_net.load_state_dict(post_state)
    image, mask = torch.randn(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    value = kl(net.posterior(image, mask), net.prior(image), torch.Generator().manual_seed(0), samples=32)
    assert torch.allclose(value, torch.zeros(2), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_sampling_is_seeded(kind):
    net = tiny(kind).eval()
    image = torch.randn(1, 1, 16, 16)

    # An untrained net's probabilities sit in a narrow band; threshold at their median so masks can differ.
    level = float(sample(net, image, 8, generator=torch.Generator().manual_seed(0)).soft.median())

    def draw(seed):
        return sample(net, image, 8, generator=torch.Generator().manual_seed(seed), threshold=level)

    a, b, c = draw(1), draw(1), draw(2)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.soft, b.soft)
    assert not torch.equal(a.soft, c.soft)
    assert not torch.equal(a.mask, c.mask)


@pytest.mark.parametrize("kind", KINDS)
def test_members_do_not_depend_on_the_batch(kind):
    """With one generator per row, image 1's members are the same drawn with image 0 or alone."""
    net = tiny(kind).eval()
    images = torch.randn(2, 1, 16, 16)

    def gens(start):
        return [torch.Generator().manual_seed(100 + start + i) for i in range(3)]

    together = sample(net, images, 3, generator=gens(0) + gens(3))
    alone = sample(net, images[1:], 3, generator=gens(3))
    assert torch.allclose(together.soft[3:], alone.soft, atol=1e-6)


def test_mixture_and_kind_options_are_checked():
    with pytest.raises(ValueError, match="components >= 2"):
        ProbUNet(1, "aa_mix", components=1)
    with pytest.raises(ValueError, match="one component"):
        ProbUNet(1, "fc", components=3)
    with pytest.raises(ValueError, match="fc_mix"):
        ProbUNet(1, "gmm")


def test_diffusion_unet_backbone_swaps_in():
    """Table 4: the Prob. UNet on the ambiguity paper's UNet (without time embedding)."""
    torch.manual_seed(0)
    net = ProbUNet(1, "aa", filters=(8, 16), backbone="diffusion-unet", backbone_options={"channels": (8, 8, 16, 32)})
    assert not any("time" in name for name, _ in net.unet.named_parameters())
    image = torch.randn(2, 1, 16, 16)
    assert net.eval().sample_logits(image, 3, torch.Generator().manual_seed(0)).shape == (6, 1, 16, 16)


def test_probunet_unet_is_a_diffusion_network():
    """Table 4, the other half: the Gen. Prob. UNet's UNet with a time embedding, forward(x_t, t, image)."""
    torch.manual_seed(0)
    net = ProbUNetDiffusionNet(2, filters=(8, 16), time_dim=16).eval()
    image = torch.randn(2, 2, 16, 16)
    x_t, t = torch.randn(6, 1, 16, 16), torch.full((6,), 0.3)
    out = net(x_t, t, image)
    assert out.shape == (6, 1, 16, 16)
    # Members share their image; a different t changes the output.
    single = net(x_t[3:4], t[3:4], image[1:2])
    assert torch.allclose(out[3:4], single, atol=1e-5)
    assert not torch.allclose(net(x_t, torch.full((6,), 0.9), image), out)
    assert isinstance(build_network("probunet-unet", 1), ProbUNetDiffusionNet)
