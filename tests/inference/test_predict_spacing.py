"""Training and prediction with ``data.resize: spacing`` on NIfTI volumes of anisotropic in-plane pixels: the
spacing recorded by the run, masks written back on the input's own grid with its affine, refusals before anything
is written, ensembles that must agree on the spacing."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from diffuseg.checkpoint import checkpoint_config, metadata, read_checkpoint, save_atomic
from diffuseg.data.formats import open_dataset
from diffuseg.data.transforms import Fit, resize_pair
from diffuseg.enums import Resize
from diffuseg.errors import UserError
from diffuseg.inference.predict import predict
from diffuseg.inference.writers import PredictionWriter
from diffuseg.presets import load_config
from diffuseg.training.module import module_class
from diffuseg.training.run import train

UNET = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1}"
AFFINE = np.array([[0.0, 1.0, 0.0, -10.0], [-0.5, 0.0, 0.0, 20.0], [0.0, 0.0, 3.0, 5.0], [0, 0, 0, 1]])  # 0.5 x 1 mm

pytestmark = pytest.mark.usefixtures("one_thread")


def _volume(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, AFFINE), str(path))
    return path


def _block(shape: tuple[int, int, int]) -> np.ndarray:
    """A mask (X,Y,Z) whose block spans even rows, so halving the rows is exact."""
    mask = np.zeros(shape, np.uint8)
    mask[8:24, 4:12] = 1
    return mask


def test_the_writer_puts_a_mask_back_on_the_inputs_grid_exactly(tmp_path):
    mask = _block((40, 20, 2))
    _volume(tmp_path / "in" / "images" / "v.nii.gz", (mask * 100).astype(np.int16))
    _volume(tmp_path / "in" / "masks" / "v.nii.gz", mask)
    reader = open_dataset(tmp_path / "in", "paired")
    fit = Fit(Resize.SPACING, (1.0, 1.0))
    with PredictionWriter(tmp_path / "out", [tmp_path / "in"], fit=fit) as writer:
        for i in range(len(reader)):
            case = reader[i]
            _, model = resize_pair(case.image, case.masks, 24, fit=fit, geometry=case.geometry)  # 20 x 20 of 24 x 24
            assert model.shape == (1, 24, 24) and model[0, :2].max() == 0 and model[0, 22:].max() == 0
            written = writer.write(case, model[0].float())
    (path,) = written
    out = nib.load(str(path))
    assert out.shape == mask.shape and np.allclose(out.affine, AFFINE)
    assert np.array_equal(np.asarray(out.dataobj), mask)  # every pixel back where it was


def _train(data: Path, out: Path, *extra: str, resume: bool = False) -> Path:
    overrides = [f"data.root={data}", f"train.out_dir={out}", "data.image_size=16", "data.layout=paired", UNET]
    config = load_config("unet", [*overrides, "train.steps=1", "train.val_every=0", "train.batch_size=2", *extra])
    return Path(train(config, resume=resume)) / "checkpoints" / "last.ckpt"


def test_spacing_trains_records_the_spacing_and_predicts_on_the_inputs_grid(tmp_path):
    data = tmp_path / "data"
    for i in range(4):  # 24 x 16 pixels of 0.5 x 1 mm: 12 x 16 mm
        mask = _block((24, 16, 2))
        _volume(data / "images" / f"c{i}.nii.gz", (mask * 100 + i).astype(np.int16))
        _volume(data / "masks" / f"c{i}.nii.gz", mask)
    checkpoint = _train(data, tmp_path / "run", "data.resize=spacing")
    assert checkpoint_config(read_checkpoint(checkpoint), checkpoint).data.spacing == (1.0, 1.0)  # 16 mm over 16 px
    assert "spacing:\n  - 1.0\n  - 1.0" in (tmp_path / "run" / "config.yaml").read_text()
    _train(data, tmp_path / "run", "data.resize=spacing", "train.steps=2", resume=True)  # the recorded one is taken
    test = tmp_path / "test"
    _volume(test / "t.nii.gz", np.arange(20 * 10 * 3, dtype=np.int16).reshape(20, 10, 3))
    assert predict(checkpoint, test, tmp_path / "pred") == 1
    out = nib.load(str(tmp_path / "pred" / "t.nii.gz"))
    assert out.shape == (20, 10, 3) and np.allclose(out.affine, AFFINE)

    _volume(tmp_path / "big" / "b.nii.gz", np.zeros((40, 10, 2), np.int16))  # 20 mm of rows: more than 16
    with pytest.raises(UserError, match=r"b\.nii\.gz: 40 x 10 pixels of 0\.5 x 1 mm \(20 x 10 mm\) do not fit"):
        predict(checkpoint, tmp_path / "big", tmp_path / "pred-big")
    (tmp_path / "png").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "png" / "p.png")
    with pytest.raises(UserError, match=r"p\.png: data\.resize=spacing needs each image's pixel spacing"):
        predict(checkpoint, tmp_path / "png", tmp_path / "pred-png")
    assert not (tmp_path / "pred-big").exists() and not (tmp_path / "pred-png").exists()  # nothing written


def test_the_checkpoints_of_an_ensemble_must_agree_on_the_spacing(tmp_path):
    paths = []
    for seed, spacing in ((1, "[1, 1]"), (2, "[2, 2]")):
        config = load_config(
            "unet-lidc", ["data.image_size=16", UNET, "data.resize=spacing", f"data.spacing={spacing}"]
        )
        torch.manual_seed(seed)
        module = module_class(config.method)(config)
        paths.append(tmp_path / f"s{seed}.ckpt")
        save_atomic({"state_dict": module.state_dict(), "diffuseg": metadata(config, 1, 0)}, paths[-1])
    _volume(tmp_path / "in" / "t.nii.gz", np.zeros((8, 8, 1), np.int16))
    with pytest.raises(UserError, match=r"must agree on data\.spacing \(\[1\.0, 1\.0\] in the first, \[2\.0, 2\.0\]"):
        predict(paths, tmp_path / "in", tmp_path / "out")
