"""Writers: the input's format and geometry, atomic files, and refusing to touch the input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from datafixtures import disc, grey, lidc, nifti, paired, png

from diffuseg.data.formats import images_from_files, open_dataset
from diffuseg.data.transforms import resize_pair
from diffuseg.errors import UserError
from diffuseg.inference.writers import PredictionWriter, prediction_paths, read_prediction


def _model_size(case, size=16):
    return resize_pair(case.image, case.masks, size)[1][0].float()


def test_png_back_at_original_size_with_uncertainty_and_samples(tmp_path):
    root = paired(tmp_path / "in", n=2, size=40)
    case = open_dataset(root)[1]
    out = tmp_path / "out"
    soft = F.interpolate(case.masks[None].float(), size=(20, 20), mode="bilinear", antialias=True)[0, 0]
    with PredictionWriter(out, [root], save_samples=True) as w:
        files = w.write(case, soft, torch.full((20, 20), 0.25), torch.stack([soft.round()] * 3))
    assert sorted(p.name for p in files) == [
        "1_a.png",
        "1_a_s000.png",
        "1_a_s001.png",
        "1_a_s002.png",
        "1_a_uncertainty.png",
    ]
    mask = read_prediction(out, case)
    assert mask.shape == (40, 40)
    dice = 2 * (mask & case.masks[0].numpy()).sum() / (mask.sum() + case.masks[0].numpy().sum())
    assert dice > 0.9
    unc = read_prediction(out, case, "uncertainty")
    assert np.allclose(unc, 0.25, atol=1 / 65535)
    assert (out / "samples" / "1_a_s002.png").is_file()
    assert not list(out.glob(".*"))  # no temporary files left


def test_nifti_keeps_affine_and_volumes_are_reassembled(tmp_path):
    vol = np.random.default_rng(0).random((10, 8, 4)).astype(np.float32)
    label = np.zeros((10, 8, 4), np.uint8)
    label[3:7, 2:6, 1:3] = 1
    affine = np.array([[0.7, 0, 0, -5], [0, 0.7, 0, 3], [0, 0, 3.0, 10], [0, 0, 0, 1]])
    nifti(tmp_path / "in" / "images" / "v.nii.gz", vol, affine)
    nifti(tmp_path / "in" / "labels" / "v.nii.gz", label, affine)
    reader = open_dataset(tmp_path / "in")
    out = tmp_path / "out"
    with PredictionWriter(out, [tmp_path / "in"]) as w:
        for i in reversed(range(len(reader))):
            case = reader[i]
            w.write(case, case.masks[0].float(), torch.rand(10, 8) * 0.2)
    import nibabel as nib

    written = nib.load(str(out / "v.nii.gz"))
    assert np.allclose(written.affine, affine)
    assert np.array_equal(np.asarray(written.dataobj), label)
    assert nib.load(str(out / "v_uncertainty.nii.gz")).get_data_dtype() == np.float32
    assert prediction_paths(out, reader[0])["mask"] == out / "v.nii.gz"
    assert np.array_equal(read_prediction(out, reader[2]), label[:, :, 2])


def test_lidc_cases_get_flat_names(tmp_path):
    root = lidc(tmp_path / "in", patients=1, slices=1)
    case = open_dataset(root)[0]
    with PredictionWriter(tmp_path / "out", [root]) as w:
        (path,) = w.write(case, case.masks[1].float())
    assert path.name == "LIDC-IDRI-0000_nodule-0_slice-0.png"


def test_refuses_output_inside_input_and_overwriting_inputs(tmp_path):
    root = paired(tmp_path / "in")
    with pytest.raises(UserError, match="inside the input"):
        PredictionWriter(root / "pred", [root])
    with pytest.raises(UserError, match="inside the input"):
        PredictionWriter(root, [root])
    single = png(tmp_path / "solo" / "scan.png", grey(8))
    case = images_from_files([single])[0]
    writer = PredictionWriter(tmp_path / "solo", [single])  # a file's folder is allowed as output ...
    with pytest.raises(UserError, match="overwrite an input file"):
        writer.write(case, torch.zeros(8, 8))  # ... but never over the file itself
    assert np.array_equal(np.array(__import__("PIL.Image").Image.open(single)), grey(8))


def test_npy_in_npy_out(tmp_path):
    (tmp_path / "in" / "images").mkdir(parents=True)
    np.save(tmp_path / "in" / "images" / "a.npy", grey(12).astype(np.float32))
    png(tmp_path / "in" / "masks" / "a.png", disc(12, 3))
    case = open_dataset(tmp_path / "in")[0]
    with PredictionWriter(tmp_path / "out", [tmp_path / "in"]) as w:
        w.write(case, _model_size(case, 12), torch.zeros(12, 12))
    assert np.array_equal(np.load(tmp_path / "out" / "a.npy"), case.masks[0].numpy())
