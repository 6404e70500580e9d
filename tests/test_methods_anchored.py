"""The method table's anchored entry: its network, and draws that run the trunk once per image batch and the head
members x steps times, through ``make_draw`` and the ensemble loop ``predict`` uses."""

from __future__ import annotations

import pytest
import torch

from diffuseg import methods
from diffuseg.config import config_from_dict
from diffuseg.errors import UserError
from diffuseg.inference.ensemble import sample_ensembles
from diffuseg.nets.anchored import AnchoredNet

SIZE = 16
UNET = {"channels": [8, 8, 16], "num_res_blocks": [1, 1, 1], "middle_blocks": 1}
ACDC = [{"name": "RV", "values": [1]}, {"name": "Myo", "values": [2]}, {"name": "LV", "values": [3]}]


def config(classes=(), **sections):
    values = {
        "method": "anchored",
        "model": {"name": "unet", "options": UNET},
        "data": {"image_size": SIZE, "classes": list(classes)},
        "anchored": {"head_channels": [8, 16], "head_time_dim": 16},
        "sample": {"steps": 3, "samples": 5, "batch_size": 5},
    }
    for key, value in sections.items():
        values[key] = {**values.get(key, {}), **value}
    return config_from_dict(values)


def counted(net: AnchoredNet) -> dict[str, list[int]]:
    """Rows of every trunk and head call of ``net``."""
    calls: dict[str, list[int]] = {"trunk": [], "head": []}
    features = net.trunk.features
    net.trunk.features = lambda image: calls["trunk"].append(image.shape[0]) or features(image)
    net.head.register_forward_pre_hook(lambda m, args: calls["head"].append(args[0].shape[0]))
    return calls


@pytest.mark.parametrize(("classes", "patch"), [((), 1), (ACDC, 1), ((), 2)], ids=["binary", "3-classes", "patch-2"])
def test_one_trunk_pass_per_image_batch_then_members_x_steps_head_passes(classes, patch):
    c = config(classes, anchored={"head_patch": patch})
    torch.manual_seed(0)
    net = methods.build_network(c).eval()
    calls = counted(net)
    progress = []
    draw = methods.make_draw(c, net, methods.build_process(c), progress=progress.append)
    gens = [torch.Generator().manual_seed(k) for k in range(8)]
    with torch.inference_mode():
        out = draw(torch.randn(2, 1, SIZE, SIZE), 4, gens)
    assert calls == {"trunk": [2], "head": [8, 8, 8]}  # B = 2 images, K = 4 members, S = 3 steps
    assert progress == [8, 8, 8] and sum(progress) == 2 * 4 * methods.steps_per_member(c)
    assert out.mask.shape == (8, 1, SIZE, SIZE) and out.soft.shape == (8, c.data.scheme.channels, SIZE, SIZE)


def test_the_ensemble_loop_runs_the_trunk_once_per_draw_call():
    c = config(sample={"samples": 5, "batch_size": 10, "workers": 1})
    torch.manual_seed(0)
    net = methods.build_network(c).eval()
    calls = counted(net)
    draw = methods.make_draw(c, net, methods.build_process(c))
    cases = [(f"case{i}", torch.randn(1, SIZE, SIZE)) for i in range(4)]
    results = list(sample_ensembles(draw, cases, c.sample))
    assert len(results) == 4 and all(r.samples.shape[0] == 5 for r in results)
    assert calls["trunk"] == [2, 2]  # two calls of 10 member rows: 2 cases each, one trunk row per case
    assert calls["head"] == [10] * 6


def test_members_do_not_depend_on_the_batch_they_are_drawn_in():
    c = config(diffusion={"prediction": "v"})
    torch.manual_seed(0)
    net = methods.build_network(c).eval()
    draw = methods.make_draw(c, net, methods.build_process(c))
    image = torch.randn(1, 1, SIZE, SIZE)
    with torch.inference_mode():
        together = draw(image, 4, [torch.Generator().manual_seed(k) for k in range(4)])
        alone = draw(image, 1, [torch.Generator().manual_seed(2)])
    # the same noise: equal up to rounding (convolutions sum in another order for another batch size)
    torch.testing.assert_close(together.soft[2:3], alone.soft, rtol=0, atol=1e-3)


def test_the_network_the_config_describes():
    c = config(ACDC, diffusion={"self_condition": True}, model={"options": {**UNET, "padding": "partial"}})
    net = methods.build_network(c)
    assert isinstance(net, AnchoredNet)
    assert net.head.stem.in_channels == 1 + 8 + 4 + 2 * 4  # image, features, mu; x_t and the estimate
    assert type(net.head.stem).__name__ == "PartialPadConv2d"  # the head pads as the trunk does
    assert methods.build_process(c) is not None and methods.steps_per_member(c) == 3


def test_a_diffusion_network_cannot_be_the_trunk():
    with pytest.raises(UserError, match="cannot be the trunk of method anchored"):
        methods.build_network(config(model={"name": "diffusion-unet"}))
