"""Checkpoints: what they hold, atomic writing, and clear errors for missing, corrupt and foreign files."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffuseg.checkpoint import FORMAT_VERSION, capture_rng, metadata, read_checkpoint, restore_rng, save_atomic
from diffuseg.config import config_to_dict
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.errors import UserError
from diffuseg.methods import load_for_inference
from diffuseg.presets import load_config
from diffuseg.training.module import DiffusionModule
from diffuseg.training.run import train

TINY = [
    "data.image_size=16",
    "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}",
    "sample.steps=2",
    "sample.samples=2",
    "sample.batch_size=2",
]


@pytest.fixture
def trained(tiny_config):
    config = tiny_config(steps=3, ckpt_every=3)
    run_dir = train(config)
    return config, run_dir / "checkpoints" / "last.ckpt"


def test_checkpoint_holds_everything(trained):
    config, path = trained
    ckpt = read_checkpoint(path)
    meta = ckpt["diffuseg"]
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["config"] == config_to_dict(config)
    assert meta["global_step"] == 3 and ckpt["global_step"] == 3
    assert meta["sampler_position"] == 3 * config.train.batch_size
    assert set(meta["rng"]) >= {"torch", "numpy", "python"}
    keys = ckpt["state_dict"].keys()
    assert any(k.startswith("net.") for k in keys) and any(k.startswith("ema.") for k in keys)
    assert ckpt["optimizer_states"] and ckpt["lr_schedulers"]
    assert not list(path.parent.glob("*.tmp"))


def test_load_for_inference_returns_ema_net_and_process(trained):
    config, path = trained
    loaded, net, process = load_for_inference(path)
    assert loaded == config
    assert isinstance(process, DiffusionProcess)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    ema = {k[4:]: v for k, v in read_checkpoint(path)["state_dict"].items() if k.startswith("ema.")}
    for name, value in net.state_dict().items():
        assert torch.equal(value, ema[name])
    out = net(torch.zeros(2, 1, 16, 16), torch.full((2,), 0.5), torch.zeros(2, 1, 16, 16))
    assert out.shape == (2, 1, 16, 16)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_for_inference(tmp_path / "nope.ckpt")


def test_truncated_checkpoint(trained, tmp_path):
    _, path = trained
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_for_inference(bad)


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage bytes", b"hello world, not a checkpoint"])
def test_garbage_file(tmp_path, content):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    with pytest.raises(UserError, match=str(bad)):
        load_for_inference(bad)


def test_bare_state_dict_is_foreign(tmp_path):
    """An official MedSegDiff checkpoint is a bare state dict: say that it lacks the format version."""
    path = tmp_path / "savedmodel.pt"
    torch.save(OrderedDict({"input_blocks.0.0.weight": torch.zeros(3)}), path)
    with pytest.raises(UserError, match=r"no diffuseg format version.*bare state dict"):
        load_for_inference(path)


def test_bare_state_dict_in_the_legacy_format_is_foreign(tmp_path):
    """torch.save's pre-zip format cannot be memory-mapped: it is read whole and still recognised."""
    path = tmp_path / "savedmodel.pt"
    state = OrderedDict({"input_blocks.0.0.weight": torch.zeros(3)})
    torch.save(state, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UserError, match=r"no diffuseg format version.*bare state dict"):
        load_for_inference(path)


def test_other_lightning_checkpoint_is_foreign(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3, "pytorch-lightning_version": "2.0"}, path)
    with pytest.raises(UserError, match=r"no diffuseg format version.*another"):
        load_for_inference(path)


def test_pickled_module_is_not_loaded(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UserError, match="not a diffuseg checkpoint"):
        load_for_inference(path)


def test_newer_format_is_refused(trained, tmp_path):
    _, path = trained
    ckpt = read_checkpoint(path)
    ckpt["diffuseg"]["format_version"] = FORMAT_VERSION + 1
    newer = tmp_path / "newer.ckpt"
    torch.save(ckpt, newer)
    with pytest.raises(UserError, match="newer"):
        load_for_inference(newer)


def test_save_atomic_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.ckpt"
    save_atomic({"a": torch.ones(2)}, path)
    with pytest.raises(Exception):  # noqa: B017 - a lambda cannot be pickled: torch.save fails mid-way
        save_atomic({"a": torch.zeros(2), "f": lambda: 0}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_rng_round_trip():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    states = capture_rng()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(states)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert first[2] == again[2]


def _tiny_checkpoint(path: Path) -> Path:
    config = load_config("lidc-central", TINY)
    save_atomic({"state_dict": DiffusionModule(config).state_dict(), "diffuseg": metadata(config, 0, 0)}, path)
    return path


def test_a_checkpoint_with_flipped_bytes_is_refused(tmp_path):
    good = _tiny_checkpoint(tmp_path / "good.ckpt")
    load_for_inference(good)  # the intact file loads
    data = bytearray(good.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"bad\.ckpt: corrupt"):
        load_for_inference(bad)


def test_the_cli_names_a_damaged_checkpoint_without_a_traceback(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "last.ckpt")
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights
    ckpt.write_bytes(bytes(data))
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "in" / "x.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "diffuseg.cli", "predict", str(ckpt), str(tmp_path / "in"), str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {ckpt}: corrupt")
    assert not (tmp_path / "out" / "x.png").exists()


def test_torch_checkpoints_keep_crcs_to_check():
    """The integrity check rests on torch.save's zip format storing a CRC-32 per member."""
    import io
    import zipfile

    buffer = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buffer)
    infos = zipfile.ZipFile(buffer).infolist()
    assert infos and all(info.CRC != 0 for info in infos if info.file_size)


def test_the_sha256_comes_from_the_read_that_checks_the_crcs(tmp_path):
    import hashlib

    from diffuseg.checkpoint import read_checkpoint_sha256

    path = _tiny_checkpoint(tmp_path / "last.ckpt")
    ckpt, digest = read_checkpoint_sha256(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ckpt["state_dict"].keys() == read_checkpoint(path)["state_dict"].keys()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"last\.ckpt: corrupt"):
        read_checkpoint_sha256(path)
