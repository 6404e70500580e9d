"""Training and prediction with ``data.resize: pad`` on non-square images and with ``data.ct_window`` on CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffuseg.data.case import Case, Geometry
from diffuseg.data.formats.files import window_intensity
from diffuseg.data.transforms import Fit
from diffuseg.enums import Resize
from diffuseg.inference import predict as predict_module
from diffuseg.inference.predict import predict
from diffuseg.inference.writers import PredictionWriter
from diffuseg.presets import load_config
from diffuseg.training.run import train

UNET = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1}"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny networks on one thread (``tests/conftest.py``)."""


def _train(data: Path, out: Path, *extra: str) -> Path:
    overrides = [f"data.root={data}", f"train.out_dir={out}", "data.image_size=16", "data.layout=paired", UNET]
    config = load_config("unet", [*overrides, "train.steps=1", "train.val_every=0", "train.batch_size=2", *extra])
    return Path(train(config)) / "checkpoints" / "last.ckpt"


def test_the_writer_crops_the_padding_before_resizing_back(tmp_path):
    geometry = Geometry(size=(60, 120), format="png", sources=(str(tmp_path / "in" / "x.png"),))
    case = Case(torch.zeros(1, 60, 120), torch.zeros(0, 60, 120, dtype=torch.uint8), "x", "x", geometry)
    fused = torch.ones(16, 16)  # the padding rows (0-3, 12-15) say foreground: they must not reach the output
    fused[4:12] = 0
    fused[6:10, 4:12] = 1  # a 4 x 8 rectangle in the 8 x 16 image part
    with PredictionWriter(tmp_path / "out", [tmp_path / "in"], fit=Fit(Resize.PAD)) as writer:
        (path,) = writer.write(case, fused)
    mask = np.asarray(Image.open(path)) > 0
    assert mask.shape == (60, 120)
    rows, cols = np.nonzero(mask)
    box = (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
    assert np.allclose(box, (15, 45, 30, 90), atol=1)  # 2:1 as drawn, where it was drawn


def test_pad_trains_and_predicts_masks_of_the_input_size(tmp_path):
    data = tmp_path / "data"
    for i in range(4):
        (data / "images").mkdir(parents=True, exist_ok=True)
        (data / "masks").mkdir(exist_ok=True)
        image = np.random.default_rng(i).integers(0, 120, (24, 40), dtype=np.uint8)
        mask = np.zeros((24, 40), np.uint8)
        mask[6:18, 10 + i : 30 + i] = 255
        Image.fromarray(np.maximum(image, mask)).save(data / "images" / f"c{i}.png")
        Image.fromarray(mask).save(data / "masks" / f"c{i}.png")
    checkpoint = _train(data, tmp_path / "run", "data.resize=pad")
    assert "resize: pad" in (tmp_path / "run" / "config.yaml").read_text()
    out = tmp_path / "pred"
    assert predict(checkpoint, data / "images", out) == 4
    for i in range(4):
        assert np.asarray(Image.open(out / f"c{i}.png")).shape == (24, 40)


def _nifti(path: Path, array: np.ndarray) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)


def _model_inputs(monkeypatch) -> list[torch.Tensor]:
    """The images predict gives ``model_input``, recorded as it runs."""
    seen: list[torch.Tensor] = []
    real = predict_module.model_input

    def spy(image, *args, **kwargs):
        seen.append(image.clone())
        return real(image, *args, **kwargs)

    monkeypatch.setattr(predict_module, "model_input", spy)
    return seen


def test_predict_reads_images_through_the_training_window(tmp_path, monkeypatch):
    data = tmp_path / "ct"
    rng = np.random.default_rng(0)
    for i in range(4):
        hu = rng.uniform(-1000, 400, (16, 16, 2)).astype(np.int16)
        _nifti(data / "images" / f"c{i}.nii.gz", hu)
        _nifti(data / "masks" / f"c{i}.nii.gz", (hu > 0).astype(np.uint8))
    checkpoint = _train(data, tmp_path / "run", "data.ct_window=[-1000, 400]")
    test = (rng.uniform(-200, 200, (16, 16, 1)) * 3).astype(np.int16)  # percentiles would stretch it to [0, 1]
    _nifti(tmp_path / "test" / "t.nii.gz", test)
    seen = _model_inputs(monkeypatch)
    predict(checkpoint, tmp_path / "test", tmp_path / "pred")
    expected = window_intensity(test[..., 0], (-1000.0, 400.0))
    assert np.allclose(seen[-1][0].numpy(), expected, atol=1e-6)


def test_predict_uses_the_training_ct_statistics_from_the_checkpoint(tmp_path, monkeypatch):
    from diffuseg.checkpoint import checkpoint_config, read_checkpoint
    from diffuseg.data.formats.files import ct_intensity

    data = tmp_path / "ct"
    rng = np.random.default_rng(1)
    for i in range(4):
        hu = np.full((16, 16, 2), -1000, np.int16)
        hu[4:12, 4:12] = rng.integers(20, 80, (8, 8, 2))  # soft tissue, label 1
        _nifti(data / "images" / f"c{i}.nii.gz", hu)
        _nifti(data / "masks" / f"c{i}.nii.gz", (hu > -1000).astype(np.uint8))
    checkpoint = _train(data, tmp_path / "run", "data.normalize=ct")
    stats = checkpoint_config(read_checkpoint(checkpoint), checkpoint).data.ct_stats
    assert len(stats) == 4 and 20 <= stats[0] < stats[1] < 80 and 20 < stats[2] < 80  # the foreground's, not air's
    assert "ct_stats" in (tmp_path / "run" / "config.yaml").read_text()
    test = rng.integers(-500, 500, (16, 16, 1)).astype(np.int16)  # its own statistics are nothing like those
    _nifti(tmp_path / "test" / "t.nii.gz", test)
    seen = _model_inputs(monkeypatch)
    predict(checkpoint, tmp_path / "test", tmp_path / "pred")
    assert np.allclose(seen[-1][0].numpy(), ct_intensity(test[..., 0], stats), atol=1e-5)
