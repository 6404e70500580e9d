"""Registry: every name builds and runs with C class channels, bad names, options and channel counts are user
errors, the parameter counts the docs state, and ``diffuseg info``.
"""

from __future__ import annotations

import pytest
import torch

from diffuseg.cli import main
from diffuseg.errors import UserError
from diffuseg.methods import build_network as build_from_config
from diffuseg.nets.registry import NETWORKS, allowed_options, build_network, describe, takes_mask
from diffuseg.presets import load_config

TINY_OPTIONS = {
    "medsegdiff-s": {"base_channels": 8},
    "medsegdiff-b": {"base_channels": 8, "dynamic_conditioning": False},
    "medsegdiff-l": {"base_channels": 8, "ff_parser": False},
    "diffusion-unet": {"channels": [8, 8, 16, 16], "num_res_blocks": [1, 1, 1, 1], "middle_blocks": 1},
    "unet": {"channels": [8, 8, 16, 16], "num_res_blocks": [1, 1, 1, 1], "middle_blocks": 1},
}


def test_brief_names_are_registered() -> None:
    assert set(TINY_OPTIONS) <= set(NETWORKS)


@pytest.mark.parametrize("name", list(TINY_OPTIONS))
def test_build_and_run(name: str) -> None:
    torch.manual_seed(0)
    net = build_network(name, 3, **TINY_OPTIONS[name])
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = net(image) if name == "unet" else net(torch.randn(2, 1, 64, 64), torch.rand(2), image)
    assert out.shape[1:] == (1, 64, 64)


def test_ablation_options_reach_the_network() -> None:
    net = build_network("medsegdiff-s", 1, base_channels=8, dynamic_conditioning=False, ff_parser=False)
    assert net.fusion_stages == () and "FF-Parser off" in net.structure()


def test_unknown_name_lists_the_allowed_ones() -> None:
    with pytest.raises(UserError, match="medsegdiff-b") as err:
        build_network("medsegdiff-xl", 1)
    assert "diffusion-unet" in str(err.value)


def test_unknown_option_lists_the_allowed_ones() -> None:
    with pytest.raises(UserError, match=r"unknown option.*width.*allowed: base_channels"):
        build_network("medsegdiff-b", 1, width=3)
    assert "dynamic_conditioning" in allowed_options("medsegdiff-b")


@pytest.mark.parametrize(
    ("name", "in_channels", "options"),
    [("unet", 0, {}), ("medsegdiff-s", 1, {"base_channels": 0}), ("diffusion-unet", 1, {"channels": [8, 8]})],
)
def test_bad_values_are_user_errors(name: str, in_channels: int, options: dict) -> None:
    with pytest.raises(UserError, match=name):
        build_network(name, in_channels, **options)


def test_describe_reports_counts_and_paper_values() -> None:
    text = describe("diffusion-unet", image_size=128, in_channels=1)
    count = sum(p.numel() for p in build_network("diffusion-unet", 1).parameters())
    assert f"{count:,} parameters" in text and "6,891,905" in text
    assert "8x" in text and "16 x 16" in text and "12 attention layers" in text
    assert "NOT divisible" in describe("unet", image_size=100)


def test_cli_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "medsegdiff-s", "--in-channels", "3"]) == 0
    out = capsys.readouterr().out
    assert "medsegdiff-s:" in out and "13 M (MedSegDiff Table 3)" in out and "Dy-Cond at stages 2, 3" in out
    assert main(["info", "nope"]) == 2
    assert "is not one of" in capsys.readouterr().err


C = 4


# Tiny options per registry name; inputs are max(16, downsampling) pixels wide (MedSegDiff-L: 64).
TINY = {
    "medsegdiff-s": {"base_channels": 4},
    "medsegdiff-b": {"base_channels": 4},
    "medsegdiff-l": {"base_channels": 4},
    "medsegdiff-s-segmenter": {"base_channels": 4},
    "medsegdiff-b-segmenter": {"base_channels": 4},
    "medsegdiff-l-segmenter": {"base_channels": 4},
    "diffusion-unet": {"channels": [8, 8, 16], "num_res_blocks": [1, 1, 1], "middle_blocks": 1, "time_dim": 16},
    "unet": {"channels": [8, 8, 16], "num_res_blocks": [1, 1, 1], "middle_blocks": 1},
    "probunet": {"latent_dim": 2, "filters": [8, 16], "convs_per_block": 1, "kl_samples": 4},
    "probunet-aa-mix": {"latent_dim": 2, "components": 2, "filters": [8, 16], "convs_per_block": 1},
    "probunet-fc": {"latent_dim": 2, "filters": [8, 16], "convs_per_block": 1},
    "probunet-fc-mix": {"latent_dim": 2, "components": 2, "filters": [8, 16], "convs_per_block": 1},
    "probunet-unet": {"filters": [8, 16], "convs_per_block": 1, "time_dim": 16},
    "phiseg": {"resolution_levels": 3, "latent_levels": 2, "n0": 8, "zdim": 2},
}
ONE_PASS = {"unet", "medsegdiff-s-segmenter", "medsegdiff-b-segmenter", "medsegdiff-l-segmenter"}  # net(image)


def _size(net: torch.nn.Module) -> int:
    return max(16, net.downsampling)


def _call(name: str, net: torch.nn.Module, image: torch.Tensor, x_t_channels: int, members: int = 2) -> torch.Tensor:
    """One forward pass as the family runs it: x_t of ``x_t_channels`` for diffusion, prior samples otherwise."""
    b, size = image.shape[0], image.shape[-1]
    if takes_mask(name):
        x_t = torch.randn(b * members, x_t_channels, size, size)
        return net(x_t, torch.full((b * members,), 0.5), image)
    if name in ONE_PASS:
        return net(image)
    return net.sample_logits(image, members, torch.Generator().manual_seed(0))


def test_every_network_has_tiny_options():
    assert set(TINY) == set(NETWORKS)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_network_builds_with_c_channels_and_returns_them(name):
    torch.manual_seed(0)
    net = build_network(name, 2, C, **TINY[name]).eval()
    size = _size(net)
    with torch.no_grad():
        out = _call(name, net, torch.randn(3, 2, size, size), C)
    rows = 3 if name in ONE_PASS else 6
    assert out.shape == (rows, C, size, size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", [n for n in NETWORKS if takes_mask(n)])
def test_diffusion_networks_keep_mask_and_output_channels_apart(name):
    """x_t may carry more channels than the prediction (e.g. 2C for self-conditioning)."""
    net = build_network(name, 1, C, mask_channels=2 * C, **TINY[name]).eval()
    size = _size(net)
    with torch.no_grad():
        out = _call(name, net, torch.randn(1, 1, size, size), 2 * C)
        assert out.shape == (2, C, size, size)
        with pytest.raises(RuntimeError):  # the stem reads 2C channels, not C
            _call(name, net, torch.randn(1, 1, size, size), C)


@pytest.mark.parametrize("name", ["probunet", "phiseg"])
def test_latent_posteriors_read_the_c_channel_one_hot(name):
    net = build_network(name, 1, C, **TINY[name]).eval()
    size = 16
    one_hot = torch.nn.functional.one_hot(torch.randint(C, (2, size, size)), C).movedim(-1, 1).float()
    image = torch.randn(2, 1, size, size)
    with torch.no_grad():
        if name == "phiseg":
            posterior = net.posterior(image, one_hot, torch.Generator().manual_seed(0))
            assert net(image, posterior.z).shape == (2, C, size, size)
        else:
            z = net.posterior(image, one_hot).rsample(1, torch.Generator().manual_seed(0))
            assert net(image, z).shape == (2, C, size, size)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_binary_default_builds_the_same_network_as_one_channel(name):
    """C = 1 is the default: same parameters, same initial weights for a seed (old checkpoints load)."""
    torch.manual_seed(3)
    default = build_network(name, 1, **TINY[name])
    torch.manual_seed(3)
    explicit = build_network(name, 1, 1, **TINY[name])
    a, b = default.state_dict(), explicit.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_channel_counts_are_not_model_options():
    assert not {"in_channels", "out_channels", "mask_channels"} & set(allowed_options("diffusion-unet"))


def test_bad_channel_counts_are_user_errors():
    with pytest.raises(UserError, match="out_channels must be a positive integer"):
        build_network("unet", 1, 0)
    with pytest.raises(UserError, match="takes no noisy mask"):
        build_network("unet", 1, 4, mask_channels=4)


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("medsegdiff-s", {}, 13_188_833),
        ("medsegdiff-b", {}, 25_449_505),
        ("medsegdiff-l", {}, 40_399_969),
        ("diffusion-unet", {}, 6_842_081),
        ("unet", {}, 5_868_161),
        ("probunet-unet", {}, 6_378_017),
        ("phiseg", {}, 17_817_997),
        ("phiseg", {"n0": 20}, 6_973_945),
        ("phiseg", {"n0": 21}, 7_686_843),
    ],
)
def test_documented_counts(name, options, expected):
    assert count(build_network(name, 1, **options)) == expected


@pytest.mark.parametrize(
    ("variant", "baseline", "dycond"),
    [("s", 12_508_129, 12_508_897), ("b", 24_713_505, 24_714_273), ("l", 39_642_977, 39_644_257)],
)
def test_table_2_ablation_counts(variant, baseline, dycond):
    name = f"medsegdiff-{variant}"
    assert count(build_network(name, 1, dynamic_conditioning=False, ff_parser=False)) == baseline
    assert count(build_network(name, 1, ff_parser=False)) == dycond


def test_image_channels_add_only_to_the_stem():
    assert count(build_network("medsegdiff-b", 3)) - count(build_network("medsegdiff-b", 1)) == 576
    assert count(build_network("medsegdiff-b", 4)) - count(build_network("medsegdiff-b", 1)) == 864
    assert count(build_network("diffusion-unet", 3)) - count(build_network("diffusion-unet", 1)) == 576


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("probunet-aa-diffunet", 6_698_951),
        ("probunet-aa-mix-diffunet", 6_715_869),
        ("probunet-fc-diffunet", 6_696_807),
        ("probunet-fc-mix-diffunet", 6_734_329),
    ],
)
def test_backbone_swap_presets(preset, expected):
    assert count(build_from_config(load_config(preset))) == expected
