"""The parameter counts that docs/networks.md and docs/baselines.md state, pinned (one image channel)."""

import pytest
import torch

from diffuseg.methods import build_network as build_from_config
from diffuseg.nets.registry import build_network
from diffuseg.presets import load_config


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
