"""nnU-Net's ignore label: not a class, its pixels out of the loss (diffusion and deterministic families, every
recipe) and out of the scores; the other families refuse it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from classfamilies import ACDC, SIZE, make_config, tiny_batch

from diffuseg.errors import UserError
from diffuseg.nets.unet import masked_segmentation_loss, segmentation_loss
from diffuseg.training.module import module_class
from diffuseg.training.run import with_dataset_classes


def _with_ignore(config, value: int = 4):
    return dataclasses.replace(config, data=dataclasses.replace(config.data, ignore_label=value))


def _batch_with_ignored_band() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The tiny 3-class batch with its top rows marked ignore (atom 4), and those rows as a mask."""
    batch = tiny_batch()
    band = torch.zeros(2, 1, SIZE, SIZE, dtype=torch.bool)
    band[:, :, :3] = True
    batch["mask"] = batch["mask"].masked_fill(band, 4.0)
    return batch, band


class _Spy(torch.nn.Module):
    """The network, keeping its last output with its gradient."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.out = net, None

    def forward(self, *args):
        self.out = self.net(*args)
        self.out.retain_grad()
        return self.out


@pytest.mark.parametrize(
    ("family", "recipe"),
    [
        ("diffusion-unet", {}),
        ("diffusion-unet", {"aux_weight": 0.5}),
        ("diffusion-unet", {"prediction": "logits", "weighting": "uniform"}),
        ("unet", {}),
    ],
)
def test_the_loss_does_not_see_ignored_pixels(family, recipe):
    """The network's output at pixels labelled ignore gets no gradient; every other pixel does."""
    torch.manual_seed(0)
    config = _with_ignore(make_config(family, ACDC, **recipe))
    module = module_class(config.method)(config)
    module.net = _Spy(module.net)
    batch, band = _batch_with_ignored_band()
    valid = module.scheme.valid(batch["mask"][:, 0])[:, None].float()
    assert torch.equal(valid, (~band).float())
    loss = module.loss(
        batch["image"], module.scheme.one_hot(batch["mask"][:, 0]), torch.Generator().manual_seed(3), valid
    )
    loss.backward()
    grad = module.net.out.grad.abs().sum(1, keepdim=True)  # (B, 1, H, W)
    assert torch.isfinite(loss) and float(grad[band].max()) == 0.0 and bool((grad[~band] > 0).any())


@pytest.mark.parametrize("exclusive", [True, False])
def test_masked_segmentation_loss_over_every_pixel_is_the_plain_loss(exclusive):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    target = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 8, 8), generator=g), 4).movedim(-1, 1).float()
    ones = torch.ones(2, 1, 8, 8)
    expected = segmentation_loss(logits, target, exclusive)
    assert torch.allclose(masked_segmentation_loss(logits, target, ones, exclusive), expected, atol=1e-6)
    binary = segmentation_loss(logits[:, :1], target[:, 1:2])
    assert torch.allclose(masked_segmentation_loss(logits[:, :1], target[:, 1:2], ones), binary, atol=1e-6)


def test_other_families_refuse_an_ignore_label():
    config = _with_ignore(make_config("probunet", ACDC))
    with pytest.raises(UserError, match=r"ignore label.*diffusion and deterministic methods only"):
        module_class(config.method)(config)


def test_the_run_records_the_datasets_ignore_label():
    config = make_config("unet", ())
    scheme = dataclasses.replace(config.data.scheme, ignore=2)
    resolved = with_dataset_classes(config, scheme)
    assert resolved.data.ignore_label == 2 and resolved.data.scheme.ignore_atom == 2
    assert with_dataset_classes(resolved, scheme) is resolved


def test_a_run_on_an_nnunet_dataset_with_an_ignore_label(tmp_path):
    """Two steps of the UNet on nnU-Net raw data whose dataset.json declares "ignore": the run records it, and its
    validation (sampled, scored) and checkpoint work."""
    import json
    import sys
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from datafixtures import disc, grey, png

    from diffuseg.presets import load_config
    from diffuseg.training.run import train

    root = tmp_path / "data"
    meta = {"channel_names": {"0": "US"}, "labels": {"background": 0, "lesion": 1, "ignore": 2}, "file_ending": ".png"}
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps(meta))
    for i in range(4):
        label = (disc(16, 3 + i % 2) > 0).astype(np.uint8)
        label[:3] = 2
        png(root / "imagesTr" / f"c{i}_0000.png", grey(16, i))
        png(root / "labelsTr" / f"c{i}.png", label)
    unet = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1}"
    overrides = [f"data.root={root}", f"train.out_dir={tmp_path / 'run'}", "data.image_size=16", unet]
    overrides.append("data.layout=auto")
    run = train(load_config("unet-acdc", [*overrides, "data.classes=[]", "train.steps=2", "train.val_every=2"]))
    assert "ignore_label: 2" in (Path(run) / "config.yaml").read_text()
