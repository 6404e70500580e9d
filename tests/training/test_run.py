"""The run of ``training.run``: what a resume may change, the classes a dataset brings, the model checked before
the data and built once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from diffuseg.config import config_from_dict
from diffuseg.errors import UserError
from diffuseg.labels import label_scheme
from diffuseg.presets import load_config
from diffuseg.training.module import SegmentationModule
from diffuseg.training.run import check_model, check_resumable, train, with_dataset_classes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from datafixtures import ssl4mis

ACDC = [{"name": "RV", "values": [1]}, {"name": "Myo", "values": [2]}, {"name": "LV", "values": [3]}]


def test_check_resumable_allows_run_control_only():
    base = load_config("lidc-central")
    allowed = load_config("lidc-central", ["train.steps=10", "train.devices=4", "sample.steps=3"])
    check_resumable(base, allowed, Path("x"))
    with pytest.raises(UserError, match=r"(?s)diffusion\.input_scale.*model\.name"):
        check_resumable(base, load_config("lidc-central", ["diffusion.input_scale=0.5", "model.name=unet"]), Path("x"))


def test_dataset_classes_enter_a_config_that_declares_none():
    binary = config_from_dict({})
    declared = config_from_dict({"data": {"classes": ACDC}})
    scheme = label_scheme(ACDC)
    assert with_dataset_classes(binary, label_scheme()) is binary
    assert with_dataset_classes(declared, scheme) is declared
    resolved = with_dataset_classes(binary, scheme)
    assert resolved.data.classes == scheme.classes and resolved.model == binary.model
    assert config_from_dict({"data": {"classes": ACDC}}).data.classes == resolved.data.classes


def test_the_model_is_checked_without_weights_or_random_draws():
    with pytest.raises(UserError, match="multiple of 32"):
        check_model(load_config("medsegdiff-b-ddti", ["data.image_size=16"]))
    with pytest.raises(UserError, match="unknown option"):
        check_model(load_config("lidc-central", ["model.options={widht: 3}"]))
    state = torch.random.get_rng_state()
    check_model(load_config("lidc-central"))
    assert torch.equal(state, torch.random.get_rng_state())


def test_the_module_is_built_once_with_the_classes_the_dataset_brings(tmp_path, monkeypatch):
    """The SSL4MIS reader names each label value a class: the run's one module has C = 4 channels."""
    built = []
    init = SegmentationModule.__init__

    def counting(self, config):
        built.append(config.data.scheme.channels)
        init(self, config)

    monkeypatch.setattr(SegmentationModule, "__init__", counting)
    unet = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1}"
    overrides = [f"data.root={ssl4mis(tmp_path / 'data')}", f"train.out_dir={tmp_path / 'run'}", "data.image_size=16"]
    train(load_config("unet-acdc", [*overrides, unet, "data.classes=[]", "train.val_every=0", "train.steps=1"]))
    assert built == [4]


def test_a_generic_preset_takes_its_data_settings_from_the_folder(tmp_path, capsys):
    """``unet`` (no dataset suffix) on a BUSI-like folder of class folders with RGB and grey PNGs: the layout is
    detected and the channels are the first case's (RGB: 3), recorded in the run's config."""
    from datafixtures import busi

    for name in ("medsegdiff-s", "medsegdiff-b", "medsegdiff-l", "unet", "diffusion-unet", "anchored"):
        config = load_config(name)
        assert config.data.layout == "auto" and config.data.in_channels == 0 and not config.data.classes
        check_model(config)
    unet = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1}"
    overrides = [f"data.root={busi(tmp_path / 'busi')}", f"train.out_dir={tmp_path / 'run'}", "data.image_size=16"]
    run = train(load_config("unet", [*overrides, unet, "train.steps=1", "train.val_every=0", "train.batch_size=2"]))
    assert "image channels from the dataset: 3" in capsys.readouterr().out
    assert "in_channels: 3" in (Path(run) / "config.yaml").read_text()
