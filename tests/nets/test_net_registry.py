"""Registry: every name builds and runs, bad names and options are user errors, ``diffuseg info`` prints."""

from __future__ import annotations

import pytest
import torch

from diffuseg.cli import main
from diffuseg.errors import UserError
from diffuseg.nets.registry import NETWORKS, allowed_options, build_network, describe

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
